//! Events from NATS JetStream, when `[events] url` is set: a durable pull consumer, `counts`,
//! on the writers' events stream (`foundation_kit::events`). A message is acknowledged once
//! its event is applied, and applying is idempotent by event id, so a redelivery (after a crash
//! between applying and acknowledging) changes nothing. A message that does not decode or
//! breaks the event rules is acknowledged and logged at ERROR: redelivering it would change
//! nothing. While NATS or the database is away, the consumer retries with backoff; the
//! messages it did not acknowledge are delivered again.

use std::time::Duration;

use async_nats::jetstream::{AckKind, consumer::pull};
use foundation_kit::events::NatsSettings;
use futures::StreamExt;
use prost::Message;
use protos::foundation::counts::v1::Event;
use tokio_util::sync::CancellationToken;

use crate::{CountsStore, api::EventMetrics};

/// The durable consumer's name.
const CONSUMER: &str = "counts";
/// Messages per fetch.
const BATCH: usize = 100;

/// Consumes until `stop` is cancelled.
pub(crate) async fn consume(
    settings: NatsSettings,
    store: CountsStore,
    metrics: EventMetrics,
    stop: CancellationToken,
) {
    let initial = Duration::from_millis(50);
    let mut backoff = initial;
    loop {
        let outcome = tokio::select! {
            () = stop.cancelled() => return,
            outcome = consume_until_error(&settings, &store, &metrics) => outcome,
        };
        if let Err(error) = outcome {
            tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "consuming events from NATS failed");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn consume_until_error(
    settings: &NatsSettings,
    store: &CountsStore,
    metrics: &EventMetrics,
) -> Result<(), String> {
    let context = settings.context().await?;
    let stream = settings.stream(&context).await?;
    let consumer = stream
        .get_or_create_consumer(
            CONSUMER,
            pull::Config {
                durable_name: Some(CONSUMER.into()),
                ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .await
        .map_err(|error| format!("the consumer {CONSUMER}: {error}"))?;
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(BATCH)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .map_err(|error| format!("cannot fetch events: {error}"))?;
        let mut messages = Vec::with_capacity(BATCH);
        let mut events = Vec::with_capacity(BATCH);
        while let Some(message) = batch.next().await {
            let message = message.map_err(|error| format!("cannot fetch events: {error}"))?;
            match Event::decode(&message.payload[..])
                .map_err(|error| error.to_string())
                .and_then(|event| {
                    crate::api::check_event(&event)
                        .map(|()| event)
                        .map_err(|error| error.to_string())
                }) {
                Ok(event) => {
                    events.push(event);
                    messages.push(message);
                }
                Err(reason) => {
                    tracing::error!(subject = %message.subject, %reason, "an event from NATS that cannot be applied is dropped");
                    message
                        .ack()
                        .await
                        .map_err(|error| format!("cannot acknowledge: {error}"))?;
                }
            }
        }
        if events.is_empty() {
            continue;
        }
        match store.apply(&events).await {
            Ok(applied) => {
                metrics.count(applied);
                for message in messages {
                    message
                        .ack()
                        .await
                        .map_err(|error| format!("cannot acknowledge: {error}"))?;
                }
            }
            Err(error) => {
                // Delivered again at once rather than after the acknowledgement wait.
                for message in messages {
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                }
                return Err(format!("cannot apply events: {error}"));
            }
        }
    }
}
