//! The counts foundation service, the read side (CQRS) of the likes, follows and tracks
//! services: likes, reposts and downloads per track, followers and followings per user. It is
//! written only through `ApplyEvents`, which the other services' outbox relays call with their
//! events; each event id is applied once, so redelivery is harmless.

mod api;
mod store;

use foundation_kit::{Database, DatabaseSettings, db::MigrationScript, seed::SeedSettings};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use service_runtime::{
    GrpcApp, Listeners, ServeError, ServerSettings,
    cli::{ServiceSettings, Shutdown},
    faults::FaultSettings,
    settings::SettingsSource,
    telemetry::LogSettings,
};

pub use store::CountsStore;

pub const SETTINGS: SettingsSource = SettingsSource {
    defaults: include_str!("../defaults.toml"),
    env_prefix: "COUNTS",
};

const MIGRATIONS: &[MigrationScript] = &[MigrationScript {
    version: 1,
    description: "counts",
    sql: include_str!("../migrations/0001_counts.sql"),
}];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub log: LogSettings,
    pub database: DatabaseSettings,
    pub seed: SeedSettings,
    pub limits: Limits,
    #[serde(default)]
    pub faults: FaultSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_batch: usize,
    pub max_events: usize,
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
        service_runtime::settings::load_settings_from(SETTINGS, None, [])
            .expect("the built-in defaults are valid")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid settings: {0}")]
    Settings(String),
    #[error("cannot open the database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Runs the service on the given listeners until `shutdown` resolves.
pub async fn run(
    settings: Settings,
    listeners: Listeners,
    shutdown: Shutdown,
) -> Result<(), RunError> {
    service_runtime::faults::validate(&settings.faults).map_err(RunError::Settings)?;
    let db = Database::connect(&settings.database, MIGRATIONS).await?;
    let store = CountsStore::new(db);
    if settings.seed.enabled {
        let seed = foundation_kit::seed::Seed::generate(settings.seed.users, settings.seed.tracks);
        store.seed(&seed).await?;
    }
    let api = api::CountsApi::new(store, settings.limits.clone());
    let app = GrpcApp {
        routes: tonic::service::Routes::new(
            protos::foundation::counts::v1::counts_service_server::CountsServiceServer::new(api),
        ),
        service_names: vec!["foundation.counts.v1.CountsService"],
        descriptor: protos::descriptors::COUNTS,
        registry: Registry::default(),
        faults: settings.faults,
        drain_timeout: std::time::Duration::from_millis(settings.server.drain_timeout_ms),
    };
    service_runtime::serve(app, listeners, shutdown).await?;
    Ok(())
}
