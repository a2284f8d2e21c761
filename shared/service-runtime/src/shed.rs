//! Load shedding: at most `server.max_concurrent_requests` calls are handled at once across all
//! connections; a call beyond that is answered at once with `RESOURCE_EXHAUSTED`, never
//! queued, so accepted calls keep their latency and memory stays flat under overload. Health
//! checks and reflection are never shed, so probes tell overload from death.
//!
//! The permit is held until the response headers are ready: the whole call for unary RPCs;
//! for server streams, the time to produce the first response.
//!
//! With `server.adaptive_limit.enabled`, the limit in force is the adaptive one
//! ([`crate::adaptive`]), which follows the latency of admitted calls and never exceeds
//! `max_concurrent_requests`. The limit in force is the gauge `grpc_server_concurrency_limit`.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Instant,
};

use http::{Request, Response};
use prometheus_client::{metrics::gauge::Gauge, registry::Registry};
use tonic::Status;

use crate::adaptive::{AdaptiveLimit, AdaptiveLimitSettings};

#[derive(Debug, Clone)]
pub struct ShedLayer {
    permits: Option<Arc<Limiter>>,
}

impl ShedLayer {
    /// A limit of `max_concurrent` calls (0: no limit), adaptive below it when `adaptive`
    /// says so; registers `grpc_server_concurrency_limit` in `registry`.
    pub fn new(
        max_concurrent: usize,
        adaptive: &AdaptiveLimitSettings,
        registry: &mut Registry,
    ) -> Self {
        let permits = (max_concurrent > 0).then(|| {
            let gauge = Gauge::default();
            registry.register(
                "grpc_server_concurrency_limit",
                "The most calls handled at once now (the adaptive limit when it is on)",
                gauge.clone(),
            );
            let adaptive = adaptive
                .enabled
                .then(|| AdaptiveLimit::new(adaptive.clone(), max_concurrent));
            let limiter = Limiter {
                max: max_concurrent,
                in_flight: AtomicUsize::new(0),
                adaptive,
                gauge,
            };
            limiter.publish();
            Arc::new(limiter)
        });
        Self { permits }
    }
}

/// The calls in flight against the limit in force.
#[derive(Debug)]
struct Limiter {
    max: usize,
    in_flight: AtomicUsize,
    adaptive: Option<AdaptiveLimit>,
    gauge: Gauge,
}

impl Limiter {
    fn limit(&self) -> usize {
        self.adaptive
            .as_ref()
            .map_or(self.max, AdaptiveLimit::limit)
    }

    fn publish(&self) {
        self.gauge.set(self.limit() as i64);
    }

    fn try_admit(self: &Arc<Self>) -> Option<Permit> {
        let limit = self.limit();
        let mut current = self.in_flight.load(Ordering::Relaxed);
        loop {
            if current >= limit {
                return None;
            }
            match self.in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        Some(Permit {
            limiter: self.clone(),
            admitted: Instant::now(),
            in_flight: current + 1,
            answered: false,
        })
    }
}

/// One admitted call. Dropped, it frees its place; an answered call also reports its latency
/// to the adaptive limit (a call dropped unanswered, because its caller went away, says nothing
/// about how fast calls are served).
struct Permit {
    limiter: Arc<Limiter>,
    admitted: Instant,
    in_flight: usize,
    answered: bool,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limiter.in_flight.fetch_sub(1, Ordering::AcqRel);
        if self.answered
            && let Some(adaptive) = &self.limiter.adaptive
        {
            adaptive.sample(self.admitted.elapsed(), self.in_flight);
            self.limiter.publish();
        }
    }
}

impl<S> tower::Layer<S> for ShedLayer {
    type Service = ShedService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ShedService {
            inner,
            permits: self.permits.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ShedService<S> {
    inner: S,
    permits: Option<Arc<Limiter>>,
}

fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.")
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for ShedService<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let Some(permits) = &self.permits else {
            return Box::pin(self.inner.call(request));
        };
        if exempt(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        match permits.try_admit() {
            Some(mut permit) => {
                let future = self.inner.call(request);
                Box::pin(async move {
                    let response = future.await;
                    permit.answered = true;
                    drop(permit);
                    response
                })
            }
            None => {
                tracing::debug!(path = request.uri().path(), "shedding a call");
                // In gRPC form whatever the protocol: the serve loop's Twirp layer, outside this
                // one, answers a Twirp call with the Twirp error of the same status.
                Box::pin(async move {
                    Ok(Status::resource_exhausted(
                        "the server is at its concurrency limit; retry with backoff",
                    )
                    .into_http())
                })
            }
        }
    }
}
