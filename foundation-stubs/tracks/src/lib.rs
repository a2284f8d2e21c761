//! The tracks foundation service: track metadata, the access policies (visibility with a secret
//! token, geoblocking) and the audio itself. Audio is stored in chunks, streamed in and out, and
//! committed whole or not at all. Downloads and deletions write an event to the outbox in the
//! same transaction; the relay delivers them to the counts service.

mod api;
mod model;
mod store;
mod upload;

use foundation_kit::{
    Database, DatabaseSettings,
    db::MigrationScript,
    outbox::{OUTBOX_DDL, Relay, RelaySettings},
    seed::SeedSettings,
    service,
};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use service_runtime::{
    GrpcApp, Listeners, ServerSettings,
    cli::{ServiceSettings, Shutdown},
    faults::FaultSettings,
    settings::SettingsSource,
    telemetry::LogSettings,
};

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
        service_runtime::settings::defaults(SETTINGS)
    }
}

pub use foundation_kit::service::RunError;

/// Runs the service on the given listeners until `shutdown` resolves.
pub async fn run(
    settings: Settings,
    listeners: Listeners,
    shutdown: Shutdown,
) -> Result<(), RunError> {
    let db = Database::connect(&settings.database, MIGRATIONS).await?;
    let mut registry = Registry::default();
    let relay = Relay::new(db.clone(), settings.outbox.clone(), &mut registry)?;
    let store = TracksStore::new(db, relay.clone());
    if let Some(seed) = service::seed(&settings.seed) {
        store.seed(&seed).await?;
    }
    let swept = store.sweep_orphan_chunks().await?;
    if swept > 0 {
        tracing::info!(
            chunks = swept,
            "removed the audio of uploads that never completed"
        );
    }
    let app = GrpcApp::new(
        tonic::service::Routes::new(
            protos::foundation::tracks::v1::tracks_service_server::TracksServiceServer::new(
                api::TracksApi::new(store, settings.limits.clone(), settings.audio.clone()),
            ),
        ),
        "foundation.tracks.v1.TracksService",
        protos::descriptors::TRACKS,
        &settings.server,
        settings.faults,
        registry,
    );
    service::serve(app, listeners, shutdown, Some(relay)).await
}
