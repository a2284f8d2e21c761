//! The tracks foundation service: track metadata, the access policies (visibility with a secret
//! token, geoblocking) and the audio itself. Audio is stored in chunks, streamed in and out, and
//! committed whole or not at all. Downloads and deletions write an event to the outbox in the
//! same transaction; the relay delivers them to the counts service.

mod api;
mod model;
mod store;
mod territories;

use foundation_kit::{
    Database, DatabaseSettings,
    db::MigrationScript,
    outbox::{OUTBOX_DDL, Relay, RelaySettings},
    seed::SeedSettings,
};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use service_runtime::{
    GrpcApp, Listeners, ServeError, ServerSettings,
    cli::{ServiceSettings, Shutdown},
    faults::FaultSettings,
    settings::SettingsSource,
    telemetry::LogSettings,
};
use tokio_util::sync::CancellationToken;

pub use store::TracksStore;

pub const SETTINGS: SettingsSource = SettingsSource {
    defaults: include_str!("../defaults.toml"),
    env_prefix: "TRACKS",
};

const MIGRATIONS: &[MigrationScript] = &[
    MigrationScript {
        version: 1,
        description: "tracks",
        sql: include_str!("../migrations/0001_tracks.sql"),
    },
    MigrationScript {
        version: 2,
        description: "outbox",
        sql: OUTBOX_DDL,
    },
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub log: LogSettings,
    pub database: DatabaseSettings,
    pub seed: SeedSettings,
    pub limits: Limits,
    pub audio: AudioSettings,
    pub outbox: RelaySettings,
    #[serde(default)]
    pub faults: FaultSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_batch: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioSettings {
    /// The largest audio file accepted.
    pub max_bytes: u64,
    /// The size of the chunks `ReadAudio` streams.
    pub chunk_bytes: usize,
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
    #[error("cannot prepare the database: {0}")]
    Storage(#[from] foundation_kit::FoundationError),
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
    let mut registry = Registry::default();
    let relay = Relay::new(db.clone(), settings.outbox.clone(), &mut registry)
        .map_err(|error| RunError::Settings(error.to_string()))?;
    let store = TracksStore::new(db, relay.clone());
    if settings.seed.enabled {
        let seed = foundation_kit::seed::Seed::generate(settings.seed.users, settings.seed.tracks);
        store.seed(&seed).await?;
    }
    let swept = store.sweep_orphan_chunks().await?;
    if swept > 0 {
        tracing::info!(
            chunks = swept,
            "removed the audio of uploads that never completed"
        );
    }
    let relay_stop = CancellationToken::new();
    let relay_task = tokio::spawn(relay.run(relay_stop.clone()));
    let api = api::TracksApi::new(store, settings.limits.clone(), settings.audio.clone());
    let app = GrpcApp {
        routes: tonic::service::Routes::new(
            protos::foundation::tracks::v1::tracks_service_server::TracksServiceServer::new(api),
        ),
        service_names: vec!["foundation.tracks.v1.TracksService"],
        descriptor: protos::descriptors::TRACKS,
        registry,
        faults: settings.faults,
        drain_timeout: std::time::Duration::from_millis(settings.server.drain_timeout_ms),
    };
    let served = service_runtime::serve(app, listeners, shutdown).await;
    relay_stop.cancel();
    if let Err(error) = relay_task.await {
        tracing::error!(%error, "outbox relay task failed");
    }
    served?;
    Ok(())
}
