//! The report of a suite run: the machine it ran on, every phase's figures, and the targets,
//! as JSON (for tools) and markdown (for people).

use std::fmt::Write as _;

use serde::Serialize;

use crate::{
    procs::ENVOY,
    suite::{Outcome, SuiteOptions},
    workload::{RealisticView, TERRITORIES, ZIPF_EXPONENT},
};

/// What the figures were measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub rustc: String,
    /// How the services and the generator shared the cores.
    pub sharing: String,
    /// When the run finished, as reported by `date -u`.
    pub date: String,
}

impl Machine {
    /// Describes this machine.
    pub fn detect(sharing: &str) -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map_or_else(|| "unknown".into(), |(_, name)| name.trim().to_owned());
        let memory_kib: f64 = read("/proc/meminfo")
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let command = |program: &str, args: &[&str]| {
            std::process::Command::new(program)
                .args(args)
                .output()
                .ok()
                .and_then(|output| String::from_utf8(output.stdout).ok())
                .map_or_else(|| "unknown".into(), |text| text.trim().to_owned())
        };
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            memory_gib: memory_kib / 1024.0 / 1024.0,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            rustc: command("rustc", &["--version"]),
            sharing: sharing.to_owned(),
            date: command("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        }
    }
}

/// Everything a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub options: SuiteOptions,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// What each BFF client read during the run, as `gatewayctl usage` prints it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field_usage: Option<String>,
}

fn mib(value: Option<&f64>) -> String {
    value.map_or_else(|| "–".into(), |v| format!("{v:.1}"))
}

fn micros(value: Option<&f64>) -> String {
    value.map_or_else(|| "–".into(), |v| format!("{v:.0}"))
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

impl Report {
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(out, "# Gateway benchmark report\n");
        let _ = writeln!(
            out,
            "Machine: {} logical cores of {}, {:.1} GiB, Linux {}, {}; {}. Run finished {}, took {:.0} s.\n",
            m.cores,
            m.cpu,
            m.memory_gib,
            m.kernel,
            m.rustc,
            m.sharing,
            m.date,
            self.outcome.seconds
        );
        let _ = writeln!(
            out,
            "Each phase: {:.1} s warm-up, then {:.1} s measured. Closed loop: that many callers back to back (throughput at saturation). Open loop: a fixed request rate, latency counted from when each request was due. CPU is user + system time from `/proc` per successful request; RSS peaks are per phase (`clear_refs`).\n",
            self.options.warmup.as_secs_f64(),
            self.options.duration.as_secs_f64()
        );
        let _ = writeln!(out, "## Targets\n");
        let _ = writeln!(out, "| target | figure | met |\n|---|---|---|");
        for target in &self.outcome.targets {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                target.target,
                target.figure,
                if target.met { "yes" } else { "**no**" }
            );
        }
        if !self.outcome.comparisons.is_empty() {
            let _ = writeln!(out, "\n## Comparisons\n");
            for line in &self.outcome.comparisons {
                let _ = writeln!(out, "- {line}");
            }
        }
        if !self.outcome.realistic.is_empty() {
            let _ = writeln!(
                out,
                "\n## Realistic workload, coalescing on and off\n\nGetTrack from every seed user ({} territories: {}), track popularity Zipf-distributed (exponent {}) over the public tracks each territory sees; the whole view, and masks drawn from the mask table. Closed loops; each figure is the median of its rounds, the rounds alternating which setting runs first.\n",
                TERRITORIES.len(),
                TERRITORIES.join(", "),
                ZIPF_EXPONENT
            );
            let _ = writeln!(
                out,
                "| view | callers | coalescing | req/s | p50 ms | p99 ms | errors | upstream calls/req | gateway CPU µs/req | foundations CPU µs/req |\n|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"
            );
            for row in &self.outcome.realistic {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {} |",
                    match row.view {
                        RealisticView::Whole => "whole view",
                        RealisticView::Masks => "mask table",
                    },
                    row.callers,
                    if row.coalescing { "on" } else { "off" },
                    row.rps,
                    row.p50_us / 1000.0,
                    row.p99_us / 1000.0,
                    row.errors,
                    row.upstream_calls_per_request
                        .map_or_else(|| "–".into(), |calls| format!("{calls:.2}")),
                    micros(row.gateway_cpu_us_per_request.as_ref()),
                    micros(row.foundation_cpu_us_per_request.as_ref()),
                );
            }
        }
        let envoy = &self.outcome.envoy;
        let _ = writeln!(out, "\n## Envoy as a pass-through in front of tracks\n");
        match &envoy.missing {
            Some(reason) => {
                let _ = writeln!(out, "Missing: {reason}.");
            }
            None => {
                let _ = writeln!(
                    out,
                    "Envoy (one worker, HTTP/2 both sides, no access log, no admin listener) forwards tracks.BatchGetTracks of one id; the gateway serves GetTrack with mask `title` (one upstream call) with coalescing off and one worker thread, as Envoy; the same callers, rounds alternating. Median round: Envoy {} µs CPU per proxied request (tracks behind it {} µs), the gateway {} µs, ratio {}.\n",
                    micros(envoy.envoy_cpu_us_per_request.as_ref()),
                    micros(envoy.tracks_cpu_us_per_request.as_ref()),
                    micros(envoy.gateway_cpu_us_per_request.as_ref()),
                    envoy
                        .ratio
                        .map_or_else(|| "–".into(), |ratio| format!("{ratio:.2} ×")),
                );
                let _ = writeln!(
                    out,
                    "| round | Envoy req/s | Envoy p50 ms | Envoy CPU µs/req | gateway req/s | gateway p50 ms | gateway CPU µs/req |\n|---|---:|---:|---:|---:|---:|---:|"
                );
                let find = |name: &str| self.outcome.phases.iter().find(|phase| phase.name == name);
                for (round, (envoy_name, gateway_name)) in envoy.rounds.iter().enumerate() {
                    if let (Some(e), Some(g)) = (find(envoy_name), find(gateway_name)) {
                        let _ = writeln!(
                            out,
                            "| {} | {:.0} | {} | {} | {:.0} | {} | {} |",
                            round + 1,
                            e.summary.rps,
                            ms(e.summary.p50_us),
                            micros(e.cpu_us_per_request.get(ENVOY)),
                            g.summary.rps,
                            ms(g.summary.p50_us),
                            micros(g.cpu_us_per_request.get("consumer-gateway")),
                        );
                    }
                }
            }
        }
        for sweep in &self.outcome.sweeps {
            let _ = writeln!(out, "\n## Overload sweep, {} limit\n", sweep.mode);
            let _ = writeln!(
                out,
                "| phase | load | OK | RESOURCE_EXHAUSTED | other codes | accepted p50 ms | accepted p99 ms | goodput OK/s | gateway peak RSS MiB | circuits opened |\n|---|---|---:|---:|---|---:|---:|---:|---:|---:|"
            );
            for phase in sweep.closed.iter().chain(&sweep.open).chain(&sweep.storm) {
                let s = &phase.summary;
                let others: Vec<String> = s
                    .error_codes
                    .iter()
                    .filter(|(code, _)| code.as_str() != "RESOURCE_EXHAUSTED")
                    .map(|(code, n)| format!("{n} {code}"))
                    .collect();
                let _ = writeln!(
                    out,
                    "| `{}` | {} | {} | {} | {} | {} | {} | {:.0} | {} | {} |",
                    phase.name,
                    phase.load,
                    s.ok,
                    s.error_codes
                        .get("RESOURCE_EXHAUSTED")
                        .copied()
                        .unwrap_or(0),
                    if others.is_empty() {
                        "0".to_owned()
                    } else {
                        others.join(", ")
                    },
                    ms(s.p50_us),
                    ms(s.p99_us),
                    s.rps,
                    mib(phase.peak_rss_mib.get("consumer-gateway")),
                    phase
                        .circuits_opened
                        .map_or_else(|| "–".into(), |n| format!("{n:.0}")),
                );
            }
        }
        let _ = writeln!(out, "\n## Phases\n");
        let _ = writeln!(
            out,
            "| phase | load | req/s | p50 ms | p90 ms | p99 ms | max ms | errors | upstream calls/req | gateway (Envoy) CPU µs/req | foundations CPU µs/req | loadgen CPU µs/req | gateway (Envoy) peak RSS MiB |\n|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"
        );
        for phase in &self.outcome.phases {
            let s = &phase.summary;
            let errors = if s.error_codes.is_empty() {
                "0".to_owned()
            } else {
                s.error_codes
                    .iter()
                    .map(|(code, n)| format!("{n} {code}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            // The proxy of the phase: the Envoy phases' "gateway" is Envoy.
            let gateway = if phase.name.starts_with("creator") {
                "creator-gateway"
            } else if phase.name.starts_with("envoy") {
                ENVOY
            } else {
                "consumer-gateway"
            };
            let foundations: Option<f64> = ["tracks", "likes", "follows", "counts"]
                .iter()
                .map(|name| phase.cpu_us_per_request.get(*name).copied())
                .sum();
            let _ = writeln!(
                out,
                "| `{}` | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                phase.name,
                phase.load,
                s.rps,
                ms(s.p50_us),
                ms(s.p90_us),
                ms(s.p99_us),
                ms(s.max_us),
                errors,
                phase
                    .upstream_calls_per_request
                    .map_or_else(|| "–".into(), |calls| format!("{calls:.2}")),
                micros(phase.cpu_us_per_request.get(gateway)),
                micros(foundations.as_ref()),
                micros(phase.cpu_us_per_request.get("loadgen")),
                mib(phase.peak_rss_mib.get(gateway)),
            );
        }
        if let Some(usage) = &self.field_usage {
            let _ = writeln!(
                out,
                "\n## Field usage by BFF client\n\nReads the gateways served since they last started (the restarting phases reset their counters), per client (the tokens' `azp`) and leaf path of each view, as `gatewayctl usage` prints them:\n\n```\n{}```",
                usage
            );
        }
        let _ = writeln!(out, "\n## What each phase does\n");
        for phase in &self.outcome.phases {
            let by_method = phase
                .upstream_calls_by_method
                .iter()
                .map(|(method, calls)| format!("{method} {calls:.2}"))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                out,
                "- `{}`: {}{}",
                phase.name,
                phase.what,
                if by_method.is_empty() {
                    String::new()
                } else {
                    format!(" — upstream calls per request: {by_method}")
                }
            );
        }
        out
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report serializes")
    }
}
