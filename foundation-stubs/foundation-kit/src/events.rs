//! Outbox events through NATS JetStream, when configured: the writers' relays publish each event
//! to the stream with its id as `Nats-Msg-Id` (JetStream drops a second publish of one id within
//! the stream's duplicate window), and counts consumes through a durable consumer, acknowledging
//! a message only once its event is applied (still idempotent by event id). More read-side
//! consumers can then be added without touching the writers. Direct gRPC delivery to counts
//! stays the default.
//!
//! The stream (`stream`, default `DOMAIN_EVENTS`) holds the subjects `domain.events.>`, on file
//! storage, for `max_age_hours`. Whoever starts first creates it; the others find it.

use std::time::Duration;

use async_nats::jetstream::{self, Context, stream};
use protos::foundation::counts::v1::{Event, event};
use serde::{Deserialize, Serialize};

/// The subject prefix of the events: `domain.events.<kind>`.
pub const SUBJECT_PREFIX: &str = "domain.events";

/// `[outbox.nats]` of a writer, `[events]` of counts: where the events stream is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSettings {
    /// The NATS server, e.g. `nats://nats:4222`; empty: no NATS (the relays call counts).
    pub url: String,
    /// The JetStream stream of the events.
    pub stream: String,
    /// How long JetStream remembers an event id to drop a second publish of it.
    pub duplicate_window_seconds: u64,
    /// How long the stream keeps events.
    pub max_age_hours: u64,
    /// The deadline of one publish or fetch.
    pub timeout_ms: u64,
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            stream: "DOMAIN_EVENTS".into(),
            duplicate_window_seconds: 120,
            max_age_hours: 168,
            timeout_ms: 5000,
        }
    }
}

impl NatsSettings {
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    /// A JetStream context on the server, connecting in the background (and again whenever the
    /// connection breaks): calls made while the server is away fail after `timeout_ms`.
    pub async fn context(&self) -> Result<Context, String> {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_millis(self.timeout_ms.max(100)))
            .request_timeout(Some(Duration::from_millis(self.timeout_ms.max(100))))
            .connect(self.url.as_str())
            .await
            .map_err(|error| format!("nats url {}: {error}", self.url))?;
        let mut context = jetstream::new(client);
        context.set_timeout(Duration::from_millis(self.timeout_ms.max(100)));
        Ok(context)
    }

    /// The events stream, created when missing.
    pub async fn stream(&self, context: &Context) -> Result<stream::Stream, String> {
        context
            .get_or_create_stream(stream::Config {
                name: self.stream.clone(),
                subjects: vec![format!("{SUBJECT_PREFIX}.>")],
                storage: stream::StorageType::File,
                duplicate_window: Duration::from_secs(self.duplicate_window_seconds.max(1)),
                max_age: Duration::from_secs(self.max_age_hours.max(1) * 3600),
                ..Default::default()
            })
            .await
            .map_err(|error| format!("the events stream {}: {error}", self.stream))
    }
}

/// The subject of `event`: `domain.events.<kind>`, such as `domain.events.track_liked`.
pub fn subject(event: &Event) -> String {
    let kind = match &event.kind {
        Some(event::Kind::TrackLiked(_)) => "track_liked",
        Some(event::Kind::TrackUnliked(_)) => "track_unliked",
        Some(event::Kind::TrackReposted(_)) => "track_reposted",
        Some(event::Kind::TrackUnreposted(_)) => "track_unreposted",
        Some(event::Kind::UserFollowed(_)) => "user_followed",
        Some(event::Kind::UserUnfollowed(_)) => "user_unfollowed",
        Some(event::Kind::TrackDownloaded(_)) => "track_downloaded",
        Some(event::Kind::TrackDeleted(_)) => "track_deleted",
        None => "unknown",
    };
    format!("{SUBJECT_PREFIX}.{kind}")
}

/// Publishes `events` to the stream, each with its id as `Nats-Msg-Id`, and waits for
/// JetStream to have stored every one (a second publish of an id inside the duplicate window
/// is acknowledged as a duplicate, and stored once).
pub async fn publish(context: &Context, events: &[Event]) -> Result<(), String> {
    use prost::Message;
    let mut acks = Vec::with_capacity(events.len());
    for event in events {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", event.id.as_str());
        let ack = context
            .publish_with_headers(subject(event), headers, event.encode_to_vec().into())
            .await
            .map_err(|error| format!("cannot publish to NATS: {error}"))?;
        acks.push(ack);
    }
    for ack in acks {
        ack.await
            .map_err(|error| format!("NATS did not store an event: {error}"))?;
    }
    Ok(())
}
