//! Layered configuration with the `config` crate: the built-in defaults (a TOML document each
//! service embeds), then an optional file, then environment variables with the service's prefix.
//! Keys are nested with `__` in the environment: `TRACKS_DATABASE__URL` sets `database.url`.
//! Unknown keys are errors, so that a typo fails at start-up instead of being ignored.

use std::{net::SocketAddr, path::PathBuf};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// How a binary finds its configuration.
#[derive(Debug, Clone, Copy)]
pub struct SettingsSource {
    /// The built-in defaults, a complete TOML document.
    pub defaults: &'static str,
    /// The environment prefix, without the trailing underscore (`TRACKS`).
    pub env_prefix: &'static str,
}

/// The command line every binary accepts.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// A TOML file whose keys override the built-in defaults; environment variables override it.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("invalid configuration: {0}")]
    Invalid(#[from] config::ConfigError),
    #[error("invalid configuration: {0}")]
    Rejected(String),
}

/// Loads the settings: defaults < `file` < environment.
pub fn load_settings<T: DeserializeOwned>(
    source: SettingsSource,
    file: Option<&std::path::Path>,
) -> Result<T, SettingsError> {
    load_settings_from(source, file, std::env::vars())
}

/// Like [`load_settings`], with the environment given explicitly (for tests).
pub fn load_settings_from<T: DeserializeOwned>(
    source: SettingsSource,
    file: Option<&std::path::Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, SettingsError> {
    let mut builder = config::Config::builder().add_source(config::File::from_str(
        source.defaults,
        config::FileFormat::Toml,
    ));
    if let Some(file) = file {
        builder = builder.add_source(config::File::from(file).required(true));
    }
    let prefix = format!("{}_", source.env_prefix);
    let vars: config::Map<String, String> = env
        .into_iter()
        .filter(|(key, _)| key.starts_with(&prefix))
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix(source.env_prefix)
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .source(Some(vars)),
    );
    Ok(builder.build()?.try_deserialize()?)
}

/// The built-in defaults alone, for code that starts services in-process (tests, the topology).
/// Panics if the defaults do not parse, which a test of each service catches.
pub fn defaults<T: DeserializeOwned>(source: SettingsSource) -> T {
    match load_settings_from(source, None, []) {
        Ok(settings) => settings,
        Err(error) => panic!(
            "the built-in defaults of {} are invalid: {error}",
            source.env_prefix
        ),
    }
}

/// Renders settings as TOML, for `--print-config`.
pub fn render<T: Serialize>(settings: &T) -> String {
    toml::to_string_pretty(settings).unwrap_or_else(|error| format!("# cannot render: {error}\n"))
}

/// The network and lifecycle settings of every server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address of the gRPC listener.
    pub grpc_addr: SocketAddr,
    /// Address of the HTTP listener that serves `/metrics`.
    pub metrics_addr: SocketAddr,
    /// How long in-flight calls may run after a shutdown signal before they are cut off.
    pub drain_timeout_ms: u64,
    /// The most calls handled at once; beyond it calls are shed with RESOURCE_EXHAUSTED at
    /// once instead of queueing. 0 means no limit.
    #[serde(default)]
    pub max_concurrent_requests: usize,
    /// TLS, or mutual TLS, on the gRPC port; plaintext when `tls.cert_file` is empty.
    #[serde(default)]
    pub tls: crate::tls::ServerTlsSettings,
    /// A limit below `max_concurrent_requests` that follows the measured latency of admitted
    /// calls (off by default); see [`crate::adaptive`].
    #[serde(default)]
    pub adaptive_limit: crate::adaptive::AdaptiveLimitSettings,
    /// The most client-streaming calls (uploads) handled at once, a budget of their own beside
    /// `max_concurrent_requests`, so that slow uploads cannot take every place (0: no limit).
    #[serde(default)]
    pub max_concurrent_streams: usize,
    /// The longest a call runs until its response starts, whatever its `grpc-timeout`
    /// (0: no bound); see [`crate::bounds`].
    #[serde(default = "default_call_timeout_ms")]
    pub call_timeout_ms: u64,
    /// The same for client-streaming calls (uploads).
    #[serde(default = "default_stream_timeout_ms")]
    pub stream_timeout_ms: u64,
    /// A request body that sends nothing for this long while the server waits for it fails
    /// the call (0: no bound).
    #[serde(default = "default_request_idle_timeout_ms")]
    pub request_idle_timeout_ms: u64,
    /// Whether gRPC server reflection (v1 and v1alpha) is served: on for local use, so that
    /// grpcurl and gatewayctl-less tools can list the APIs; off in production, where it would
    /// hand every caller the full API surface. Off, the reflection services are UNIMPLEMENTED.
    #[serde(default = "reflection_by_default")]
    pub reflection: bool,
    /// The threads the service runs its work on (0: one per core, Tokio's default). Where many
    /// processes share a few cores (a developer's machine, the benchmark), one thread each
    /// costs less CPU per call: a busy thread takes several ready calls in turn and writes
    /// their frames together, instead of waking another thread for each.
    #[serde(default)]
    pub worker_threads: usize,
}

fn reflection_by_default() -> bool {
    true
}

fn default_call_timeout_ms() -> u64 {
    30_000
}

fn default_stream_timeout_ms() -> u64 {
    600_000
}

fn default_request_idle_timeout_ms() -> u64 {
    10_000
}

impl ServerSettings {
    /// A plaintext server on `listeners` with no limits and no bounds on its calls, as tests and
    /// in-process tools run one.
    pub fn unbounded(listeners: &crate::Listeners) -> std::io::Result<Self> {
        Ok(Self {
            grpc_addr: listeners.grpc_addr()?,
            metrics_addr: listeners.metrics_addr()?,
            drain_timeout_ms: 1000,
            max_concurrent_requests: 0,
            adaptive_limit: Default::default(),
            reflection: true,
            tls: Default::default(),
            max_concurrent_streams: 0,
            call_timeout_ms: 0,
            stream_timeout_ms: 0,
            request_idle_timeout_ms: 0,
            worker_threads: 0,
        })
    }

    /// The bounds on one call these settings describe.
    pub fn call_bounds(&self) -> crate::bounds::CallBounds {
        let bound = |ms: u64| (ms > 0).then(|| std::time::Duration::from_millis(ms));
        crate::bounds::CallBounds {
            call_timeout: bound(self.call_timeout_ms),
            stream_timeout: bound(self.stream_timeout_ms),
            idle_timeout: bound(self.request_idle_timeout_ms),
        }
    }
}

#[cfg(test)]
mod tests;
