//! `cargo run -p topology`: the whole local topology in one process, until Ctrl-C.

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use service_runtime::telemetry::{LogFormat, LogSettings};
use topology::{Options, Topology};

/// Runs every service of the topology locally: each on its own port, on SQLite, with the
/// deterministic seed dataset. Ctrl-C stops everything cleanly.
#[derive(Debug, Parser)]
struct Cli {
    /// Keep the SQLite databases in this folder (they survive restarts, and seeding happens
    /// only into empty ones); without it every database lives in memory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Start with empty databases.
    #[arg(long)]
    no_seed: bool,
    /// Users in the seed dataset.
    #[arg(long, default_value_t = 1000)]
    seed_users: u32,
    /// Tracks in the seed dataset.
    #[arg(long, default_value_t = 5000)]
    seed_tracks: u32,
    /// Bind on this address (use 0.0.0.0 to reach the services from other machines).
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Log as JSON lines instead of for a person.
    #[arg(long)]
    json_logs: bool,
    /// Export spans over OTLP/gRPC to this endpoint, such as http://127.0.0.1:4317 (every
    /// service of the topology shares one tracer provider, named `topology`).
    #[arg(long, value_name = "URL", default_value = "")]
    otlp_endpoint: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let telemetry = service_runtime::telemetry::init(&LogSettings {
        format: if cli.json_logs {
            LogFormat::Json
        } else {
            LogFormat::Pretty
        },
        filter: "info,sqlx=warn".into(),
        otlp_endpoint: cli.otlp_endpoint.clone(),
        service_name: "topology".into(),
    });
    let options = Options {
        data_dir: cli.data_dir,
        seed: !cli.no_seed,
        seed_users: cli.seed_users,
        seed_tracks: cli.seed_tracks,
        host: cli.host,
        ephemeral: false,
        coalesce: true,
    };
    let topology = match Topology::start(options).await {
        Ok(topology) => topology,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = topology
        .wait_ready(std::time::Duration::from_secs(120))
        .await
    {
        eprintln!("error: {error:#}");
        drop(topology.stop().await);
        return ExitCode::FAILURE;
    }
    println!("\nThe topology is up (Ctrl-C stops it):");
    println!("  {:<10} {:<24} metrics", "service", "gRPC");
    for service in topology.services() {
        println!(
            "  {:<10} {:<24} {}",
            service.name,
            service.grpc_addr,
            service.metrics_url()
        );
    }
    let token = authorization::token::mint_development_token(Some("usr_0001"), "US", 24 * 3600);
    println!(
        "\nA development token for usr_0001 in US, valid for a day (development secret only):\n  export TOKEN={token}\n"
    );
    println!(
        "Try (buf curl reads the read mask as its canonical string): buf curl --protocol grpc --http2-prior-knowledge -H \"authorization: Bearer $TOKEN\" -d '{{\"track_id\":\"trk_00001\",\"read_mask\":\"title,creator.followersCount,stats\"}}' {}/consumer.v1.ConsumerGateway/GetTrack\n",
        topology.consumer_gateway.url()
    );
    service_runtime::shutdown::signal().await;
    let code = match topology.stop().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}
