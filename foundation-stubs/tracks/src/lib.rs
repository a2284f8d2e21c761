//! The tracks foundation service: track metadata, the access policies (visibility with a secret
//! token, geoblocking) and the audio itself. Audio is stored in chunks, streamed in and out, and
//! committed whole or not at all. Downloads and deletions write an event to the outbox in the
//! same transaction; the relay delivers them to the counts service.

mod api;
mod model;
mod store;
mod upload;

use foundation_kit::{
    Database, DatabaseSettings, FoundationError,
    db::MigrationScript,
    outbox::{DEAD_LETTERS_DDL, OUTBOX_CLAIMS_DDL, OUTBOX_DDL, Relay, RelaySettings},
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
    streams::{StreamLimits, StreamSettings},
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
    MigrationScript {
        version: 3,
        description: "outbox dead letters",
        sql: DEAD_LETTERS_DDL,
    },
    MigrationScript {
        version: 4,
        description: "staged uploads",
        sql: include_str!("../migrations/0004_staged_uploads.sql"),
    },
    MigrationScript {
        version: 5,
        description: "outbox claims",
        sql: OUTBOX_CLAIMS_DDL,
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
    pub uploads: UploadSettings,
    /// The bounds of `ReadAudio` streams.
    pub downloads: StreamSettings,
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

/// Uploads in progress and the sweep of those that will never complete. Replicas share the
/// database, so the sweep must tell another replica's live upload from a dead one: each upload
/// touches its row with every chunk, one idle for `idle_timeout_ms` fails, and only uploads idle
/// for `stale_after_ms` (longer) are swept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadSettings {
    /// An upload that sends nothing for this long fails and stores nothing.
    pub idle_timeout_ms: u64,
    /// The staged audio of an upload idle for this long is removed; more than `idle_timeout_ms`.
    pub stale_after_ms: u64,
    /// How often the sweep runs, after the one at start-up.
    pub sweep_interval_ms: u64,
}

impl UploadSettings {
    fn check(&self) -> Result<(), FoundationError> {
        if self.idle_timeout_ms == 0 || self.stale_after_ms <= self.idle_timeout_ms {
            return Err(FoundationError::FailedPrecondition(format!(
                "uploads.stale_after_ms ({}) must exceed uploads.idle_timeout_ms ({}), which must not be 0",
                self.stale_after_ms, self.idle_timeout_ms
            )));
        }
        Ok(())
    }
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
    settings.uploads.check()?;
    let db = Database::connect(&settings.database, MIGRATIONS).await?;
    let mut registry = Registry::default();
    let relay = Relay::new(db.clone(), settings.outbox.clone(), &mut registry)?;
    let downloads = StreamLimits::new(&settings.downloads, &mut registry);
    let store = TracksStore::new(db, relay.clone());
    if let Some(seed) = service::seed(&settings.seed) {
        store.seed(&seed).await?;
    }
    upload::sweep(&store, &settings.uploads).await;
    let sweep_stop = CancellationToken::new();
    let sweeper = tokio::spawn(upload::sweep_periodically(
        store.clone(),
        settings.uploads.clone(),
        sweep_stop.clone(),
    ));
    let app = GrpcApp::new(
        tonic::service::Routes::new(
            protos::foundation::tracks::v1::tracks_service_server::TracksServiceServer::new(
                api::TracksApi::new(
                    store,
                    settings.limits.clone(),
                    settings.audio.clone(),
                    settings.uploads.clone(),
                    downloads,
                ),
            ),
        ),
        "foundation.tracks.v1.TracksService",
        protos::descriptors::TRACKS,
        &settings.server,
        settings.faults,
        registry,
    );
    let served = service::serve(app, listeners, shutdown, Some(relay)).await;
    sweep_stop.cancel();
    if let Err(error) = sweeper.await {
        tracing::error!(%error, "upload sweep task failed");
    }
    served
}
