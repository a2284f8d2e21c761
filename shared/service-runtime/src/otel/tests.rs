//! The trace layers without span export: a server span joins the caller's trace from
//! `traceparent`, the upstream call it makes sends that trace on with a span id of its own, and
//! log lines inside the call carry the trace id.

use std::{
    convert::Infallible,
    io::Write,
    sync::{Arc, Mutex},
};

use http::{HeaderMap, Request, Response};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::body::Body;
use tower::{Layer as _, Service as _, ServiceExt as _};
use tracing_subscriber::{Registry, filter::LevelFilter, fmt, prelude::*};

use super::{ClientTraceLayer, ServerTraceLayer};

/// The log lines written, shared with the subscriber's writer.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// The upstream headers of one call through a server that logs a line and calls an upstream,
/// and the log lines written meanwhile, with the layers as a service without an OTLP endpoint
/// installs them.
async fn call(incoming: &[(&'static str, &str)]) -> (HeaderMap, String) {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = Registry::default()
        .with(crate::telemetry::span_layer(None))
        .with(
            fmt::layer()
                .json()
                .with_current_span(true)
                .with_writer(move || writer.clone())
                .with_filter(LevelFilter::INFO),
        );
    let _default = tracing::subscriber::set_default(subscriber);

    let seen = Arc::new(Mutex::new(HeaderMap::new()));
    let upstream = {
        let seen = seen.clone();
        ClientTraceLayer::new("tracks").layer(tower::service_fn(move |request: Request<Body>| {
            *seen.lock().unwrap() = request.headers().clone();
            async { Ok::<_, Infallible>(Response::new(Body::empty())) }
        }))
    };
    let server = ServerTraceLayer.layer(tower::service_fn(move |_: Request<Body>| {
        let mut upstream = upstream.clone();
        async move {
            tracing::info!("handling the call");
            let request = Request::builder()
                .uri("http://tracks/foundation.tracks.v1.TracksService/BatchGetTracks")
                .body(Body::empty())
                .unwrap();
            let response = upstream.ready().await?.call(request).await?;
            drop(response);
            Ok::<_, Infallible>(Response::new(Body::empty()))
        }
    }));
    let mut request = Request::builder().uri("http://gateway/consumer.v1.ConsumerGateway/GetTrack");
    for (name, value) in incoming {
        request = request.header(*name, *value);
    }
    let response = server
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    drop(response);
    let headers = seen.lock().unwrap().clone();
    (headers, lines.text())
}

/// `traceparent`'s trace id, span id and flags.
fn parts(headers: &HeaderMap) -> (String, String, String) {
    let value = headers
        .get("traceparent")
        .expect("the upstream call carries traceparent")
        .to_str()
        .unwrap();
    let fields: Vec<_> = value.split('-').collect();
    assert_eq!(fields.len(), 4, "{value}");
    assert_eq!(fields[0], "00", "{value}");
    (
        fields[1].to_owned(),
        fields[2].to_owned(),
        fields[3].to_owned(),
    )
}

const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";

#[tokio::test]
async fn a_call_continues_its_callers_trace_upstream_and_in_its_log_lines() {
    let (headers, logs) = call(&[
        (
            "traceparent",
            &format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"),
        ),
        ("tracestate", "vendor=opaque"),
    ])
    .await;
    let (trace, span, flags) = parts(&headers);
    assert_eq!(trace, CALLER_TRACE);
    assert_ne!(span, CALLER_SPAN, "the client span has an id of its own");
    assert_ne!(span, "0000000000000000");
    assert_eq!(flags, "01");
    assert_eq!(headers.get("tracestate").unwrap(), "vendor=opaque");
    assert!(
        logs.contains(&format!("\"trace_id\":\"{CALLER_TRACE}\"")),
        "the log line inside the call names its trace: {logs}"
    );
}

#[tokio::test]
async fn a_callers_decision_not_to_sample_is_passed_on() {
    let (headers, _) = call(&[(
        "traceparent",
        &format!("00-{CALLER_TRACE}-{CALLER_SPAN}-00"),
    )])
    .await;
    let (trace, _, flags) = parts(&headers);
    assert_eq!(trace, CALLER_TRACE);
    assert_eq!(flags, "00");
    assert!(
        headers.get("tracestate").is_none(),
        "no empty tracestate goes upstream"
    );
}

#[tokio::test]
async fn a_call_without_traceparent_starts_a_sampled_trace_of_its_own() {
    let (first, logs) = call(&[]).await;
    let (second, _) = call(&[("traceparent", "not a trace context")]).await;
    let (trace, span, flags) = parts(&first);
    assert_eq!(trace.len(), 32);
    assert_ne!(trace, "0".repeat(32));
    assert_ne!(span, "0".repeat(16));
    assert_eq!(
        flags, "01",
        "a new trace is sampled, as the SDK's default sampler does"
    );
    assert!(
        logs.contains(&format!("\"trace_id\":\"{trace}\"")),
        "{logs}"
    );
    let (other, _, _) = parts(&second);
    assert_ne!(trace, other, "each call starts its own trace");
}
