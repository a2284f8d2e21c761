//! A circuit breaker per upstream, as a tower layer on the client channel: after
//! `breaker_failures` consecutive failed calls (transport errors, UNAVAILABLE, DEADLINE_EXCEEDED)
//! the circuit opens and calls fail at once with UNAVAILABLE, costing the dead upstream nothing;
//! after `breaker_cooldown_ms` one probe call goes through (half-open), and its success closes
//! the circuit again.
//!
//! The breaker is shared by every caller of the gateway, so it counts only what the upstream
//! did, as Envoy's outlier detection counts what a host answered:
//!
//! - a call dropped unfinished (its caller went away, or a sibling call failed the request)
//!   says nothing about the upstream and is not counted;
//! - a call whose `grpc-timeout` is shorter than the upstream's cap carries its caller's
//!   deadline, and a failure once that deadline has passed is the caller's tiny budget, not
//!   the upstream: not counted either. A call bounded by the cap that runs out of time is a
//!   failure (the upstream is slower than it may be);
//! - a probe that ends in one of these ways hands the probe to the next call, so an abandoned
//!   call cannot keep the circuit half-open and refusing.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use http::{Request, Response};
use prometheus_client::metrics::counter::Counter;
use tonic::{Code, Status};

use crate::upstream::parse_grpc_timeout;

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
    /// Times the circuit opened.
    opened: Counter,
    name: String,
    /// The upstream's cap on one call: a shorter `grpc-timeout` is the caller's deadline.
    cap: Duration,
}

/// What one finished (or dropped) call says about the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Healthy,
    Failed,
    /// Nothing: the call was dropped, or failed only because its caller's deadline passed.
    Silent,
}

/// What a breaker counts.
#[derive(Debug, Clone, Default)]
pub struct BreakerCounters {
    /// Calls refused because the circuit was open.
    pub short_circuited: Counter,
    /// Times the circuit opened.
    pub opened: Counter,
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

    fn record(&self, verdict: Verdict, probe: bool) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let healthy = match verdict {
            Verdict::Healthy => true,
            Verdict::Failed => false,
            Verdict::Silent => {
                // The probe said nothing: the next call may probe instead.
                if probe && matches!(*state, State::HalfOpen { probing: true }) {
                    *state = State::HalfOpen { probing: false };
                }
                return;
            }
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
                    self.opened.inc();
                    tracing::warn!(upstream = %self.name, cooldown_ms = self.cooldown.as_millis() as u64, "circuit opened");
                }
                State::Open {
                    until: Instant::now() + self.cooldown,
                }
            }
        };
    }
}

/// A breaker for one upstream; `counters` count the calls it refused and the times it opened.
#[derive(Debug, Clone)]
pub struct BreakerLayer {
    shared: Arc<Shared>,
}

impl BreakerLayer {
    /// `threshold` 0 disables the breaker; `cap` is the upstream's cap on one call
    /// (`timeout_ms`), against which a call's `grpc-timeout` tells the caller's deadline apart.
    pub fn new(
        name: &str,
        threshold: u32,
        cooldown: Duration,
        cap: Duration,
        counters: BreakerCounters,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::Closed { failures: 0 }),
                threshold: if threshold == 0 { u32::MAX } else { threshold },
                cooldown,
                short_circuited: counters.short_circuited,
                opened: counters.opened,
                name: name.to_owned(),
                cap,
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

/// Records the verdict of a call when it ends, and nothing when it is dropped unfinished.
struct Outcome {
    shared: Arc<Shared>,
    probe: bool,
    done: bool,
}

impl Outcome {
    fn finish(mut self, verdict: Verdict) {
        self.done = true;
        self.shared.record(verdict, self.probe);
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if !self.done {
            self.shared.record(Verdict::Silent, self.probe);
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
        let probe = match self.shared.admit() {
            Admission::Refuse => {
                self.shared.short_circuited.inc();
                let message = format!("{} is failing; its circuit is open", self.shared.name);
                return Box::pin(async move { Ok(Status::unavailable(message).into_http()) });
            }
            Admission::Probe => true,
            Admission::Call => false,
        };
        // When the caller's deadline ends this call, if it is shorter than the cap.
        let callers_deadline = request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_grpc_timeout)
            .filter(|timeout| *timeout < self.shared.cap)
            .map(|timeout| Instant::now() + timeout);
        let outcome = Outcome {
            shared: self.shared.clone(),
            probe,
            done: false,
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await;
            let failed = match &response {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .map(|value| Code::from_bytes(value.as_bytes()))
                    .is_some_and(failure_code),
                Err(_) => true,
            };
            let verdict = if !failed {
                Verdict::Healthy
            } else if callers_deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                Verdict::Silent
            } else {
                Verdict::Failed
            };
            outcome.finish(verdict);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use tower::{Layer, ServiceExt};

    use super::*;

    const CAP: Duration = Duration::from_secs(1);

    fn counters(short_circuited: &Counter) -> BreakerCounters {
        BreakerCounters {
            short_circuited: short_circuited.clone(),
            opened: Counter::default(),
        }
    }

    fn request() -> Request<()> {
        Request::builder().uri("/x.Y/Z").body(()).unwrap()
    }

    /// A request carrying its caller's deadline, shorter than the cap.
    fn with_timeout(timeout: &str) -> Request<()> {
        Request::builder()
            .uri("/x.Y/Z")
            .header("grpc-timeout", timeout)
            .body(())
            .unwrap()
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
        let breaker = BreakerLayer::new(
            "counts",
            3,
            Duration::from_millis(50),
            CAP,
            counters(&refused),
        );
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
        let service = BreakerLayer::new(
            "tracks",
            1,
            Duration::from_millis(30),
            CAP,
            BreakerCounters::default(),
        )
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

    /// An upstream that answers `code` after `delay`, counting its calls.
    fn answering(
        calls: &Arc<AtomicUsize>,
        code: Option<Code>,
        delay: Duration,
    ) -> impl tower::Service<
        Request<()>,
        Response = Response<String>,
        Error = std::convert::Infallible,
        Future = impl Send + 'static,
    > + Clone {
        let calls = calls.clone();
        tower::service_fn(move |_: Request<()>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(delay).await;
                Ok::<_, std::convert::Infallible>(match code {
                    Some(code) => Status::new(code, "failed").into_http::<String>(),
                    None => Response::new(String::from("ok")),
                })
            }
        })
    }

    #[tokio::test]
    async fn calls_their_callers_dropped_count_nothing() {
        let calls = Arc::new(AtomicUsize::new(0));
        let service = BreakerLayer::new(
            "likes",
            2,
            Duration::from_secs(60),
            CAP,
            BreakerCounters::default(),
        )
        .layer(answering(&calls, None, Duration::from_secs(60)));
        for _ in 0..10 {
            let abandoned =
                tokio::time::timeout(Duration::from_millis(1), service.clone().oneshot(request()))
                    .await;
            assert!(abandoned.is_err(), "the caller went away first");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 10);
        let after =
            tokio::time::timeout(Duration::from_millis(1), service.clone().oneshot(request()))
                .await;
        assert!(after.is_err());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            11,
            "the circuit stayed closed: the eleventh call reached the upstream"
        );
    }

    #[tokio::test]
    async fn a_callers_own_short_deadline_counts_nothing_but_the_caps_does() {
        let calls = Arc::new(AtomicUsize::new(0));
        let refused = Counter::default();
        let service = BreakerLayer::new(
            "tracks",
            2,
            Duration::from_secs(60),
            CAP,
            counters(&refused),
        )
        .layer(answering(
            &calls,
            Some(Code::DeadlineExceeded),
            Duration::from_millis(20),
        ));
        for _ in 0..5 {
            let response = service.clone().oneshot(with_timeout("10m")).await.unwrap();
            assert_eq!(response.headers()["grpc-status"], "4");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 5, "every call went through");
        assert_eq!(refused.get(), 0);

        // The same answer to calls bounded by the cap opens the circuit.
        for _ in 0..2 {
            service.clone().oneshot(request()).await.unwrap();
        }
        service.clone().oneshot(request()).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 7, "the third was refused");
        assert_eq!(refused.get(), 1);
    }

    #[tokio::test]
    async fn an_abandoned_probe_hands_the_probe_to_the_next_call() {
        let failing = Arc::new(AtomicBool::new(true));
        let calls = Arc::new(AtomicUsize::new(0));
        let inner = {
            let failing = failing.clone();
            let calls = calls.clone();
            tower::service_fn(move |_: Request<()>| {
                calls.fetch_add(1, Ordering::SeqCst);
                let failing = failing.load(Ordering::SeqCst);
                async move {
                    if failing {
                        return Ok::<_, std::convert::Infallible>(
                            Status::unavailable("down").into_http::<String>(),
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(Response::new(String::from("ok")))
                }
            })
        };
        let service = BreakerLayer::new(
            "counts",
            1,
            Duration::from_millis(30),
            CAP,
            BreakerCounters::default(),
        )
        .layer(inner);
        service.clone().oneshot(request()).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one failure opened it");
        tokio::time::sleep(Duration::from_millis(40)).await;
        failing.store(false, Ordering::SeqCst);
        // The probe's caller goes away before the upstream answers.
        let abandoned =
            tokio::time::timeout(Duration::from_millis(5), service.clone().oneshot(request()))
                .await;
        assert!(abandoned.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 2, "the probe was sent");
        let next = service.clone().oneshot(request()).await.unwrap();
        assert_eq!(
            next.body(),
            "ok",
            "the next call probed instead of being refused"
        );
        assert_eq!(
            service.clone().oneshot(request()).await.unwrap().body(),
            "ok",
            "and closed the circuit"
        );
    }
}
