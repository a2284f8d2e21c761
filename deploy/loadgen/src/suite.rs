//! The standard scenarios, run in order against one topology, and the targets checked against
//! their figures.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::{
    Endpoints,
    drive::{self, Call, Summary},
    procs::{self, Processes, Usage},
    scrape, upstream_calls,
    workload::{RealisticView, Workload},
};

/// How long and how hard.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteOptions {
    /// Each phase runs this long before it is measured.
    pub warmup: Duration,
    /// Each phase is measured this long.
    pub duration: Duration,
    /// Callers of the closed-loop (saturation) phases.
    pub concurrency: usize,
    /// Requests in flight in the memory phase.
    pub memory_in_flight: usize,
    /// The gateway's concurrency limit in the overload phase.
    pub overload_limit: usize,
    /// Latency injected into every foundation read in the critical-path phase.
    pub injected_latency_ms: u64,
    /// How many times each latency comparison (gateway against its baseline) is repeated,
    /// alternating the two sides; the targets read the median round.
    pub rounds: usize,
    /// The seed dataset the services were started with.
    pub seed_users: u32,
    pub seed_tracks: u32,
    /// Callers of the realistic workload's closed loops, each run with coalescing on and off.
    pub realistic_callers: Vec<usize>,
}

impl SuiteOptions {
    /// The standard run of `just bench`.
    pub fn standard() -> Self {
        Self {
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(5),
            concurrency: 32,
            memory_in_flight: 1000,
            overload_limit: 64,
            injected_latency_ms: 20,
            rounds: 3,
            seed_users: 1000,
            seed_tracks: 5000,
            realistic_callers: vec![1, 8, 64, 512],
        }
    }

    /// A fast run that proves the suite works (`just bench-smoke` and the tests).
    pub fn quick() -> Self {
        Self {
            warmup: Duration::from_millis(200),
            duration: Duration::from_millis(800),
            concurrency: 8,
            memory_in_flight: 200,
            overload_limit: 16,
            rounds: 1,
            // The counts of callers the targets read; the others only in the standard run.
            realistic_callers: vec![1, 64],
            ..Self::standard()
        }
    }
}

/// How a phase was driven.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Load {
    /// This many callers back to back.
    Closed { concurrency: usize },
    /// This many callers back to back, each backing off after a shed call (capped exponential
    /// backoff from `backoff_ms`, full jitter), as well-behaved clients do.
    Polite { concurrency: usize, backoff_ms: u64 },
    /// This many requests per second on a fixed schedule.
    Open { rate: f64 },
}

impl std::fmt::Display for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Load::Closed { concurrency } => write!(f, "closed ×{concurrency}"),
            Load::Polite {
                concurrency,
                backoff_ms,
            } => write!(f, "closed ×{concurrency}, backoff {backoff_ms} ms"),
            Load::Open { rate } => write!(f, "open {rate:.0}/s"),
        }
    }
}

/// The figures of one phase.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    pub what: String,
    pub load: Load,
    #[serde(flatten)]
    pub summary: Summary,
    /// Upstream calls the gateway made per request, in total and by foundation method
    /// (absent for phases that bypass the gateways).
    pub upstream_calls_per_request: Option<f64>,
    pub upstream_calls_by_method: BTreeMap<String, f64>,
    /// CPU time per successful request, in microseconds, by process (`loadgen` is the
    /// generator itself); empty when the services are not separate processes.
    pub cpu_us_per_request: BTreeMap<String, f64>,
    /// The most resident memory during the phase, in MiB, by process.
    pub peak_rss_mib: BTreeMap<String, f64>,
    /// Resident memory at the end of the phase, in MiB, by process.
    pub end_rss_mib: BTreeMap<String, f64>,
    /// How many times the gateway's upstream circuits opened during the phase (absent for
    /// phases that bypass the gateways).
    pub circuits_opened: Option<f64>,
}

/// One target of the issue, with the figure that decides it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    pub target: String,
    pub figure: String,
    pub met: bool,
}

/// Where the suite runs: separate processes (every figure) or services in this process (no
/// per-process CPU or memory, no restarts: the phases that need them are skipped).
#[derive(Debug)]
pub enum System {
    Processes(Processes),
    InProcess(Endpoints),
}

impl System {
    fn endpoints(&self) -> Endpoints {
        match self {
            System::Processes(processes) => processes.endpoints(),
            System::InProcess(endpoints) => endpoints.clone(),
        }
    }

    /// Why the Envoy comparison has no figures, if it has none.
    fn envoy_missing(&self) -> Option<String> {
        match self {
            System::Processes(processes) => processes.envoy_missing().map(str::to_owned),
            System::InProcess(_) => Some("the services run inside this process: no Envoy".into()),
        }
    }

    fn pids(&self) -> BTreeMap<String, u32> {
        let mut pids: BTreeMap<String, u32> = match self {
            System::Processes(processes) => processes
                .pids()
                .into_iter()
                .map(|(name, pid)| (name.to_owned(), pid))
                .collect(),
            System::InProcess(_) => BTreeMap::new(),
        };
        pids.insert("loadgen".into(), std::process::id());
        pids
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Gateway {
    Consumer,
    Creator,
    None,
}

struct Runner<'a> {
    options: &'a SuiteOptions,
    system: &'a mut System,
    phases: Vec<Phase>,
    /// Whether the consumer gateway coalesces its upstream calls now (its default).
    coalescing: bool,
}

fn usages(pids: &BTreeMap<String, u32>) -> BTreeMap<String, Usage> {
    pids.iter()
        .filter_map(|(name, pid)| Some((name.clone(), procs::usage(*pid).ok()?)))
        .collect()
}

const MIB: f64 = 1024.0 * 1024.0;

impl Runner<'_> {
    async fn phase(
        &mut self,
        name: &str,
        what: &str,
        gateway: Gateway,
        load: Load,
        call: &Call,
    ) -> anyhow::Result<Phase> {
        let endpoints = self.system.endpoints();
        let metrics_addr = match gateway {
            Gateway::Consumer => Some(endpoints.consumer_metrics.clone()),
            Gateway::Creator => Some(endpoints.creator_metrics.clone()),
            Gateway::None => None,
        };
        let drive = |duration| async move {
            match load {
                Load::Closed { concurrency } => {
                    drive::closed_loop(call, concurrency, duration).await
                }
                Load::Polite {
                    concurrency,
                    backoff_ms,
                } => {
                    let backoff = Some(Duration::from_millis(backoff_ms));
                    drive::closed_loop_with(call, concurrency, duration, backoff).await
                }
                Load::Open { rate } => drive::open_loop(call, rate, duration, 20_000).await,
            }
        };
        drop(drive(self.options.warmup).await);

        let pids = self.system.pids();
        for pid in pids.values() {
            // Without permission (a foreign process) the peak is the lifetime peak.
            drop(procs::reset_peak(*pid));
        }
        let metrics_before = match &metrics_addr {
            Some(addr) => Some(scrape(addr).await?),
            None => None,
        };
        let before = usages(&pids);
        let outcome = drive(self.options.duration).await;
        let after = usages(&pids);
        let summary = outcome.summary();
        let requests =
            summary.ok + summary.errors - summary.error_codes.get("dropped").unwrap_or(&0);

        let mut upstream_by_method = BTreeMap::new();
        let mut circuits_opened = None;
        if let (Some(addr), Some(before)) = (&metrics_addr, &metrics_before) {
            let after = scrape(addr).await?;
            let opened = |page: &str| {
                service_runtime::metrics::sample(page, "grpc_client_circuit_opened_total", &[])
            };
            circuits_opened = Some(opened(&after) - opened(before));
            let before = upstream_calls(before);
            let after = upstream_calls(&after);
            for (method, count) in after {
                let delta = count - before.get(&method).copied().unwrap_or(0.0);
                if delta > 0.0 {
                    upstream_by_method.insert(method, delta / requests.max(1) as f64);
                }
            }
        }
        let ok = summary.ok.max(1) as f64;
        let mut cpu = BTreeMap::new();
        let mut peak = BTreeMap::new();
        let mut end = BTreeMap::new();
        for (name, after) in &after {
            if let Some(before) = before.get(name) {
                cpu.insert(
                    name.clone(),
                    (after.cpu_seconds - before.cpu_seconds) * 1e6 / ok,
                );
            }
            peak.insert(name.clone(), after.peak_rss_bytes as f64 / MIB);
            end.insert(name.clone(), after.rss_bytes as f64 / MIB);
        }
        let phase = Phase {
            name: name.to_owned(),
            what: what.to_owned(),
            load,
            summary,
            upstream_calls_per_request: metrics_addr
                .is_some()
                .then(|| upstream_by_method.values().sum()),
            upstream_calls_by_method: upstream_by_method,
            cpu_us_per_request: cpu,
            peak_rss_mib: peak,
            end_rss_mib: end,
            circuits_opened,
        };
        eprintln!(
            "{:<34} {:>14} {:>9.0} req/s  p50 {:>7} µs  p99 {:>7} µs  errors {}",
            phase.name,
            phase.load.to_string(),
            phase.summary.rps,
            phase.summary.p50_us,
            phase.summary.p99_us,
            phase.summary.errors
        );
        self.phases.push(phase.clone());
        Ok(phase)
    }

    fn closed(&self) -> Load {
        Load::Closed {
            concurrency: self.options.concurrency,
        }
    }

    /// Runs two scenarios at the same load alternately, [`SuiteOptions::rounds`] times each:
    /// a slow spell of the machine then falls on both sides of a comparison rather than one,
    /// and the targets read the median round. Phases are named `name#round` when there are
    /// several rounds.
    async fn alternate(
        &mut self,
        load: Load,
        first: Side<'_>,
        second: Side<'_>,
    ) -> anyhow::Result<Vec<(Phase, Phase)>> {
        let rounds = self.options.rounds.max(1);
        let mut pairs = Vec::with_capacity(rounds);
        for round in 1..=rounds {
            let mut phases = Vec::with_capacity(2);
            for side in [first, second] {
                phases.push(
                    self.phase(
                        &round_name(side.name, round, rounds),
                        side.what,
                        side.gateway,
                        load,
                        side.call,
                    )
                    .await?,
                );
            }
            let [a, b] = <[Phase; 2]>::try_from(phases).expect("one phase per side");
            pairs.push((a, b));
        }
        Ok(pairs)
    }

    /// Switches the consumer gateway's coalescing of upstream calls (`[fanout] coalesce`) by
    /// restarting it, if it is not already so; on is its default, so switching it on forgets
    /// every override of the gateway.
    async fn set_coalescing(&mut self, on: bool) -> anyhow::Result<()> {
        if self.coalescing == on {
            return Ok(());
        }
        if on {
            self.reset(&["consumer-gateway"]).await?;
        } else {
            self.restart(&["consumer-gateway"], &[("FANOUT__COALESCE", "false")])
                .await?;
        }
        self.coalescing = on;
        Ok(())
    }

    /// Whether the services are separate processes, which the restarting phases need.
    fn separate_processes(&self) -> bool {
        matches!(self.system, System::Processes(_))
    }

    /// Restarts `services` with `env` set (separate processes only).
    async fn restart(
        &mut self,
        services: &[&'static str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        match &mut self.system {
            System::Processes(processes) => processes.restart(services, env).await,
            System::InProcess(_) => Ok(()),
        }
    }

    /// Restarts `services` with their standard settings (separate processes only).
    async fn reset(&mut self, services: &[&'static str]) -> anyhow::Result<()> {
        if services.contains(&"consumer-gateway") {
            self.coalescing = true;
        }
        match &mut self.system {
            System::Processes(processes) => processes.reset(services).await,
            System::InProcess(_) => Ok(()),
        }
    }
}

/// The overload sweep with one kind of limit.
#[derive(Debug, Clone, Serialize)]
pub struct Sweep {
    /// `static` or `adaptive`.
    pub mode: &'static str,
    /// The closed loops, at 1, 2, 5 and 20 times the limit, callers backing off when shed.
    pub closed: Vec<Phase>,
    /// The open loops, at 2 and 5 times the saturation rate.
    pub open: Vec<Phase>,
    /// 20 times the limit in callers that retry a shed call at once: a storm, reported beside
    /// the targets (on a machine the generator shares, its own retries take the CPU).
    pub storm: Option<Phase>,
    /// The goodput at saturation (the whole view, closed loop, the standard limit).
    pub saturation: f64,
}

/// How long a shed caller of the sweep's closed loops waits at first.
const SWEEP_BACKOFF_MS: u64 = 50;

/// The limit factors and saturation factors of the sweep.
const SWEEP_CLOSED: [usize; 4] = [1, 2, 5, 20];
const SWEEP_OPEN: [f64; 2] = [2.0, 5.0];

/// Failures other than shedding, and the generator's own drops, by code.
fn other_codes(phase: &Phase) -> BTreeMap<String, u64> {
    phase
        .summary
        .error_codes
        .iter()
        .filter(|(code, _)| !matches!(code.as_str(), "RESOURCE_EXHAUSTED" | "dropped"))
        .map(|(code, n)| (code.clone(), *n))
        .collect()
}

impl Sweep {
    fn phases(&self) -> impl Iterator<Item = &Phase> {
        self.closed.iter().chain(&self.open).chain(&self.storm)
    }

    fn targets(&self) -> Vec<TargetCheck> {
        let mode = self.mode;
        let others: u64 = self
            .phases()
            .map(|p| other_codes(p).values().sum::<u64>())
            .sum();
        let opened: f64 = self.phases().filter_map(|p| p.circuits_opened).sum();
        let peak = self
            .phases()
            .filter_map(|p| p.peak_rss_mib.get("consumer-gateway").copied())
            .fold(f64::NAN, f64::max);
        let mut targets = vec![
            TargetCheck {
                target: format!(
                    "sweep, {mode} limit: no code but OK and RESOURCE_EXHAUSTED in any phase"
                ),
                figure: format!("{others} other"),
                met: others == 0,
            },
            TargetCheck {
                target: format!("sweep, {mode} limit: no circuit opened"),
                figure: format!("{opened:.0} opened"),
                met: opened == 0.0,
            },
            TargetCheck {
                target: format!("sweep, {mode} limit: gateway RSS flat, ≤ 64 MiB"),
                figure: format!("peak {peak:.1} MiB"),
                met: peak <= 64.0,
            },
        ];
        if let (Some(first), Some(last)) = (self.closed.first(), self.closed.last()) {
            let ratio = last.summary.p99_us as f64 / first.summary.p99_us.max(1) as f64;
            targets.push(TargetCheck {
                target: format!(
                    "sweep, {mode} limit: accepted p99 at 20 × the limit ≤ 2 × the accepted p99 at 1 ×"
                ),
                figure: format!(
                    "{ratio:.2} × ({:.2} ms against {:.2} ms)",
                    ms(last.summary.p99_us),
                    ms(first.summary.p99_us)
                ),
                met: ratio <= 2.0,
            });
        }
        if let Some(five) = self.open.last() {
            let ratio = five.summary.rps / self.saturation.max(1e-9);
            targets.push(TargetCheck {
                target: format!(
                    "sweep, {mode} limit: goodput at 5 × saturation ≥ 90 % of the goodput at saturation"
                ),
                figure: format!(
                    "{:.0} % ({:.0} OK/s against {:.0} OK/s)",
                    ratio * 100.0,
                    five.summary.rps,
                    self.saturation
                ),
                met: ratio >= 0.9,
            });
        }
        targets
    }
}

/// Runs the overload sweep with the static limit, then with the adaptive one; `saturation` is
/// the whole view's rate at saturation, with the standard limit.
async fn sweep(
    runner: &mut Runner<'_>,
    workload: &std::sync::Arc<Workload>,
    saturation: f64,
) -> anyhow::Result<Vec<Sweep>> {
    let limit = runner.options.overload_limit;
    let limit_text = limit.to_string();
    let min_text = (limit / 4).max(1).to_string();
    let call = workload.get_track(None);
    let mut sweeps = Vec::new();
    for mode in ["static", "adaptive"] {
        let mut env = vec![("SERVER__MAX_CONCURRENT_REQUESTS", limit_text.as_str())];
        if mode == "adaptive" {
            env.extend([
                ("SERVER__ADAPTIVE_LIMIT__ENABLED", "true"),
                ("SERVER__ADAPTIVE_LIMIT__INITIAL_LIMIT", limit_text.as_str()),
                ("SERVER__ADAPTIVE_LIMIT__MIN_LIMIT", min_text.as_str()),
            ]);
        }
        runner.restart(&["consumer-gateway"], &env).await?;
        let mut closed = Vec::new();
        for factor in SWEEP_CLOSED {
            closed.push(
                runner
                    .phase(
                        &format!("sweep.{mode}.closed.{factor}x"),
                        &format!("GetTrack, whole view, {factor} × the concurrency limit of {limit} as callers, {mode} limit"),
                        Gateway::Consumer,
                        Load::Polite {
                            concurrency: limit * factor,
                            backoff_ms: SWEEP_BACKOFF_MS,
                        },
                        &call,
                    )
                    .await?,
            );
        }
        let storm = runner
            .phase(
                &format!("sweep.{mode}.storm.20x"),
                &format!("GetTrack, whole view, 20 × the concurrency limit of {limit} as callers that retry shed calls at once, {mode} limit"),
                Gateway::Consumer,
                Load::Closed {
                    concurrency: limit * 20,
                },
                &call,
            )
            .await?;
        let mut open = Vec::new();
        for factor in SWEEP_OPEN {
            open.push(
                runner
                    .phase(
                        &format!("sweep.{mode}.open.{factor:.0}x"),
                        &format!(
                            "GetTrack, whole view, {factor:.0} × the saturation rate, {mode} limit"
                        ),
                        Gateway::Consumer,
                        Load::Open {
                            rate: saturation * factor,
                        },
                        &call,
                    )
                    .await?,
            );
        }
        sweeps.push(Sweep {
            mode,
            closed,
            open,
            storm: Some(storm),
            saturation,
        });
    }
    runner.reset(&["consumer-gateway"]).await?;
    Ok(sweeps)
}

/// One cell of the realistic workload: a view read by this many callers with coalescing on or
/// off, as the median of its rounds.
#[derive(Debug, Clone, Serialize)]
pub struct RealisticRow {
    pub view: RealisticView,
    pub callers: usize,
    pub coalescing: bool,
    /// The phases of the rounds.
    pub phases: Vec<String>,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Failed calls over every round.
    pub errors: u64,
    pub upstream_calls_per_request: Option<f64>,
    pub gateway_cpu_us_per_request: Option<f64>,
    /// tracks, likes, follows and counts together.
    pub foundation_cpu_us_per_request: Option<f64>,
}

/// The gateway's CPU per request of a phase.
fn gateway_cpu(phase: &Phase) -> Option<f64> {
    phase.cpu_us_per_request.get("consumer-gateway").copied()
}

/// The foundation services' CPU per request of a phase, summed.
fn foundation_cpu(phase: &Phase) -> Option<f64> {
    ["tracks", "likes", "follows", "counts"]
        .iter()
        .map(|name| phase.cpu_us_per_request.get(*name).copied())
        .sum()
}

/// The median of `f` over `phases`; `None` when no phase has the figure.
fn median_of(phases: &[Phase], f: impl Fn(&Phase) -> Option<f64>) -> Option<f64> {
    let values: Vec<f64> = phases.iter().filter_map(f).collect();
    (!values.is_empty()).then(|| median(values))
}

impl RealisticRow {
    fn new(view: RealisticView, callers: usize, coalescing: bool, phases: &[Phase]) -> Self {
        Self {
            view,
            callers,
            coalescing,
            phases: phases.iter().map(|phase| phase.name.clone()).collect(),
            rps: median(phases.iter().map(|phase| phase.summary.rps)),
            p50_us: median(phases.iter().map(|phase| phase.summary.p50_us as f64)),
            p99_us: median(phases.iter().map(|phase| phase.summary.p99_us as f64)),
            errors: phases.iter().map(|phase| phase.summary.errors).sum(),
            upstream_calls_per_request: median_of(phases, |phase| phase.upstream_calls_per_request),
            gateway_cpu_us_per_request: median_of(phases, gateway_cpu),
            foundation_cpu_us_per_request: median_of(phases, foundation_cpu),
        }
    }
}

/// The realistic workload's rounds: per view, callers and coalescing, one phase per round.
type RealisticRounds = BTreeMap<(RealisticView, usize, bool), Vec<Phase>>;

/// Runs the realistic workload (every seed user, several territories, Zipf popularity), the
/// whole view and the mask table, at every count of callers, with coalescing on and off. The
/// rounds alternate which setting goes first (on, off; off, on; …), so a switch costs one
/// gateway restart per round and a slow spell falls on both settings.
async fn realistic(
    runner: &mut Runner<'_>,
    workload: &std::sync::Arc<Workload>,
) -> anyhow::Result<RealisticRounds> {
    let views = [RealisticView::Whole, RealisticView::Masks];
    let calls: Vec<(RealisticView, Call)> = views
        .iter()
        .map(|view| (*view, workload.realistic_get_track(*view)))
        .collect();
    let rounds = runner.options.rounds.max(1);
    let callers = runner.options.realistic_callers.clone();
    let mut cells: RealisticRounds = BTreeMap::new();
    for round in 1..=rounds {
        let order = if round % 2 == 1 {
            [true, false]
        } else {
            [false, true]
        };
        for coalescing in order {
            runner.set_coalescing(coalescing).await?;
            let setting = if coalescing { "on" } else { "off" };
            for &concurrency in &callers {
                for (view, call) in &calls {
                    let name = round_name(
                        &format!("realistic.{}.c{concurrency}.{setting}", view.name()),
                        round,
                        rounds,
                    );
                    let what = format!(
                        "GetTrack of the realistic workload ({}), coalescing {setting}",
                        match view {
                            RealisticView::Whole => "whole view",
                            RealisticView::Masks => "masks from the mask table",
                        }
                    );
                    let phase = runner
                        .phase(
                            &name,
                            &what,
                            Gateway::Consumer,
                            Load::Closed { concurrency },
                            call,
                        )
                        .await?;
                    cells
                        .entry((*view, concurrency, coalescing))
                        .or_default()
                        .push(phase);
                }
            }
        }
    }
    runner.set_coalescing(true).await?;
    Ok(cells)
}

/// The targets of the realistic workload.
fn realistic_targets(cells: &RealisticRounds) -> Vec<TargetCheck> {
    let mut targets = Vec::new();
    let whole = |callers: usize, coalescing: bool| {
        cells
            .get(&(RealisticView::Whole, callers, coalescing))
            .map(Vec::as_slice)
            .unwrap_or_default()
    };
    let rounds_note = |n: usize| {
        if n == 1 {
            String::new()
        } else {
            format!(", median of {n} alternating rounds")
        }
    };
    let (on, off) = (whole(64, true), whole(64, false));
    if !on.is_empty() {
        let calls = median_of(on, |phase| phase.upstream_calls_per_request).unwrap_or(f64::NAN);
        targets.push(TargetCheck {
            target: "realistic workload, whole view, 64 callers, coalescing on: upstream calls per request ≤ 1.0".into(),
            figure: format!("{calls:.2}{}", rounds_note(on.len())),
            met: calls <= 1.0,
        });
        let cpu = median_of(on, gateway_cpu);
        targets.push(TargetCheck {
            target: "realistic workload, whole view, 64 callers, coalescing on: gateway CPU per request ≤ 100 µs".into(),
            figure: cpu.map_or_else(
                || "missing: the services are not separate processes".into(),
                |cpu| format!("{cpu:.0} µs{}", rounds_note(on.len())),
            ),
            met: cpu.is_some_and(|cpu| cpu <= 100.0),
        });
    }
    if !on.is_empty() && on.len() == off.len() {
        let ratios: Vec<f64> = on
            .iter()
            .zip(off)
            .map(|(on, off)| on.summary.rps / off.summary.rps.max(1e-9))
            .collect();
        let ratio = median(ratios.iter().copied());
        let rounds: Vec<String> = on
            .iter()
            .zip(off)
            .map(|(on, off)| format!("{:.0} against {:.0} req/s", on.summary.rps, off.summary.rps))
            .collect();
        targets.push(TargetCheck {
            target: "realistic workload, whole view, 64 callers: req/s with coalescing on ≥ 2 × with it off".into(),
            figure: format!("{ratio:.2} × ({}{})", rounds.join("; "), rounds_note(on.len())),
            met: ratio >= 2.0,
        });
    }
    let (on, off) = (whole(1, true), whole(1, false));
    if !on.is_empty() && on.len() == off.len() {
        let added = median(
            on.iter()
                .zip(off)
                .map(|(on, off)| ms(on.summary.p50_us) - ms(off.summary.p50_us)),
        );
        let rounds: Vec<String> = on
            .iter()
            .zip(off)
            .map(|(on, off)| {
                format!(
                    "{:.2} against {:.2} ms",
                    ms(on.summary.p50_us),
                    ms(off.summary.p50_us)
                )
            })
            .collect();
        targets.push(TargetCheck {
            target: "realistic workload, whole view, one caller: p50 with coalescing on ≤ p50 with it off + 0.1 ms".into(),
            figure: format!("{added:+.2} ms ({}{})", rounds.join("; "), rounds_note(on.len())),
            met: added <= 0.1,
        });
    }
    targets
}

/// Envoy as a pure pass-through in front of tracks against the gateway's `title` read with
/// coalescing off (one upstream call, nothing shared between requests), A/B alternating.
#[derive(Debug, Clone, Serialize)]
pub struct EnvoyComparison {
    /// Why there are no figures, when Envoy did not run.
    pub missing: Option<String>,
    /// Per round, the Envoy phase and the gateway phase.
    pub rounds: Vec<(String, String)>,
    /// Envoy's CPU per proxied request, median round.
    pub envoy_cpu_us_per_request: Option<f64>,
    /// tracks' CPU per request behind Envoy, median round.
    pub tracks_cpu_us_per_request: Option<f64>,
    /// The gateway's CPU per `title` read with coalescing off, median round.
    pub gateway_cpu_us_per_request: Option<f64>,
    /// Gateway CPU per request over Envoy CPU per request, median of the rounds' ratios.
    pub ratio: Option<f64>,
}

impl EnvoyComparison {
    fn missing(reason: String) -> Self {
        Self {
            missing: Some(reason),
            rounds: Vec::new(),
            envoy_cpu_us_per_request: None,
            tracks_cpu_us_per_request: None,
            gateway_cpu_us_per_request: None,
            ratio: None,
        }
    }

    fn target(&self) -> TargetCheck {
        let target =
            "mask `title`, coalescing off: gateway CPU per request ≤ 1.0 × Envoy's CPU per request as a pass-through in front of tracks".to_owned();
        match (
            &self.missing,
            self.ratio,
            self.gateway_cpu_us_per_request,
            self.envoy_cpu_us_per_request,
        ) {
            (None, Some(ratio), Some(gateway), Some(envoy)) => TargetCheck {
                target,
                figure: format!(
                    "{ratio:.2} × ({gateway:.0} µs against {envoy:.0} µs{})",
                    if self.rounds.len() > 1 {
                        format!(", median of {} alternating rounds", self.rounds.len())
                    } else {
                        String::new()
                    }
                ),
                met: ratio <= 1.0,
            },
            (missing, ..) => TargetCheck {
                target,
                figure: format!(
                    "missing: {}",
                    missing.as_deref().unwrap_or("no CPU figures")
                ),
                met: false,
            },
        }
    }
}

/// Runs tracks.BatchGetTracks of one id through Envoy and GetTrack with mask `title` through
/// the gateway (coalescing off) alternately, at the callers of the direct tracks phase.
async fn envoy(
    runner: &mut Runner<'_>,
    workload: &std::sync::Arc<Workload>,
) -> anyhow::Result<EnvoyComparison> {
    let url = match (
        runner.system.envoy_missing(),
        runner.system.endpoints().envoy,
    ) {
        (None, Some(url)) => url,
        (missing, _) => {
            return Ok(EnvoyComparison::missing(
                missing.unwrap_or_else(|| "Envoy is not running".into()),
            ));
        }
    };
    let through = workload.tracks_through(&url).await?;
    // Envoy runs one worker thread: for this comparison so does the gateway, with coalescing
    // off, so that both do the same work per request on the same resources.
    runner
        .restart(
            &["consumer-gateway"],
            &[
                ("FANOUT__COALESCE", "false"),
                ("SERVER__WORKER_THREADS", "1"),
            ],
        )
        .await?;
    runner.coalescing = false;
    let load = runner.closed();
    let pairs = runner
        .alternate(
            load,
            Side {
                name: "envoy.tracks",
                what: "tracks.BatchGetTracks of one id through Envoy as a pure pass-through (one worker)",
                gateway: Gateway::None,
                call: &through,
            },
            Side {
                name: "consumer.get_track.title.uncoalesced",
                what: "GetTrack, mask `title` (one upstream call), coalescing off, one worker thread as Envoy",
                gateway: Gateway::Consumer,
                call: &workload.get_track(Some("title")),
            },
        )
        .await?;
    runner.set_coalescing(true).await?;
    let envoys: Vec<Phase> = pairs.iter().map(|(envoy, _)| envoy.clone()).collect();
    let gateways: Vec<Phase> = pairs.iter().map(|(_, gateway)| gateway.clone()).collect();
    let envoy_cpu = |phase: &Phase| phase.cpu_us_per_request.get(crate::procs::ENVOY).copied();
    let ratios: Vec<f64> = pairs
        .iter()
        .filter_map(|(envoy, gateway)| Some(gateway_cpu(gateway)? / envoy_cpu(envoy)?))
        .collect();
    Ok(EnvoyComparison {
        missing: None,
        rounds: pairs
            .iter()
            .map(|(envoy, gateway)| (envoy.name.clone(), gateway.name.clone()))
            .collect(),
        envoy_cpu_us_per_request: median_of(&envoys, envoy_cpu),
        tracks_cpu_us_per_request: median_of(&envoys, |phase| {
            phase.cpu_us_per_request.get("tracks").copied()
        }),
        gateway_cpu_us_per_request: median_of(&gateways, gateway_cpu),
        ratio: (!ratios.is_empty()).then(|| median(ratios)),
    })
}

/// The callers of the realistic read on one worker thread: those of its CPU target.
const ONE_THREAD_CALLERS: usize = 64;

/// The realistic read, whole view, coalescing on, with the gateway on one worker thread (the
/// current-thread scheduler): beside the realistic rows, on the services' default threads, it
/// shows what the multi-thread scheduler costs where every process of the topology and the
/// load generator share the cores. One run, after the realistic rounds.
async fn realistic_on_one_thread(
    runner: &mut Runner<'_>,
    workload: &std::sync::Arc<Workload>,
) -> anyhow::Result<Phase> {
    runner
        .restart(&["consumer-gateway"], &[("SERVER__WORKER_THREADS", "1")])
        .await?;
    runner.coalescing = true;
    let phase = runner
        .phase(
            &format!(
                "realistic.{}.c{ONE_THREAD_CALLERS}.on.one-thread",
                RealisticView::Whole.name()
            ),
            "GetTrack of the realistic workload (whole view), coalescing on, the gateway on one worker thread",
            Gateway::Consumer,
            Load::Closed {
                concurrency: ONE_THREAD_CALLERS,
            },
            &workload.realistic_get_track(RealisticView::Whole),
        )
        .await;
    runner.reset(&["consumer-gateway"]).await?;
    phase
}

/// The realistic read's gateway CPU on one worker thread against `default_threads`, the
/// median of the target's rounds, in words.
fn one_thread_comparison(one_thread: &Phase, default_threads: Option<f64>) -> Option<String> {
    let one = gateway_cpu(one_thread)?;
    let default_threads = default_threads?;
    Some(format!(
        "realistic workload, whole view, {ONE_THREAD_CALLERS} callers, coalescing on: gateway CPU per request {one:.0} µs on one worker thread (one run, {:.0} req/s) against {default_threads:.0} µs on the default threads, the target's figure ({:.2} ×)",
        one_thread.summary.rps,
        one / default_threads.max(1e-9),
    ))
}

/// One side of an alternating comparison.
#[derive(Clone, Copy)]
struct Side<'c> {
    name: &'c str,
    what: &'c str,
    gateway: Gateway,
    call: &'c Call,
}

/// `name`, or `name#round` when there are several rounds.
fn round_name(name: &str, round: usize, rounds: usize) -> String {
    if rounds == 1 {
        name.to_owned()
    } else {
        format!("{name}#{round}")
    }
}

/// The median of `values` (the mean of the middle two for an even count); NaN when empty.
fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.into_iter().collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// The added-latency target of `pairs` (gateway, baseline): the median round's added p50 and
/// p99 against 1 ms and 5 ms, with every round's figures.
fn added_latency(target: String, pairs: &[(Phase, Phase)]) -> TargetCheck {
    let added = |q: fn(&Summary) -> u64| {
        median(
            pairs
                .iter()
                .map(|(gateway, direct)| ms(q(&gateway.summary)) - ms(q(&direct.summary))),
        )
    };
    let (a50, a99) = (added(|s| s.p50_us), added(|s| s.p99_us));
    let rounds: Vec<String> = pairs
        .iter()
        .map(|(gateway, direct)| {
            format!(
                "p50 {:.2} − {:.2}, p99 {:.2} − {:.2}",
                ms(gateway.summary.p50_us),
                ms(direct.summary.p50_us),
                ms(gateway.summary.p99_us),
                ms(direct.summary.p99_us),
            )
        })
        .collect();
    let figure = if pairs.len() == 1 {
        format!("p50 {a50:.2} ms, p99 {a99:.2} ms ({})", rounds.join(""))
    } else {
        format!(
            "p50 {a50:.2} ms, p99 {a99:.2} ms (median of {} alternating rounds: {})",
            pairs.len(),
            rounds.join("; ")
        )
    };
    TargetCheck {
        target,
        figure,
        met: a50 <= 1.0 && a99 <= 5.0,
    }
}

/// The result of a suite run.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub phases: Vec<Phase>,
    pub targets: Vec<TargetCheck>,
    /// Ratios between phases, in words.
    pub comparisons: Vec<String>,
    /// The overload sweeps, one per kind of limit.
    pub sweeps: Vec<Sweep>,
    /// The realistic workload, one row per view, callers and coalescing setting.
    pub realistic: Vec<RealisticRow>,
    /// Envoy as a pass-through against the gateway's `title` read.
    pub envoy: EnvoyComparison,
    pub seconds: f64,
}

/// The read methods of the foundation services, where the critical-path phase injects latency.
const FOUNDATION_READS: [(&str, &[&str]); 4] = [
    ("tracks", &["BATCHGETTRACKS", "LISTTRACKSBYOWNER"]),
    ("likes", &["BATCHGETREACTIONS", "LISTLIKEDTRACKS"]),
    ("follows", &["BATCHGETFOLLOWING"]),
    ("counts", &["BATCHGETTRACKCOUNTS", "BATCHGETUSERCOUNTS"]),
];

/// Runs every scenario; the phases that restart services run only on [`System::Processes`].
pub async fn run(options: &SuiteOptions, system: &mut System) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let workload =
        Workload::prepare(&system.endpoints(), options.seed_users, options.seed_tracks).await?;
    let mut runner = Runner {
        options,
        system,
        phases: Vec::new(),
        coalescing: true,
    };
    let closed = runner.closed();
    use Gateway::{Consumer, Creator};

    // (a) One upstream: the gateway next to calling the tracks service directly.
    let direct = runner
        .phase(
            "tracks.direct",
            "tracks.BatchGetTracks of one id, called directly (no gateway)",
            Gateway::None,
            closed,
            &workload.tracks_direct(),
        )
        .await?;
    let title = runner
        .phase(
            "consumer.get_track.title",
            "GetTrack, mask `title` (one upstream call)",
            Consumer,
            closed,
            &workload.get_track(Some("title")),
        )
        .await?;
    // (b) The whole consumer view, and a realistic mix of masks.
    let full = runner
        .phase(
            "consumer.get_track.full",
            "GetTrack, whole view (five upstream calls in two stages)",
            Consumer,
            closed,
            &workload.get_track(None),
        )
        .await?;
    runner
        .phase(
            "consumer.get_track.mixed",
            "GetTrack, masks rotating through the mask table",
            Consumer,
            closed,
            &workload.get_track_mixed(),
        )
        .await?;
    // (c) Batches.
    for size in [1, 10, 100] {
        runner
            .phase(
                &format!("consumer.batch_get.{size}"),
                &format!("BatchGetTracks of {size}, whole view"),
                Consumer,
                closed,
                &workload.batch_get(size),
            )
            .await?;
    }
    // Unloaded latency of one track against a batch of 100.
    let one_caller = runner
        .alternate(
            Load::Closed { concurrency: 1 },
            Side {
                name: "consumer.get_track.full.c1",
                what: "GetTrack, whole view, one caller",
                gateway: Consumer,
                call: &workload.get_track(None),
            },
            Side {
                name: "consumer.batch_get.100.c1",
                what: "BatchGetTracks of 100, whole view, one caller",
                gateway: Consumer,
                call: &workload.batch_get(100),
            },
        )
        .await?;
    // The gateway's CPU for a batch of 100 against one track, at saturation.
    let batch_cpu = runner
        .alternate(
            closed,
            Side {
                name: "cpu.get_track.full",
                what: "GetTrack, whole view (its CPU per request against a batch of 100)",
                gateway: Consumer,
                call: &workload.get_track(None),
            },
            Side {
                name: "cpu.batch_get.100",
                what: "BatchGetTracks of 100, whole view (its CPU per request against one GetTrack)",
                gateway: Consumer,
                call: &workload.batch_get(100),
            },
        )
        .await?;
    // (e) and (f): pages.
    runner
        .phase(
            "consumer.list_liked.50",
            "ListLikedTracks, page of 50, whole view",
            Consumer,
            closed,
            &workload.list_liked(50),
        )
        .await?;
    runner
        .phase(
            "creator.list_my_tracks.20",
            "Creator ListMyTracks, page of 20, whole view",
            Creator,
            closed,
            &workload.list_my_tracks(20),
        )
        .await?;

    // Added latency at half of the saturation rate: the gateway against the same foundation
    // calls made directly in the same stages.
    let half_full = Load::Open {
        rate: (full.summary.rps / 2.0).max(1.0),
    };
    let full_half = runner
        .alternate(
            half_full,
            Side {
                name: "consumer.get_track.full@half",
                what: "GetTrack, whole view, at half the saturation rate",
                gateway: Consumer,
                call: &workload.get_track(None),
            },
            Side {
                name: "direct.full_view@half",
                what: "The whole view's foundation calls made directly in two stages, same rate",
                gateway: Gateway::None,
                call: &workload.direct_full_view(),
            },
        )
        .await?;
    let half_title = Load::Open {
        rate: (title.summary.rps / 2.0).max(1.0),
    };
    let title_half = runner
        .alternate(
            half_title,
            Side {
                name: "consumer.get_track.title@half",
                what: "GetTrack, mask `title`, at half its saturation rate",
                gateway: Consumer,
                call: &workload.get_track(Some("title")),
            },
            Side {
                name: "tracks.direct@half",
                what: "tracks.BatchGetTracks of one id directly, same rate",
                gateway: Gateway::None,
                call: &workload.tracks_direct(),
            },
        )
        .await?;

    // The realistic workload with coalescing on and off, then Envoy as a pass-through against
    // the gateway's `title` read with coalescing off, then the realistic read on one thread.
    let realistic_rounds = realistic(&mut runner, &workload).await?;
    let envoy = envoy(&mut runner, &workload).await?;
    let one_thread = if runner.separate_processes() {
        Some(realistic_on_one_thread(&mut runner, &workload).await?)
    } else {
        None
    };

    let mut memory = None;
    let mut overload = None;
    let mut injected = None;
    let mut sweeps = Vec::new();
    if runner.separate_processes() {
        // Memory with many requests in flight: the limit raised above them, so none is shed.
        let limit = (options.memory_in_flight * 2).to_string();
        runner
            .restart(
                &["consumer-gateway"],
                &[("SERVER__MAX_CONCURRENT_REQUESTS", &limit)],
            )
            .await?;
        memory = Some(
            runner
                .phase(
                    &format!("consumer.get_track.full.c{}", options.memory_in_flight),
                    "GetTrack, whole view, this many requests in flight",
                    Consumer,
                    Load::Closed {
                        concurrency: options.memory_in_flight,
                    },
                    &workload.get_track(None),
                )
                .await?,
        );

        // Overload: twice the saturation rate against a gateway whose concurrency limit
        // sheds the excess.
        let limit = options.overload_limit.to_string();
        runner
            .restart(
                &["consumer-gateway"],
                &[("SERVER__MAX_CONCURRENT_REQUESTS", &limit)],
            )
            .await?;
        overload = Some(
            runner
                .phase(
                    "consumer.get_track.full@2x",
                    "GetTrack, whole view, at twice the saturation rate, concurrency limit set",
                    Consumer,
                    Load::Open {
                        rate: full.summary.rps * 2.0,
                    },
                    &workload.get_track(None),
                )
                .await?,
        );
        runner.reset(&["consumer-gateway"]).await?;

        // (e) The overload sweep: closed loops at 1, 2, 5 and 20 times the concurrency limit
        // and open loops at 2 and 5 times the saturation rate, first with the static limit,
        // then with the adaptive one below it.
        sweeps = sweep(&mut runner, &workload, full.summary.rps).await?;

        // (d) Fixed latency on every foundation read: the gateway against its critical path.
        let latency = options.injected_latency_ms.to_string();
        for (service, methods) in FOUNDATION_READS {
            let env: Vec<(String, &str)> = methods
                .iter()
                .map(|method| (format!("FAULTS__{method}__LATENCY_MS"), latency.as_str()))
                .collect();
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            runner.restart(&[service], &env).await?;
        }
        injected = Some(
            runner
                .alternate(
                    Load::Open { rate: 200.0 },
                    Side {
                        name: &format!("consumer.get_track.full+{latency}ms"),
                        what: "GetTrack, whole view, every foundation read delayed",
                        gateway: Consumer,
                        call: &workload.get_track(None),
                    },
                    Side {
                        name: &format!("direct.full_view+{latency}ms"),
                        what: "The same foundation calls made directly in two stages",
                        gateway: Gateway::None,
                        call: &workload.direct_full_view(),
                    },
                )
                .await?,
        );
        runner
            .reset(&["tracks", "likes", "follows", "counts"])
            .await?;
    }

    let mut targets = Vec::new();
    for (label, pairs) in [("whole view", &full_half), ("mask `title`", &title_half)] {
        targets.push(added_latency(
            format!(
                "added latency over the upstream critical path at half saturation, {label}: p50 ≤ 1 ms, p99 ≤ 5 ms"
            ),
            pairs,
        ));
    }
    if let Some(pairs) = &injected {
        targets.push(added_latency(
            format!(
                "added latency with {} ms on every foundation read (critical path ≥ {} ms): p50 ≤ 1 ms, p99 ≤ 5 ms",
                options.injected_latency_ms,
                2 * options.injected_latency_ms
            ),
            pairs,
        ));
    }
    for (phase, limit) in [(&full, 150.0), (&title, 60.0)] {
        if let Some(cpu) = phase.cpu_us_per_request.get("consumer-gateway") {
            targets.push(TargetCheck {
                target: format!("gateway CPU per request, {}: ≤ {limit:.0} µs", phase.name),
                figure: format!("{cpu:.0} µs"),
                met: *cpu <= limit,
            });
        }
    }
    if let Some(cpu) = direct.cpu_us_per_request.get("tracks") {
        targets.push(TargetCheck {
            target: "tracks CPU per request, tracks.BatchGetTracks of one id called directly (tracks.direct): ≤ 60 µs".into(),
            figure: format!("{cpu:.0} µs"),
            met: *cpu <= 60.0,
        });
    }
    let cpu_ratios: Vec<(f64, f64, f64)> = batch_cpu
        .iter()
        .filter_map(|(one, batch)| {
            let (one, batch) = (gateway_cpu(one)?, gateway_cpu(batch)?);
            Some((batch / one.max(1e-9), batch, one))
        })
        .collect();
    if !cpu_ratios.is_empty() {
        let ratio = median(cpu_ratios.iter().map(|(ratio, ..)| *ratio));
        let rounds: Vec<String> = cpu_ratios
            .iter()
            .map(|(ratio, batch, one)| format!("{ratio:.2} × ({batch:.0} µs against {one:.0} µs)"))
            .collect();
        targets.push(TargetCheck {
            target: format!(
                "gateway CPU per request, BatchGetTracks of 100 against one GetTrack, whole view, {} callers, coalescing on (the default): ≤ 3 ×",
                options.concurrency
            ),
            figure: if rounds.len() == 1 {
                rounds.join("")
            } else {
                format!(
                    "{ratio:.2} × (median of {} alternating rounds: {})",
                    rounds.len(),
                    rounds.join("; ")
                )
            },
            met: ratio <= 3.0,
        });
    }
    targets.extend(realistic_targets(&realistic_rounds));
    targets.push(envoy.target());
    let batch = runner
        .phases
        .iter()
        .find(|phase| phase.name == "consumer.batch_get.100")
        .cloned();
    if let Some(batch) = batch {
        let (calls_batch, calls_one) = (
            batch.upstream_calls_per_request.unwrap_or(f64::NAN),
            full.upstream_calls_per_request.unwrap_or(f64::NAN),
        );
        // Concurrent requests share calls (`fanout.coalesce`), so a request's share of the
        // calls is at most what its mask plans: one call per method, whatever the batch size.
        targets.push(TargetCheck {
            target: "BatchGetTracks of 100, whole view: at most the five planned upstream calls per request, as one GetTrack"
                .into(),
            figure: format!("{calls_batch:.2} against {calls_one:.2}"),
            met: calls_batch <= 5.0 + 1e-9 && calls_one <= 5.0 + 1e-9,
        });
    }
    let ratios: Vec<String> = one_caller
        .iter()
        .map(|(single, batch)| {
            format!(
                "{:.2} × ({:.2} ms against {:.2} ms)",
                batch.summary.p50_us as f64 / single.summary.p50_us.max(1) as f64,
                ms(batch.summary.p50_us),
                ms(single.summary.p50_us)
            )
        })
        .collect();
    let ratio =
        median(one_caller.iter().map(|(single, batch)| {
            batch.summary.p50_us as f64 / single.summary.p50_us.max(1) as f64
        }));
    targets.push(TargetCheck {
        target: "BatchGetTracks of 100, whole view: latency ≤ 3 × one GetTrack (p50, one caller)"
            .into(),
        figure: if one_caller.len() == 1 {
            ratios.join("")
        } else {
            format!(
                "{ratio:.2} × (median of {} alternating rounds: {})",
                one_caller.len(),
                ratios.join("; ")
            )
        },
        met: ratio <= 3.0,
    });
    if let Some(memory) = &memory
        && let Some(peak) = memory.peak_rss_mib.get("consumer-gateway")
    {
        targets.push(TargetCheck {
            target: format!(
                "gateway RSS with {} requests in flight: ≤ 64 MiB",
                options.memory_in_flight
            ),
            figure: format!("peak {peak:.1} MiB"),
            met: *peak <= 64.0,
        });
    }
    if let Some(overload) = &overload {
        let shed = overload
            .summary
            .error_codes
            .get("RESOURCE_EXHAUSTED")
            .copied()
            .unwrap_or(0);
        let others = overload.summary.errors - shed;
        let peak = overload
            .peak_rss_mib
            .get("consumer-gateway")
            .copied()
            .unwrap_or(f64::NAN);
        targets.push(TargetCheck {
            target: "twice the saturation rate: the excess is shed, accepted calls keep a bounded latency, memory stays flat".into(),
            figure: format!(
                "{:.0}/s offered, {:.0}/s served, {shed} shed, {others} other errors; accepted p50 {:.2} ms, p99 {:.2} ms (at half saturation, median round, {:.2} / {:.2} ms); gateway peak RSS {peak:.1} MiB",
                full.summary.rps * 2.0,
                overload.summary.rps,
                ms(overload.summary.p50_us),
                ms(overload.summary.p99_us),
                median(full_half.iter().map(|(gateway, _)| ms(gateway.summary.p50_us))),
                median(full_half.iter().map(|(gateway, _)| ms(gateway.summary.p99_us))),
            ),
            met: shed > 0 && others == 0 && peak <= 64.0,
        });
    }
    for sweep in &sweeps {
        targets.extend(sweep.targets());
    }
    let mut comparisons = vec![
        format!(
            "(a) GetTrack with mask `title` through the gateway against tracks.BatchGetTracks directly: throughput {:.2} ×, p50 latency {:.2} × ({:.2} ms against {:.2} ms)",
            title.summary.rps / direct.summary.rps.max(1e-9),
            title.summary.p50_us as f64 / direct.summary.p50_us.max(1) as f64,
            ms(title.summary.p50_us),
            ms(direct.summary.p50_us),
        ),
        format!(
            "whole view against mask `title`: throughput {:.2} ×, p50 latency {:.2} ×",
            full.summary.rps / title.summary.rps.max(1e-9),
            full.summary.p50_us as f64 / title.summary.p50_us.max(1) as f64,
        ),
    ];
    let default_threads = realistic_rounds
        .get(&(RealisticView::Whole, ONE_THREAD_CALLERS, true))
        .and_then(|phases| median_of(phases, gateway_cpu));
    if let Some(line) = one_thread
        .as_ref()
        .and_then(|phase| one_thread_comparison(phase, default_threads))
    {
        comparisons.push(line);
    }
    Ok(Outcome {
        phases: runner.phases,
        targets,
        comparisons,
        sweeps,
        realistic: realistic_rounds
            .iter()
            .map(|((view, callers, coalescing), phases)| {
                RealisticRow::new(*view, *callers, *coalescing, phases)
            })
            .collect(),
        envoy,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(name: &str, p50_us: u64, p99_us: u64) -> Phase {
        Phase {
            name: name.to_owned(),
            what: String::new(),
            load: Load::Open { rate: 100.0 },
            summary: Summary {
                ok: 100,
                errors: 0,
                error_codes: BTreeMap::new(),
                seconds: 1.0,
                rps: 100.0,
                p50_us,
                p90_us: p99_us,
                p99_us,
                max_us: p99_us,
            },
            upstream_calls_per_request: None,
            upstream_calls_by_method: BTreeMap::new(),
            cpu_us_per_request: BTreeMap::new(),
            peak_rss_mib: BTreeMap::new(),
            end_rss_mib: BTreeMap::new(),
            circuits_opened: None,
        }
    }

    #[test]
    fn the_one_thread_read_is_compared_with_the_targets_figure_only_when_both_are_there() {
        let mut one = phase("realistic.full.c64.on.one-thread", 5_000, 9_000);
        assert_eq!(
            one_thread_comparison(&one, Some(100.0)),
            None,
            "no CPU figure"
        );
        one.cpu_us_per_request
            .insert("consumer-gateway".into(), 60.0);
        assert_eq!(
            one_thread_comparison(&one, None),
            None,
            "no default-threads figure"
        );
        let line = one_thread_comparison(&one, Some(120.0)).expect("both figures");
        assert!(
            line.contains("60 µs on one worker thread") && line.contains("against 120 µs"),
            "{line}"
        );
        assert!(line.ends_with("(0.50 ×)"), "{line}");
    }

    #[test]
    fn the_sweep_targets_read_every_phase_and_ignore_the_generators_own_drops() {
        let mut one = phase("sweep.static.closed.1x", 10_000, 20_000);
        one.circuits_opened = Some(0.0);
        let mut twenty = phase("sweep.static.closed.20x", 30_000, 50_000);
        twenty
            .summary
            .error_codes
            .insert("RESOURCE_EXHAUSTED".into(), 900);
        twenty.summary.error_codes.insert("UNKNOWN".into(), 3);
        twenty.circuits_opened = Some(1.0);
        let mut five = phase("sweep.static.open.5x", 10_000, 20_000);
        five.summary.error_codes.insert("dropped".into(), 7);
        five.summary.rps = 95.0;
        let sweep = Sweep {
            mode: "static",
            closed: vec![one, twenty],
            open: vec![five],
            storm: None,
            saturation: 100.0,
        };
        let met: Vec<(String, bool)> = sweep
            .targets()
            .into_iter()
            .map(|target| (target.figure, target.met))
            .collect();
        assert_eq!(
            met[0],
            ("3 other".to_owned(), false),
            "UNKNOWN counts, dropped does not"
        );
        assert_eq!(met[1], ("1 opened".to_owned(), false));
        assert!(!met[3].1, "p99 went from 20 to 50 ms: {:?}", met[3]);
        assert!(met[4].1, "95 % of the goodput: {:?}", met[4]);
    }

    #[test]
    fn the_realistic_targets_compare_coalescing_on_and_off_round_by_round() {
        let with = |rps: f64, p50_us: u64, calls: f64, cpu: f64| {
            let mut phase = phase("realistic", p50_us, 2 * p50_us);
            phase.summary.rps = rps;
            phase.upstream_calls_per_request = Some(calls);
            phase
                .cpu_us_per_request
                .insert("consumer-gateway".into(), cpu);
            phase
        };
        let mut cells = RealisticRounds::new();
        cells.insert(
            (RealisticView::Whole, 64, true),
            vec![
                with(5000.0, 10_000, 0.8, 90.0),
                with(4000.0, 12_000, 1.4, 120.0),
                with(5200.0, 9_000, 0.9, 95.0),
            ],
        );
        cells.insert(
            (RealisticView::Whole, 64, false),
            vec![
                with(2000.0, 30_000, 5.0, 300.0),
                with(2100.0, 29_000, 5.0, 290.0),
                with(2400.0, 25_000, 5.0, 280.0),
            ],
        );
        cells.insert(
            (RealisticView::Whole, 1, true),
            vec![with(500.0, 2_050, 5.0, 400.0)],
        );
        cells.insert(
            (RealisticView::Whole, 1, false),
            vec![with(520.0, 2_000, 5.0, 390.0)],
        );
        let targets = realistic_targets(&cells);
        let figures: Vec<(&str, bool)> = targets
            .iter()
            .map(|target| (target.figure.as_str(), target.met))
            .collect();
        assert_eq!(figures[0], ("0.90, median of 3 alternating rounds", true));
        assert_eq!(figures[1], ("95 µs, median of 3 alternating rounds", true));
        // Round ratios 2.50, 1.90 and 2.17: the median round decides.
        assert!(
            figures[2].0.starts_with("2.17 × (5000 against 2000 req/s;"),
            "{}",
            figures[2].0
        );
        assert!(figures[2].1);
        assert_eq!(figures[3], ("+0.05 ms (2.05 against 2.00 ms)", true));
    }

    #[test]
    fn the_median_takes_the_middle_value_or_the_mean_of_the_middle_two() {
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median([]).is_nan());
    }

    #[test]
    fn one_slow_round_does_not_decide_the_added_latency() {
        let pairs = [
            (phase("g#1", 2_500, 6_000), phase("d#1", 2_000, 4_000)),
            // A slow spell of the machine during the gateway's side of round two.
            (phase("g#2", 9_000, 30_000), phase("d#2", 2_100, 4_200)),
            (phase("g#3", 2_700, 7_000), phase("d#3", 2_000, 3_900)),
        ];
        let check = added_latency("target".into(), &pairs);
        assert!(check.met, "{}", check.figure);
        assert!(
            check
                .figure
                .starts_with("p50 0.70 ms, p99 3.10 ms (median of 3 alternating rounds"),
            "{}",
            check.figure
        );

        let slow = [(phase("g", 2_500, 9_100), phase("d", 2_000, 4_000))];
        let check = added_latency("target".into(), &slow);
        assert!(!check.met, "p99 adds more than 5 ms: {}", check.figure);
        assert_eq!(
            check.figure,
            "p50 0.50 ms, p99 5.10 ms (p50 2.50 − 2.00, p99 9.10 − 4.00)"
        );
    }
}
