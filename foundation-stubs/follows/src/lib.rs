//! The follows foundation service: which users follow which users. Every change is
//! idempotent (following twice leaves one follow and emits one event) and writes its event to the
//! outbox in the same transaction; the relay delivers the events to the counts service.

mod api;
mod store;

use foundation_kit::{
    Database, DatabaseSettings,
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
    telemetry::LogSettings,
};

pub use store::FollowsStore;

pub const SETTINGS: SettingsSource = SettingsSource {
    defaults: include_str!("../defaults.toml"),
    env_prefix: "FOLLOWS",
};

const MIGRATIONS: &[MigrationScript] = &[
    MigrationScript {
        version: 1,
        description: "follows",
        sql: include_str!("../migrations/0001_follows.sql"),
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
    pub outbox: RelaySettings,
    #[serde(default)]
    pub faults: FaultSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_batch: usize,
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
    let store = FollowsStore::new(db, relay.clone());
    if let Some(seed) = service::seed(&settings.seed) {
        store.seed(&seed).await?;
    }
    let app = GrpcApp::new(
        tonic::service::Routes::new(
            protos::foundation::follows::v1::follows_service_server::FollowsServiceServer::new(
                api::FollowsApi::new(store, settings.limits.clone()),
            ),
        ),
        "foundation.follows.v1.FollowsService",
        protos::descriptors::FOLLOWS,
        &settings.server,
        settings.faults,
        registry,
    );
    service::serve(app, listeners, shutdown, Some(relay)).await
}
