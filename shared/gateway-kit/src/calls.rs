//! The upstream caller both gateways use.
//!
//! A request gets one [`Deadline`] when it arrives: its `grpc-timeout` less `calls.margin_ms`
//! (time kept back to assemble and send the response). Every upstream call of the request,
//! concurrent or one after the other, ends by that deadline and by its upstream's own
//! `timeout_ms`, so a second call gets what the first left, not the caller's whole budget again.
//! A call whose budget is already spent is not started at all. The budget also goes upstream as
//! the call's `grpc-timeout`, so the upstream stops working when the gateway stops waiting.
//!
//! Reads retry an `UNAVAILABLE` answer once, while the deadline allows and a token bucket shared
//! by the gateway's reads has a retry saved ([`RetrySettings`]): under a broad outage retries
//! stop once the savings are spent, so they cannot multiply the load on a struggling upstream.
//! Commands never retry: a command that timed out may have taken effect.

use std::{future::Future, sync::Mutex, time::Duration};

use serde::{Deserialize, Serialize};
use service_runtime::{
    metrics::GrpcMetrics,
    upstream::{UpstreamChannel, UpstreamSettings, channel, inbound_timeout},
};
use tokio::time::Instant;
use tonic::{Code, Request, Response, Status, metadata::MetadataMap};

/// `[calls]`: how a gateway's upstream calls share the caller's deadline, and read retries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallSettings {
    /// Kept back from the caller's deadline to assemble and send the response.
    pub margin_ms: u64,
    pub retry: RetrySettings,
}

/// `[calls.retry]`: the token bucket of read retries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    /// The share of a retry every read earns.
    pub ratio: f64,
    /// The most retries saved up.
    pub max_tokens: f64,
}

/// A token bucket of retries: every call earns `ratio` of a retry, a retry spends one, and at
/// most `max_tokens` are saved. It starts full.
#[derive(Debug)]
struct RetryBudget {
    tokens: Mutex<f64>,
    ratio: f64,
    max_tokens: f64,
}

impl RetryBudget {
    fn new(settings: &RetrySettings) -> Self {
        Self {
            tokens: Mutex::new(settings.max_tokens),
            ratio: settings.ratio,
            max_tokens: settings.max_tokens,
        }
    }

    fn deposit(&self) {
        if let Ok(mut tokens) = self.tokens.lock() {
            *tokens = (*tokens + self.ratio).min(self.max_tokens);
        }
    }

    fn withdraw(&self) -> bool {
        match self.tokens.lock() {
            Ok(mut tokens) if *tokens >= 1.0 => {
                *tokens -= 1.0;
                true
            }
            _ => false,
        }
    }
}

/// One upstream: its client, its name in logs and errors, and the cap on its calls.
#[derive(Debug, Clone)]
pub struct Upstream<C> {
    client: C,
    name: &'static str,
    cap: Duration,
}

impl<C> Upstream<C> {
    /// A client of `upstreams.<name>` over a traced, guarded and counted channel (see
    /// [`service_runtime::upstream::channel`]); `client` wraps the channel, e.g.
    /// `TracksServiceClient::new`.
    pub fn connect(
        name: &'static str,
        settings: &UpstreamSettings,
        metrics: &GrpcMetrics,
        client: impl FnOnce(UpstreamChannel) -> C,
    ) -> Result<Self, String> {
        let channel = channel(&format!("upstreams.{name}"), settings, metrics)?;
        Ok(Self {
            client: client(channel),
            name,
            cap: Duration::from_millis(settings.timeout_ms),
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The longest any one call may take (`upstreams.<name>.timeout_ms`).
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// A handle on the client; clones share the channel.
    pub fn client(&self) -> C
    where
        C: Clone,
    {
        self.client.clone()
    }
}

/// When a request's upstream calls must be done: set once when the request arrives, and read
/// by every call of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    /// `None`: the caller gave no timeout, and each call has its upstream's cap alone.
    end: Option<Instant>,
}

impl Deadline {
    /// No deadline of the caller's: each call is bounded by its upstream's cap alone.
    pub fn none() -> Self {
        Self { end: None }
    }

    /// A deadline at `end`.
    pub fn at(end: Instant) -> Self {
        Self { end: Some(end) }
    }

    /// The time left, if the caller set a deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.end
            .map(|end| end.saturating_duration_since(Instant::now()))
    }

    /// The budget of a call started now to an upstream capped at `cap`.
    pub fn budget(&self, cap: Duration) -> Duration {
        self.remaining().map_or(cap, |left| left.min(cap))
    }
}

/// Why an upstream call gave no answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the {service} call failed: {failure}")]
pub struct UpstreamError {
    /// The upstream's name, such as `tracks`.
    pub service: &'static str,
    pub failure: UpstreamFailure,
}

impl UpstreamError {
    pub fn new(service: &'static str, failure: UpstreamFailure) -> Self {
        Self { service, failure }
    }

    /// A failed call's status, classified by the one rule of [`UpstreamFailure`]: for calls
    /// the kit does not make itself, such as streams.
    pub fn from_status(service: &'static str, status: Status) -> Self {
        let failure = match status.code() {
            Code::Cancelled | Code::DeadlineExceeded => UpstreamFailure::Timeout,
            _ => UpstreamFailure::Status(status),
        };
        Self::new(service, failure)
    }

    /// The upstream's status code, when it answered with one.
    pub fn code(&self) -> Option<Code> {
        match &self.failure {
            UpstreamFailure::Status(status) => Some(status.code()),
            UpstreamFailure::Timeout => None,
        }
    }
}

/// The one classification of a failed call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamFailure {
    /// The upstream answered with an error, or could not be reached.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(Status),
    /// The call's budget ran out: it was not started because nothing was left, the gateway
    /// stopped waiting, or the upstream or tonic enforced the `grpc-timeout` the call carried
    /// (tonic reports its own enforcement as CANCELLED, and the gateway cancels no call
    /// otherwise, so CANCELLED and DEADLINE_EXCEEDED both mean the budget ran out).
    #[error("deadline exceeded")]
    Timeout,
}

/// The gateway's upstream caller: the margin it keeps back, and the retry budget its reads
/// share.
#[derive(Debug)]
pub struct Calls {
    retry: RetryBudget,
    margin: Duration,
}

impl Calls {
    pub fn new(settings: &CallSettings) -> Self {
        Self {
            retry: RetryBudget::new(&settings.retry),
            margin: Duration::from_millis(settings.margin_ms),
        }
    }

    /// The deadline of a request that arrived now with `metadata`: its `grpc-timeout` less
    /// the margin, or none when it carries no timeout.
    pub fn deadline(&self, metadata: &MetadataMap) -> Deadline {
        match inbound_timeout(metadata) {
            Some(inbound) => Deadline::at(Instant::now() + inbound.saturating_sub(self.margin)),
            None => Deadline::none(),
        }
    }

    /// A read: bounded by `deadline` and the upstream's cap, retried once on UNAVAILABLE
    /// while the retry budget and the deadline allow. `call` gets the client and the call's
    /// budget, which it sends as the request's timeout with [`outbound`].
    pub async fn read<C, T, F, Fut>(
        &self,
        upstream: &Upstream<C>,
        deadline: Deadline,
        mut call: F,
    ) -> Result<T, UpstreamError>
    where
        C: Clone,
        F: FnMut(C, Duration) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        self.retry.deposit();
        match attempt(upstream, deadline, &mut call).await {
            Err(error) if error.code() == Some(Code::Unavailable) => {
                if deadline.remaining().is_some_and(|left| left.is_zero()) || !self.retry.withdraw()
                {
                    return Err(error);
                }
                tracing::debug!(upstream = upstream.name, "retrying a read");
                attempt(upstream, deadline, &mut call).await
            }
            outcome => outcome,
        }
    }

    /// A command: one attempt, bounded by `deadline` and the upstream's cap.
    pub async fn command<C, T, F, Fut>(
        &self,
        upstream: &Upstream<C>,
        deadline: Deadline,
        call: F,
    ) -> Result<T, UpstreamError>
    where
        C: Clone,
        F: FnOnce(C, Duration) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let mut call = Some(call);
        attempt(upstream, deadline, &mut |client, budget| {
            let call = call.take().expect("a command is attempted once");
            call(client, budget)
        })
        .await
    }
}

async fn attempt<C, T, F, Fut>(
    upstream: &Upstream<C>,
    deadline: Deadline,
    call: &mut F,
) -> Result<T, UpstreamError>
where
    C: Clone,
    F: FnMut(C, Duration) -> Fut,
    Fut: Future<Output = Result<Response<T>, Status>>,
{
    let budget = deadline.budget(upstream.cap);
    let timeout = || UpstreamError::new(upstream.name, UpstreamFailure::Timeout);
    if budget.is_zero() {
        return Err(timeout());
    }
    // Boxed: a tonic call's future is large, and each async layer above it that holds it by
    // value stores (and moves) another copy; on the heap it exists once, and a call in flight
    // costs a third of the memory (measured with heaptrack at 1,000 calls in flight).
    match tokio::time::timeout(budget, Box::pin(call(upstream.client.clone(), budget))).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(UpstreamError::from_status(upstream.name, status)),
        Err(_) => Err(timeout()),
    }
}

/// A request whose `grpc-timeout` is the call's budget.
pub fn outbound<T>(message: T, budget: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(budget);
    request
}

#[cfg(test)]
mod tests;
