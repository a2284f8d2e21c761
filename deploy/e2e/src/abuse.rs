//! Abuse scenarios: what one caller, signed in or anonymous, may try against a gateway, and
//! what the gateway must keep for everyone else. Each scenario runs against any topology given
//! its endpoints and the gateways' default settings (in-process under `cargo test`, and the
//! Compose topology), and each names the limit it proves in its documentation.
//!
//! Scenarios that need a configuration the defaults do not have (tiny limits, a geoblocking
//! mode no API can write, idempotency quotas a rate limit would hide) live beside the code they
//! prove, in the gateways' and foundations'
//! own tests; the threat model in ARCHITECTURE.md lists every limit and its test.

use std::{net::SocketAddr, time::Duration};

use futures::future::join_all;
use protos::{
    codec::CompactCodec,
    consumer::v1::{GetTrackRequest, ListLikedTracksRequest, Track},
};
use tonic::{Code, Status, codegen::http::uri::PathAndQuery};

use crate::{Endpoints, channel, mask, signed, twirp, unique};

/// A public track every listener may see.
const PUBLIC_TRACK: &str = "trk_00001";

fn get_track(user: Option<&str>, territory: &str) -> tonic::Request<GetTrackRequest> {
    signed(
        GetTrackRequest {
            track_id: PUBLIC_TRACK.into(),
            read_mask: mask(&["id", "title"]),
            secret_token: None,
        },
        user,
        territory,
    )
}

/// One caller opens many calls and never sends their request messages. Only as many as one
/// caller may have in flight are admitted (the rest are refused with RESOURCE_EXHAUSTED); other
/// callers are served meanwhile; and the admitted ones end with DEADLINE_EXCEEDED once their
/// bodies have been silent for `server.request_idle_timeout_ms`, freeing their places.
pub async fn stalled_calls_hold_nothing_for_long(e: &Endpoints) {
    // Fewer than a user's rate-limit burst (100), more than the calls in flight one caller may
    // have (64).
    const STALLED: usize = 90;
    let attacker = unique("usr_stall");
    // A connection of its own: one connection carries at most 200 streams.
    let stalled_channel = channel(&e.consumer).await;
    let stalled: Vec<_> = (0..STALLED)
        .map(|_| {
            let mut grpc = tonic::client::Grpc::new(stalled_channel.clone());
            let mut request = tonic::Request::new(futures::stream::pending::<GetTrackRequest>());
            *request.metadata_mut() = get_track(Some(&attacker), "US").metadata().clone();
            async move {
                grpc.ready()
                    .await
                    .map_err(|error| Status::unknown(error.to_string()))?;
                grpc.client_streaming(
                    request,
                    PathAndQuery::from_static("/consumer.v1.ConsumerGateway/GetTrack"),
                    CompactCodec::<GetTrackRequest, Track>::default(),
                )
                .await
            }
        })
        .collect();
    let stalled = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let outcomes = join_all(stalled).await;
        (outcomes, started.elapsed())
    });

    // While the stalled calls are open, everyone else is served.
    let client = e.consumer().await;
    let others = (0..20).map(|n| {
        let mut client = client.clone();
        async move {
            client
                .get_track(get_track(Some(&format!("usr_{:04}", 100 + n)), "US"))
                .await
        }
    });
    for (n, outcome) in join_all(others).await.into_iter().enumerate() {
        outcome.unwrap_or_else(|status| panic!("caller {n} was refused: {status:?}"));
    }

    let (outcomes, took) = tokio::time::timeout(Duration::from_secs(60), stalled)
        .await
        .expect("the stalled calls ended within a minute")
        .expect("the stalled calls' task");
    let mut refused = 0;
    let mut timed_out = 0;
    for outcome in outcomes {
        let status = outcome.expect_err("a call that never sent its message cannot succeed");
        match status.code() {
            Code::ResourceExhausted => {
                assert!(
                    status.message().contains("calls in flight"),
                    "refused for its caller's calls in flight: {status:?}"
                );
                refused += 1;
            }
            Code::DeadlineExceeded => timed_out += 1,
            _ => panic!("a stalled call ended with {status:?}"),
        }
    }
    assert!(refused > 0, "one caller had all {STALLED} calls admitted");
    assert!(timed_out > 0, "no stalled call was admitted at all");
    println!(
        "abuse: {STALLED} stalled calls of one caller: {refused} refused for the caller's \
         calls in flight, {timed_out} ended by the idle bound; all ended within {took:?}"
    );
}

/// Calls to paths the gateway does not serve, one with a quote that would break the Prometheus
/// exposition, leave the metrics' label set as it was: every unknown path counts as `unknown`.
pub async fn unknown_paths_do_not_grow_the_metrics(e: &Endpoints, metrics: SocketAddr) {
    let before = test_support::http_get(metrics, "/metrics").await.1;
    let marker = unique("nope");
    let channel = channel(&e.consumer).await;
    for n in 0..100 {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        let path = PathAndQuery::try_from(format!("/{marker}.v1.Service{n}/Method{n}"))
            .expect("a valid path");
        grpc.ready().await.expect("the gateway is up");
        let status = grpc
            .unary(
                get_track(None, "US"),
                path,
                CompactCodec::<GetTrackRequest, Track>::default(),
            )
            .await
            .expect_err("an unknown path");
        assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    }
    for route in [
        format!("{marker}.v1.Quote\"}}1\\nx{{a=\"/Call"),
        format!("consumer.v1.ConsumerGateway/{marker}"),
    ] {
        let response = twirp::post(&e.consumer, &route, "application/json", None, b"{}").await;
        // 404: Twirp's bad_route; 400: the HTTP parser refused the path before any layer.
        assert!(
            matches!(response.status, 400 | 404),
            "{route}: {}",
            response.status
        );
    }
    let after = test_support::http_get(metrics, "/metrics").await.1;
    assert!(
        !after.contains(&marker),
        "a caller's path reached the metrics"
    );
    let grown = after.lines().count().saturating_sub(before.lines().count());
    // At most the `unknown` series of one code and its histogram, had they not been there yet.
    assert!(
        grown <= 40,
        "the metrics grew by {grown} lines for 102 calls to unknown paths"
    );
    assert!(after.contains(r#"grpc_service="unknown""#));
}

/// A page token of ListLikedTracks reveals nothing of the likes service's cursor (which names a
/// track the caller may not see) and opens only for the caller and the query it was issued for.
pub async fn page_tokens_are_opaque_and_bound_to_their_caller(e: &Endpoints) {
    let mut client = e.consumer().await;
    let list = |user: &str, token: String, caller: Option<&str>, territory: &str| {
        signed(
            ListLikedTracksRequest {
                user_id: user.into(),
                page_size: 2,
                page_token: token,
                read_mask: mask(&["id"]),
            },
            caller,
            territory,
        )
    };
    let first = client
        .list_liked_tracks(list("usr_0001", String::new(), None, "DE"))
        .await
        .expect("the first page")
        .into_inner();
    let token = first.next_page_token;
    assert!(
        !token.is_empty(),
        "usr_0001 has more than one page of likes"
    );
    // hex("trk_") and the id itself: the likes service's cursor is hex of "<time>|<track id>".
    assert!(
        !token.contains("74726b5f") && !token.contains("trk_"),
        "{token}"
    );
    for (what, request) in [
        (
            "another caller",
            list("usr_0001", token.clone(), Some("usr_0003"), "DE"),
        ),
        (
            "another territory",
            list("usr_0001", token.clone(), None, "FR"),
        ),
        (
            "another listed user",
            list("usr_0002", token.clone(), None, "DE"),
        ),
        (
            "a cursor of the likes service",
            list(
                "usr_0001",
                "31373030303030307c74726b5f3030303033".into(),
                None,
                "DE",
            ),
        ),
    ] {
        let status = client.list_liked_tracks(request).await.expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(
            status.message().starts_with("page_token"),
            "{what}: {status:?}"
        );
    }
}

/// A token whose territory is not an ISO 3166-1 code is refused, so it cannot slip past a
/// block list.
pub async fn tokens_with_a_made_up_territory_are_refused(e: &Endpoints) {
    let mut client = e.consumer().await;
    for territory in ["XX", "UK"] {
        let status = client
            .get_track(get_track(Some("usr_0001"), territory))
            .await
            .expect_err(territory);
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{territory}: {status:?}"
        );
    }
}

/// A listener's like can always be taken back, even once its owner made the track private (it
/// would otherwise stay and keep counting); the private track's secret token is 128 random
/// bits, sharing nothing with the track's id.
pub async fn reactions_outlive_their_tracks_visibility(e: &Endpoints) {
    use protos::{
        consumer::v1::UnlikeTrackRequest,
        creator::v1::{self as creator, UpdateTrackRequest},
    };
    let owner = unique("usr_hides");
    let listener = unique("usr_reacts");
    let audio: Vec<u8> = (0..4_000u32).map(|i| (i % 251) as u8).collect();
    let track = crate::scenarios::upload(e, &owner, "soon private", &audio).await;
    let mut consumer = e.consumer().await;
    let like = |user: &str| {
        signed(
            protos::consumer::v1::LikeTrackRequest {
                track_id: track.id.clone(),
            },
            Some(user),
            "US",
        )
    };
    assert!(
        consumer
            .like_track(like(&listener))
            .await
            .expect("a like")
            .into_inner()
            .changed
    );
    let private = e
        .creator()
        .await
        .update_track(signed(
            UpdateTrackRequest {
                track: Some(creator::Track {
                    id: track.id.clone(),
                    visibility: creator::track::Visibility::Private as i32,
                    ..creator::Track::default()
                }),
                update_mask: mask(&["visibility"]),
            },
            Some(&owner),
            "US",
        ))
        .await
        .expect("the owner makes the track private")
        .into_inner();
    let token = private.secret_token;
    // `sec_` and the random part in hex.
    let secret = token.strip_prefix("sec_").unwrap_or(&token);
    assert!(
        secret.len() >= 32 && secret.bytes().all(|b| b.is_ascii_hexdigit()),
        "a secret token of at least 128 bits: {token:?}"
    );
    let id_digits: String = track.id.chars().filter(char::is_ascii_hexdigit).collect();
    assert!(
        !id_digits.contains(&secret[..8])
            && !secret.contains(&id_digits[id_digits.len().saturating_sub(8)..]),
        "the secret token {token} shares digits with the id {}",
        track.id
    );

    let refused = consumer
        .like_track(like(&unique("usr_late")))
        .await
        .expect_err("hidden");
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    let unlike = signed(
        UnlikeTrackRequest {
            track_id: track.id.clone(),
        },
        Some(&listener),
        "US",
    );
    let taken_back = consumer
        .unlike_track(unlike)
        .await
        .expect("an unlike of a hidden track");
    assert!(taken_back.into_inner().changed, "the like was taken back");
}

/// A keyed command refused before anything changed (a like of a missing track) holds no
/// idempotency key: the key is free for the caller's next command, and such refusals cannot
/// fill the store.
pub async fn refusals_hold_no_idempotency_key(e: &Endpoints) {
    let mut consumer = e.consumer().await;
    let user = unique("usr_keyed");
    let keyed = |track: &str| {
        let mut request = signed(
            protos::consumer::v1::LikeTrackRequest {
                track_id: track.into(),
            },
            Some(&user),
            "US",
        );
        request
            .metadata_mut()
            .insert("idempotency-key", "one-key".parse().expect("an ASCII key"));
        request
    };
    let missing = consumer
        .like_track(keyed("trk_99999"))
        .await
        .expect_err("missing");
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    consumer
        .like_track(keyed(PUBLIC_TRACK))
        .await
        .expect("the key was not held by the refusal");
}
