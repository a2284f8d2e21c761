//! Logging and tracing with `tracing-subscriber`: log lines pretty for a person at a terminal,
//! JSON in containers; spans bridged to OpenTelemetry and exported over OTLP when an endpoint
//! is configured, and their trace context propagated between services as W3C `traceparent`
//! headers either way (see [`crate::otel`]).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use serde::{Deserialize, Serialize};
use tracing_subscriber::{
    EnvFilter, Layer, filter::Targets, fmt, prelude::*, registry::LookupSpan,
};

use crate::otel::PropagationLayer;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info,sqlx=warn`; `RUST_LOG` wins when it is set.
    pub filter: String,
    /// Where spans are exported over OTLP/gRPC, such as `http://otel-collector:4317`; empty:
    /// no export (spans still carry trace ids into log lines and to upstream services).
    #[serde(default)]
    pub otlp_endpoint: String,
    /// The `service.name` of the exported spans.
    #[serde(default)]
    pub service_name: String,
}

impl LogSettings {
    /// Log settings without span export.
    pub fn new(format: LogFormat, filter: impl Into<String>, service_name: &str) -> Self {
        Self {
            format,
            filter: filter.into(),
            otlp_endpoint: String::new(),
            service_name: service_name.to_owned(),
        }
    }
}

/// The installed tracer provider; [`Telemetry::shutdown`] exports the spans still buffered.
#[derive(Debug)]
#[must_use = "shut telemetry down at exit, or buffered spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes and stops span export. Call it inside the Tokio runtime that [`init`] ran in,
    /// before that runtime stops.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("warning: cannot flush spans at exit: {error}");
        }
    }
}

/// Installs the global subscriber and the W3C trace-context propagator. When
/// `settings.otlp_endpoint` is set, spans are OpenTelemetry spans exported there in batches;
/// when it is empty (or the exporter cannot be built), nothing would read them, and spans keep
/// only their trace context ([`crate::otel::PropagationLayer`]): trace ids still reach log lines
/// and upstream services, but no span is built to be dropped. The OTLP exporter is a tonic
/// client: call this inside a Tokio runtime. Later calls (several services in one process)
/// keep the first subscriber.
pub fn init(settings: &LogSettings) -> Telemetry {
    if settings.otlp_endpoint.is_empty() {
        return install(settings, None);
    }
    match opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(settings.otlp_endpoint.clone())
        .build()
    {
        Ok(exporter) => {
            let provider = SdkTracerProvider::builder()
                .with_resource(resource(settings))
                .with_batch_exporter(exporter)
                .build();
            install(settings, Some(provider))
        }
        Err(error) => {
            eprintln!(
                "warning: cannot export spans to {}: {error}",
                settings.otlp_endpoint
            );
            install(settings, None)
        }
    }
}

/// The resource every exported span carries: the service's name.
fn resource(settings: &LogSettings) -> Resource {
    let builder = Resource::builder();
    if settings.service_name.is_empty() {
        builder.build()
    } else {
        builder
            .with_service_name(settings.service_name.clone())
            .build()
    }
}

/// [`init`] with a tracer provider of the caller's (tests use an in-memory exporter): spans
/// are OpenTelemetry spans handed to it.
pub fn init_with_provider(settings: &LogSettings, provider: SdkTracerProvider) -> Telemetry {
    install(settings, Some(provider))
}

/// The layer that gives the RPC spans their trace context: the OpenTelemetry layer, with the
/// spans built for `provider`, or without one the propagation layer.
/// (One boxed layer rather than two optional ones: an absent optional layer takes part in
/// tracing-subscriber's level hints, and beside a filtered layer it can turn the spans off.)
pub(crate) fn span_layer<S>(provider: Option<&SdkTracerProvider>) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
{
    // The log filter decides what is printed; the RPC spans are traced whatever it says.
    let spans = Targets::new()
        .with_target(env!("CARGO_CRATE_NAME"), tracing::Level::INFO)
        .with_default(tracing::Level::WARN);
    // Spans carry the RPC attributes only: busy and idle time is measured on every poll of an
    // instrumented future, and the thread, source location and target are added to every
    // span, which together cost a few percent of a gateway's CPU for attributes no one reads.
    // Nor is a span's OpenTelemetry context made current on every poll: nothing here reads
    // the current OpenTelemetry context (the trace layers take a span's own with
    // `OpenTelemetrySpanExt::context`), and the activation locks the span's data and pushes
    // and pops a thread-local stack on every enter and exit.
    match provider {
        Some(provider) => Box::new(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("service-runtime"))
                .with_tracked_inactivity(false)
                .with_context_activation(false)
                .with_threads(false)
                .with_location(false)
                .with_target(false)
                .with_filter(spans),
        ),
        None => Box::new(PropagationLayer.with_filter(spans)),
    }
}

/// Installs the subscriber, with span export to `provider` when there is one.
fn install(settings: &LogSettings, provider: Option<SdkTracerProvider>) -> Telemetry {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let otel = span_layer(provider.as_ref());
    let result = match settings.format {
        LogFormat::Pretty => tracing_subscriber::registry()
            .with(otel)
            .with(fmt::layer().compact().with_filter(filter))
            .try_init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(otel)
            // The current span and the span list carry the server span's `trace_id` field.
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_filter(filter),
            )
            .try_init(),
    };
    match result {
        Ok(()) => {
            if let Some(provider) = &provider {
                opentelemetry::global::set_tracer_provider(provider.clone());
            }
            Telemetry { provider }
        }
        // A second service in the same process finds the subscriber already installed; that
        // is fine, and its provider is not needed.
        Err(_) => {
            if let Some(provider) = provider {
                drop(provider.shutdown());
            }
            Telemetry { provider: None }
        }
    }
}
