//! Calling upstream services: channels with connection reuse, per-call deadlines derived from
//! the inbound `grpc-timeout`, and client-side RPC metrics
//! (`grpc_client_handled_total{grpc_service,grpc_method,grpc_code}`,
//! `grpc_client_handling_seconds`), and a client span per call that carries the trace upstream.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataMap;

use crate::{
    breaker::{BreakerLayer, BreakerService},
    metrics::{GrpcMetrics, GrpcMetricsLayer, GrpcMetricsService},
    otel::{ClientTraceLayer, TraceService},
    tls::ClientTlsSettings,
};

mod transport;

pub use transport::{BoxError, Tls, Transport};

/// A channel whose calls are traced, pass a circuit breaker and are counted. The client span is
/// outermost so that a call the open circuit refuses still shows in the trace, as UNAVAILABLE.
pub type UpstreamChannel = TraceService<BreakerService<GrpcMetricsService<Transport>>>;

/// Where an upstream service is and how long its calls may take.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSettings {
    /// `http://host:port`, or `https://host:port` for TLS (see `tls`).
    pub url: String,
    /// The longest any one call may take, whatever the inbound deadline allows.
    pub timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// Consecutive failed calls that open the upstream's circuit (0: never).
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open circuit refuses calls before one probe call may go through.
    #[serde(default = "default_breaker_cooldown_ms")]
    pub breaker_cooldown_ms: u64,
    /// How an `https://` upstream is verified, and the client certificate for mutual TLS.
    #[serde(default)]
    pub tls: ClientTlsSettings,
}

fn default_breaker_failures() -> u32 {
    5
}

fn default_breaker_cooldown_ms() -> u64 {
    1000
}

/// A lazily connecting, traced and counted channel to an upstream. `field` names the settings key in
/// errors (`upstreams.tracks`), and its last segment names the upstream in metrics, traces and
/// logs. An `https://` url speaks TLS as `settings.tls` says; its files are read and checked
/// here, so that a bad one fails at start-up.
pub fn channel(
    field: &str,
    settings: &UpstreamSettings,
    metrics: &GrpcMetrics,
) -> Result<UpstreamChannel, String> {
    let name = field.rsplit('.').next().unwrap_or(field);
    let keys = SettingKeys {
        url: &format!("{field}.url"),
        tls: &format!("{field}.tls"),
    };
    channel_with(name, keys, settings, metrics)
}

/// The settings keys an upstream's `url` and `tls` come from, for error messages.
#[derive(Debug, Clone, Copy)]
pub struct SettingKeys<'a> {
    pub url: &'a str,
    pub tls: &'a str,
}

/// [`channel`] for an upstream `name` whose settings live under other keys than
/// `upstreams.<name>` (such as the outbox relay's `outbox.counts_url`).
pub fn channel_with(
    name: &str,
    keys: SettingKeys<'_>,
    settings: &UpstreamSettings,
    metrics: &GrpcMetrics,
) -> Result<UpstreamChannel, String> {
    let transport = transport(keys, settings)?;
    let counted = tower::Layer::layer(&GrpcMetricsLayer::new(metrics.clone()), transport);
    let breaker = BreakerLayer::new(
        name,
        settings.breaker_failures,
        Duration::from_millis(settings.breaker_cooldown_ms),
        Duration::from_millis(settings.timeout_ms),
        metrics.breaker_counters(name),
    );
    let guarded = tower::Layer::layer(&breaker, counted);
    Ok(tower::Layer::layer(&ClientTraceLayer::new(name), guarded))
}

/// The connection of `settings`, with TLS when its url is `https://`.
fn transport(keys: SettingKeys<'_>, settings: &UpstreamSettings) -> Result<Transport, String> {
    let url: http::Uri = settings
        .url
        .parse()
        .map_err(|error| format!("{}: {error}", keys.url))?;
    let tls = settings.tls.upstream(&url, keys.url, keys.tls)?;
    Transport::new(
        keys.url,
        &url,
        Duration::from_millis(settings.connect_timeout_ms),
        Duration::from_secs(30),
        tls,
    )
}

/// The timeout the caller gave this call, from its `grpc-timeout` header.
pub fn inbound_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    parse_grpc_timeout(value)
}

/// Parses the gRPC wire form of a timeout: at most 8 digits and a unit (`H`, `M`, `S`, `m`,
/// `u`, `n`).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The budget of an upstream call: the inbound timeout less `margin` (time to assemble and send
/// the response), capped by the upstream's own timeout.
pub fn call_budget(inbound: Option<Duration>, margin: Duration, cap: Duration) -> Duration {
    inbound.map_or(cap, |inbound| inbound.saturating_sub(margin).min(cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit_and_garbage_does_not() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "m", "10", "10x", "-1m", "123456789m", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn a_counted_channel_serves_a_generated_client_and_counts_its_calls() {
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let listeners = crate::Listeners::ephemeral().await.unwrap();
        let url = format!("http://{}", listeners.grpc_addr().unwrap());
        let app = crate::GrpcApp::new(
            // The serve loop adds the health service itself.
            tonic::service::Routes::default(),
            "grpc.health.v1.Health",
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            &crate::ServerSettings::unbounded(&listeners).unwrap(),
            Default::default(),
            Default::default(),
        );
        let stop = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(crate::serve(app, listeners, stop.clone().cancelled_owned()));

        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = GrpcMetrics::register_client(&mut registry);
        let settings = UpstreamSettings {
            url,
            timeout_ms: 1000,
            connect_timeout_ms: 1000,
            breaker_failures: 5,
            breaker_cooldown_ms: 1000,
            tls: Default::default(),
        };
        let mut client =
            HealthClient::new(channel("upstreams.health", &settings, &metrics).unwrap());
        client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap();
        let missing = client
            .check(HealthCheckRequest {
                service: "nope".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);
        assert_eq!(
            metrics.handled("grpc.health.v1.Health", "Check", tonic::Code::Ok),
            1
        );
        assert_eq!(
            metrics.handled("grpc.health.v1.Health", "Check", tonic::Code::NotFound),
            1
        );
        assert!(crate::metrics::encode(&registry).contains("grpc_client_handled_total{"));

        let bad = channel(
            "upstreams.tracks",
            &UpstreamSettings {
                url: "not a url".into(),
                ..settings
            },
            &metrics,
        );
        assert!(bad.unwrap_err().starts_with("upstreams.tracks.url"));
        stop.cancel();
        server.await.unwrap().unwrap();
    }

    #[test]
    fn the_budget_is_the_inbound_deadline_less_the_margin_capped() {
        let ms = Duration::from_millis;
        assert_eq!(call_budget(None, ms(5), ms(300)), ms(300));
        assert_eq!(call_budget(Some(ms(100)), ms(5), ms(300)), ms(95));
        assert_eq!(call_budget(Some(ms(1000)), ms(5), ms(300)), ms(300));
        assert_eq!(call_budget(Some(ms(3)), ms(5), ms(300)), ms(0));
    }
}
