//! What every binary of the topology shares, so that each service crate holds only its domain:
//!
//! - [`settings`]: layered configuration (built-in defaults < optional file < environment) with
//!   a command line that can print the effective configuration;
//! - [`telemetry`]: `tracing` output, pretty for people and JSON for containers, and
//!   OpenTelemetry trace export;
//! - [`otel`]: a server span per RPC and a client span per upstream call, joined across
//!   services by the W3C `traceparent` header;
//! - [`metrics`]: Prometheus RED metrics for every RPC, served over HTTP at `/metrics`;
//! - [`status_body`]: the response body that reads each call's status for both of those, from
//!   trailers-only headers or the trailers, and as cancelled when the body is dropped first;
//! - [`faults`]: per-method latency and error injection for tests and demos;
//! - [`ids`]: the id rule every service and gateway checks;
//! - [`streams`]: server streams bounded in duration and idle time, completed only once the
//!   client took everything;
//! - [`territories`]: the ISO 3166-1 territory rule of geoblocking policies and tokens;
//! - [`serve`]: the gRPC serve loop with health, reflection (`server.reflection`) and graceful
//!   shutdown;
//! - [`tls`]: optional TLS and mutual TLS on the gRPC port and on upstream channels.
//!
//! Tower layers around every gRPC server, outermost first: [`drain::DrainLayer`] (so that a
//! body any layer or handler answers without reading is drained, not dropped),
//! [`otel::ServerTraceLayer`],
//! [`metrics::GrpcMetricsLayer`] (so that shed calls and injected faults are traced and counted
//! like real ones), [`twirp_bridge::TwirpErrorLayer`] (so that a Twirp call the next two
//! refuse gets a Twirp error, not a gRPC-shaped answer), [`shed::ShedLayer`], then
//! [`faults::FaultLayer`]. Around every upstream
//! channel, outermost first: [`otel::ClientTraceLayer`] (so that a call the open circuit refuses
//! still shows in the trace), [`breaker::BreakerLayer`] (so that refused calls are not counted
//! as upstream calls), then [`metrics::GrpcMetricsLayer`].

pub mod adaptive;
pub mod bounds;
pub mod breaker;
pub mod cli;
pub mod drain;
pub mod faults;
pub mod idempotency;
pub mod ids;
pub mod metrics;
pub mod otel;
pub mod serve;
pub mod settings;
pub mod shed;
pub mod shutdown;
pub mod spawn;
pub mod status_body;
pub mod streams;
pub mod telemetry;
pub mod territories;
pub mod tls;
pub mod upstream;

pub use serve::{GrpcApp, Listeners, ServeError, serve};
pub use settings::{ServerSettings, load_settings};
