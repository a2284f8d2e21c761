//! What every binary of the topology shares, so that each service crate holds only its domain:
//!
//! - [`settings`]: layered configuration (built-in defaults < optional file < environment) with
//!   a command line that can print the effective configuration;
//! - [`telemetry`]: `tracing` output, pretty for people and JSON for containers;
//! - [`metrics`]: Prometheus RED metrics for every RPC, served over HTTP at `/metrics`;
//! - [`faults`]: per-method latency and error injection for tests and demos;
//! - [`serve`]: the gRPC serve loop with health, reflection and graceful shutdown.
//!
//! Tower layers around every gRPC server, outermost first: [`metrics::GrpcMetricsLayer`] (so
//! that shed calls and injected faults are counted like real ones), [`shed::ShedLayer`], then
//! [`faults::FaultLayer`]. Around every upstream channel, outermost first:
//! [`breaker::BreakerLayer`] (so that refused calls are not counted as upstream calls), then
//! [`metrics::GrpcMetricsLayer`].

pub mod breaker;
pub mod cli;
pub mod faults;
pub mod idempotency;
pub mod metrics;
pub mod serve;
pub mod settings;
pub mod shed;
pub mod shutdown;
pub mod spawn;
pub mod telemetry;
pub mod upstream;

pub use serve::{GrpcApp, Listeners, ServeError, serve};
pub use settings::{ServerSettings, load_settings};
