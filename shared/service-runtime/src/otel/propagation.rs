//! Trace context without span export: when no OTLP endpoint is configured, nothing reads an
//! OpenTelemetry span, yet every span would still be built by the SDK (ids, attributes, events,
//! timestamps) and dropped at its end. [`PropagationLayer`] takes the OpenTelemetry layer's
//! place then and keeps only what leaves the process: each `tracing` span's W3C span context
//! (trace id, span id, flags and trace state), which the trace layers of [`crate::otel`] put in
//! log lines and send on in `traceparent`.
//!
//! A span gets its parent's trace id, flags and trace state and a span id of its own; a span
//! without a parent starts a sampled trace, as the SDK's default sampler does, so that a
//! service downstream that exports keeps it. A server span joins its caller's trace with
//! [`join`].

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use tracing::{Span, Subscriber, span};
use tracing_subscriber::{Registry, layer::Context, registry::LookupSpan};

/// A `tracing` layer that gives every span it sees a W3C span context, kept in the span's
/// extensions.
#[derive(Debug, Clone, Copy, Default)]
pub struct PropagationLayer;

/// The span context of one span, as the propagation layer keeps it.
#[derive(Debug, Clone)]
struct Ids(SpanContext);

/// Random ids, never zero, which W3C trace context reserves for "invalid".
fn new_trace_id() -> TraceId {
    TraceId::from(fastrand::u128(1..))
}

fn new_span_id() -> SpanId {
    SpanId::from(fastrand::u64(1..))
}

impl<S> tracing_subscriber::Layer<S> for PropagationLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, _attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let parent = span
            .parent()
            .and_then(|parent| parent.extensions().get::<Ids>().map(|ids| ids.0.clone()));
        let context = match parent {
            Some(parent) => SpanContext::new(
                parent.trace_id(),
                new_span_id(),
                parent.trace_flags(),
                false,
                parent.trace_state().clone(),
            ),
            None => SpanContext::new(
                new_trace_id(),
                new_span_id(),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
        };
        span.extensions_mut().insert(Ids(context));
    }
}

/// Runs `f` on the span context the propagation layer keeps for `span`; `None` when the layer
/// is not installed or did not see the span.
fn with_context<R>(span: &Span, f: impl FnOnce(&mut SpanContext) -> R) -> Option<R> {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<Registry>()?;
        let span = registry.span(id)?;
        let mut extensions = span.extensions_mut();
        let ids = extensions.get_mut::<Ids>()?;
        Some(f(&mut ids.0))
    })
    .flatten()
}

/// The span context of `span`, when the propagation layer keeps it.
pub(super) fn span_context(span: &Span) -> Option<SpanContext> {
    with_context(span, |context| context.clone())
}

/// Joins `span` to the trace of `remote` (its caller's span, from `traceparent`) when that is
/// valid: the span keeps its own id and takes the trace id, flags and state. The span's trace
/// id, or `None` when the propagation layer does not keep `span`'s context. Spans opened inside
/// `span` afterwards join the trace too.
pub(super) fn join(span: &Span, remote: &SpanContext) -> Option<TraceId> {
    with_context(span, |context| {
        if remote.is_valid() {
            *context = SpanContext::new(
                remote.trace_id(),
                context.span_id(),
                remote.trace_flags(),
                false,
                remote.trace_state().clone(),
            );
        }
        context.trace_id()
    })
}
