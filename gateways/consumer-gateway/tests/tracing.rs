//! One GetTrack is one trace: the gateway's server span, a client span per foundation method the
//! mask needs, and each foundation service's server span joined to the client span that called
//! it through the W3C `traceparent` header. The spans' times also show the stages pipelined:
//! stage two starts while a slow call of stage one is still running.
//!
//! A test binary of its own, because it installs the process-wide subscriber and propagator.

use std::time::{Duration, Instant};

use authorization::token::mint_development_client_token;
use foundation_kit::db::testing;
use opentelemetry::trace::{SpanId, SpanKind, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use protos::{
    consumer::v1::{GetTrackRequest, consumer_gateway_client::ConsumerGatewayClient},
    foundation::tracks::v1::{BatchGetTracksRequest, tracks_service_client::TracksServiceClient},
};
use service_runtime::{
    faults::{FaultCode, MethodFault},
    spawn::Running,
    telemetry::{LogFormat, LogSettings},
};
use tonic::{Request, metadata::MetadataValue};

const USERS: u32 = 60;
const TRACKS: u32 = 120;

/// The foundation calls a full-mask GetTrack makes, as `service/method`.
const CLIENT_CALLS: [&str; 5] = [
    "foundation.tracks.v1.TracksService/BatchGetTracks",
    "foundation.likes.v1.LikesService/BatchGetReactions",
    "foundation.counts.v1.CountsService/BatchGetTrackCounts",
    "foundation.follows.v1.FollowsService/BatchGetFollowing",
    "foundation.counts.v1.CountsService/BatchGetUserCounts",
];

const GET_TRACK: &str = "consumer.v1.ConsumerGateway/GetTrack";

/// Latency injected into likes' BatchGetReactions, a stage-one call.
const SLOW_REACTIONS_MS: u64 = 300;

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// Starts the four foundation services (seeded, in memory) and the gateway in front of them.
async fn start() -> (Vec<Running>, Running) {
    let counts = {
        let mut s = counts::Settings::defaults();
        s.database = testing::sqlite();
        s.seed.enabled = true;
        s.seed.users = USERS;
        s.seed.tracks = TRACKS;
        Running::ephemeral("counts", move |l, stop| counts::run(s, l, stop))
            .await
            .unwrap()
    };
    let relay = |s: &mut foundation_kit::outbox::RelaySettings| {
        s.counts_url = counts.url();
    };
    let tracks = {
        let mut s = tracks::Settings::defaults();
        s.database = testing::sqlite();
        s.seed.enabled = true;
        s.seed.users = USERS;
        s.seed.tracks = TRACKS;
        relay(&mut s.outbox);
        Running::ephemeral("tracks", move |l, stop| tracks::run(s, l, stop))
            .await
            .unwrap()
    };
    let likes = {
        let mut s = likes::Settings::defaults();
        s.database = testing::sqlite();
        s.seed.enabled = true;
        s.seed.users = USERS;
        s.seed.tracks = TRACKS;
        relay(&mut s.outbox);
        s.faults.insert(
            "BatchGetReactions".into(),
            MethodFault {
                latency_ms: SLOW_REACTIONS_MS,
                error_rate: 0.0,
                code: FaultCode::Unavailable,
            },
        );
        Running::ephemeral("likes", move |l, stop| likes::run(s, l, stop))
            .await
            .unwrap()
    };
    let follows = {
        let mut s = follows::Settings::defaults();
        s.database = testing::sqlite();
        s.seed.enabled = true;
        s.seed.users = USERS;
        s.seed.tracks = TRACKS;
        relay(&mut s.outbox);
        Running::ephemeral("follows", move |l, stop| follows::run(s, l, stop))
            .await
            .unwrap()
    };
    let mut settings = consumer_gateway::Settings::defaults();
    // Every read calls every method it plans: no counters served from the cache.
    settings.fanout.counts_cache.ttl_ms = 0;
    settings.upstreams.tracks.url = tracks.url();
    settings.upstreams.likes.url = likes.url();
    settings.upstreams.follows.url = follows.url();
    settings.upstreams.counts.url = counts.url();
    for upstream in [
        &mut settings.upstreams.tracks,
        &mut settings.upstreams.likes,
        &mut settings.upstreams.follows,
        &mut settings.upstreams.counts,
    ] {
        upstream.timeout_ms = 5000;
        upstream.connect_timeout_ms = 5000;
    }
    let gateway = Running::ephemeral("consumer-gateway", move |l, stop| {
        consumer_gateway::run(settings, l, stop)
    })
    .await
    .unwrap();
    // Seeding finishes before a service answers; wait for all four.
    let mut tracks_client = TracksServiceClient::connect(tracks.url()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = tracks_client
            .batch_get_tracks(BatchGetTracksRequest {
                ids: vec!["trk_00001".into()],
            })
            .await
            .is_ok_and(|r| r.into_inner().tracks.len() == 1);
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "tracks never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for service in [&likes, &follows, &counts] {
        service
            .wait_serving(Instant::now() + Duration::from_secs(30))
            .await
            .unwrap();
    }
    (vec![tracks, likes, follows, counts], gateway)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_get_track_is_one_trace_across_the_gateway_and_the_foundation() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let _telemetry = service_runtime::telemetry::init_with_provider(
        &LogSettings::new(LogFormat::Json, "warn", "consumer-gateway"),
        provider.clone(),
    );
    let (foundation, gateway) = start().await;
    // Only the call under test counts: readiness checks made their own traces.
    provider.force_flush().unwrap();
    exporter.reset();

    let mut request = Request::new(GetTrackRequest {
        // A public, downloadable track whose every field is non-empty for a signed-in listener.
        track_id: "trk_00006".into(),
        read_mask: None,
        secret_token: None,
    });
    let token = mint_development_client_token(Some("usr_0059"), "US", 300, Some("web-bff"));
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    let mut client = ConsumerGatewayClient::connect(gateway.url()).await.unwrap();
    client.get_track(request).await.unwrap();

    // Spans end when their response bodies end, which may be just after the client has the
    // answer: poll until the gateway's server span and every foundation server span are in.
    let deadline = Instant::now() + Duration::from_secs(10);
    let spans = loop {
        provider.force_flush().unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        let servers = spans
            .iter()
            .filter(|span| span.span_kind == SpanKind::Server)
            .count();
        if servers > CLIENT_CALLS.len() {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "spans did not arrive in time: {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let server = spans
        .iter()
        .find(|span| span.span_kind == SpanKind::Server && span.name == GET_TRACK)
        .expect("the gateway's server span");
    let trace = server.span_context.trace_id();
    assert_ne!(trace, TraceId::INVALID);
    assert_eq!(server.parent_span_id, SpanId::INVALID, "a trace of its own");
    assert_eq!(attribute(server, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        attribute(server, "rpc.service").as_deref(),
        Some("consumer.v1.ConsumerGateway")
    );
    assert_eq!(attribute(server, "rpc.method").as_deref(), Some("GetTrack"));
    assert_eq!(attribute(server, "client.name").as_deref(), Some("web-bff"));
    assert_eq!(
        attribute(server, "rpc.grpc.status_code").as_deref(),
        Some("0")
    );
    assert_eq!(
        attribute(server, "trace_id"),
        Some(trace.to_string()),
        "log lines inside the span carry its trace id"
    );

    let in_trace: Vec<&SpanData> = spans
        .iter()
        .filter(|span| span.span_context.trace_id() == trace)
        .collect();
    let mut clients: Vec<&str> = in_trace
        .iter()
        .filter(|span| span.span_kind == SpanKind::Client)
        .map(|span| span.name.as_ref())
        .collect();
    clients.sort_unstable();
    let mut expected = CLIENT_CALLS.to_vec();
    expected.sort_unstable();
    assert_eq!(clients, expected, "one client span per foundation method");

    for name in CLIENT_CALLS {
        let client = in_trace
            .iter()
            .find(|span| span.span_kind == SpanKind::Client && span.name == name)
            .unwrap();
        assert_eq!(
            client.parent_span_id,
            server.span_context.span_id(),
            "{name} is a child of the gateway's server span"
        );
        let (service, method) = name.split_once('/').unwrap();
        assert_eq!(attribute(client, "rpc.system").as_deref(), Some("grpc"));
        assert_eq!(attribute(client, "rpc.service").as_deref(), Some(service));
        assert_eq!(attribute(client, "rpc.method").as_deref(), Some(method));
        assert_eq!(
            attribute(client, "rpc.grpc.status_code").as_deref(),
            Some("0")
        );
        assert!(attribute(client, "peer").is_some(), "{name} names its peer");

        let upstream = in_trace
            .iter()
            .find(|span| span.span_kind == SpanKind::Server && span.name == name)
            .unwrap_or_else(|| panic!("{name}: the foundation's server span joins the trace"));
        assert_eq!(
            upstream.parent_span_id,
            client.span_context.span_id(),
            "{name}: the foundation's server span is a child of the client span"
        );
        assert!(upstream.parent_span_is_remote);
    }
    // Stage two (keyed by the track's owner) starts as soon as the tracks answer, while the
    // reactions call of stage one, slowed by the injected latency, is still running.
    let client_span = |name: &str| {
        in_trace
            .iter()
            .find(|span| span.span_kind == SpanKind::Client && span.name == name)
            .unwrap()
    };
    let reactions = client_span("foundation.likes.v1.LikesService/BatchGetReactions");
    for name in [
        "foundation.follows.v1.FollowsService/BatchGetFollowing",
        "foundation.counts.v1.CountsService/BatchGetUserCounts",
    ] {
        assert!(
            client_span(name).start_time < reactions.end_time,
            "{name} started before stage one's slow reactions call ended"
        );
    }

    let servers = in_trace
        .iter()
        .filter(|span| span.span_kind == SpanKind::Server)
        .count();
    assert_eq!(
        servers,
        1 + CLIENT_CALLS.len(),
        "nothing else joined the trace"
    );

    gateway.stop().await.unwrap();
    for service in foundation {
        service.stop().await.unwrap();
    }
}
