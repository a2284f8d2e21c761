//! The foundation clients, and the two ways the gateway calls them: reads, which may retry
//! once on `UNAVAILABLE` within their deadline, and commands, which never retry. Every call's
//! deadline is the caller's `grpc-timeout` less the margin, capped by the upstream's timeout
//! ([`call_budget`]); it is both enforced here and sent upstream as its `grpc-timeout`.

use std::{future::Future, time::Duration};

use protos::foundation::{
    counts::v1::counts_service_client::CountsServiceClient,
    likes::v1::likes_service_client::LikesServiceClient,
    tracks::v1::tracks_service_client::TracksServiceClient,
};
use service_runtime::{
    metrics::GrpcMetrics,
    upstream::{UpstreamChannel, UpstreamSettings, call_budget, channel},
};
use tokio::time::{Instant, timeout_at};
use tonic::{Code, Request, Response, Status};

use crate::Settings;

/// Why an upstream call gave no answer.
#[derive(Debug, thiserror::Error)]
#[error("the {service} call failed: {failure}")]
pub struct UpstreamError {
    /// `tracks`, `likes` or `counts`.
    pub service: &'static str,
    pub failure: UpstreamFailure,
}

impl UpstreamError {
    pub(crate) fn new(service: &'static str, failure: UpstreamFailure) -> Self {
        Self { service, failure }
    }

    /// The upstream's status code, when it answered with one.
    pub(crate) fn code(&self) -> Option<Code> {
        match &self.failure {
            UpstreamFailure::Status(status) => Some(status.code()),
            UpstreamFailure::Timeout => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamFailure {
    /// The upstream answered with an error (or could not be reached).
    #[error("{}: {}", .0.code(), .0.message())]
    Status(Status),
    /// The call did not finish by its deadline.
    #[error("deadline exceeded")]
    Timeout,
}

/// Which upstream a call goes to, with its configured cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    Tracks,
    Likes,
    Counts,
}

impl Service {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Tracks => "tracks",
            Self::Likes => "likes",
            Self::Counts => "counts",
        }
    }
}

/// The clients of the foundation services, over counted, lazily connecting channels. Clones
/// share the channels.
#[derive(Debug, Clone)]
pub(crate) struct Clients {
    pub(crate) tracks: TracksServiceClient<UpstreamChannel>,
    pub(crate) likes: LikesServiceClient<UpstreamChannel>,
    pub(crate) counts: CountsServiceClient<UpstreamChannel>,
    timeouts: [Duration; 3],
    margin: Duration,
    read_retries: u32,
    upload_timeout: Duration,
}

impl Clients {
    pub(crate) fn new(settings: &Settings, metrics: &GrpcMetrics) -> Result<Self, String> {
        let upstreams = &settings.upstreams;
        let ms = Duration::from_millis;
        let timeout = |upstream: &UpstreamSettings| ms(upstream.timeout_ms);
        Ok(Self {
            tracks: TracksServiceClient::new(channel(
                "upstreams.tracks",
                &upstreams.tracks,
                metrics,
            )?),
            likes: LikesServiceClient::new(channel("upstreams.likes", &upstreams.likes, metrics)?),
            counts: CountsServiceClient::new(channel(
                "upstreams.counts",
                &upstreams.counts,
                metrics,
            )?),
            timeouts: [
                timeout(&upstreams.tracks),
                timeout(&upstreams.likes),
                timeout(&upstreams.counts),
            ],
            margin: ms(settings.calls.margin_ms),
            read_retries: settings.calls.read_retries,
            upload_timeout: ms(settings.upload.timeout_ms),
        })
    }

    /// When a call to `service` must end, for a request that arrived with `inbound` as its
    /// `grpc-timeout` and is being handled now.
    pub(crate) fn deadline(&self, service: Service, inbound: Option<Duration>) -> Instant {
        let cap = self.timeouts[service as usize];
        Instant::now() + call_budget(inbound, self.margin, cap)
    }

    /// When an upload must end: the upload timeout takes the place of the tracks timeout,
    /// since an upload lasts as long as its file takes to arrive.
    pub(crate) fn upload_deadline(&self, inbound: Option<Duration>) -> Instant {
        Instant::now() + call_budget(inbound, self.margin, self.upload_timeout)
    }

    /// A read: retried on `UNAVAILABLE` (at most `read_retries` times) while the deadline
    /// allows. `call` builds and sends the request; it gets the time left, which it passes on
    /// as the request's timeout with [`timed`].
    pub(crate) async fn read<T, F, Fut>(
        &self,
        service: Service,
        deadline: Instant,
        mut call: F,
    ) -> Result<T, UpstreamError>
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let mut retries_left = self.read_retries;
        loop {
            match bounded(service, deadline, &mut call).await {
                Err(error)
                    if retries_left > 0
                        && error.code() == Some(Code::Unavailable)
                        && Instant::now() < deadline =>
                {
                    retries_left -= 1;
                    tracing::debug!(
                        service = service.name(),
                        "retrying a read after unavailable"
                    );
                }
                outcome => return outcome,
            }
        }
    }

    /// A command: one attempt, bounded by the deadline.
    pub(crate) async fn command<T, F, Fut>(
        &self,
        service: Service,
        deadline: Instant,
        mut call: F,
    ) -> Result<T, UpstreamError>
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        bounded(service, deadline, &mut call).await
    }
}

/// How close to its deadline an upstream's CANCELLED or DEADLINE_EXCEEDED counts as the
/// deadline passing: the upstream's clock started a little after ours.
const DEADLINE_SLACK: Duration = Duration::from_millis(50);

async fn bounded<T, F, Fut>(
    service: Service,
    deadline: Instant,
    call: &mut F,
) -> Result<T, UpstreamError>
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Result<Response<T>, Status>>,
{
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(UpstreamError::new(service.name(), UpstreamFailure::Timeout));
    }
    match timeout_at(deadline, call(left)).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        // The upstream enforces the `grpc-timeout` it was sent too, and tonic answers an
        // expired one with CANCELLED: either way the deadline ended the call.
        Ok(Err(status))
            if matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded)
                && deadline <= Instant::now() + DEADLINE_SLACK =>
        {
            Err(UpstreamError::new(service.name(), UpstreamFailure::Timeout))
        }
        Ok(Err(status)) => Err(UpstreamError::new(
            service.name(),
            UpstreamFailure::Status(status),
        )),
        Err(_) => Err(UpstreamError::new(service.name(), UpstreamFailure::Timeout)),
    }
}

/// A request whose `grpc-timeout` is `left`, so that the upstream stops working when the
/// gateway stops waiting.
pub(crate) fn timed<T>(message: T, left: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(left);
    request
}
