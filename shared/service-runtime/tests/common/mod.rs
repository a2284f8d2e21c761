//! What the integration tests share: a server with only the health service, and the settings
//! of an upstream channel to it.

use prometheus_client::registry::Registry;
use service_runtime::{
    GrpcApp, ServerSettings,
    spawn::Running,
    tls::{ClientTlsSettings, ServerTlsSettings},
    upstream::UpstreamSettings,
};

/// A server with only the health service, on `tls`.
pub(crate) async fn health_server(tls: ServerTlsSettings) -> Running {
    Running::ephemeral("health-test", move |listeners, shutdown| {
        let server = ServerSettings {
            tls,
            ..ServerSettings::unbounded(&listeners).unwrap()
        };
        let app = GrpcApp::new(
            // The serve loop adds the health service itself.
            tonic::service::Routes::default(),
            "grpc.health.v1.Health",
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            &server,
            Default::default(),
            Registry::default(),
        );
        service_runtime::serve(app, listeners, shutdown)
    })
    .await
    .unwrap()
}

/// An upstream at `url` with `tls`, generous timeouts and no circuit breaker.
pub(crate) fn upstream(url: String, tls: ClientTlsSettings) -> UpstreamSettings {
    UpstreamSettings {
        url,
        timeout_ms: 5000,
        connect_timeout_ms: 5000,
        breaker_failures: 0,
        breaker_cooldown_ms: 1000,
        tls,
    }
}
