//! The consumer domain gateway: web and mobile BFFs call it for the listener's view of tracks
//! and for the listener's commands.
//!
//! A query parses the caller's read mask against `consumer.v1.Track`, plans exactly the
//! foundation calls the mask needs ([`view`]), runs them batched and concurrently under the
//! caller's deadline, applies the consumer's visibility rules ([`rules`]), and trims the view to
//! the mask. A command checks identity and visibility before it reaches the foundation service
//! that owns the data.

mod api;
mod error;
mod rules;
mod twirp;
mod upstreams;
mod view;

use std::sync::Arc;

use authorization::{
    AuthSettings, Authenticator, Verifier, client::ClientSettings, limit::RateLimitSettings,
};
use gateway_kit::{
    AllowedMaskSettings, Audit, BudgetSettings, CallSettings, CursorSettings, Cursors, Fanout,
    FanoutSettings, Governance, IdempotencySettings,
};
use prometheus_client::registry::Registry;
use protos::consumer::v1::consumer_gateway_server::ConsumerGatewayServer;
use serde::{Deserialize, Serialize};
use service_runtime::{
    GrpcApp, Listeners, ServeError, ServerSettings,
    cli::{ServiceSettings, Shutdown},
    faults::FaultSettings,
    metrics::GrpcMetrics,
    settings::SettingsSource,
    streams::{StreamLimits, StreamSettings},
    telemetry::LogSettings,
    upstream::UpstreamSettings,
};

pub use error::GatewayError;
pub use gateway_kit::DEGRADED_FIELDS;
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
    /// How upstream calls share the caller's deadline, and read retries.
    pub calls: CallSettings,
    /// Rate limits keyed by the verified subject.
    #[serde(default)]
    pub rate_limit: RateLimitSettings,
    pub idempotency: IdempotencySettings,
    /// The key page tokens are sealed with.
    #[serde(default)]
    pub cursors: CursorSettings,
    /// The bounds of `DownloadTrack` streams.
    pub downloads: StreamSettings,
    /// Which BFF client makes a call.
    #[serde(default)]
    pub clients: ClientSettings,
    /// The masks each client may read with.
    #[serde(default)]
    pub allowed_masks: AllowedMaskSettings,
    /// The most a read of each client may cost.
    #[serde(default)]
    pub fanout_budget: BudgetSettings,
    /// How concurrent requests share foundation work.
    #[serde(default)]
    pub fanout: FanoutSettings,
    /// Fault injection by method name, off by default.
    #[serde(default)]
    pub faults: FaultSettings,
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
    pub max_list_rounds: usize,
    /// The largest request message accepted, in bytes.
    pub max_request_bytes: usize,
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
    let verifier = Verifier::start(&settings.auth)
        .await
        .map_err(|error| RunError::Settings(error.to_string()))?;
    let mut registry = Registry::default();
    let client_metrics = GrpcMetrics::register_client(&mut registry);
    let fanout = Fanout::register(&settings.fanout, &mut registry).map_err(RunError::Settings)?;
    let upstreams =
        upstreams::Clients::new(&settings, &client_metrics, &fanout).map_err(RunError::Settings)?;
    let audit = Audit::register(&mut registry);
    let view = Arc::new(TrackView::new().map_err(RunError::Settings)?);
    let cursors =
        Cursors::new(&settings.cursors).map_err(|error| RunError::Settings(error.to_string()))?;
    let downloads = StreamLimits::new(&settings.downloads, &mut registry);
    let (governance, client_names) = Governance::start(
        view.schema(),
        &settings.clients,
        &settings.allowed_masks,
        &settings.fanout_budget,
        &mut registry,
    )
    .map_err(RunError::Settings)?;
    let gateway = Arc::new(api::ConsumerApi {
        view,
        clients: Arc::new(upstreams),
        audit,
        limits: settings.limits.clone(),
        idempotency: settings.idempotency.store().map_err(RunError::Settings)?,
        cursors,
        downloads,
        governance,
    });

    let authenticator = Authenticator::new(verifier)
        .with_rate_limits(&settings.rate_limit)
        .with_clients(client_names);
    let server = ConsumerGatewayServer::from_arc(gateway.clone())
        .max_decoding_message_size(settings.limits.max_request_bytes);
    let service =
        tonic::service::interceptor::InterceptedService::new(server, authenticator.clone());
    // Twirp shares the port, the authenticator (and its rate limits) and the implementation;
    // both wait for a reload of the key set that a token's unknown kid calls for.
    let key_wait = authenticator.clone();
    let routes = twirp::add_to(
        tonic::service::Routes::new(service),
        gateway,
        authenticator,
        settings.limits.max_request_bytes,
    );
    let routes = key_wait.await_keys(routes);
    let app = GrpcApp::new(
        routes,
        "consumer.v1.ConsumerGateway",
        protos::descriptors::CONSUMER,
        &settings.server,
        settings.faults,
        registry,
    );
    service_runtime::serve(app, listeners, shutdown).await?;
    Ok(())
}
