//! The two ways of driving load: a closed loop (a fixed number of callers, each sending its
//! next request when the previous one is answered: the throughput at saturation) and an open
//! loop (requests sent on a fixed schedule whatever happens to earlier ones: the latency at a
//! given rate, without coordinated omission, because each latency is measured from the moment
//! the request was due, not from when it could be sent).

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio::task::JoinSet;

/// One request: `Ok` or the gRPC status code it failed with. The argument numbers requests,
/// so that callers can rotate through ids, masks and viewers.
pub type Call = Arc<dyn Fn(u64) -> CallFuture + Send + Sync>;
pub type CallFuture = Pin<Box<dyn Future<Output = Result<(), tonic::Code>> + Send>>;

/// Wraps a closure returning a future as a [`Call`].
pub fn call<F, Fut>(f: F) -> Call
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), tonic::Code>> + Send + 'static,
{
    Arc::new(move |n| Box::pin(f(n)))
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Latencies of the successful requests, in microseconds.
    pub latencies_us: Vec<u64>,
    /// Failed requests by status code (`dropped` for open-loop requests never sent because
    /// too many were outstanding).
    pub errors: BTreeMap<String, u64>,
    /// From the first request to the last answer.
    pub elapsed: Duration,
}

/// Latency percentiles and throughput of an [`Outcome`].
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    pub ok: u64,
    pub errors: u64,
    pub error_codes: BTreeMap<String, u64>,
    pub seconds: f64,
    pub rps: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Outcome {
    pub fn summary(&self) -> Summary {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let at = |q: f64| -> u64 {
            if sorted.is_empty() {
                return 0;
            }
            // The nearest-rank percentile: the smallest value with at least q of the samples
            // at or below it.
            let rank = ((sorted.len() as f64) * q).ceil() as usize;
            sorted[rank.clamp(1, sorted.len()) - 1]
        };
        let seconds = self.elapsed.as_secs_f64();
        Summary {
            ok: sorted.len() as u64,
            errors: self.errors.values().sum(),
            error_codes: self.errors.clone(),
            seconds,
            rps: if seconds > 0.0 {
                sorted.len() as f64 / seconds
            } else {
                0.0
            },
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            max_us: sorted.last().copied().unwrap_or(0),
        }
    }

    fn record(&mut self, latency: Duration, result: Result<(), tonic::Code>) {
        match result {
            Ok(()) => self.latencies_us.push(latency.as_micros() as u64),
            Err(code) => *self.errors.entry(code_name(code)).or_default() += 1,
        }
    }
}

/// The canonical upper-case name of a status code, as in the gRPC documentation.
pub fn code_name(code: tonic::Code) -> String {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
    .to_owned()
}

/// `concurrency` callers each send requests back to back for `duration`.
pub async fn closed_loop(call: &Call, concurrency: usize, duration: Duration) -> Outcome {
    closed_loop_with(call, concurrency, duration, None).await
}

/// [`closed_loop`] whose callers, when a call is shed (RESOURCE_EXHAUSTED), wait before their
/// next one, as a well-behaved client does: capped exponential backoff from `backoff`, with
/// full jitter, reset by a call that is served. The wait is not part of any latency.
pub async fn closed_loop_with(
    call: &Call,
    concurrency: usize,
    duration: Duration,
    backoff: Option<Duration>,
) -> Outcome {
    let started = Instant::now();
    let end = started + duration;
    let mut workers = JoinSet::new();
    for worker in 0..concurrency {
        let call = Arc::clone(call);
        workers.spawn(async move {
            let mut outcome = Outcome::default();
            let mut n = worker as u64;
            let mut shed_in_a_row = 0u32;
            while Instant::now() < end {
                let sent = Instant::now();
                let result = call(n).await;
                let shed = result == Err(tonic::Code::ResourceExhausted);
                outcome.record(sent.elapsed(), result);
                n += concurrency as u64;
                if let (true, Some(base)) = (shed, backoff) {
                    let cap = base * 2u32.pow(shed_in_a_row.min(5));
                    shed_in_a_row += 1;
                    let wait = cap.mul_f64(fastrand::f64());
                    tokio::time::sleep(wait.min(end.saturating_duration_since(Instant::now())))
                        .await;
                } else {
                    shed_in_a_row = 0;
                }
            }
            outcome
        });
    }
    let mut total = Outcome::default();
    while let Some(joined) = workers.join_next().await {
        let outcome = joined.expect("a load worker panicked");
        total.latencies_us.extend(outcome.latencies_us);
        for (code, count) in outcome.errors {
            *total.errors.entry(code).or_default() += count;
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// Requests sent at `rate` per second for `duration`, each on its own task; at most
/// `max_outstanding` wait for an answer at once (beyond that a due request is counted as
/// `dropped`, so that an overloaded target cannot make the generator itself grow without bound).
pub async fn open_loop(
    call: &Call,
    rate: f64,
    duration: Duration,
    max_outstanding: usize,
) -> Outcome {
    assert!(rate > 0.0, "the rate must be positive");
    let started = Instant::now();
    let mut outcome = Outcome::default();
    let mut tasks: JoinSet<(Duration, Result<(), tonic::Code>)> = JoinSet::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let total = (duration.as_secs_f64() * rate) as u64;
    let mut sent = 0u64;
    while sent < total {
        ticker.tick().await;
        while let Some(joined) = tasks.try_join_next() {
            let (latency, result) = joined.expect("a load task panicked");
            outcome.record(latency, result);
        }
        let due = ((started.elapsed().as_secs_f64() * rate) as u64).min(total);
        while sent < due {
            let intended = started + Duration::from_secs_f64(sent as f64 / rate);
            if tasks.len() >= max_outstanding {
                *outcome.errors.entry("dropped".into()).or_default() += 1;
            } else {
                let future = call(sent);
                tasks.spawn(async move {
                    let result = future.await;
                    (intended.elapsed(), result)
                });
            }
            sent += 1;
        }
    }
    while let Some(joined) = tasks.join_next().await {
        let (latency, result) = joined.expect("a load task panicked");
        outcome.record(latency, result);
    }
    outcome.elapsed = started.elapsed();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let outcome = Outcome {
            latencies_us: (1..=100).rev().collect(),
            errors: BTreeMap::from([("UNAVAILABLE".to_owned(), 2)]),
            elapsed: Duration::from_secs(2),
        };
        let summary = outcome.summary();
        assert_eq!(
            (
                summary.p50_us,
                summary.p90_us,
                summary.p99_us,
                summary.max_us
            ),
            (50, 90, 99, 100)
        );
        assert_eq!((summary.ok, summary.errors), (100, 2));
        assert!((summary.rps - 50.0).abs() < 1e-9);
        assert_eq!(Outcome::default().summary().p99_us, 0);
    }

    #[tokio::test]
    async fn an_open_loop_keeps_its_schedule_and_counts_failures() {
        let call = call(|n| async move {
            if n % 4 == 0 {
                Err(tonic::Code::Unavailable)
            } else {
                Ok(())
            }
        });
        let outcome = open_loop(&call, 2000.0, Duration::from_millis(200), 1000).await;
        let summary = outcome.summary();
        assert_eq!(summary.ok + summary.errors, 400);
        assert_eq!(summary.error_codes["UNAVAILABLE"], 100);
    }

    #[tokio::test]
    async fn an_open_loop_drops_what_it_cannot_hold() {
        // 50 requests due within 50 ms, each answered after 300 ms of simulated work: only 10
        // may be outstanding, so 40 are dropped rather than queued.
        let call = call(|_| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(())
        });
        let summary = open_loop(&call, 1000.0, Duration::from_millis(50), 10)
            .await
            .summary();
        assert_eq!(summary.ok, 10);
        assert_eq!(summary.error_codes["dropped"], 40);
        // Latency counts from when a request was due.
        assert!(summary.p50_us >= 300_000, "{summary:?}");
    }

    #[tokio::test]
    async fn a_closed_loop_runs_its_callers_concurrently() {
        let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (a, b) = (Arc::clone(&in_flight), Arc::clone(&most));
        let call = call(move |_| {
            let (in_flight, most) = (Arc::clone(&a), Arc::clone(&b));
            async move {
                use std::sync::atomic::Ordering::SeqCst;
                let now = in_flight.fetch_add(1, SeqCst) + 1;
                most.fetch_max(now, SeqCst);
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
                in_flight.fetch_sub(1, SeqCst);
                Ok(())
            }
        });
        let outcome = closed_loop(&call, 8, Duration::from_millis(100)).await;
        assert!(outcome.summary().ok >= 8);
        assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 8);
    }
}
