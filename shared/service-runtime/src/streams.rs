//! Server streams with bounds: the longest a stream may last, and the longest it may make no
//! progress, whether because its source yields nothing or because its client reads nothing.
//!
//! A gRPC server stream is polled by the connection only while the client's flow-control
//! window has room, so a client that stops reading stops the stream without any code of the
//! service running: the stream, and whatever it holds (an upstream stream on a channel shared
//! with every other caller, whose connection window the unread data fills), would wait
//! forever. [`StreamLimits::bound`] therefore moves the source into a task of its own that
//! hands items over through a one-slot channel: when a hand-over or the source waits past a
//! bound, the task drops the source at once, counts the cut-off in
//! `grpc_server_streams_cut_off_total{grpc_method,reason}`, and the client gets
//! `DEADLINE_EXCEEDED` after what was already sent, if it ever reads again.
//!
//! A stream is complete only when the client has taken every item and asks for the end: that
//! is when the completion callback runs (a download is counted then, and only then), and its
//! error, if any, ends the stream.

use std::{pin::pin, time::Duration};

use futures::{
    FutureExt, Stream, StreamExt,
    future::{self, BoxFuture},
    stream::{self, BoxStream},
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use serde::{Deserialize, Serialize};
use tokio::{
    sync::{mpsc, oneshot},
    time::{Instant, timeout_at},
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::Instrument;

/// The bounds of a service's download streams; the same keys wherever downloads stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSettings {
    /// The longest a stream may last, from its first item to its end.
    pub max_duration_ms: u64,
    /// The longest a stream may go without handing over an item: the client reads nothing,
    /// or the source yields nothing.
    pub idle_timeout_ms: u64,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CutOffLabels {
    grpc_method: &'static str,
    reason: &'static str,
}

/// Bounds server streams by [`StreamSettings`] and counts the streams it cuts off.
#[derive(Debug, Clone)]
pub struct StreamLimits {
    max_duration: Duration,
    idle: Duration,
    cut_off: Family<CutOffLabels, Counter>,
}

/// What the source task ended with.
enum Ending {
    /// The source ended and the client took every item.
    Complete,
    /// The source failed, or a bound passed: the client gets this status.
    Failed(Status),
}

impl StreamLimits {
    pub fn new(settings: &StreamSettings, registry: &mut Registry) -> Self {
        let cut_off = Family::default();
        registry.register(
            "grpc_server_streams_cut_off",
            "Server streams cut off at their idle or duration bound",
            cut_off.clone(),
        );
        Self {
            max_duration: Duration::from_millis(settings.max_duration_ms.max(1)),
            idle: Duration::from_millis(settings.idle_timeout_ms.max(1)),
            cut_off,
        }
    }

    /// The longest a stream may last; upstream streams a bounded stream reads can be given it
    /// as their deadline.
    pub fn max_duration(&self) -> Duration {
        self.max_duration
    }

    /// `source` within the bounds, for the server method `method`; `on_complete` runs once
    /// the client has taken every item, before the stream ends, and its error ends the stream.
    /// The source runs in a task of its own, in the current span.
    pub fn bound<T, S, F, Fut>(
        &self,
        method: &'static str,
        source: S,
        on_complete: F,
    ) -> BoxStream<'static, Result<T, Status>>
    where
        T: Send + 'static,
        S: Stream<Item = Result<T, Status>> + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), Status>> + Send + 'static,
    {
        let (items, received) = mpsc::channel(1);
        let (ending, ended) = oneshot::channel();
        let limits = self.clone();
        tokio::spawn(
            async move {
                if let Some(outcome) = limits.pump(method, source, items).await {
                    // The receiver may be gone too, and then nobody needs to know.
                    drop(ending.send(outcome));
                }
            }
            .instrument(tracing::Span::current()),
        );
        let tail: BoxFuture<'static, Option<Result<T, Status>>> = async move {
            match ended.await {
                Ok(Ending::Complete) => on_complete().await.err().map(Err),
                Ok(Ending::Failed(status)) => Some(Err(status)),
                // The task ended without an outcome: the client had gone.
                Err(_) => None,
            }
        }
        .boxed();
        ReceiverStream::new(received)
            .map(Ok)
            .chain(stream::once(tail).filter_map(future::ready))
            .boxed()
    }

    /// Moves the source's items into `items` until it ends, fails or passes a bound; `None`
    /// when the client went away.
    async fn pump<T, S>(
        &self,
        method: &'static str,
        source: S,
        items: mpsc::Sender<T>,
    ) -> Option<Ending>
    where
        S: Stream<Item = Result<T, Status>>,
    {
        let end = Instant::now() + self.max_duration;
        let mut source = pin!(source);
        loop {
            let next = match timeout_at(self.until(end), source.next()).await {
                Ok(next) => next,
                Err(_) => return Some(self.cut(method, end)),
            };
            let item = match next {
                None => return Some(Ending::Complete),
                Some(Err(status)) => return Some(Ending::Failed(status)),
                Some(Ok(item)) => item,
            };
            match timeout_at(self.until(end), items.send(item)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return None,
                Err(_) => return Some(self.cut(method, end)),
            }
        }
    }

    fn until(&self, end: Instant) -> Instant {
        (Instant::now() + self.idle).min(end)
    }

    fn cut(&self, method: &'static str, end: Instant) -> Ending {
        let (reason, message) = if Instant::now() >= end {
            (
                "duration",
                format!(
                    "the stream was cut off: it lasted longer than {} ms",
                    self.max_duration.as_millis()
                ),
            )
        } else {
            (
                "idle",
                format!(
                    "the stream was cut off: nothing moved for {} ms",
                    self.idle.as_millis()
                ),
            )
        };
        self.cut_off
            .get_or_create(&CutOffLabels {
                grpc_method: method,
                reason,
            })
            .inc();
        tracing::info!(method, reason, "server stream cut off");
        Ending::Failed(Status::deadline_exceeded(message))
    }
}

#[cfg(test)]
mod tests;
