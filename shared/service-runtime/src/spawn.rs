//! Runs a service inside the current process on ephemeral or given listeners: the local
//! topology runs all services this way, and tests start the service under test this way.

use std::{fmt::Display, future::Future, net::SocketAddr};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Listeners, cli::Shutdown};

/// A service running in this process. Dropping it stops the service.
#[derive(Debug)]
pub struct Running {
    pub name: &'static str,
    pub grpc_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    stop: CancellationToken,
    task: Option<JoinHandle<Result<(), String>>>,
}

impl Running {
    /// Starts `run` on `listeners`.
    pub fn start<F, Fut, E>(
        name: &'static str,
        listeners: Listeners,
        run: F,
    ) -> std::io::Result<Self>
    where
        F: FnOnce(Listeners, Shutdown) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        let grpc_addr = listeners.grpc_addr()?;
        let metrics_addr = listeners.metrics_addr()?;
        let stop = CancellationToken::new();
        let future = run(listeners, Box::pin(stop.clone().cancelled_owned()));
        let task = tokio::spawn(async move {
            future.await.map_err(|error| {
                tracing::error!(service = name, %error, "service failed");
                error.to_string()
            })
        });
        Ok(Self {
            name,
            grpc_addr,
            metrics_addr,
            stop,
            task: Some(task),
        })
    }

    /// Starts `run` on ephemeral loopback ports.
    pub async fn ephemeral<F, Fut, E>(name: &'static str, run: F) -> std::io::Result<Self>
    where
        F: FnOnce(Listeners, Shutdown) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        Self::start(name, Listeners::ephemeral().await?, run)
    }

    /// The gRPC endpoint, `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// The metrics endpoint, `http://127.0.0.1:port/metrics`.
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.metrics_addr)
    }

    /// Polls the service's `grpc.health.v1` until it reports SERVING (which happens once its
    /// storage is ready and seeded), or fails at `deadline`.
    pub async fn wait_serving(&self, deadline: std::time::Instant) -> Result<(), String> {
        self.wait_serving_with(None, deadline).await
    }

    /// [`Self::wait_serving`] over TLS with `tls` when the service has `server.tls` on.
    pub async fn wait_serving_with(
        &self,
        tls: Option<tonic::transport::ClientTlsConfig>,
        deadline: std::time::Instant,
    ) -> Result<(), String> {
        use std::time::Duration;
        loop {
            let checked =
                crate::cli::check_health(self.grpc_addr, tls.clone(), Duration::from_secs(1)).await;
            if checked.is_ok() {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(format!("{} did not become ready in time", self.name));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Reads the service's `/metrics` page.
    pub async fn scrape(&self) -> std::io::Result<String> {
        crate::metrics::scrape(self.metrics_addr).await
    }

    /// Signals shutdown without waiting.
    pub fn signal_stop(&self) {
        self.stop.cancel();
    }

    /// Stops the service and waits until it has drained.
    pub async fn stop(mut self) -> Result<(), String> {
        self.stop.cancel();
        match self.task.take() {
            Some(task) => task.await.map_err(|error| error.to_string())?,
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
