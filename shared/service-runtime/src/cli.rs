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
    tls,
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
        /// When server.tls is on: the CA certificates (PEM) the server's certificate chains
        /// to; by default the certificates in server.tls.cert_file and server.tls.client_ca_file.
        #[arg(long, value_name = "FILE")]
        ca_file: Option<String>,
        /// When server.tls.client_ca_file is set: the client certificate (PEM) to present; by
        /// default the server's own (server.tls.cert_file).
        #[arg(long, value_name = "FILE", requires = "key_file")]
        cert_file: Option<String>,
        /// The key of --cert-file; by default server.tls.key_file.
        #[arg(long, value_name = "FILE", requires = "cert_file")]
        key_file: Option<String>,
        /// When server.tls is on: the name the server's certificate must carry.
        #[arg(long, default_value = "localhost")]
        domain: String,
    },
}

/// The runtime a service runs on: `server.worker_threads` threads, or one per core.
///
/// One thread is Tokio's current-thread scheduler, not a multi-thread one of one worker: the
/// latter runs the task a task wakes at once (its LIFO slot), so a stream that finishes a
/// response wakes its connection and each response leaves in a write of its own; the former
/// runs woken tasks in order, so the responses that finish together leave in one write.
fn runtime(server: &ServerSettings) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match server.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        threads => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if threads > 0 {
                builder.worker_threads(threads);
            }
            builder
        }
    };
    builder.enable_all().build()
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
    if let Some(Command::Health {
        addr,
        timeout_ms,
        ca_file,
        cert_file,
        key_file,
        domain,
    }) = cli.command
    {
        let mut addr = addr.unwrap_or(settings.server().grpc_addr);
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let server_tls = &settings.server().tls;
        let tls = if server_tls.enabled() {
            let identity = cert_file.as_deref().zip(key_file.as_deref());
            match tls::loopback_client(server_tls, ca_file.as_deref(), identity, &domain) {
                Ok(config) => Some(config),
                Err(error) => {
                    eprintln!("unhealthy: {addr}: {error}");
                    return ExitCode::FAILURE;
                }
            }
        } else {
            None
        };
        return health_check(addr, tls, std::time::Duration::from_millis(timeout_ms));
    }
    let runtime = match runtime(settings.server()) {
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
fn health_check(
    addr: std::net::SocketAddr,
    tls: Option<tonic::transport::ClientTlsConfig>,
    timeout: std::time::Duration,
) -> ExitCode {
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
    match runtime.block_on(check_health(addr, tls, timeout)) {
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

/// Asks the server at `addr` over `grpc.health.v1` whether it is SERVING as a whole: over TLS
/// with `tls` (see [`tls::loopback_client`]), else over h2c. What the `health` subcommand does.
pub async fn check_health(
    addr: std::net::SocketAddr,
    tls: Option<tonic::transport::ClientTlsConfig>,
    timeout: std::time::Duration,
) -> Result<(), String> {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|error| error.to_string())?
        .connect_timeout(timeout)
        .timeout(timeout);
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|error| error.to_string())?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|error| error_chain(&error))?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|status| {
            // A refused client certificate shows only here, in the source of the status.
            let mut text = status.message().to_owned();
            if let Some(source) = std::error::Error::source(&status) {
                text.push_str(": ");
                text.push_str(&error_chain(source));
            }
            text
        })?;
    match response.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        other => Err(format!("status {}", other.as_str_name())),
    }
}

/// An error and its sources, so that a failed handshake says why.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_has_the_worker_threads_the_settings_name() {
        let addr = "127.0.0.1:0".parse().unwrap();
        let settings = |worker_threads| ServerSettings {
            grpc_addr: addr,
            metrics_addr: addr,
            drain_timeout_ms: 0,
            max_concurrent_requests: 0,
            tls: Default::default(),
            adaptive_limit: Default::default(),
            max_concurrent_streams: 0,
            call_timeout_ms: 0,
            stream_timeout_ms: 0,
            request_idle_timeout_ms: 0,
            reflection: false,
            worker_threads,
        };
        let workers = |n| runtime(&settings(n)).unwrap().metrics().num_workers();
        assert_eq!(workers(1), 1);
        assert_eq!(workers(3), 3);
        assert_eq!(
            workers(0),
            std::thread::available_parallelism().map_or(1, |cores| cores.get()),
            "0 is one thread per core"
        );
        let flavor = |n| runtime(&settings(n)).unwrap().handle().runtime_flavor();
        assert_eq!(flavor(1), tokio::runtime::RuntimeFlavor::CurrentThread);
        assert_eq!(flavor(3), tokio::runtime::RuntimeFlavor::MultiThread);
    }
}
