//! The topology as six processes started from the release binaries, each on its own loopback
//! ports and SQLite files, so that the CPU time and memory of every service can be read from
//! `/proc` on its own.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::process::{Child, Command};

use crate::Endpoints;

/// The services, in start order: the gateways need the others, the writers need counts.
pub const SERVICES: [&str; 6] = [
    "counts",
    "tracks",
    "likes",
    "follows",
    "consumer-gateway",
    "creator-gateway",
];

/// CPU time and memory of one process, from `/proc`.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Usage {
    /// User plus system time, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory now, in bytes.
    pub rss_bytes: u64,
    /// The most resident memory since the last [`reset_peak`], in bytes.
    pub peak_rss_bytes: u64,
}

/// Reads the usage of process `pid`.
pub fn usage(pid: u32) -> std::io::Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses; the fields follow the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
    let ticks = |index: usize| -> f64 {
        fields
            .get(index)
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
            * 1024
    };
    Ok(Usage {
        cpu_seconds: (ticks(11) + ticks(12)) / clock_ticks_per_second(),
        rss_bytes: kib("VmRSS:"),
        peak_rss_bytes: kib("VmHWM:"),
    })
}

/// Starts a new peak-memory window for process `pid` (Linux: writing 5 to `clear_refs`).
pub fn reset_peak(pid: u32) -> std::io::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
}

/// The unit of the CPU times in `/proc/<pid>/stat`.
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            // USER_HZ, fixed at 100 on the Linux ABIs this runs on.
            .unwrap_or(100.0)
    })
}

/// How to start the processes.
#[derive(Debug, Clone)]
pub struct ProcessOptions {
    /// Where the release binaries are.
    pub bin_dir: PathBuf,
    /// gRPC ports are `base_port + 2 × i` and metrics ports the next one, in [`SERVICES`] order.
    pub base_port: u16,
    /// Seed dataset size.
    pub seed_users: u32,
    pub seed_tracks: u32,
    /// `server.worker_threads` of every service (0: one per core).
    pub worker_threads: usize,
}

/// The running processes.
#[derive(Debug)]
pub struct Processes {
    options: ProcessOptions,
    data: tempfile::TempDir,
    children: BTreeMap<&'static str, Child>,
    /// Extra environment per service, kept across restarts.
    overrides: BTreeMap<&'static str, Vec<(String, String)>>,
    /// The port of Envoy in front of tracks, once [`Processes::start_envoy`] started it (its
    /// process is the child named [`ENVOY`]).
    envoy_port: Option<u16>,
    /// Why Envoy is not running, when it could not be found or started.
    envoy_missing: Option<String>,
}

/// The name of the Envoy process among the children, in [`Processes::pids`] and in every
/// phase's CPU figures.
pub const ENVOY: &str = "envoy";

fn prefix(service: &str) -> String {
    service.replace('-', "_").to_uppercase()
}

impl Processes {
    /// Starts all six services and waits until each answers SERVING.
    pub async fn start(options: ProcessOptions) -> anyhow::Result<Self> {
        for service in SERVICES {
            let binary = options.bin_dir.join(service);
            if !binary.is_file() {
                bail!(
                    "{} is missing: build the release binaries first (`just bench` does)",
                    binary.display()
                );
            }
        }
        let mut processes = Self {
            options,
            data: tempfile::Builder::new()
                .prefix("domain-gateways-bench")
                .tempdir()?,
            children: BTreeMap::new(),
            overrides: BTreeMap::new(),
            envoy_port: None,
            envoy_missing: None,
        };
        for service in SERVICES {
            processes.spawn(service)?;
        }
        processes.wait_serving(&SERVICES).await?;
        Ok(processes)
    }

    fn ports(&self, service: &str) -> (u16, u16) {
        let index = SERVICES
            .iter()
            .position(|name| *name == service)
            .expect("a known service") as u16;
        let grpc = self.options.base_port + 2 * index;
        (grpc, grpc + 1)
    }

    fn url(&self, service: &str) -> String {
        format!("http://127.0.0.1:{}", self.ports(service).0)
    }

    /// The endpoints of the running services.
    pub fn endpoints(&self) -> Endpoints {
        let metrics = |service| format!("127.0.0.1:{}", self.ports(service).1);
        Endpoints {
            consumer: self.url("consumer-gateway"),
            creator: self.url("creator-gateway"),
            tracks: self.url("tracks"),
            likes: self.url("likes"),
            follows: self.url("follows"),
            counts: self.url("counts"),
            consumer_metrics: metrics("consumer-gateway"),
            creator_metrics: metrics("creator-gateway"),
            envoy: self
                .envoy_port
                .map(|port| format!("http://127.0.0.1:{port}")),
        }
    }

    /// Starts `binary` as Envoy, a pure pass-through in front of tracks on a free loopback
    /// port (see [`crate::envoy`]), and waits until tracks answers SERVING through it.
    pub async fn start_envoy(&mut self, binary: &Path) -> anyhow::Result<()> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let config = self.data.path().join("envoy.yaml");
        std::fs::write(&config, crate::envoy::config(port, self.ports("tracks").0))?;
        let log = std::fs::File::create(self.log_path(ENVOY))?;
        let mut child = Command::new(binary)
            .args(crate::envoy::args(&config))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(self.log_path(ENVOY)).unwrap_or_default();
                bail!("envoy exited with {status}:\n{log}");
            }
            if crate::serving(&url).await {
                break;
            }
            if Instant::now() > deadline {
                stop(&mut child).await;
                bail!("tracks did not answer through envoy within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.children.insert(ENVOY, child);
        self.envoy_port = Some(port);
        Ok(())
    }

    /// Records why Envoy is not running; the suite reports its figures as missing with it.
    pub fn set_envoy_missing(&mut self, reason: String) {
        self.envoy_missing = Some(reason);
    }

    /// Why Envoy is not running, if it is not.
    pub fn envoy_missing(&self) -> Option<&str> {
        match self.envoy_port {
            Some(_) => None,
            None => Some(
                self.envoy_missing
                    .as_deref()
                    .unwrap_or("Envoy was not started"),
            ),
        }
    }

    fn environment(&self, service: &str) -> Vec<(String, String)> {
        let p = prefix(service);
        let (grpc, metrics) = self.ports(service);
        let mut env = vec![
            (
                format!("{p}_SERVER__GRPC_ADDR"),
                format!("127.0.0.1:{grpc}"),
            ),
            (
                format!("{p}_SERVER__METRICS_ADDR"),
                format!("127.0.0.1:{metrics}"),
            ),
            (
                format!("{p}_SERVER__WORKER_THREADS"),
                self.options.worker_threads.to_string(),
            ),
            // `LOADGEN_SERVICE_LOG` sets the services' log filter, for a run under study.
            (
                format!("{p}_LOG__FILTER"),
                std::env::var("LOADGEN_SERVICE_LOG").unwrap_or_else(|_| "warn".into()),
            ),
        ];
        match service {
            "consumer-gateway" | "creator-gateway" => {
                let upstreams: &[&str] = if service == "consumer-gateway" {
                    &["tracks", "likes", "follows", "counts"]
                } else {
                    &["tracks", "likes", "counts"]
                };
                for upstream in upstreams {
                    env.push((
                        format!("{p}_UPSTREAMS__{}__URL", upstream.to_uppercase()),
                        self.url(upstream),
                    ));
                }
            }
            _ => {
                let db = self.data.path().join(format!("{service}.db"));
                env.extend([
                    (
                        format!("{p}_DATABASE__URL"),
                        format!("sqlite://{}", db.display()),
                    ),
                    (format!("{p}_DATABASE__MAX_CONNECTIONS"), "4".into()),
                    (format!("{p}_SEED__ENABLED"), "true".into()),
                    (
                        format!("{p}_SEED__USERS"),
                        self.options.seed_users.to_string(),
                    ),
                    (
                        format!("{p}_SEED__TRACKS"),
                        self.options.seed_tracks.to_string(),
                    ),
                ]);
                if service != "counts" {
                    env.push((format!("{p}_OUTBOX__COUNTS_URL"), self.url("counts")));
                }
            }
        }
        env.extend(self.overrides.get(service).into_iter().flatten().cloned());
        env
    }

    fn spawn(&mut self, service: &'static str) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.log_path(service))?;
        let child = Command::new(self.options.bin_dir.join(service))
            .envs(self.environment(service))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {service}"))?;
        self.children.insert(service, child);
        Ok(())
    }

    fn log_path(&self, service: &str) -> PathBuf {
        self.data.path().join(format!("{service}.log"))
    }

    /// The data and log folder (removed when the processes are dropped).
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    async fn wait_serving(&mut self, services: &[&'static str]) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        for service in services {
            let url = self.url(service);
            loop {
                if let Some(status) = self
                    .children
                    .get_mut(service)
                    .and_then(|child| child.try_wait().ok().flatten())
                {
                    let log = std::fs::read_to_string(self.log_path(service)).unwrap_or_default();
                    bail!("{service} exited with {status}:\n{log}");
                }
                if crate::serving(&url).await {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("{service} did not become ready within 120 s");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Restarts `services` with `env` added to (or replacing) what they had, keeping their data.
    pub async fn restart(
        &mut self,
        services: &[&'static str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        for service in services {
            if let Some(mut child) = self.children.remove(service) {
                stop(&mut child).await;
            }
            let overrides = self.overrides.entry(service).or_default();
            for (key, value) in env {
                let key = format!("{}_{key}", prefix(service));
                overrides.retain(|(k, _)| *k != key);
                overrides.push((key, (*value).to_owned()));
            }
            self.spawn(service)?;
        }
        self.wait_serving(services).await
    }

    /// Forgets the overrides of `services` and restarts them with their defaults.
    pub async fn reset(&mut self, services: &[&'static str]) -> anyhow::Result<()> {
        for service in services {
            self.overrides.remove(service);
        }
        self.restart(services, &[]).await
    }

    /// The process id of every running service.
    pub fn pids(&self) -> BTreeMap<&'static str, u32> {
        self.children
            .iter()
            .filter_map(|(name, child)| Some((*name, child.id()?)))
            .collect()
    }

    /// Stops every service with SIGTERM, as an orchestrator would.
    pub async fn stop(mut self) {
        for service in std::iter::once(&ENVOY).chain(SERVICES.iter().rev()) {
            if let Some(mut child) = self.children.remove(service) {
                stop(&mut child).await;
            }
        }
    }
}

async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        // A clean drain; the kill below is the fallback.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        if tokio::time::timeout(Duration::from_secs(15), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usage_of_this_process_is_readable() {
        let before = usage(std::process::id()).expect("/proc is readable");
        // Burn a little CPU so that the counter moves.
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(200) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = usage(std::process::id()).expect("/proc is readable");
        assert!(
            after.cpu_seconds > before.cpu_seconds,
            "{before:?} {after:?}"
        );
        assert!(after.rss_bytes > 1 << 20, "{after:?}");
        assert!(after.peak_rss_bytes >= after.rss_bytes, "{after:?}");
    }

    #[test]
    fn prefixes_follow_the_binaries_settings() {
        assert_eq!(prefix("consumer-gateway"), "CONSUMER_GATEWAY");
        assert_eq!(prefix("tracks"), "TRACKS");
    }
}
