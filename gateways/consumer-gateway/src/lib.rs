//! The consumer domain gateway: web and mobile BFFs call it for the listener's view of tracks
//! and for the listener's commands.
//!
//! A query parses the caller's read mask against `consumer.v1.Track`, plans exactly the
//! foundation calls the mask needs ([`view`]), runs them batched and concurrently under the
//! caller's deadline, applies the consumer's visibility rules ([`rules`]), and trims the view to
//! the mask. A command checks identity and visibility before it reaches the foundation service
//! that owns the data.

mod api;
mod audit;
mod error;
mod rules;
mod twirp;
mod upstreams;
mod view;

use std::sync::Arc;

use authorization::{AuthSettings, Authenticator, Verifier, limit::RateLimitSettings};
use prometheus_client::registry::Registry;
use protos::consumer::v1::consumer_gateway_server::ConsumerGatewayServer;
use serde::{Deserialize, Serialize};
use service_runtime::{
    GrpcApp, Listeners, ServeError, ServerSettings,
    cli::{ServiceSettings, Shutdown},
    idempotency::IdempotencyStore,
    metrics::GrpcMetrics,
    settings::SettingsSource,
    telemetry::LogSettings,
    upstream::UpstreamSettings,
};

pub use api::DEGRADED_FIELDS;
pub use error::GatewayError;
pub use rules::visible;
pub use view::{Data, Src, TrackView};

pub const SETTINGS: SettingsSource = SettingsSource {
    defaults: include_str!("../defaults.toml"),
    env_prefix: "CONSUMER_GATEWAY",
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub log: LogSettings,
    pub auth: AuthSettings,
    pub upstreams: Upstreams,
    pub limits: Limits,
    pub retry: RetrySettings,
    /// Rate limits keyed by the verified subject.
    #[serde(default)]
    pub rate_limit: RateLimitSettings,
    pub idempotency: IdempotencySettings,
}

/// How long command results are kept for retries carrying the same `idempotency-key`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencySettings {
    pub ttl_seconds: u64,
    /// The most keys held at once; beyond it keyed commands are RESOURCE_EXHAUSTED.
    pub max_keys: usize,
}

/// The foundation services this gateway calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstreams {
    pub tracks: UpstreamSettings,
    pub likes: UpstreamSettings,
    pub follows: UpstreamSettings,
    pub counts: UpstreamSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_batch: usize,
    pub deadline_margin_ms: u64,
    pub max_list_rounds: usize,
    /// The largest request message accepted, in bytes.
    pub max_request_bytes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    pub ratio: f64,
    pub max_tokens: f64,
}

impl ServiceSettings for Settings {
    fn server(&self) -> &ServerSettings {
        &self.server
    }
    fn log(&self) -> &LogSettings {
        &self.log
    }
}

impl Settings {
    /// The built-in defaults alone.
    pub fn defaults() -> Self {
        service_runtime::settings::defaults(SETTINGS)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid settings: {0}")]
    Settings(String),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Runs the gateway on the given listeners until `shutdown` resolves.
pub async fn run(
    settings: Settings,
    listeners: Listeners,
    shutdown: Shutdown,
) -> Result<(), RunError> {
    let verifier =
        Verifier::new(&settings.auth).map_err(|error| RunError::Settings(error.to_string()))?;
    let mut registry = Registry::default();
    let client_metrics = GrpcMetrics::register_client(&mut registry);
    let upstreams =
        upstreams::Clients::new(&settings, &client_metrics).map_err(RunError::Settings)?;
    let audit = audit::Audit::register(&mut registry);
    let view = Arc::new(TrackView::new().map_err(RunError::Settings)?);
    let gateway = Arc::new(api::ConsumerApi::new(
        view,
        upstreams,
        audit,
        settings.limits.clone(),
        IdempotencyStore::new(
            std::time::Duration::from_secs(settings.idempotency.ttl_seconds),
            settings.idempotency.max_keys,
        ),
    ));
    let authenticator = Authenticator::new(verifier).with_rate_limits(&settings.rate_limit);
    let server = ConsumerGatewayServer::from_arc(gateway.clone())
        .max_decoding_message_size(settings.limits.max_request_bytes);
    let service =
        tonic::service::interceptor::InterceptedService::new(server, authenticator.clone());
    // Twirp shares the port, the authenticator (and its rate limits) and the implementation.
    let routes = twirp::add_to(
        tonic::service::Routes::new(service),
        gateway,
        authenticator,
        settings.limits.max_request_bytes,
    );
    let app = GrpcApp::new(
        routes,
        "consumer.v1.ConsumerGateway",
        protos::descriptors::CONSUMER,
        &settings.server,
        Default::default(),
        registry,
    );
    service_runtime::serve(app, listeners, shutdown).await?;
    Ok(())
}
