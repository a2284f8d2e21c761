//! The thin `main` every service binary shares: parse the command line, load the settings
//! (failing fast with the bad key named), print them when asked, start telemetry, bind the
//! listeners and run the service until SIGTERM or Ctrl-C.

use std::{fmt::Display, future::Future, pin::Pin, process::ExitCode};

use clap::Parser;
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    Listeners, ServerSettings,
    settings::{CommonArgs, SettingsSource, load_settings, render},
    shutdown,
    telemetry::{self, LogSettings},
};

/// Settings of a service binary: its own, plus the server and log sections every one has.
pub trait ServiceSettings: Serialize + DeserializeOwned {
    fn server(&self) -> &ServerSettings;
    fn log(&self) -> &LogSettings;
}

/// A future that resolves when the service must stop.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Asks a running instance over `grpc.health.v1` whether it is SERVING; exits 0 if so, 1
    /// if not. Container health checks use it, so images need no shell or other tools.
    Health {
        /// The instance to ask; by default this binary's own configured gRPC address
        /// (an unspecified address such as 0.0.0.0 means the loopback interface).
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
        /// How long to wait for the answer, in milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
}

/// Runs a service binary. `about` is shown by `--help` together with the environment prefix.
pub fn main<S, E, F, Fut>(about: &'static str, source: SettingsSource, run: F) -> ExitCode
where
    S: ServiceSettings,
    E: Display,
    F: FnOnce(S, Listeners, Shutdown) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let after_help = format!(
        "Settings: built-in defaults < --config FILE < environment variables named \
         {prefix}_<SECTION>__<KEY> (for example {prefix}_SERVER__GRPC_ADDR=0.0.0.0:1234). \
         Run with --print-config to see the effective settings.",
        prefix = source.env_prefix
    );
    let cli = Cli::parse_from_with_help(about, after_help);
    let settings: S = match load_settings(source, cli.common.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    if cli.common.print_config {
        print!("{}", render(&settings));
        return ExitCode::SUCCESS;
    }
    if let Some(Command::Health { addr, timeout_ms }) = cli.command {
        let mut addr = addr.unwrap_or(settings.server().grpc_addr);
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        return health_check(addr, std::time::Duration::from_millis(timeout_ms));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The OTLP exporter is a tonic client, so telemetry starts inside the runtime.
    let telemetry = {
        let _runtime = runtime.enter();
        telemetry::init(settings.log())
    };
    let code = runtime.block_on(async move {
        let listeners = match Listeners::bind(settings.server()).await {
            Ok(listeners) => listeners,
            Err(error) => {
                tracing::error!(%error, "cannot bind");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(
            grpc = %settings.server().grpc_addr,
            metrics = %settings.server().metrics_addr,
            "starting"
        );
        match run(settings, listeners, Box::pin(shutdown::signal())).await {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(error) => {
                tracing::error!(%error, "failed");
                ExitCode::FAILURE
            }
        }
    });
    // The runtime still runs, so the exporter can send the last spans.
    telemetry.shutdown();
    code
}

impl Cli {
    fn parse_from_with_help(about: &'static str, after_help: String) -> Self {
        use clap::{CommandFactory, FromArgMatches};
        let command = Self::command().about(about).after_help(after_help);
        let matches = command.get_matches();
        match Self::from_arg_matches(&matches) {
            Ok(cli) => cli,
            Err(error) => error.exit(),
        }
    }
}

/// The `health` subcommand: one `grpc.health.v1.Health/Check` of the whole server.
fn health_check(addr: std::net::SocketAddr, timeout: std::time::Duration) -> ExitCode {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("unhealthy: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|error| error.to_string())?
            .connect_timeout(timeout)
            .timeout(timeout);
        let channel = endpoint
            .connect()
            .await
            .map_err(|error| error.to_string())?;
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map_err(|status| status.message().to_owned())?;
        match response.into_inner().status() {
            ServingStatus::Serving => Ok(()),
            other => Err(format!("status {}", other.as_str_name())),
        }
    });
    match outcome {
        Ok(()) => {
            println!("serving: {addr}");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("unhealthy: {addr}: {reason}");
            ExitCode::FAILURE
        }
    }
}
