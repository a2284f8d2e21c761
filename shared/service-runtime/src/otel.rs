//! OpenTelemetry spans for RPCs, with the RPC semantic conventions: a server span per call a
//! service handles ([`ServerTraceLayer`]) and a client span per upstream call
//! ([`ClientTraceLayer`]).
//!
//! Both are `tracing` spans. When spans are exported, the `tracing-opentelemetry` layer that
//! [`crate::telemetry::init`] installs turns them into OpenTelemetry spans; when they are not,
//! [`PropagationLayer`] keeps only each span's W3C span context. The W3C `traceparent` header
//! carries the trace from a client span to the server span of the service it calls: the server
//! layer extracts it with the global propagator, the client layer writes the span's context in
//! the same format, either way.
//!
//! The status of a call is read by [`StatusBody`], the same way the metrics layer reads it. The
//! body holds the span until the status is known, so each span covers the whole response,
//! streamed bodies included.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body::Body;
use opentelemetry::{
    propagation::Extractor,
    trace::{SpanContext, TraceFlags},
};
use tonic::Code;
use tracing::{Instrument, Span, field};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{
    metrics::split_path,
    status_body::{OnStatus, StatusBody},
};

mod propagation;

pub use propagation::PropagationLayer;

/// Reads propagation fields from request headers.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Writes a client span's context into its request as W3C trace context, as the trace-context
/// propagator's `inject_context` does, without the global propagator's lock, a context to wrap
/// the span context in, or an empty `tracestate`.
fn inject(context: &SpanContext, headers: &mut HeaderMap) {
    if !context.is_valid() {
        return;
    }
    let traceparent = format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags() & TraceFlags::SAMPLED
    );
    if let Ok(value) = HeaderValue::try_from(traceparent) {
        headers.insert(HeaderName::from_static("traceparent"), value);
    }
    let tracestate = context.trace_state().header();
    if !tracestate.is_empty()
        && let Ok(value) = HeaderValue::try_from(tracestate)
    {
        headers.insert(HeaderName::from_static("tracestate"), value);
    }
}

/// Which side of a call a span describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

/// A tower layer that runs every call a server handles inside a server span, joined to the
/// caller's trace when the request carries a `traceparent` header.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerTraceLayer;

impl<S> tower::Layer<S> for ServerTraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService {
            inner,
            side: Side::Server,
            peer: "",
        }
    }
}

/// A tower layer that runs every call of an upstream channel inside a client span, a child of
/// the current span, and sends that span's context along in the `traceparent` header.
#[derive(Debug, Clone)]
pub struct ClientTraceLayer {
    peer: &'static str,
}

impl ClientTraceLayer {
    /// A layer for the channel to the upstream named `peer` (recorded as the span's `peer`).
    pub fn new(peer: &str) -> Self {
        // Upstream names are few and live as long as the process: leaking one per channel is
        // cheaper than cloning a string per call.
        Self {
            peer: Box::leak(peer.to_owned().into_boxed_str()),
        }
    }
}

impl<S> tower::Layer<S> for ClientTraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService {
            inner,
            side: Side::Client,
            peer: self.peer,
        }
    }
}

/// The service of [`ServerTraceLayer`] and [`ClientTraceLayer`].
#[derive(Debug, Clone)]
pub struct TraceService<S> {
    inner: S,
    side: Side,
    peer: &'static str,
}

impl<S> TraceService<S> {
    /// The span of one call, with its parent set and, on a client, its context injected into
    /// the request headers.
    fn span<B>(&self, request: &mut Request<B>) -> Span {
        let (service, method) = split_path(request.uri().path());
        match self.side {
            Side::Server => {
                // A server span starts a trace or continues the caller's, never the span that
                // happens to be current in the task that accepted the connection.
                let span = tracing::info_span!(
                    parent: None,
                    "grpc.server",
                    otel.name = %format_args!("{service}/{method}"),
                    otel.kind = "server",
                    otel.status_code = field::Empty,
                    rpc.system = "grpc",
                    rpc.service = %service,
                    rpc.method = %method,
                    rpc.grpc.status_code = field::Empty,
                    trace_id = field::Empty,
                    // The BFF client, which a gateway's authenticator records.
                    client.name = field::Empty,
                    client.version = field::Empty,
                );
                let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
                    propagator.extract(&HeaderExtractor(request.headers()))
                });
                use opentelemetry::trace::TraceContextExt;
                let trace_id = match propagation::join(&span, parent.span().span_context()) {
                    Some(trace_id) => trace_id,
                    None => {
                        // Setting the parent fails only when no OpenTelemetry layer is
                        // installed either; the span is then a plain `tracing` span, which is
                        // fine.
                        drop(span.set_parent(parent));
                        span.context().span().span_context().trace_id()
                    }
                };
                record_trace_id(&span, trace_id);
                span
            }
            Side::Client => {
                let span = tracing::info_span!(
                    "grpc.client",
                    otel.name = %format_args!("{service}/{method}"),
                    otel.kind = "client",
                    otel.status_code = field::Empty,
                    rpc.system = "grpc",
                    rpc.service = %service,
                    rpc.method = %method,
                    rpc.grpc.status_code = field::Empty,
                    peer = self.peer,
                );
                let context = propagation::span_context(&span).unwrap_or_else(|| {
                    use opentelemetry::trace::TraceContextExt;
                    span.context().span().span_context().clone()
                });
                inject(&context, request.headers_mut());
                span
            }
        }
    }
}

/// Records `trace_id`, the server span's trace id, as its `trace_id` field, so that JSON log
/// lines inside it carry the id (the formatter lists the fields of the current span).
fn record_trace_id(span: &Span, trace_id: opentelemetry::trace::TraceId) {
    if trace_id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", field::display(trace_id));
    }
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for TraceService<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Body,
{
    type Response = Response<StatusBody<ResBody, CallSpan>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let span = self.span(&mut request);
        let future = span.in_scope(|| self.inner.call(request));
        let call = CallSpan {
            span: span.clone(),
            side: self.side,
        };
        Box::pin(
            async move {
                match future.await {
                    Ok(response) => Ok(StatusBody::watch(response, call)),
                    Err(error) => {
                        // The transport failed before any status: gRPC reports it as
                        // UNAVAILABLE.
                        call.on_status(Code::Unavailable);
                        Err(error)
                    }
                }
            }
            .instrument(span),
        )
    }
}

/// The span of a call of [`TraceService`] whose status is not known yet, kept open until it
/// is. It is public only because it names the body of the service's responses.
#[derive(Debug)]
pub struct CallSpan {
    span: Span,
    side: Side,
}

/// Records a call's status on its span. Servers mark only the codes that mean a fault of their
/// own as errors, clients every code but OK, as the RPC semantic conventions say.
impl OnStatus for CallSpan {
    fn on_status(self, code: Code) {
        let Self { span, side } = self;
        span.record("rpc.grpc.status_code", code as i32);
        let error = match side {
            Side::Client => code != Code::Ok,
            Side::Server => matches!(
                code,
                Code::Unknown
                    | Code::DeadlineExceeded
                    | Code::Unimplemented
                    | Code::Internal
                    | Code::Unavailable
                    | Code::DataLoss
            ),
        };
        if error {
            span.record("otel.status_code", "ERROR");
        }
    }
}

#[cfg(test)]
mod tests;
