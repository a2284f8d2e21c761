//! The counts foundation service, the read side (CQRS) of the likes, follows and tracks
//! services: likes, reposts and downloads per track, followers and followings per user. It is
//! written only through `ApplyEvents`, which the other services' outbox relays call with their
//! events, or, with `[events] url` set, from the NATS JetStream stream the relays publish to;
//! each event id is applied once, so redelivery is harmless.

mod api;
mod events;
mod store;

use foundation_kit::{
    Database, DatabaseSettings, db::MigrationScript, events::NatsSettings, seed::SeedSettings,
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
    /// The writers' events from NATS JetStream, beside `ApplyEvents`; off when its url is empty.
    #[serde(default)]
    pub events: NatsSettings,
    #[serde(default)]
    pub faults: FaultSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_batch: usize,
    pub max_events: usize,
    /// With mutual TLS, the DNS names, comma separated, one of which an `ApplyEvents` caller's
    /// certificate must carry (the writers' relays); empty: every caller the client CA vouches
    /// for.
    #[serde(default)]
    pub apply_events_clients: String,
}

impl Limits {
    /// The names of [`Limits::apply_events_clients`].
    pub fn apply_events_clients(&self) -> Vec<String> {
        self.apply_events_clients
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect()
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
    let db = Database::connect(&settings.database, MIGRATIONS).await?;
    let mut registry = Registry::default();
    let store = CountsStore::new(db);
    if let Some(seed) = service::seed(&settings.seed) {
        store.seed(&seed).await?;
    }
    let metrics = api::EventMetrics::register(&mut registry);
    let consumer_stop = tokio_util::sync::CancellationToken::new();
    let consumer = settings.events.enabled().then(|| {
        tokio::spawn(events::consume(
            settings.events.clone(),
            store.clone(),
            metrics.clone(),
            consumer_stop.clone(),
        ))
    });
    let app = GrpcApp::new(
        tonic::service::Routes::new(
            protos::foundation::counts::v1::counts_service_server::CountsServiceServer::new(
                api::CountsApi::new(store, settings.limits.clone(), metrics),
            ),
        ),
        "foundation.counts.v1.CountsService",
        protos::descriptors::COUNTS,
        &settings.server,
        settings.faults,
        registry,
    );
    let served = service::serve(app, listeners, shutdown, None).await;
    consumer_stop.cancel();
    if let Some(consumer) = consumer
        && let Err(error) = consumer.await
    {
        tracing::error!(%error, "the NATS consumer task failed");
    }
    served
}
