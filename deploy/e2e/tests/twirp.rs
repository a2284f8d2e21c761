//! Twirp v7 on both gateways' gRPC ports, through a plain HTTP/1.1 client: JSON and protobuf
//! bodies, canonical JSON (masks, 64-bit integers, enums), Twirp errors (those of calls the
//! serve loop refuses before the Twirp router too), and the consumer's authorization matrix
//! giving the same outcome, and the same not-found message, as gRPC. Also: server reflection
//! follows `server.reflection`.

use std::time::{Duration, Instant};

use authorization::token::mint_development_token;
use e2e::{
    Endpoints, mask, signed,
    twirp::{JSON, PROTOBUF, post, request},
};
use prost::Message;
use protos::{
    consumer::v1::{
        self as consumer, BatchGetTracksRequest, GetTrackRequest, LikeTrackRequest,
        consumer_gateway_client::ConsumerGatewayClient,
    },
    creator::v1 as creator,
    foundation::tracks::v1::{
        BatchGetTracksRequest as FoundationBatch, tracks_service_client::TracksServiceClient,
    },
};
use serde_json::{Value, json};
use service_runtime::{
    faults::{FaultCode, FaultSettings, MethodFault},
    spawn::Running,
};
use tonic_reflection::pb::{v1, v1alpha};
use topology::{Options, Topology};
use twirp_bridge::TwirpCode;

const GET: &str = "consumer.v1.ConsumerGateway/GetTrack";
const BATCH: &str = "consumer.v1.ConsumerGateway/BatchGetTracks";
const LIKE: &str = "consumer.v1.ConsumerGateway/LikeTrack";

fn token(user: Option<&str>, territory: &str) -> String {
    mint_development_token(user, territory, 600)
}

async fn start() -> (Topology, Endpoints) {
    let topology = Topology::start(Options {
        seed_users: 200,
        seed_tracks: 300,
        ephemeral: true,
        ..Options::default()
    })
    .await
    .unwrap();
    topology.wait_ready(Duration::from_secs(60)).await.unwrap();
    let endpoints = Endpoints {
        consumer: topology.consumer_gateway.url(),
        creator: topology.creator_gateway.url(),
        tracks: topology.tracks.url(),
        likes: topology.likes.url(),
        follows: topology.follows.url(),
        counts: topology.counts.url(),
    };
    (topology, endpoints)
}

#[tokio::test]
async fn twirp_serves_both_gateways_like_grpc() {
    let (topology, e) = start().await;
    masked_json_get_track_matches_grpc(&e).await;
    protobuf_bodies_work_both_ways(&e).await;
    errors_are_twirp_errors(&e).await;
    authorization_matrix_matches_grpc(&e).await;
    creator_gateway_over_twirp(&e).await;

    // Counts down: reads stay OK and the degraded paths arrive in a response header.
    topology.counts.signal_stop();
    let base = e.consumer.clone();
    let degraded = e2e::eventually("a degraded read", Duration::from_secs(10), || {
        let base = base.clone();
        async move {
            let body = json!({"trackId": "trk_00001", "readMask": "title,stats.likesCount"});
            let response = post(
                &base,
                GET,
                JSON,
                Some(&token(Some("usr_0002"), "US")),
                body.to_string().as_bytes(),
            )
            .await;
            assert_eq!(response.status, 200, "{:?}", response.json());
            let header = response.header("x-degraded-fields")?.to_owned();
            Some((header, response.json()))
        }
    })
    .await;
    assert_eq!(degraded.0, "stats.likes_count");
    assert!(
        degraded.1["stats"].get("likesCount").is_none(),
        "{}",
        degraded.1
    );
    assert!(degraded.1["title"].is_string());
    topology.stop().await.unwrap();
}

async fn masked_json_get_track_matches_grpc(e: &Endpoints) {
    let body = json!({"trackId": "trk_00001", "readMask": "title,stats.likesCount,creator.followersCount"});
    let response = post(
        &e.consumer,
        GET,
        JSON,
        Some(&token(Some("usr_0002"), "US")),
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(response.status, 200, "{:?}", response.json());
    assert_eq!(response.header("content-type"), Some(JSON));
    let track = response.json();
    let keys = |value: &Value| {
        value
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&track), ["creator", "stats", "title"], "{track}");
    assert_eq!(keys(&track["stats"]), ["likesCount"]);
    assert_eq!(keys(&track["creator"]), ["followersCount"]);

    let grpc = e
        .consumer()
        .await
        .get_track(signed(
            GetTrackRequest {
                track_id: "trk_00001".into(),
                read_mask: mask(&["title", "stats.likes_count", "creator.followers_count"]),
                secret_token: None,
            },
            Some("usr_0002"),
            "US",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(track["title"], grpc.title.as_str());
    // 64-bit counts are JSON strings.
    let likes = grpc.stats.unwrap().likes_count.unwrap();
    assert_eq!(track["stats"]["likesCount"], likes.to_string());
    let followers = grpc.creator.unwrap().followers_count.unwrap();
    assert_eq!(track["creator"]["followersCount"], followers.to_string());

    // The mask's canonical JSON form comes back from ExplainReadMask.
    let explain = post(
        &e.consumer,
        "consumer.v1.ConsumerGateway/ExplainReadMask",
        JSON,
        Some(&token(None, "US")),
        br#"{"readMask":"stats,title"}"#,
    )
    .await
    .json();
    assert_eq!(explain["readMask"], "stats,title", "{explain}");
    assert!(explain["calls"].as_array().unwrap().len() >= 2, "{explain}");
}

async fn protobuf_bodies_work_both_ways(e: &Endpoints) {
    let request = GetTrackRequest {
        track_id: "trk_00001".into(),
        read_mask: mask(&["id", "title", "access"]),
        secret_token: None,
    };
    let response = post(
        &e.consumer,
        GET,
        PROTOBUF,
        Some(&token(Some("usr_0002"), "US")),
        &request.encode_to_vec(),
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some(PROTOBUF));
    let twirp = consumer::Track::decode(response.body.as_slice()).unwrap();
    let grpc = e
        .consumer()
        .await
        .get_track(signed(request, Some("usr_0002"), "US"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(twirp, grpc);
    assert_eq!(twirp.id, "trk_00001");

    // A protobuf body that is not the request message is malformed.
    let response = post(
        &e.consumer,
        GET,
        PROTOBUF,
        Some(&token(None, "US")),
        &[0xff, 0xff, 0xff],
    )
    .await;
    assert_eq!(
        (response.status, response.json()["code"].clone()),
        (400, json!("malformed"))
    );
}

type ErrorCase<'a> = (
    &'a str,
    &'a str,
    Option<&'a str>,
    &'a [u8],
    u16,
    &'a str,
    &'a str,
);

async fn errors_are_twirp_errors(e: &Endpoints) {
    let anyone = token(None, "US");
    // (endpoint, route, token, body, HTTP status, Twirp code, words of the message)
    let cases: [ErrorCase; 7] = [
        (
            &e.consumer,
            GET,
            Some(&anyone),
            b"{\"trackId\":",
            400,
            "malformed",
            "json",
        ),
        (
            &e.consumer,
            "consumer.v1.ConsumerGateway/Nope",
            Some(&anyone),
            b"{}",
            404,
            "bad_route",
            "no method",
        ),
        (
            &e.consumer,
            "consumer.v1.ConsumerGateway/DownloadTrack",
            Some(&anyone),
            b"{}",
            404,
            "bad_route",
            "streaming RPC",
        ),
        (
            &e.creator,
            "creator.v1.CreatorGateway/UploadTrack",
            Some(&anyone),
            b"{}",
            404,
            "bad_route",
            "streaming RPC",
        ),
        (
            &e.consumer,
            GET,
            None,
            br#"{"trackId":"trk_00001"}"#,
            401,
            "unauthenticated",
            "",
        ),
        (
            &e.consumer,
            GET,
            Some("not-a-jwt"),
            br#"{"trackId":"trk_00001"}"#,
            401,
            "unauthenticated",
            "",
        ),
        (
            &e.consumer,
            GET,
            Some(&anyone),
            br#"{"trackId":"trk_00001","readMask":"title,nope"}"#,
            400,
            "invalid_argument",
            "nope",
        ),
    ];
    for (base, route, token, body, status, code, says) in cases {
        let response = post(base, route, JSON, token, body).await;
        let error = response.json();
        assert_eq!(response.status, status, "{route}: {error}");
        assert_eq!(error["code"], code, "{route}: {error}");
        assert!(
            error["msg"].as_str().unwrap().contains(says),
            "{route}: {error}"
        );
        assert!(error["meta"].is_object(), "{route}: {error}");
        assert_eq!(response.header("content-type"), Some(JSON));
    }

    // Unknown Twirp paths stay Twirp, never gRPC's fallback; gRPC still answers beside it.
    let response = request(
        &e.consumer,
        "POST",
        "/twirp/nothing.v1.Nothing/Do",
        JSON,
        None,
        b"{}",
    )
    .await;
    assert_eq!(
        (response.status, response.json()["code"].clone()),
        (404, json!("bad_route"))
    );
    let response = request(
        &e.consumer,
        "GET",
        &format!("/twirp/{GET}"),
        JSON,
        None,
        b"",
    )
    .await;
    assert_eq!(
        (response.status, response.json()["code"].clone()),
        (404, json!("bad_route"))
    );
}

/// What a call came to, in protocol-neutral words: the Twirp code (gRPC codes mapped) and the
/// message, or `ok` and what was returned.
type Outcome = (String, String);

fn grpc_outcome<T>(result: Result<T, tonic::Status>, ok: impl FnOnce(T) -> String) -> Outcome {
    match result {
        Ok(value) => ("ok".into(), ok(value)),
        Err(status) => (
            TwirpCode::from_grpc(status.code()).as_str().into(),
            status.message().into(),
        ),
    }
}

fn twirp_outcome(
    response: &e2e::twirp::HttpResponse,
    ok: impl FnOnce(&Value) -> String,
) -> Outcome {
    let body = response.json();
    if response.status == 200 {
        ("ok".into(), ok(&body))
    } else {
        (
            body["code"].as_str().unwrap().into(),
            body["msg"].as_str().unwrap().into(),
        )
    }
}

async fn authorization_matrix_matches_grpc(e: &Endpoints) {
    let mut tracks = TracksServiceClient::new(e2e::channel(&e.tracks).await);
    let seeded = tracks
        .batch_get_tracks(FoundationBatch {
            ids: ["trk_00003", "trk_00007", "trk_00011"]
                .map(String::from)
                .to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .tracks;
    let private = &seeded[0];
    let owner = private.owner_id.as_str();
    let stranger = e2e::unique("stranger");
    let secret = private.secret_token.as_str();
    assert!(!secret.is_empty());

    // (who, territory, track, secret token); every row runs every RPC on both protocols.
    let rows: [(Option<&str>, &str, &str, Option<&str>); 10] = [
        (Some(&stranger), "US", "trk_00001", None), // public
        (None, "US", "trk_00001", None),            // public, anonymous
        (Some(&stranger), "US", "trk_00003", None), // private
        (Some(owner), "US", "trk_00003", None),     // private, owner
        (Some(&stranger), "US", "trk_00003", Some(secret)), // private, secret token
        (Some(&stranger), "US", "trk_00007", None), // allow-list CA, US: allowed
        (Some(&stranger), "DE", "trk_00007", None), // allow-list: blocked
        (Some(&stranger), "US", "trk_00011", None), // block-list DE, FR: allowed
        (Some(&stranger), "FR", "trk_00011", None), // block-list: blocked
        (Some(&stranger), "US", "trk_99999", None), // missing
    ];
    let mut not_found = Vec::new();
    let mut client = e.consumer().await;
    for (user, territory, track, secret) in rows {
        let what = format!("{user:?} in {territory} on {track} with {secret:?}");
        let bearer = token(user, territory);

        let get = GetTrackRequest {
            track_id: track.into(),
            read_mask: mask(&["id", "title"]),
            secret_token: secret.map(String::from),
        };
        let grpc = grpc_outcome(
            client.get_track(signed(get.clone(), user, territory)).await,
            |response| response.into_inner().id,
        );
        let mut body = json!({"trackId": track, "readMask": "id,title"});
        if let Some(secret) = secret {
            body["secretToken"] = json!(secret);
        }
        let twirp = twirp_outcome(
            &post(
                &e.consumer,
                GET,
                JSON,
                Some(&bearer),
                body.to_string().as_bytes(),
            )
            .await,
            |track| track["id"].as_str().unwrap_or_default().into(),
        );
        assert_eq!(twirp, grpc, "GetTrack: {what}");
        if grpc.0 == "not_found" {
            not_found.push(grpc.1.clone());
        }

        let batch = BatchGetTracksRequest {
            track_ids: vec![track.into(), "trk_00001".into()],
            read_mask: mask(&["id"]),
        };
        let grpc = grpc_outcome(
            client
                .batch_get_tracks(signed(batch, user, territory))
                .await,
            |response| {
                let response = response.into_inner();
                let ids: Vec<_> = response.tracks.into_iter().map(|t| t.id).collect();
                format!("{ids:?} missing {:?}", response.missing_ids)
            },
        );
        let body = json!({"trackIds": [track, "trk_00001"], "readMask": "id"});
        let twirp = twirp_outcome(
            &post(
                &e.consumer,
                BATCH,
                JSON,
                Some(&bearer),
                body.to_string().as_bytes(),
            )
            .await,
            |response| {
                let strings = |key: &str, field: Option<&str>| -> Vec<String> {
                    response[key]
                        .as_array()
                        .map(|items| {
                            items
                                .iter()
                                .map(|item| match field {
                                    Some(field) => item[field].as_str().unwrap().to_owned(),
                                    None => item.as_str().unwrap().to_owned(),
                                })
                                .collect()
                        })
                        .unwrap_or_default()
                };
                format!(
                    "{:?} missing {:?}",
                    strings("tracks", Some("id")),
                    strings("missingIds", None)
                )
            },
        );
        assert_eq!(twirp, grpc, "BatchGetTracks: {what}");

        // Likes are idempotent, so gRPC then Twirp reach the same state; compare the code only
        // for successes (`changed` differs by design), and code and message for failures.
        let grpc = grpc_outcome(
            client
                .like_track(signed(
                    LikeTrackRequest {
                        track_id: track.into(),
                    },
                    user,
                    territory,
                ))
                .await,
            |_| String::new(),
        );
        let body = json!({"trackId": track});
        let twirp = twirp_outcome(
            &post(
                &e.consumer,
                LIKE,
                JSON,
                Some(&bearer),
                body.to_string().as_bytes(),
            )
            .await,
            |_| String::new(),
        );
        assert_eq!(twirp, grpc, "LikeTrack: {what}");
    }
    // Private-and-not-yours, geoblocked and missing: one message for all of them.
    assert_eq!(not_found.len(), 4, "{not_found:?}");
    not_found.dedup();
    assert_eq!(not_found.len(), 1, "{not_found:?}");
}

async fn creator_gateway_over_twirp(e: &Endpoints) {
    let owner = e2e::unique("twirp_owner");
    let uploaded = e2e::scenarios::upload(e, &owner, "Over Twirp", b"some audio bytes").await;
    let mine = token(Some(&owner), "US");
    let get =
        |track: &str| json!({"trackId": track, "readMask": "id,title,visibility,audio.sizeBytes"});

    let response = post(
        &e.creator,
        "creator.v1.CreatorGateway/GetTrack",
        JSON,
        Some(&mine),
        get(&uploaded.id).to_string().as_bytes(),
    )
    .await;
    assert_eq!(response.status, 200, "{:?}", response.json());
    assert_eq!(
        response.json(),
        json!({"id": uploaded.id, "title": "Over Twirp", "visibility": "PUBLIC", "audio": {"sizeBytes": "16"}})
    );

    // Another user's track is the same not_found as over gRPC.
    let stranger = e2e::unique("twirp_stranger");
    let grpc = e
        .creator()
        .await
        .get_track(signed(
            creator::GetTrackRequest {
                track_id: uploaded.id.clone(),
                read_mask: None,
            },
            Some(&stranger),
            "US",
        ))
        .await
        .unwrap_err();
    let response = post(
        &e.creator,
        "creator.v1.CreatorGateway/GetTrack",
        JSON,
        Some(&token(Some(&stranger), "US")),
        get(&uploaded.id).to_string().as_bytes(),
    )
    .await;
    assert_eq!(response.status, 404);
    assert_eq!(response.json()["msg"], grpc.message());

    // An AIP-134 update with the mask in its JSON string form, enums by name.
    let update = json!({
        "track": {"id": uploaded.id, "title": "Renamed", "visibility": "PRIVATE"},
        "updateMask": "title,visibility"
    });
    let response = post(
        &e.creator,
        "creator.v1.CreatorGateway/UpdateTrack",
        JSON,
        Some(&mine),
        update.to_string().as_bytes(),
    )
    .await;
    let track = response.json();
    assert_eq!(response.status, 200, "{track}");
    assert_eq!(
        (track["title"].clone(), track["visibility"].clone()),
        (json!("Renamed"), json!("PRIVATE"))
    );
    assert!(track["secretToken"].is_string(), "{track}");

    let listed = post(
        &e.creator,
        "creator.v1.CreatorGateway/ListMyTracks",
        JSON,
        Some(&mine),
        br#"{"readMask":"id"}"#,
    )
    .await
    .json();
    assert_eq!(listed["tracks"], json!([{"id": uploaded.id}]), "{listed}");

    let deleted = post(
        &e.creator,
        "creator.v1.CreatorGateway/DeleteTrack",
        JSON,
        Some(&mine),
        json!({"trackId": uploaded.id}).to_string().as_bytes(),
    )
    .await;
    assert_eq!((deleted.status, deleted.json()), (200, json!({})));
}

/// A consumer gateway of its own, with `change` applied to its defaults; its upstreams are
/// never reached by the calls made to it.
async fn lone_gateway(change: impl FnOnce(&mut consumer_gateway::Settings)) -> Running {
    let mut settings = consumer_gateway::Settings::defaults();
    settings.server.drain_timeout_ms = 1000;
    change(&mut settings);
    let gateway = Running::ephemeral("consumer-gateway", move |listeners, shutdown| {
        consumer_gateway::run(settings, listeners, shutdown)
    })
    .await
    .unwrap();
    gateway
        .wait_serving(Instant::now() + Duration::from_secs(10))
        .await
        .unwrap();
    gateway
}

/// A Twirp error as the Twirp v7 specification has it: the HTTP status of its code, JSON, and a
/// body of `code`, `msg` and `meta`.
fn assert_twirp_error(response: &e2e::twirp::HttpResponse, status: u16, code: &str, says: &str) {
    assert_eq!(
        response.status,
        status,
        "{:?}: {}",
        response.headers,
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(response.header("content-type"), Some(JSON));
    let error = response.json();
    assert_eq!(error["code"], code, "{error}");
    assert!(error["msg"].as_str().unwrap().contains(says), "{error}");
    assert!(error["meta"].is_object(), "{error}");
}

const EXPLAIN: &str = "consumer.v1.ConsumerGateway/ExplainReadMask";

/// Calls the serve loop refuses before the Twirp router sees them (an injected fault, the
/// concurrency limit) are Twirp errors like every other, not bare HTTP statuses.
#[tokio::test]
async fn twirp_calls_refused_by_faults_or_the_concurrency_limit_get_twirp_errors() {
    let gateway = lone_gateway(|settings| {
        settings.server.max_concurrent_requests = 1;
        settings.faults = FaultSettings::from([
            (
                "BatchGetTracks".to_owned(),
                MethodFault {
                    latency_ms: 0,
                    error_rate: 1.0,
                    code: FaultCode::Unavailable,
                },
            ),
            (
                // Holds the one place while the shed calls arrive.
                "GetTrack".to_owned(),
                MethodFault {
                    latency_ms: 60_000,
                    error_rate: 0.0,
                    code: FaultCode::Unavailable,
                },
            ),
        ]);
    })
    .await;
    let base = gateway.url();
    let anyone = token(None, "US");

    let body = json!({"trackIds": ["trk_00001"], "readMask": "id"});
    let faulted = post(
        &base,
        BATCH,
        JSON,
        Some(&anyone),
        body.to_string().as_bytes(),
    )
    .await;
    assert_twirp_error(&faulted, 503, "unavailable", "injected fault");

    // One GetTrack over gRPC holds the limit (retried until it is the one admitted, should a
    // probe below take the place first); then every other call is shed.
    let holder = tokio::spawn({
        let base = base.clone();
        async move {
            let mut client = ConsumerGatewayClient::new(e2e::channel(&base).await);
            loop {
                let request = signed(
                    GetTrackRequest {
                        track_id: "trk_00001".into(),
                        read_mask: mask(&["id"]),
                        secret_token: None,
                    },
                    None,
                    "US",
                );
                match client.get_track(request).await {
                    Err(status) if status.code() == tonic::Code::ResourceExhausted => continue,
                    _ => break,
                }
            }
        }
    });
    let shed = e2e::eventually("a Twirp call to be shed", Duration::from_secs(10), || {
        let (base, anyone) = (base.clone(), anyone.clone());
        async move {
            let response = post(&base, EXPLAIN, JSON, Some(&anyone), br#"{"readMask":"id"}"#).await;
            (response.status != 200).then_some(response)
        }
    })
    .await;
    assert_twirp_error(&shed, 429, "resource_exhausted", "concurrency limit");
    holder.abort();
    gateway.stop().await.unwrap();
}

/// Reflection is on by default and off by `server.reflection = false`, where both reflection
/// versions answer UNIMPLEMENTED.
#[tokio::test]
async fn reflection_can_be_turned_off() {
    let on = lone_gateway(|_| {}).await;
    list_services_v1(&on.url()).await.unwrap();
    list_services_v1alpha(&on.url()).await.unwrap();
    on.stop().await.unwrap();

    let off = lone_gateway(|settings| settings.server.reflection = false).await;
    for status in [
        list_services_v1(&off.url()).await.unwrap_err(),
        list_services_v1alpha(&off.url()).await.unwrap_err(),
    ] {
        assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    }
    off.stop().await.unwrap();
}

/// Asks reflection v1 for the services and reads the answer.
async fn list_services_v1(base: &str) -> Result<(), tonic::Status> {
    use v1::server_reflection_request::MessageRequest;
    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(e2e::channel(base).await);
    let ask = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(futures::stream::iter([ask]))
        .await?
        .into_inner();
    responses
        .message()
        .await?
        .map(|_| ())
        .ok_or_else(|| tonic::Status::unknown("no answer"))
}

/// The same through reflection v1alpha, which grpcurl still asks first.
async fn list_services_v1alpha(base: &str) -> Result<(), tonic::Status> {
    use v1alpha::server_reflection_request::MessageRequest;
    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(e2e::channel(base).await);
    let ask = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(futures::stream::iter([ask]))
        .await?
        .into_inner();
    responses
        .message()
        .await?
        .map(|_| ())
        .ok_or_else(|| tonic::Status::unknown("no answer"))
}
