//! A circuit breaker per upstream, as a tower layer on the client channel: after
//! `breaker_failures` consecutive failed calls (transport errors, UNAVAILABLE,
//! DEADLINE_EXCEEDED, or calls abandoned by their caller's deadline) the circuit opens and calls
//! fail at once with UNAVAILABLE, costing the dead upstream nothing; after
//! `breaker_cooldown_ms` one probe call goes through (half-open), and its success closes the
//! circuit again.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use http::{Request, Response};
use prometheus_client::metrics::counter::Counter;
use tonic::{Code, Status};

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    threshold: u32,
    cooldown: Duration,
    short_circuited: Counter,
    name: String,
}

/// What the breaker lets through.
enum Admission {
    Call,
    Probe,
    Refuse,
}

impl Shared {
    fn admit(&self) -> Admission {
        let Ok(mut state) = self.state.lock() else {
            return Admission::Call;
        };
        match *state {
            State::Closed { .. } => Admission::Call,
            State::Open { until } if Instant::now() >= until => {
                *state = State::HalfOpen { probing: true };
                Admission::Probe
            }
            State::Open { .. } | State::HalfOpen { probing: true } => Admission::Refuse,
            State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                Admission::Probe
            }
        }
    }

    fn record(&self, healthy: bool) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        *state = match (&*state, healthy) {
            (_, true) => {
                if !matches!(*state, State::Closed { .. }) {
                    tracing::info!(upstream = %self.name, "circuit closed");
                }
                State::Closed { failures: 0 }
            }
            (State::Closed { failures }, false) if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            (_, false) => {
                if !matches!(*state, State::Open { .. }) {
                    tracing::warn!(upstream = %self.name, cooldown_ms = self.cooldown.as_millis() as u64, "circuit opened");
                }
                State::Open {
                    until: Instant::now() + self.cooldown,
                }
            }
        };
    }
}

/// A breaker for one upstream; `short_circuited` counts the calls it refused.
#[derive(Debug, Clone)]
pub struct BreakerLayer {
    shared: Arc<Shared>,
}

impl BreakerLayer {
    /// `threshold` 0 disables the breaker.
    pub fn new(name: &str, threshold: u32, cooldown: Duration, short_circuited: Counter) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::Closed { failures: 0 }),
                threshold: if threshold == 0 { u32::MAX } else { threshold },
                cooldown,
                short_circuited,
                name: name.to_owned(),
            }),
        }
    }
}

impl<S> tower::Layer<S> for BreakerLayer {
    type Service = BreakerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BreakerService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct BreakerService<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// Records the outcome of a call when it ends, and a failure when it is dropped unfinished
/// (its caller's deadline passed).
struct Outcome {
    shared: Arc<Shared>,
    done: bool,
}

impl Outcome {
    fn finish(mut self, healthy: bool) {
        self.done = true;
        self.shared.record(healthy);
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if !self.done {
            self.shared.record(false);
        }
    }
}

fn failure_code(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::DeadlineExceeded)
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for BreakerService<S>
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
        if let Admission::Refuse = self.shared.admit() {
            self.shared.short_circuited.inc();
            let message = format!("{} is failing; its circuit is open", self.shared.name);
            return Box::pin(async move { Ok(Status::unavailable(message).into_http()) });
        }
        let outcome = Outcome {
            shared: self.shared.clone(),
            done: false,
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await;
            let healthy = match &response {
                Ok(response) => !response
                    .headers()
                    .get("grpc-status")
                    .map(|value| Code::from_bytes(value.as_bytes()))
                    .is_some_and(failure_code),
                Err(_) => false,
            };
            outcome.finish(healthy);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use tower::{Layer, ServiceExt};

    use super::*;

    fn request() -> Request<()> {
        Request::builder().uri("/x.Y/Z").body(()).unwrap()
    }

    #[tokio::test]
    async fn it_opens_after_consecutive_failures_and_a_successful_probe_closes_it() {
        let failing = Arc::new(AtomicBool::new(true));
        let calls = Arc::new(AtomicUsize::new(0));
        let inner = {
            let failing = failing.clone();
            let calls = calls.clone();
            tower::service_fn(move |_: Request<()>| {
                calls.fetch_add(1, Ordering::SeqCst);
                let failing = failing.load(Ordering::SeqCst);
                async move {
                    Ok::<_, std::convert::Infallible>(if failing {
                        Status::unavailable("down").into_http::<String>()
                    } else {
                        Response::new(String::from("ok"))
                    })
                }
            })
        };
        let refused = Counter::default();
        let breaker = BreakerLayer::new("counts", 3, Duration::from_millis(50), refused.clone());
        let service = breaker.layer(inner);
        for _ in 0..3 {
            service.clone().oneshot(request()).await.unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let short = service.clone().oneshot(request()).await.unwrap();
        assert_eq!(short.headers()["grpc-status"], "14");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "an open circuit makes no call"
        );
        assert_eq!(refused.get(), 1);

        tokio::time::sleep(Duration::from_millis(60)).await;
        failing.store(false, Ordering::SeqCst);
        let probe = service.clone().oneshot(request()).await.unwrap();
        assert_eq!(probe.body(), "ok");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            4,
            "one probe after the cooldown"
        );
        for _ in 0..5 {
            assert_eq!(
                service.clone().oneshot(request()).await.unwrap().body(),
                "ok"
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 9, "closed again");
    }

    #[tokio::test]
    async fn a_failed_probe_opens_it_again_and_other_codes_are_healthy() {
        let calls = Arc::new(AtomicUsize::new(0));
        let inner = {
            let calls = calls.clone();
            tower::service_fn(move |_: Request<()>| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    Ok::<_, std::convert::Infallible>(if n < 2 {
                        Status::not_found("no").into_http::<String>()
                    } else {
                        Status::deadline_exceeded("slow").into_http::<String>()
                    })
                }
            })
        };
        let service = BreakerLayer::new("tracks", 1, Duration::from_millis(30), Counter::default())
            .layer(inner);
        service.clone().oneshot(request()).await.unwrap();
        service.clone().oneshot(request()).await.unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "NOT_FOUND is an answer, not a failure"
        );
        service.clone().oneshot(request()).await.unwrap();
        service.clone().oneshot(request()).await.unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "opened by one deadline failure"
        );
        tokio::time::sleep(Duration::from_millis(40)).await;
        service.clone().oneshot(request()).await.unwrap();
        service.clone().oneshot(request()).await.unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            4,
            "the failed probe opened it again"
        );
    }
}
