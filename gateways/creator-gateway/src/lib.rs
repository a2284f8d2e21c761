//! The creator domain gateway: the owner's view of their own tracks (`creator.v1.Track`), and
//! the owner's commands (upload, update, delete), for the Creator team's BFFs.
//!
//! Rules every call follows:
//!
//! - **A user is required.** The token must carry `sub`; an anonymous token is
//!   `UNAUTHENTICATED`.
//! - **Only your own tracks exist.** A track owned by someone else is `NOT_FOUND` with exactly
//!   the message of a missing one, for reads and commands alike.
//! - **The mask decides the fanout** ([`view`]): `tracks` is always called (it says who owns
//!   the track), `counts` only when the mask touches `stats`, once per request or page.
//! - **Failures:** `tracks` failing fails the call (`UNAVAILABLE` or `DEADLINE_EXCEEDED`), since
//!   ownership cannot be checked without it. `counts` failing on a read degrades it: the
//!   response is OK, `stats` is unset, and the `x-degraded-fields` response metadata lists the
//!   affected mask paths.
//! - **Deadlines:** every upstream call ends by the caller's `grpc-timeout` less a margin,
//!   capped by the upstream's own timeout; calls made one after another share that deadline.
//!   Reads retry once on `UNAVAILABLE` within it, under a retry budget; commands never retry
//!   (the gateway kit's upstream caller, the same in both gateways).
//! - **Deletion:** `tracks.DeleteTrack` removes the track and its audio and announces
//!   `TrackDeleted` to counts through its outbox; counts then drops the track's counters and
//!   ignores any later event about it. The gateway then removes the track's likes and reposts
//!   with `likes.DeleteTrackReactions` (which emits no events: the deletion already settled the
//!   counts).

mod api;
mod error;
mod twirp;
pub mod update;
mod upload;
mod upstream;
pub mod view;

use authorization::{
    AuthSettings, Authenticator, Verifier, client::ClientSettings, limit::RateLimitSettings,
};
use gateway_kit::{
    AllowedMaskSettings, Audit, BudgetSettings, CallSettings, CursorSettings, Cursors, Fanout,
    FanoutSettings, Governance, IdempotencySettings,
};
use prometheus_client::registry::Registry;
use protos::creator::v1::creator_gateway_server::CreatorGatewayServer;
use serde::{Deserialize, Serialize};
use service_runtime::{
    GrpcApp, Listeners, ServeError, ServerSettings,
    cli::{ServiceSettings, Shutdown},
    faults::FaultSettings,
    metrics::GrpcMetrics,
    settings::SettingsSource,
    telemetry::LogSettings,
    upstream::UpstreamSettings,
};

pub use error::GatewayError;

pub const SETTINGS: SettingsSource = SettingsSource {
    defaults: include_str!("../defaults.toml"),
    env_prefix: "CREATOR_GATEWAY",
};

/// The fully qualified name of the API this gateway serves.
pub const SERVICE_NAME: &str = "creator.v1.CreatorGateway";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub log: LogSettings,
    pub auth: AuthSettings,
    pub upstreams: Upstreams,
    /// How upstream calls share the caller's deadline, and read retries.
    pub calls: CallSettings,
    pub upload: UploadSettings,
    /// Rate limits keyed by the verified subject.
    #[serde(default)]
    pub rate_limit: RateLimitSettings,
    pub idempotency: IdempotencySettings,
    /// The key page tokens are sealed with.
    #[serde(default)]
    pub cursors: CursorSettings,
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
    #[serde(default)]
    pub faults: FaultSettings,
}

/// The foundation services this gateway calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstreams {
    pub tracks: UpstreamSettings,
    pub likes: UpstreamSettings,
    pub counts: UpstreamSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadSettings {
    /// The largest audio file accepted. The gateway enforces it itself, so that an oversized
    /// upload fails as soon as it crosses the cap, whatever the tracks service allows.
    pub max_bytes: u64,
    /// The largest inbound gRPC message: the gateway holds one chunk at a time, so this bounds
    /// the memory of an upload.
    pub max_chunk_bytes: usize,
    /// The longest an upload may take, whatever the caller's deadline allows.
    pub timeout_ms: u64,
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

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid auth settings: {0}")]
    Auth(#[from] authorization::token::KeyError),
    #[error("invalid upstream settings: {0}")]
    Upstream(String),
    #[error("invalid settings: {0}")]
    Settings(String),
    #[error("the creator view is unusable: {0}")]
    View(#[from] view::ViewError),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Runs the gateway on the given listeners until `shutdown` resolves.
pub async fn run(
    settings: Settings,
    listeners: Listeners,
    shutdown: Shutdown,
) -> Result<(), RunError> {
    let verifier = Verifier::start(&settings.auth).await?;
    let view = view::CreatorView::load()?;
    let mut registry = Registry::default();
    let client_metrics = GrpcMetrics::register_client(&mut registry);
    let fanout = Fanout::register(&settings.fanout, &mut registry).map_err(RunError::Settings)?;
    let upstreams =
        upstream::Clients::new(&settings, &client_metrics, &fanout).map_err(RunError::Upstream)?;
    let audit = Audit::register(&mut registry);
    let (governance, client_names) = Governance::start(
        view.schema(),
        &settings.clients,
        &settings.allowed_masks,
        &settings.fanout_budget,
        &mut registry,
    )
    .map_err(RunError::Settings)?;
    let api = std::sync::Arc::new(api::CreatorApi::new(
        view,
        upstreams,
        settings.upload.clone(),
        settings.idempotency.store().map_err(RunError::Settings)?,
        audit,
        Cursors::new(&settings.cursors).map_err(|error| RunError::Settings(error.to_string()))?,
        governance,
    ));
    let authenticator = Authenticator::new(verifier)
        .with_rate_limits(&settings.rate_limit)
        .with_clients(client_names);
    let server = CreatorGatewayServer::from_arc(api.clone())
        .max_decoding_message_size(settings.upload.max_chunk_bytes.saturating_add(1024));
    let routes = tonic::service::Routes::new(tonic::service::interceptor::InterceptedService::new(
        server,
        authenticator.clone(),
    ));
    // Twirp shares the port, the authenticator (and its rate limits) and the implementation;
    // both wait for a reload of the key set that a token's unknown kid calls for.
    let key_wait = authenticator.clone();
    let routes = twirp::add_to(
        routes,
        api,
        authenticator,
        settings.upload.max_chunk_bytes.saturating_add(1024),
    );
    let routes = key_wait.await_keys(routes);
    let app = GrpcApp::new(
        routes,
        SERVICE_NAME,
        protos::descriptors::CREATOR,
        &settings.server,
        settings.faults,
        registry,
    );
    service_runtime::serve(app, listeners, shutdown).await?;
    Ok(())
}
