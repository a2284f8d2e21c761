//! What operators rely on: Prometheus metrics per RPC, gRPC health, server reflection, and a
//! graceful shutdown that drains in-flight calls.

use std::time::{Duration, Instant};

use foundation_kit::db::testing;
use protos::foundation::likes::v1::{
    BatchGetReactionsRequest, ListLikedTracksRequest, ReactionRequest,
    likes_service_client::LikesServiceClient,
};
use service_runtime::faults::{FaultCode, MethodFault};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use crate::support::{
    LIKES_SERVICE, channel, http_get, likes_client, likes_settings, sample, start_likes,
};

fn reaction(user_id: &str) -> ReactionRequest {
    ReactionRequest {
        user_id: user_id.into(),
        track_id: "trk_1".into(),
    }
}

#[tokio::test]
async fn metrics_count_every_call_by_service_method_and_code() {
    let mut settings = likes_settings(testing::sqlite()).await;
    settings.faults.insert(
        "Unrepost".into(),
        MethodFault {
            latency_ms: 0,
            error_rate: 1.0,
            code: FaultCode::Unavailable,
        },
    );
    let likes = start_likes(settings).await;
    let mut client = likes_client(&likes).await;
    for user in ["usr_1", "usr_2", "usr_3"] {
        client.like(reaction(user)).await.unwrap();
    }
    let invalid = client.like(reaction("not valid")).await.unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    for _ in 0..2 {
        client
            .batch_get_reactions(BatchGetReactionsRequest {
                user_id: "usr_1".into(),
                track_ids: vec!["trk_1".into()],
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let injected = client.unrepost(reaction("usr_1")).await.unwrap_err();
    assert_eq!(injected.code(), Code::Unavailable);

    let (status, body) = http_get(likes.metrics_addr, "/metrics").await;
    assert_eq!(status, 200);
    let handled = |method: &str, code: &str| {
        sample(
            &body,
            "grpc_server_handled_total",
            &[
                ("grpc_service", LIKES_SERVICE),
                ("grpc_method", method),
                ("grpc_code", code),
            ],
        )
    };
    assert_eq!(handled("Like", "OK"), Some(3.0), "{body}");
    assert_eq!(handled("Like", "InvalidArgument"), Some(1.0), "{body}");
    assert_eq!(handled("BatchGetReactions", "OK"), Some(2.0), "{body}");
    assert_eq!(handled("Unrepost", "Unavailable"), Some(1.0), "{body}");
    assert_eq!(
        handled("ListLikedTracks", "OK"),
        None,
        "never called: {body}"
    );

    let like = [("grpc_service", LIKES_SERVICE), ("grpc_method", "Like")];
    assert_eq!(
        sample(&body, "grpc_server_handling_seconds_count", &like),
        Some(4.0)
    );
    assert!(sample(&body, "grpc_server_handling_seconds_sum", &like).unwrap() > 0.0);
    let buckets = body
        .lines()
        .filter(|line| {
            line.starts_with("grpc_server_handling_seconds_bucket{")
                && line.contains("grpc_method=\"Like\"")
                && line.contains("le=\"")
        })
        .count();
    assert!(buckets >= 10, "histogram buckets: {body}");
    let inf = [
        ("grpc_service", LIKES_SERVICE),
        ("grpc_method", "Like"),
        ("le", "+Inf"),
    ];
    assert_eq!(
        sample(&body, "grpc_server_handling_seconds_bucket", &inf),
        Some(4.0)
    );
    assert!(
        body.contains("# TYPE grpc_server_handling_seconds histogram"),
        "{body}"
    );
    assert!(
        body.contains("# TYPE grpc_server_handled counter"),
        "{body}"
    );
    likes.stop().await.unwrap();
}

#[tokio::test]
async fn health_reports_serving() {
    let likes = start_likes(likes_settings(testing::sqlite()).await).await;
    let mut health = HealthClient::new(channel(likes.url()).await);
    for service in ["", LIKES_SERVICE] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            response.status,
            ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "foundation.counts.v1.CountsService".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    likes.stop().await.unwrap();
}

#[tokio::test]
async fn reflection_lists_the_service_and_no_other_foundation_service() {
    let likes = start_likes(likes_settings(testing::sqlite()).await).await;
    let mut reflection = ServerReflectionClient::new(channel(likes.url()).await);
    let ask = |request: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter([
            ask(MessageRequest::ListServices(String::new())),
            ask(MessageRequest::FileContainingSymbol(LIKES_SERVICE.into())),
        ]))
        .await
        .unwrap()
        .into_inner();

    let listed = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else {
        panic!("not a service list: {listed:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.iter().any(|name| name == LIKES_SERVICE), "{names:?}");
    assert!(
        names.iter().any(|name| name == "grpc.health.v1.Health"),
        "{names:?}"
    );
    for other in ["tracks", "follows", "counts"] {
        assert!(
            !names
                .iter()
                .any(|name| name.starts_with(&format!("foundation.{other}."))),
            "{other} is not served here: {names:?}"
        );
    }

    // A client such as grpcurl can fetch the file that describes the service.
    let file = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::FileDescriptorResponse(files)) = file.message_response else {
        panic!("not a descriptor: {file:?}");
    };
    let bytes: Vec<u8> = files.file_descriptor_proto.concat();
    let text = String::from_utf8_lossy(&bytes);
    for method in ["ListLikedTracks", "BatchGetReactions", "likes.proto"] {
        assert!(
            text.contains(method),
            "{method} missing from the descriptor"
        );
    }
    likes.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_drains_an_in_flight_call() {
    let mut settings = likes_settings(testing::sqlite()).await;
    settings.faults.insert(
        "ListLikedTracks".into(),
        MethodFault {
            latency_ms: 300,
            error_rate: 0.0,
            code: FaultCode::Unavailable,
        },
    );
    let likes = start_likes(settings).await;
    let mut client = likes_client(&likes).await;
    client.like(reaction("usr_1")).await.unwrap();

    // The slow call's request goes out first on the connection; once a later call on the same
    // connection has been answered, the server has certainly received the slow one.
    let mut slow_client = client.clone();
    let started = Instant::now();
    let mut slow = Box::pin(async move {
        let outcome = slow_client
            .list_liked_tracks(ListLikedTracksRequest {
                user_id: "usr_1".into(),
                ..Default::default()
            })
            .await;
        (outcome, Instant::now())
    });
    assert!(
        futures::poll!(&mut slow).is_pending(),
        "the slow call cannot be done yet"
    );
    let slow = tokio::spawn(slow);
    client
        .batch_get_reactions(BatchGetReactionsRequest {
            user_id: "usr_1".into(),
            track_ids: vec!["trk_1".into()],
            ..Default::default()
        })
        .await
        .unwrap();

    let signalled = Instant::now();
    let url = likes.url();
    likes.stop().await.expect("the service stops cleanly");
    // The server answers the slow call no earlier than 300 ms after `started`; stopping waits
    // for that answer.
    let stopped = Instant::now();
    assert!(
        stopped - started >= Duration::from_millis(300),
        "stop returned before the in-flight call was drained ({:?})",
        stopped - started
    );
    let (outcome, finished) = slow.await.unwrap();
    let page = outcome.expect("the in-flight call completes").into_inner();
    assert_eq!(page.likes.len(), 1);
    assert!(
        finished > signalled,
        "the call was still in flight at the signal"
    );
    assert!(finished - started >= Duration::from_millis(300));

    // Stopped means stopped: nothing accepts connections any more.
    assert!(LikesServiceClient::connect(url).await.is_err());
}
