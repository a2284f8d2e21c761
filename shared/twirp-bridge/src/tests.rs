use std::sync::Arc;

use axum::body::Body;
use prost_reflect::DescriptorPool;
use protos::consumer::v1::{
    CommandResponse, Creator, GetTrackRequest, LikeTrackRequest, Stats, Track,
};
use tonic::{Code, Request, Response, Status};
use tower::ServiceExt;

use super::*;

fn pool() -> DescriptorPool {
    DescriptorPool::decode(protos::descriptors::CONSUMER).unwrap()
}

#[test]
fn every_grpc_code_maps_to_the_twirp_v7_status() {
    let table = [
        (Code::Cancelled, "canceled", 408),
        (Code::Unknown, "unknown", 500),
        (Code::InvalidArgument, "invalid_argument", 400),
        (Code::DeadlineExceeded, "deadline_exceeded", 408),
        (Code::NotFound, "not_found", 404),
        (Code::AlreadyExists, "already_exists", 409),
        (Code::PermissionDenied, "permission_denied", 403),
        (Code::ResourceExhausted, "resource_exhausted", 429),
        (Code::FailedPrecondition, "failed_precondition", 412),
        (Code::Aborted, "aborted", 409),
        (Code::OutOfRange, "out_of_range", 400),
        (Code::Unimplemented, "unimplemented", 501),
        (Code::Internal, "internal", 500),
        (Code::Unavailable, "unavailable", 503),
        (Code::DataLoss, "dataloss", 500),
        (Code::Unauthenticated, "unauthenticated", 401),
    ];
    for (grpc, name, status) in table {
        let code = TwirpCode::from_grpc(grpc);
        assert_eq!(code.as_str(), name, "{grpc:?}");
        assert_eq!(code.http_status().as_u16(), status, "{grpc:?}");
        assert_eq!(code.to_grpc(), grpc, "{grpc:?}");
    }
    assert_eq!(TwirpCode::BadRoute.http_status().as_u16(), 404);
    assert_eq!(TwirpCode::Malformed.http_status().as_u16(), 400);
}

#[test]
fn json_requests_use_the_canonical_mapping_with_the_mask_as_one_string() {
    let input = pool()
        .get_message_by_name("consumer.v1.GetTrackRequest")
        .unwrap();
    let json = br#"{"trackId":"trk_1","readMask":"title,creator.followersCount","ignored":1}"#;
    let bytes = json_to_protobuf(input, json).unwrap();
    let request = <GetTrackRequest as prost::Message>::decode(bytes).unwrap();
    assert_eq!(request.track_id, "trk_1");
    assert_eq!(
        request.read_mask.unwrap().paths,
        ["title", "creator.followers_count"]
    );
}

#[test]
fn json_responses_omit_unset_fields_and_quote_64_bit_integers() {
    let output = pool().get_message_by_name("consumer.v1.Track").unwrap();
    let track = Track {
        title: "Night Drive".into(),
        creator: Some(Creator {
            followers_count: Some(12),
            ..Creator::default()
        }),
        stats: Some(Stats {
            likes_count: Some(0),
            reposts_count: None,
        }),
        ..Track::default()
    };
    let json = protobuf_to_json(output, &prost::Message::encode_to_vec(&track)).unwrap();
    assert_eq!(
        String::from_utf8(json).unwrap(),
        r#"{"title":"Night Drive","creator":{"followersCount":"12"},"stats":{"likesCount":"0"}}"#
    );
}

#[test]
fn bad_json_is_malformed() {
    let input = pool()
        .get_message_by_name("consumer.v1.GetTrackRequest")
        .unwrap();
    for json in [&b"{"[..], b"{\"trackId\": 3}", b"{} {}"] {
        let error = json_to_protobuf(input.clone(), json).unwrap_err();
        assert_eq!(error.code, TwirpCode::Malformed);
    }
}

/// A stand-in implementation: `LikeTrack` answers with the caller's `x-user` extension, or
/// NOT_FOUND for `trk_missing`, and every other unary method is UNIMPLEMENTED.
struct Fake;

#[derive(Clone)]
struct User(String);

fn router() -> axum::Router {
    router_limited(DEFAULT_BODY_LIMIT)
}

fn router_limited(limit: usize) -> axum::Router {
    let service = pool()
        .get_service_by_name("consumer.v1.ConsumerGateway")
        .unwrap();
    let interceptor = |mut request: Request<()>| {
        let user = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::to_owned)
            .ok_or_else(|| Status::unauthenticated("missing bearer token"))?;
        request.extensions_mut().insert(User(user));
        Ok(request)
    };
    let mut twirp = TwirpService::new(service.clone(), Arc::new(Fake), interceptor).unary(
        "LikeTrack",
        |_fake: Arc<Fake>, request: Request<LikeTrackRequest>| async move {
            if request.get_ref().track_id == "trk_missing" {
                return Err(Status::not_found("track not found"));
            }
            let user = request.extensions().get::<User>().unwrap().0.clone();
            let mut response = Response::new(CommandResponse { changed: true });
            response
                .metadata_mut()
                .insert("x-degraded-fields", user.parse().unwrap());
            Ok(response)
        },
    );
    for method in service.methods() {
        if method.name() != "LikeTrack"
            && !method.is_client_streaming()
            && !method.is_server_streaming()
        {
            twirp = twirp.unary(
                method.name(),
                |_fake: Arc<Fake>, _request: Request<()>| async move {
                    Err::<Response<()>, _>(Status::unimplemented("stand-in"))
                },
            );
        }
    }
    twirp.body_limit(limit).into_router()
}

async fn send(
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, HeaderMap, serde_json::Value) {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .header("authorization", "Bearer usr_1")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response = router().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn a_unary_call_reaches_the_implementation_with_the_interceptors_extensions() {
    let (status, headers, body) = send(
        "POST",
        "/twirp/consumer.v1.ConsumerGateway/LikeTrack",
        "application/json; charset=utf-8",
        r#"{"trackId":"trk_1"}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!({"changed": true}));
    assert_eq!(headers["x-degraded-fields"], "usr_1");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["grpc-status"], "0");
}

#[tokio::test]
async fn statuses_become_twirp_errors() {
    let (status, headers, body) = send(
        "POST",
        "/twirp/consumer.v1.ConsumerGateway/LikeTrack",
        "application/json",
        r#"{"trackId":"trk_missing"}"#,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        serde_json::json!({"code": "not_found", "msg": "track not found", "meta": {}})
    );
    assert_eq!(headers["grpc-status"], "5");
}

#[tokio::test]
async fn routes_that_are_not_unary_rpcs_of_this_service_are_bad_routes() {
    let cases = [
        (
            "POST",
            "/twirp/consumer.v1.ConsumerGateway/Nope",
            "application/json",
            "has no method",
        ),
        (
            "POST",
            "/twirp/consumer.v1.ConsumerGateway/DownloadTrack",
            "application/json",
            "streaming RPC",
        ),
        (
            "POST",
            "/twirp/creator.v1.CreatorGateway/GetTrack",
            "application/json",
            "no service",
        ),
        ("POST", "/twirp/nothing", "application/json", "no handler"),
        ("POST", "/twirp", "application/json", "no handler"),
        (
            "GET",
            "/twirp/consumer.v1.ConsumerGateway/LikeTrack",
            "application/json",
            "only POST",
        ),
        (
            "POST",
            "/twirp/consumer.v1.ConsumerGateway/LikeTrack",
            "text/plain",
            "Content-Type",
        ),
    ];
    for (method, path, content_type, says) in cases {
        let (status, _, body) = send(method, path, content_type, "{}").await;
        assert_eq!(status, 404, "{method} {path}");
        assert_eq!(body["code"], "bad_route", "{method} {path}");
        let msg = body["msg"].as_str().unwrap();
        assert!(msg.contains(says), "{method} {path}: {msg}");
        assert_eq!(
            body["meta"]["twirp_invalid_route"],
            format!("{method} {path}")
        );
    }
}

#[test]
#[allow(clippy::panic)]
fn a_service_without_every_unary_handler_is_refused_at_start_up() {
    let service = pool()
        .get_service_by_name("consumer.v1.ConsumerGateway")
        .unwrap();
    let outcome = std::panic::catch_unwind(|| {
        TwirpService::new(service, Arc::new(Fake), Ok::<_, Status>).into_router()
    });
    let message = *outcome.unwrap_err().downcast::<String>().unwrap();
    assert!(message.contains("missing: GetTrack"), "{message}");
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let request = http::Request::builder()
        .method("POST")
        .uri("/twirp/consumer.v1.ConsumerGateway/LikeTrack")
        .header("content-type", "application/json")
        .header("authorization", "Bearer usr_1")
        .body(Body::from(r#"{"trackId":"trk_0000000001"}"#))
        .unwrap();
    let response = router_limited(16).oneshot(request).await.unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["code"], "malformed", "{body}");
}

type Refusal = Result<http::Response<tonic::body::Body>, std::convert::Infallible>;

/// A service that answers every call as the serve loop's shed and fault layers do: gRPC's
/// trailers-only form of `status`.
fn refusing(
    status: Status,
) -> impl tower::Service<
    http::Request<Body>,
    Response = http::Response<tonic::body::Body>,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Refusal> + Send + 'static,
> {
    tower::service_fn(move |_: http::Request<Body>| {
        let status = status.clone();
        async move { Ok(status.into_http()) }
    })
}

/// One POST to `path` through [`TwirpErrorLayer`] around `inner`: the response and its body.
async fn through_layer<S>(inner: S, path: &str) -> (http::response::Parts, Bytes)
where
    S: tower::Service<
            http::Request<Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        >,
    S::Future: Send + 'static,
{
    let request = http::Request::post(path).body(Body::empty()).unwrap();
    let response = tower::Layer::layer(&TwirpErrorLayer, inner)
        .oneshot(request)
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(Body::new(body), usize::MAX)
        .await
        .unwrap();
    (parts, body)
}

#[tokio::test]
async fn a_twirp_call_refused_in_grpc_form_becomes_the_twirp_error_of_its_status() {
    let shed = Status::resource_exhausted("the server is at its concurrency limit");
    let (parts, body) = through_layer(
        refusing(shed.clone()),
        "/twirp/consumer.v1.ConsumerGateway/GetTrack",
    )
    .await;
    assert_eq!(parts.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(parts.headers[header::CONTENT_TYPE], JSON);
    // The RPC metrics still read the outcome.
    assert_eq!(parts.headers["grpc-status"], "8");
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        error,
        serde_json::json!({
            "code": "resource_exhausted",
            "msg": "the server is at its concurrency limit",
            "meta": {}
        })
    );

    // Read from the headers when the status is not in the extensions.
    let headers_only = tower::service_fn(|_: http::Request<Body>| async {
        let mut response = Status::unavailable("injected fault").into_http::<tonic::body::Body>();
        response.extensions_mut().clear();
        Ok::<_, std::convert::Infallible>(response)
    });
    let (parts, body) =
        through_layer(headers_only, "/twirp/consumer.v1.ConsumerGateway/GetTrack").await;
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (&error["code"], &error["msg"]),
        (
            &serde_json::json!("unavailable"),
            &serde_json::json!("injected fault")
        )
    );

    // gRPC calls keep the gRPC form.
    let (parts, body) =
        through_layer(refusing(shed), "/consumer.v1.ConsumerGateway/GetTrack").await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(parts.headers["grpc-status"], "8");
    assert!(body.is_empty());
    assert!(!is_twirp_path("/twirpx/a.B/C"));
    assert!(is_twirp_path("/twirp"));
}

#[tokio::test]
async fn the_twirp_routers_own_answers_pass_unchanged() {
    let router = tower::service_fn(|_: http::Request<Body>| async {
        let response = TwirpError::new(TwirpCode::NotFound, "no such track").into_response();
        Ok::<_, std::convert::Infallible>(response.map(tonic::body::Body::new))
    });
    let (parts, body) = through_layer(router, "/twirp/consumer.v1.ConsumerGateway/GetTrack").await;
    assert_eq!(parts.status, StatusCode::NOT_FOUND);
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["msg"], "no such track");
}
