//! The transactional outbox: a service writes its change and the event describing it in one
//! transaction, and a relay delivers stored events to the counts service at least once. Counts
//! applies each event once (keyed by its id), so delivery can be retried freely: nothing that
//! was acknowledged to a caller is lost, and nothing is counted twice.

use std::{sync::Arc, time::Duration};

use prometheus_client::{metrics::counter::Counter, registry::Registry};
use prost::Message;
use protos::foundation::counts::v1::{
    ApplyEventsRequest, Event, counts_service_client::CountsServiceClient, event,
};
use serde::{Deserialize, Serialize};
use service_runtime::{
    metrics::GrpcMetrics,
    tls::ClientTlsSettings,
    upstream::{SettingKeys, UpstreamChannel, UpstreamSettings, channel_with},
};
use sqlx::{AnyConnection, Row};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{Database, FoundationError, ids, time};

/// The outbox table; every service that publishes events includes it in its migrations.
pub const OUTBOX_DDL: &str = "CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    create_time_us BIGINT NOT NULL,
    payload BYTEA NOT NULL
);";

/// Stores an event in the caller's transaction and returns its id.
pub async fn enqueue(
    connection: &mut AnyConnection,
    kind: event::Kind,
) -> Result<String, sqlx::Error> {
    let id = ids::new_event_id();
    let now = time::now_us();
    let event = Event {
        id: id.clone(),
        occur_time: Some(time::timestamp(now)),
        kind: Some(kind),
    };
    sqlx::query("INSERT INTO outbox (id, create_time_us, payload) VALUES ($1, $2, $3)")
        .bind(id.clone())
        .bind(now)
        .bind(event.encode_to_vec())
        .execute(connection)
        .await?;
    Ok(id)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySettings {
    /// The counts service, e.g. `http://127.0.0.1:50064`.
    pub counts_url: String,
    /// Events per delivery call.
    pub batch_size: u32,
    /// How often the relay looks for events when no write woke it.
    pub poll_interval_ms: u64,
    /// The longest wait between attempts while counts is unreachable.
    pub max_backoff_ms: u64,
    /// The deadline of one delivery call.
    pub timeout_ms: u64,
    /// How an `https://` counts service is verified, and the client certificate for mutual TLS.
    #[serde(default)]
    pub tls: ClientTlsSettings,
}

#[derive(Debug, Clone)]
struct RelayMetrics {
    delivered: Counter,
    failures: Counter,
}

/// Delivers outbox events to counts.
#[derive(Debug, Clone)]
pub struct Relay {
    db: Database,
    client: CountsServiceClient<UpstreamChannel>,
    settings: RelaySettings,
    wake: Arc<Notify>,
    metrics: RelayMetrics,
}

impl Relay {
    pub fn new(
        db: Database,
        settings: RelaySettings,
        registry: &mut Registry,
    ) -> Result<Self, FoundationError> {
        // The shared upstream channel: delivery calls are traced, counted
        // (`grpc_client_handled_total`) and pass a circuit breaker like a gateway's calls.
        let upstream = UpstreamSettings {
            url: settings.counts_url.clone(),
            timeout_ms: settings.timeout_ms,
            connect_timeout_ms: 2000,
            breaker_failures: 5,
            breaker_cooldown_ms: 1000,
            tls: settings.tls.clone(),
        };
        let keys = SettingKeys {
            url: "outbox.counts_url",
            tls: "outbox.tls",
        };
        let client_metrics = GrpcMetrics::register_client(registry);
        let channel = channel_with("counts", keys, &upstream, &client_metrics)
            .map_err(FoundationError::FailedPrecondition)?;
        let metrics = RelayMetrics {
            delivered: Counter::default(),
            failures: Counter::default(),
        };
        registry.register(
            "outbox_delivered_events",
            "Outbox events delivered to the counts service",
            metrics.delivered.clone(),
        );
        registry.register(
            "outbox_delivery_failures",
            "Failed attempts to deliver outbox events",
            metrics.failures.clone(),
        );
        Ok(Self {
            db,
            client: CountsServiceClient::new(channel),
            settings,
            wake: Arc::new(Notify::new()),
            metrics,
        })
    }

    /// Call after committing a transaction that enqueued events, so they leave at once.
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// Delivers one batch; returns how many events left the outbox.
    pub async fn deliver_batch(&self) -> Result<usize, FoundationError> {
        let rows = sqlx::query("SELECT id, payload FROM outbox ORDER BY id LIMIT $1")
            .bind(i64::from(self.settings.batch_size.max(1)))
            .fetch_all(&self.db.pool)
            .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut ids = Vec::with_capacity(rows.len());
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get("id")?;
            let payload: Vec<u8> = row.try_get("payload")?;
            let event = Event::decode(payload.as_slice())
                .map_err(|error| FoundationError::Corrupt(format!("outbox event {id}: {error}")))?;
            ids.push(id);
            events.push(event);
        }
        let mut request = tonic::Request::new(ApplyEventsRequest { events });
        request.set_timeout(Duration::from_millis(self.settings.timeout_ms));
        self.client.clone().apply_events(request).await?;
        let mut tx = self.db.pool.begin().await?;
        for id in &ids {
            sqlx::query("DELETE FROM outbox WHERE id = $1")
                .bind(id.clone())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.metrics.delivered.inc_by(ids.len() as u64);
        Ok(ids.len())
    }

    /// Delivers until `stop` is cancelled, backing off exponentially while counts fails.
    pub async fn run(self, stop: CancellationToken) {
        let initial_backoff = Duration::from_millis(50);
        let max_backoff = Duration::from_millis(self.settings.max_backoff_ms.max(50));
        let poll = Duration::from_millis(self.settings.poll_interval_ms.max(1));
        let mut backoff = initial_backoff;
        loop {
            let wait = match self.deliver_batch().await {
                Ok(delivered) if delivered == self.settings.batch_size.max(1) as usize => {
                    backoff = initial_backoff;
                    continue;
                }
                Ok(_) => {
                    backoff = initial_backoff;
                    poll
                }
                Err(error) => {
                    self.metrics.failures.inc();
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "outbox delivery failed");
                    let wait = backoff;
                    backoff = (backoff * 2).min(max_backoff);
                    wait
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.wake.notified(), if backoff == initial_backoff => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}
