//! The gRPC serve loop every service runs: its own routes plus `grpc.health.v1` and server
//! reflection (unless `server.reflection` is off), the tracing, metrics, Twirp error, shedding
//! and fault layers, Prometheus metrics over HTTP, and graceful shutdown.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{service::Routes, transport::server::TcpIncoming};
use tonic_health::ServingStatus;

use crate::{
    bounds::{BoundsLayer, CallBounds},
    drain::DrainLayer,
    faults::{FaultLayer, FaultSettings},
    metrics::{GrpcMetrics, GrpcMetricsLayer, KnownMethods, encode},
    otel::ServerTraceLayer,
    settings::ServerSettings,
    shed::ShedLayer,
    tls::ServerTlsSettings,
};

/// One service binary's gRPC application.
#[derive(Debug)]
pub struct GrpcApp {
    /// The routes of the service's own APIs.
    pub routes: Routes,
    /// The fully qualified names of those APIs, reported by the health service.
    pub service_names: Vec<&'static str>,
    /// The encoded descriptor set of those APIs, served by reflection.
    pub descriptor: &'static [u8],
    /// The service's own metrics; the RPC metrics are added to it.
    pub registry: Registry,
    pub faults: FaultSettings,
    /// How long in-flight calls may run after the shutdown signal.
    pub drain_timeout: Duration,
    /// The most calls handled at once (0: no limit); see [`crate::shed`].
    pub max_concurrent_requests: usize,
    /// The adaptive limit below it, when enabled; see [`crate::adaptive`].
    pub adaptive_limit: crate::adaptive::AdaptiveLimitSettings,
    /// TLS on the gRPC port (`server.tls`); the files are checked when serving starts.
    pub tls: ServerTlsSettings,
    /// The most client-streaming calls at once (0: no limit); see [`crate::shed`].
    pub max_concurrent_streams: usize,
    /// How long one call may hold the server; see [`crate::bounds`].
    pub bounds: CallBounds,
    /// Whether server reflection is served (`server.reflection`).
    pub reflection: bool,
}

impl GrpcApp {
    /// An application serving `routes`, which implement the API `service_name` described by
    /// `descriptor`.
    pub fn new(
        routes: Routes,
        service_name: &'static str,
        descriptor: &'static [u8],
        server: &ServerSettings,
        faults: FaultSettings,
        registry: Registry,
    ) -> Self {
        Self {
            routes,
            service_names: vec![service_name],
            descriptor,
            registry,
            faults,
            drain_timeout: Duration::from_millis(server.drain_timeout_ms),
            max_concurrent_requests: server.max_concurrent_requests,
            adaptive_limit: server.adaptive_limit.clone(),
            tls: server.tls.clone(),
            max_concurrent_streams: server.max_concurrent_streams,
            bounds: server.call_bounds(),
            reflection: server.reflection,
        }
    }
}

/// The two listeners of a service, bound before it starts so that tests can use port 0.
#[derive(Debug)]
pub struct Listeners {
    pub grpc: TcpListener,
    pub metrics: TcpListener,
}

impl Listeners {
    /// Binds the addresses of the settings.
    pub async fn bind(settings: &ServerSettings) -> std::io::Result<Self> {
        Ok(Self {
            grpc: bind(settings.grpc_addr).await?,
            metrics: bind(settings.metrics_addr).await?,
        })
    }

    /// Binds both on an ephemeral port of the loopback interface.
    pub async fn ephemeral() -> std::io::Result<Self> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Ok(Self {
            grpc: bind(any).await?,
            metrics: bind(any).await?,
        })
    }

    pub fn grpc_addr(&self) -> std::io::Result<SocketAddr> {
        self.grpc.local_addr()
    }

    pub fn metrics_addr(&self) -> std::io::Result<SocketAddr> {
        self.metrics.local_addr()
    }
}

async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| std::io::Error::new(error.kind(), format!("cannot bind {addr}: {error}")))
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid settings: {0}")]
    Settings(String),
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("grpc server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("metrics server failed: {0}")]
    Metrics(#[from] std::io::Error),
}

/// Serves `app` until `shutdown` resolves, then stops accepting, reports NOT_SERVING, and
/// drains in-flight calls for at most `app.drain_timeout`.
pub async fn serve(
    app: GrpcApp,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let GrpcApp {
        routes,
        service_names,
        descriptor,
        mut registry,
        faults,
        drain_timeout,
        max_concurrent_requests,
        adaptive_limit,
        tls,
        max_concurrent_streams,
        bounds,
        reflection,
    } = app;
    crate::faults::validate(&faults).map_err(ServeError::Settings)?;
    if adaptive_limit.enabled {
        adaptive_limit.validate().map_err(ServeError::Settings)?;
    }
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls.config("server.tls").map_err(ServeError::Settings)? {
        // The metrics port stays plaintext.
        builder = builder
            .tls_config(tls)
            .map_err(|error| ServeError::Settings(format!("server.tls: {error}")))?;
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    for name in &service_names {
        health
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    let mut routes = routes.add_service(health_service);
    if reflection {
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(descriptor)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(descriptor)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        routes = routes
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
    }

    // Reflection describes the same APIs the metrics may name.
    let known = KnownMethods::from_descriptor_sets(&[
        descriptor,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ])
    .map_err(|error| ServeError::Settings(format!("the API descriptor set: {error}")))?;
    let rpc_metrics = GrpcMetrics::register(&mut registry);
    let shed = ShedLayer::new(max_concurrent_requests, &adaptive_limit, &mut registry)
        .with_streams(max_concurrent_streams, known.clone());
    let registry = Arc::new(registry);

    let stopping = CancellationToken::new();
    tokio::spawn({
        let stopping = stopping.clone();
        let health = health.clone();
        async move {
            tokio::select! {
                () = shutdown => {}
                () = stopping.cancelled() => {}
            }
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            for name in service_names {
                health
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
            stopping.cancel();
        }
    });

    let metrics_app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    encode(&registry),
                )
            }
        }),
    );
    let metrics_server = axum::serve(listeners.metrics, metrics_app)
        .with_graceful_shutdown(stopping.clone().cancelled_owned());
    let metrics_task = tokio::spawn(async move { metrics_server.await });

    let layers = tower::ServiceBuilder::new()
        // Outermost: whoever answers a call without reading its body, the body is drained.
        .layer(DrainLayer)
        // Next, so that the server span covers shed calls and injected faults too.
        .layer(ServerTraceLayer)
        .layer(GrpcMetricsLayer::server(rpc_metrics, known.clone()))
        // Outside every layer that may refuse a call in gRPC form, so that a refused Twirp
        // call gets a Twirp error; inside metrics and tracing, which read the status either way.
        .layer(twirp_bridge::TwirpErrorLayer)
        // Outside the limits, so that a call cut off by a bound frees its place.
        .layer(BoundsLayer::new(bounds, known))
        .layer(shed)
        .layer(FaultLayer::new(faults))
        .into_inner();
    let grpc = builder
        .tcp_nodelay(true)
        // HTTP/1.1 as well as HTTP/2, for routes merged beside gRPC (the gateways' Twirp). Over
        // TLS the server offers only `h2` by ALPN: HTTP/1.1 needs a client that offers none.
        .accept_http1(true)
        .layer(layers)
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            // The builder's `tcp_nodelay` does not reach streams we accept ourselves; without
            // it, Nagle's algorithm meets delayed ACKs and many responses wait 40 ms.
            TcpIncoming::from(listeners.grpc).with_nodelay(Some(true)),
            stopping.clone().cancelled_owned(),
        );
    tokio::pin!(grpc);

    let drained = async {
        stopping.cancelled().await;
        tokio::time::sleep(drain_timeout).await;
    };
    let outcome = tokio::select! {
        outcome = &mut grpc => outcome.map_err(ServeError::from),
        () = drained => {
            tracing::warn!(timeout_ms = drain_timeout.as_millis() as u64, "in-flight calls did not drain in time");
            Ok(())
        }
    };
    // Whatever ended the gRPC server ends the rest too.
    stopping.cancel();
    match metrics_task.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(ServeError::Metrics(error)),
        Err(error) => tracing::error!(%error, "metrics server task failed"),
    }
    outcome
}
