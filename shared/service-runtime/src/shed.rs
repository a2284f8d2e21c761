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
//!
//! Client-streaming calls (uploads, told apart by the served descriptors) count against a
//! budget of their own, `server.max_concurrent_streams`, so that slow uploads never take the
//! places of other calls.
//!
//! Every call also carries a [`Ticket`] in its request extensions, with which the layer that
//! knows who calls (the gateways' authenticator) counts the call against its caller: at most
//! a configured number of calls per caller at once, so that one caller cannot take the whole
//! limit. The ticket frees its place when the call's response starts, like the permit.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Instant,
};

use http::{Request, Response};
use prometheus_client::{metrics::gauge::Gauge, registry::Registry};
use tonic::Status;

use crate::{
    adaptive::{AdaptiveLimit, AdaptiveLimitSettings},
    metrics::KnownMethods,
};

#[derive(Debug, Clone)]
pub struct ShedLayer {
    permits: Option<Arc<Limiter>>,
    streams: Option<Arc<Limiter>>,
    known: KnownMethods,
    callers: Arc<Callers>,
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
        Self {
            permits,
            streams: None,
            known: KnownMethods::default(),
            callers: Arc::default(),
        }
    }

    /// Client-streaming calls of `known` get a budget of their own, `max_streams` calls
    /// (0: no limit).
    pub fn with_streams(mut self, max_streams: usize, known: KnownMethods) -> Self {
        self.streams = (max_streams > 0).then(|| {
            Arc::new(Limiter {
                max: max_streams,
                in_flight: AtomicUsize::new(0),
                adaptive: None,
                gauge: Gauge::default(),
            })
        });
        self.known = known;
        self
    }
}

/// The calls in flight of each caller that a [`Ticket`] counted.
#[derive(Debug, Default)]
struct Callers {
    in_flight: Mutex<HashMap<String, usize>>,
}

/// A call's place among its caller's calls in flight, taken by [`Ticket::admit`] and freed
/// when the last copy of the ticket is dropped (the shed layer keeps one until the response
/// starts).
#[derive(Debug, Clone)]
pub struct Ticket(Arc<Held>);

#[derive(Debug)]
struct Held {
    callers: Arc<Callers>,
    caller: Mutex<Option<String>>,
}

impl Ticket {
    fn new(callers: Arc<Callers>) -> Self {
        Self(Arc::new(Held {
            callers,
            caller: Mutex::new(None),
        }))
    }

    /// Counts the call against `caller`, who may have at most `cap` calls in flight (0: no
    /// cap). False, and nothing counted, when `caller` already has `cap`. A ticket counts one
    /// caller once.
    pub fn admit(&self, caller: &str, cap: usize) -> bool {
        if cap == 0 {
            return true;
        }
        let Ok(mut held) = self.0.caller.lock() else {
            return true;
        };
        if held.is_some() {
            return true;
        }
        let Ok(mut in_flight) = self.0.callers.in_flight.lock() else {
            return true;
        };
        let count = in_flight.entry(caller.to_owned()).or_insert(0);
        if *count >= cap {
            if *count == 0 {
                in_flight.remove(caller);
            }
            return false;
        }
        *count += 1;
        *held = Some(caller.to_owned());
        true
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(caller) = self.caller.get_mut().ok().and_then(Option::take) else {
            return;
        };
        if let Ok(mut in_flight) = self.callers.in_flight.lock()
            && let Some(count) = in_flight.get_mut(&caller)
        {
            *count -= 1;
            if *count == 0 {
                in_flight.remove(&caller);
            }
        }
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
            streams: self.streams.clone(),
            known: self.known.clone(),
            callers: self.callers.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ShedService<S> {
    inner: S,
    permits: Option<Arc<Limiter>>,
    streams: Option<Arc<Limiter>>,
    known: KnownMethods,
    callers: Arc<Callers>,
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

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        if exempt(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        let ticket = Ticket::new(self.callers.clone());
        request.extensions_mut().insert(ticket.clone());
        let limiter = if self.known.client_streaming(request.uri().path()) {
            &self.streams
        } else {
            &self.permits
        };
        let Some(limiter) = limiter else {
            let future = self.inner.call(request);
            return Box::pin(async move {
                let response = future.await;
                drop(ticket);
                response
            });
        };
        match limiter.try_admit() {
            Some(mut permit) => {
                let future = self.inner.call(request);
                Box::pin(async move {
                    let response = future.await;
                    permit.answered = true;
                    drop(permit);
                    drop(ticket);
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
