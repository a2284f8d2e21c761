//! The transactional outbox: a service writes its change and the event describing it in one
//! transaction, and a relay delivers stored events to the counts service at least once. Counts
//! applies each event once (keyed by its id), so delivery can be retried freely: nothing that
//! was acknowledged to a caller is lost, and nothing is counted twice.
//!
//! An event counts refuses for good (a definitive answer: `INVALID_ARGUMENT`,
//! `FAILED_PRECONDITION`, `NOT_FOUND`), or whose stored payload does not decode, is a poison
//! event: retrying it would stall every event behind it forever. It moves to the dead-letter
//! table instead, counted in `outbox_dead_letters_total` and logged at ERROR with its id and the
//! refusal, and the events behind it keep flowing in order. When counts refuses a whole batch,
//! the relay sends that batch again one event at a time, so that only the poison one is set
//! aside. Everything else counts answers (`UNAVAILABLE`, `DEADLINE_EXCEEDED`,
//! `RESOURCE_EXHAUSTED`, an authentication failure, …) is retried with backoff.
//!
//! Several replicas of a writer may share one PostgreSQL database, each with its relay. A relay
//! claims the events it sends: it takes rows nobody holds with `FOR UPDATE SKIP LOCKED` and
//! marks them held for `outbox.claim_lease_ms`, so that each event is sent by one relay in the
//! normal path. A relay that fails to deliver lets go of its claims at once; one that dies
//! holds them until the lease runs out, and then another relay sends them (counts' de-duplication
//! keeps that harmless). SQLite has no row locks: a SQLite database has one writer, and so one
//! relay.
//!
//! With `[outbox.nats] url` set, the relay publishes to NATS JetStream instead of calling counts
//! ([`crate::events`]): an event leaves the outbox once JetStream stored it, and counts
//! consumes the stream.

use std::{sync::Arc, time::Duration};

use prometheus_client::{metrics::counter::Counter, registry::Registry};
use prost::Message;
use protos::foundation::counts::v1::{
    ApplyEventsRequest, Event, counts_service_client::CountsServiceClient, event,
};
use serde::{Deserialize, Serialize};
use service_runtime::{
    metrics::{GrpcMetrics, code_name},
    tls::ClientTlsSettings,
    upstream::{SettingKeys, UpstreamChannel, UpstreamSettings, channel_with},
};
use sqlx::{AnyConnection, Row};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use crate::{Backend, Database, FoundationError, events::NatsSettings, ids, time};

/// The outbox table; every service that publishes events includes it in its migrations.
pub const OUTBOX_DDL: &str = "CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    create_time_us BIGINT NOT NULL,
    payload BYTEA NOT NULL
);";

/// The dead-letter table: poison events, kept with the refusal for an operator to inspect and,
/// once the cause is fixed, move back into `outbox`. Every service that publishes events
/// includes it in its migrations, after [`OUTBOX_DDL`].
pub const DEAD_LETTERS_DDL: &str = "CREATE TABLE outbox_dead_letters (
    id TEXT PRIMARY KEY,
    create_time_us BIGINT NOT NULL,
    dead_time_us BIGINT NOT NULL,
    -- The gRPC code of counts' refusal (InvalidArgument, …), or Undecodable for a payload that does not decode.
    code TEXT NOT NULL,
    reason TEXT NOT NULL,
    payload BYTEA NOT NULL
);";

/// The claim column of the outbox: until when a relay holds an event (Unix µs; 0: nobody).
/// Every service that publishes events includes it in its migrations, after [`OUTBOX_DDL`].
pub const OUTBOX_CLAIMS_DDL: &str =
    "ALTER TABLE outbox ADD COLUMN claimed_until_us BIGINT NOT NULL DEFAULT 0;";

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
    /// How long a relay holds the events it claimed for delivery; after it, another relay of
    /// the same database may send them.
    pub claim_lease_ms: u64,
    /// How an `https://` counts service is verified, and the client certificate for mutual TLS.
    #[serde(default)]
    pub tls: ClientTlsSettings,
    /// NATS JetStream to publish to instead of calling counts; off when its url is empty.
    #[serde(default)]
    pub nats: NatsSettings,
}

#[derive(Debug, Clone)]
struct RelayMetrics {
    delivered: Counter,
    failures: Counter,
    dead_letters: Counter,
}

/// One outbox row as stored.
struct Stored {
    id: String,
    create_time_us: i64,
    payload: Vec<u8>,
}

/// Whether counts' answer is a definitive refusal of the events it was sent, which no retry
/// changes. Anything else (unavailable, overloaded, too slow, a credential problem) may pass,
/// and is retried.
fn refused_for_good(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument | Code::FailedPrecondition | Code::NotFound
    )
}

/// Delivers outbox events to counts.
#[derive(Debug, Clone)]
pub struct Relay {
    db: Database,
    client: CountsServiceClient<UpstreamChannel>,
    settings: RelaySettings,
    wake: Arc<Notify>,
    metrics: RelayMetrics,
    /// The JetStream context once made, when `[outbox.nats]` is on.
    nats: Option<Arc<tokio::sync::OnceCell<async_nats::jetstream::Context>>>,
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
            dead_letters: Counter::default(),
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
        registry.register(
            "outbox_dead_letters",
            "Poison outbox events moved to the dead-letter table: refused by counts for good, or undecodable",
            metrics.dead_letters.clone(),
        );
        let nats = settings
            .nats
            .enabled()
            .then(|| Arc::new(tokio::sync::OnceCell::new()));
        Ok(Self {
            db,
            client: CountsServiceClient::new(channel),
            settings,
            wake: Arc::new(Notify::new()),
            metrics,
            nats,
        })
    }

    /// Call after committing a transaction that enqueued events, so they leave at once.
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// Delivers one batch; returns how many events left the outbox (delivered, or set aside
    /// as dead letters).
    pub async fn deliver_batch(&self) -> Result<usize, FoundationError> {
        let rows = self.claim().await?;
        let claimed: Vec<String> = rows
            .iter()
            .map(|row| row.try_get("id"))
            .collect::<Result<_, _>>()?;
        let result = self.deliver_claimed(rows).await;
        // Whatever is still in the outbox was not delivered: free it for the next attempt,
        // by this relay or another one.
        if !matches!(result, Ok(left) if left == claimed.len())
            && let Err(error) = self.release(&claimed).await
        {
            tracing::warn!(%error, "cannot release outbox claims; they lapse with their lease");
        }
        result
    }

    /// Claims up to a batch of the oldest events no relay holds, for the lease.
    async fn claim(&self) -> Result<Vec<sqlx::any::AnyRow>, sqlx::Error> {
        let now = time::now_us();
        let lease =
            i64::try_from(self.settings.claim_lease_ms.saturating_mul(1000)).unwrap_or(i64::MAX);
        let select = match self.db.backend {
            Backend::Postgres => {
                "SELECT id, create_time_us, payload FROM outbox WHERE claimed_until_us < $1
                 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED"
            }
            Backend::Sqlite => {
                "SELECT id, create_time_us, payload FROM outbox WHERE claimed_until_us < $1
                 ORDER BY id LIMIT $2"
            }
        };
        let mut tx = self.db.pool.begin().await?;
        let rows = sqlx::query(select)
            .bind(now)
            .bind(i64::from(self.settings.batch_size.max(1)))
            .fetch_all(&mut *tx)
            .await?;
        for row in &rows {
            let id: String = row.try_get("id")?;
            sqlx::query("UPDATE outbox SET claimed_until_us = $1 WHERE id = $2")
                .bind(now.saturating_add(lease))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(rows)
    }

    /// Lets go of claims on the events `ids` that are still in the outbox.
    async fn release(&self, ids: &[String]) -> Result<(), sqlx::Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE outbox SET claimed_until_us = 0 WHERE id IN ({})",
            crate::db::placeholders(1, ids.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in ids {
            query = query.bind(id.clone());
        }
        query.execute(&self.db.pool).await?;
        Ok(())
    }

    /// Delivers the claimed `rows`; see [`Relay::deliver_batch`].
    async fn deliver_claimed(
        &self,
        rows: Vec<sqlx::any::AnyRow>,
    ) -> Result<usize, FoundationError> {
        let mut left = 0;
        let mut batch = Vec::with_capacity(rows.len());
        for row in rows {
            let stored = Stored {
                id: row.try_get("id")?,
                create_time_us: row.try_get("create_time_us")?,
                payload: row.try_get("payload")?,
            };
            match Event::decode(stored.payload.as_slice()) {
                Ok(event) => batch.push((stored, event)),
                Err(error) => {
                    self.dead_letter(
                        &stored,
                        "Undecodable",
                        &format!("the payload does not decode: {error}"),
                    )
                    .await?;
                    left += 1;
                }
            }
        }
        if batch.is_empty() {
            return Ok(left);
        }
        let events = batch.iter().map(|(_, event)| event.clone()).collect();
        match self.send(events).await {
            Ok(()) => {
                let ids: Vec<&str> = batch.iter().map(|(stored, _)| stored.id.as_str()).collect();
                self.delete(&ids).await?;
                self.metrics.delivered.inc_by(batch.len() as u64);
                Ok(left + batch.len())
            }
            Err(status) if !refused_for_good(status.code()) => Err(status.into()),
            Err(status) if batch.len() == 1 => {
                self.refused(&batch[0].0, &status).await?;
                Ok(left + 1)
            }
            // One event of the batch may have made counts refuse all of them: send them one
            // by one, in order, so that the others still get through.
            Err(_) => {
                for (stored, event) in batch {
                    match self.send(vec![event]).await {
                        Ok(()) => {
                            self.delete(&[stored.id.as_str()]).await?;
                            self.metrics.delivered.inc();
                        }
                        Err(status) if refused_for_good(status.code()) => {
                            self.refused(&stored, &status).await?;
                        }
                        // Counts is failing now: what is left stays, in order, for the next
                        // attempt.
                        Err(status) => {
                            return if left == 0 {
                                Err(status.into())
                            } else {
                                Ok(left)
                            };
                        }
                    }
                    left += 1;
                }
                Ok(left)
            }
        }
    }

    async fn send(&self, events: Vec<Event>) -> Result<(), Status> {
        if let Some(nats) = &self.nats {
            let settings = &self.settings.nats;
            let context = nats
                .get_or_try_init(|| async {
                    let context = settings.context().await?;
                    settings.stream(&context).await?;
                    Ok::<_, String>(context)
                })
                .await
                .map_err(Status::unavailable)?;
            return crate::events::publish(context, &events)
                .await
                .map_err(Status::unavailable);
        }
        let mut request = tonic::Request::new(ApplyEventsRequest { events });
        request.set_timeout(Duration::from_millis(self.settings.timeout_ms));
        self.client.clone().apply_events(request).await.map(drop)
    }

    async fn delete(&self, ids: &[&str]) -> Result<(), sqlx::Error> {
        let mut tx = self.db.pool.begin().await?;
        for id in ids {
            sqlx::query("DELETE FROM outbox WHERE id = $1")
                .bind((*id).to_owned())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    async fn refused(&self, stored: &Stored, status: &Status) -> Result<(), sqlx::Error> {
        self.dead_letter(stored, code_name(status.code()), status.message())
            .await
    }

    /// Moves a poison event from the outbox to the dead-letter table, in one transaction.
    async fn dead_letter(
        &self,
        stored: &Stored,
        code: &str,
        reason: &str,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.db.pool.begin().await?;
        sqlx::query(
            "INSERT INTO outbox_dead_letters (id, create_time_us, dead_time_us, code, reason, payload)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(stored.id.clone())
        .bind(stored.create_time_us)
        .bind(time::now_us())
        .bind(code.to_owned())
        .bind(reason.to_owned())
        .bind(stored.payload.clone())
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM outbox WHERE id = $1")
            .bind(stored.id.clone())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.metrics.dead_letters.inc();
        tracing::error!(
            event_id = %stored.id,
            code,
            reason,
            "poison outbox event moved to the dead-letter table"
        );
        Ok(())
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
