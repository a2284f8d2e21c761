//! An adaptive concurrency limit, after Netflix's concurrency-limits `Gradient2Limit` and
//! Envoy's adaptive concurrency filter: the limit follows what the service behind it can take,
//! measured by the latency of the calls it admits, instead of a number set in advance.
//!
//! The controller keeps two latencies of admitted calls: a short one (the median of the last
//! window, as Envoy's filter samples a percentile: one long upload or stream in a window of
//! short calls does not move it) and a long one (an exponential average of those medians over
//! many windows, the latency without queueing).
//! When the short one rises above the long one by more than `tolerance`, calls are queueing
//! somewhere (in the gateway, on the upstream connections, in the foundation services), and the
//! limit shrinks in proportion; otherwise it grows by a small headroom (√limit) each window in
//! which callers used at least half of it. The limit stays within `[min_limit,
//! server.max_concurrent_requests]`, so the static limit remains the ceiling.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// `[server.adaptive_limit]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptiveLimitSettings {
    /// Off: the static `max_concurrent_requests` alone decides.
    pub enabled: bool,
    /// The limit never falls below this many calls at once.
    pub min_limit: usize,
    /// The limit when the service starts, before any latency was measured.
    pub initial_limit: usize,
    /// How much slower than the long-term latency a window may be before the limit shrinks
    /// (2.0: twice as slow).
    pub tolerance: f64,
    /// How far each window moves the limit towards its new estimate, from 0 to 1.
    pub smoothing: f64,
    /// How long a window of samples lasts.
    pub window_ms: u64,
    /// How many windows the long-term latency averages over.
    pub long_windows: u32,
}

impl Default for AdaptiveLimitSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            min_limit: 16,
            initial_limit: 64,
            tolerance: 2.0,
            smoothing: 0.2,
            window_ms: 100,
            long_windows: 100,
        }
    }
}

impl AdaptiveLimitSettings {
    /// Checks the settings, naming the first bad key.
    pub fn validate(&self) -> Result<(), String> {
        if self.min_limit == 0 {
            return Err("server.adaptive_limit.min_limit: must be at least 1".into());
        }
        if self.tolerance < 1.0 {
            return Err("server.adaptive_limit.tolerance: must be at least 1.0".into());
        }
        if !(self.smoothing > 0.0 && self.smoothing <= 1.0) {
            return Err("server.adaptive_limit.smoothing: must be above 0 and at most 1".into());
        }
        if self.window_ms == 0 || self.long_windows == 0 {
            return Err(
                "server.adaptive_limit: window_ms and long_windows must be positive".into(),
            );
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Window {
    started: Instant,
    latencies: Vec<Duration>,
    /// The most calls in flight seen in the window.
    peak_in_flight: usize,
}

impl Window {
    fn new(started: Instant) -> Self {
        Self {
            started,
            latencies: Vec::with_capacity(256),
            peak_in_flight: 0,
        }
    }
}

#[derive(Debug)]
struct State {
    limit: f64,
    /// The long-term latency, in seconds; `None` until the first window closed.
    long: Option<f64>,
    window: Window,
}

/// The controller: read [`AdaptiveLimit::limit`] to admit, and report every admitted call's
/// latency with [`AdaptiveLimit::sample`].
#[derive(Debug)]
pub struct AdaptiveLimit {
    settings: AdaptiveLimitSettings,
    max_limit: usize,
    state: Mutex<State>,
}

impl AdaptiveLimit {
    /// A controller bounded by `max_limit` (the static limit).
    pub fn new(settings: AdaptiveLimitSettings, max_limit: usize) -> Self {
        let max_limit = max_limit.max(settings.min_limit);
        let limit = settings.initial_limit.clamp(settings.min_limit, max_limit) as f64;
        Self {
            settings,
            max_limit,
            state: Mutex::new(State {
                limit,
                long: None,
                window: Window::new(Instant::now()),
            }),
        }
    }

    /// How many calls may be in flight now.
    pub fn limit(&self) -> usize {
        self.state
            .lock()
            .map_or(self.max_limit, |state| state.limit as usize)
    }

    /// One admitted call ended after `latency`, with `in_flight` calls (itself included) in
    /// flight when it was admitted.
    pub fn sample(&self, latency: Duration, in_flight: usize) {
        self.sample_at(Instant::now(), latency, in_flight);
    }

    fn sample_at(&self, now: Instant, latency: Duration, in_flight: usize) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let window = &mut state.window;
        window.latencies.push(latency);
        window.peak_in_flight = window.peak_in_flight.max(in_flight);
        if now.duration_since(window.started) < Duration::from_millis(self.settings.window_ms) {
            return;
        }
        let middle = window.latencies.len() / 2;
        let (_, median, _) = window.latencies.select_nth_unstable(middle);
        let short = median.as_secs_f64().max(1e-6);
        let peak = window.peak_in_flight;
        state.window = Window::new(now);
        let alpha = 2.0 / (f64::from(self.settings.long_windows) + 1.0);
        let mut long = state
            .long
            .map_or(short, |long| long + alpha * (short - long));
        // After a long spell of overload the long-term latency has drifted up with it: let it
        // fall back quickly once calls are fast again.
        if long / short > 2.0 {
            long *= 0.95;
        }
        state.long = Some(long);
        // Callers that use less than half the limit say nothing about whether it is right.
        if (peak as f64) < state.limit / 2.0 {
            return;
        }
        let gradient = (self.settings.tolerance * long / short).clamp(0.5, 1.0);
        let headroom = state.limit.sqrt();
        let estimate = state.limit * gradient + headroom;
        let smoothed = state.limit + self.settings.smoothing * (estimate - state.limit);
        state.limit = smoothed.clamp(self.settings.min_limit as f64, self.max_limit as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller() -> AdaptiveLimit {
        AdaptiveLimit::new(
            AdaptiveLimitSettings {
                enabled: true,
                min_limit: 8,
                initial_limit: 64,
                ..AdaptiveLimitSettings::default()
            },
            512,
        )
    }

    /// Feeds `windows` windows of 100 ms, each with `calls` calls of `latency_ms` and the
    /// limit in use.
    fn run(limit: &AdaptiveLimit, start: &mut Instant, windows: u32, latency_ms: u64, full: bool) {
        for _ in 0..windows {
            *start += Duration::from_millis(101);
            let in_flight = if full { limit.limit() } else { 1 };
            for _ in 0..10 {
                limit.sample_at(*start, Duration::from_millis(latency_ms), in_flight);
            }
        }
    }

    #[test]
    fn the_limit_grows_while_latency_holds_and_shrinks_when_it_climbs() {
        let limit = controller();
        let mut now = Instant::now();
        run(&limit, &mut now, 50, 5, true);
        let grown = limit.limit();
        assert!(
            grown > 64,
            "steady latency with the limit in use: it grows ({grown})"
        );
        run(&limit, &mut now, 20, 50, true);
        let shrunk = limit.limit();
        assert!(
            shrunk < grown / 2,
            "ten times slower: it shrinks ({grown} -> {shrunk})"
        );
        run(&limit, &mut now, 200, 5, true);
        assert!(limit.limit() > shrunk, "fast again: it recovers");
    }

    #[test]
    fn it_stays_between_its_bounds_and_ignores_callers_that_do_not_use_it() {
        let limit = controller();
        let mut now = Instant::now();
        run(&limit, &mut now, 20, 5, false);
        assert_eq!(limit.limit(), 64, "an idle limit does not move");
        run(&limit, &mut now, 2000, 5, true);
        assert_eq!(limit.limit(), 512, "never above the static limit");

        let small = AdaptiveLimit::new(
            AdaptiveLimitSettings {
                enabled: true,
                min_limit: 8,
                initial_limit: 10,
                ..AdaptiveLimitSettings::default()
            },
            512,
        );
        let mut now = Instant::now();
        run(&small, &mut now, 1, 5, true);
        run(&small, &mut now, 20, 5000, true);
        assert_eq!(small.limit(), 8, "never below min_limit");
    }
}
