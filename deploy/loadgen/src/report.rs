//! The report of a suite run: the machine it ran on, every phase's figures, and the targets,
//! as JSON (for tools) and markdown (for people).

use std::fmt::Write as _;

use serde::Serialize;

use crate::suite::{Outcome, SuiteOptions};

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
            "| phase | load | req/s | p50 ms | p90 ms | p99 ms | max ms | errors | upstream calls/req | gateway CPU µs/req | foundations CPU µs/req | loadgen CPU µs/req | gateway peak RSS MiB |\n|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"
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
            let gateway = if phase.name.starts_with("creator") {
                "creator-gateway"
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
