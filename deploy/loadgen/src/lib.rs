//! The benchmark suite of the gateways: a load generator that drives gateway RPCs over gRPC in
//! a closed loop (throughput at saturation) or an open loop (latency at a fixed rate), with
//! realistic mixes (read masks from a table, viewers and visible track ids from the seed
//! dataset), and reports for every phase the throughput, latency percentiles, errors, the
//! upstream calls per request (from the gateway's own client metrics) and the CPU time per
//! request of every process (from `/proc`).
//!
//! `just bench` builds the release binaries, starts them as six processes ([`procs`]), runs
//! [`suite::run`] and writes the report ([`report`]) as markdown and JSON.

pub mod drive;
pub mod envoy;
pub mod procs;
pub mod report;
pub mod suite;
pub mod workload;

use std::{collections::BTreeMap, time::Duration};

/// Where the services answer.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub consumer: String,
    pub creator: String,
    pub tracks: String,
    pub likes: String,
    pub follows: String,
    pub counts: String,
    /// `host:port` of the gateways' Prometheus pages.
    pub consumer_metrics: String,
    pub creator_metrics: String,
    /// Envoy as a pure pass-through in front of tracks, when it runs.
    pub envoy: Option<String>,
}

/// Whether the service at `url` answers SERVING on `grpc.health.v1`.
pub async fn serving(url: &str) -> bool {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(url.to_owned()) else {
        return false;
    };
    let Ok(channel) = endpoint
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(1))
        .connect()
        .await
    else {
        return false;
    };
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .is_ok_and(|response| response.into_inner().status == ServingStatus::Serving as i32)
}

pub use service_runtime::metrics::scrape;

/// The gateway's upstream calls so far, by foundation method, from its
/// `grpc_client_handled_total` samples.
pub fn upstream_calls(metrics: &str) -> BTreeMap<String, f64> {
    service_runtime::metrics::sample_by(metrics, "grpc_client_handled_total", "grpc_method")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_calls_are_summed_by_method() {
        let page = "# TYPE grpc_client_handled counter\n\
            grpc_client_handled_total{grpc_service=\"tracks.v1.TracksService\",grpc_method=\"BatchGetTracks\",grpc_code=\"OK\"} 7\n\
            grpc_client_handled_total{grpc_service=\"tracks.v1.TracksService\",grpc_method=\"BatchGetTracks\",grpc_code=\"UNAVAILABLE\"} 1\n\
            grpc_client_handled_total{grpc_service=\"counts.v1.CountsService\",grpc_method=\"BatchGetTrackCounts\",grpc_code=\"OK\"} 3\n\
            grpc_server_handled_total{grpc_service=\"consumer.v1.ConsumerGateway\",grpc_method=\"GetTrack\",grpc_code=\"OK\"} 9\n";
        let calls = upstream_calls(page);
        assert_eq!(calls.len(), 2);
        assert_eq!(calls["BatchGetTracks"], 8.0);
        assert_eq!(calls["BatchGetTrackCounts"], 3.0);
    }
}
