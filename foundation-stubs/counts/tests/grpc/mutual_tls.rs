//! With `server.tls.client_ca_file` set, counts answers only callers that present a certificate
//! of that CA: an event forged by anyone else (no TLS, TLS without a certificate, a certificate
//! of another CA, or one of the servers' CA) never reaches `ApplyEvents` and changes nothing.

use std::time::{Duration, Instant};

use foundation_kit::db::testing;
use protos::foundation::counts::v1::{
    ApplyEventsRequest, BatchGetTrackCountsRequest, Event, TrackReaction,
    counts_service_client::CountsServiceClient, event::Kind,
};
use service_runtime::{spawn::Running, tls::ServerTlsSettings};
use test_pki::{Ca, Leaf, Pki};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const TRACK: &str = "trk_00001";

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// A client configuration trusting `servers`, for `localhost`, presenting `identity`.
fn client(servers: &Ca, identity: Option<&Leaf>) -> ClientTlsConfig {
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&servers.file)))
        .domain_name("localhost");
    match identity {
        Some(leaf) => config.identity(Identity::from_pem(read(&leaf.cert), read(&leaf.key))),
        None => config,
    }
}

/// A client of `counts` over TLS with `tls`, or plaintext when `None`.
async fn counts_client(
    counts: &Running,
    tls: Option<ClientTlsConfig>,
) -> CountsServiceClient<Channel> {
    let endpoint = match tls {
        Some(tls) => Channel::from_shared(format!("https://{}", counts.grpc_addr))
            .unwrap()
            .tls_config(tls)
            .unwrap(),
        None => Channel::from_shared(counts.url()).unwrap(),
    };
    CountsServiceClient::new(
        endpoint
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy(),
    )
}

fn like(id: &str, user: &str) -> ApplyEventsRequest {
    ApplyEventsRequest {
        events: vec![Event {
            id: id.into(),
            occur_time: None,
            kind: Some(Kind::TrackLiked(TrackReaction {
                track_id: TRACK.into(),
                user_id: user.into(),
            })),
        }],
    }
}

async fn likes_of(client: &mut CountsServiceClient<Channel>) -> u64 {
    client
        .batch_get_track_counts(BatchGetTrackCountsRequest {
            track_ids: vec![TRACK.into()],
        })
        .await
        .unwrap()
        .into_inner()
        .counts[0]
        .likes_count
}

/// Counts over TLS with `own`, serving only callers with a certificate `callers` issued, and
/// `apply_events_clients` as given; returned once `relay` sees it serving.
async fn mutual_tls_counts(
    servers: &Ca,
    callers: &Ca,
    own: &Leaf,
    relay: &Leaf,
    apply_events_clients: &str,
) -> Running {
    let mut settings = counts::Settings::defaults();
    settings.database = testing::sqlite();
    settings.server.tls = ServerTlsSettings {
        cert_file: own.cert.clone(),
        key_file: own.key.clone(),
        client_ca_file: callers.file.clone(),
    };
    settings.limits.apply_events_clients = apply_events_clients.into();
    let counts = Running::ephemeral("counts", move |listeners, shutdown| {
        counts::run(settings, listeners, shutdown)
    })
    .await
    .unwrap();
    counts
        .wait_serving_with(
            Some(client(servers, Some(relay))),
            Instant::now() + Duration::from_secs(30),
        )
        .await
        .unwrap();
    counts
}

#[tokio::test]
async fn with_mutual_tls_only_callers_with_a_client_certificate_apply_events() {
    let pki = Pki::new();
    let servers = pki.ca("servers");
    let callers = pki.ca("callers");
    let strangers = pki.ca("strangers");
    let own = pki.leaf(&servers, "counts");
    let relay = pki.leaf(&callers, "relay");
    let counts = mutual_tls_counts(&servers, &callers, &own, &relay, "").await;
    let mut trusted = counts_client(&counts, Some(client(&servers, Some(&relay)))).await;
    assert_eq!(likes_of(&mut trusted).await, 0);

    let stranger = pki.leaf(&strangers, "stranger");
    let sibling = pki.leaf(&servers, "sibling");
    let forgers = [
        ("plaintext", None),
        ("TLS without a certificate", Some(client(&servers, None))),
        (
            "a certificate of another CA",
            Some(client(&servers, Some(&stranger))),
        ),
        (
            "a certificate of the servers' CA",
            Some(client(&servers, Some(&sibling))),
        ),
    ];
    for (n, (who, tls)) in forgers.into_iter().enumerate() {
        let mut forger = counts_client(&counts, tls).await;
        let forged = forger
            .apply_events(like(&format!("ev-forged-{n}"), "usr_9"))
            .await;
        assert!(forged.is_err(), "{who}: {forged:?}");
        let read = forger
            .batch_get_track_counts(BatchGetTrackCountsRequest {
                track_ids: vec![TRACK.into()],
            })
            .await;
        assert!(read.is_err(), "{who} read counts: {read:?}");
    }
    assert_eq!(
        likes_of(&mut trusted).await,
        0,
        "a forged event was counted"
    );

    // The same event from a caller with a certificate of the client CA counts.
    trusted
        .apply_events(like("ev-relayed", "usr_9"))
        .await
        .unwrap();
    assert_eq!(likes_of(&mut trusted).await, 1);
    counts.stop().await.unwrap();
}

#[tokio::test]
async fn only_the_named_relays_apply_events_while_other_callers_of_the_ca_may_read() {
    let pki = Pki::new();
    let servers = pki.ca("servers");
    let callers = pki.ca("callers");
    let own = pki.leaf(&servers, "counts");
    let relay = pki.leaf_for(&callers, "likes-relay", &["likes"]);
    let gateway = pki.leaf_for(&callers, "consumer-gateway", &["consumer-gateway"]);
    let counts = mutual_tls_counts(&servers, &callers, &own, &relay, "likes, tracks").await;
    let mut relay = counts_client(&counts, Some(client(&servers, Some(&relay)))).await;
    let mut gateway = counts_client(&counts, Some(client(&servers, Some(&gateway)))).await;

    let forged = gateway
        .apply_events(like("ev-from-a-gateway", "usr_9"))
        .await
        .unwrap_err();
    assert_eq!(forged.code(), tonic::Code::PermissionDenied, "{forged:?}");
    assert_eq!(
        likes_of(&mut gateway).await,
        0,
        "the gateway still reads counts"
    );

    relay
        .apply_events(like("ev-relayed", "usr_9"))
        .await
        .unwrap();
    assert_eq!(likes_of(&mut gateway).await, 1);
    counts.stop().await.unwrap();
}
