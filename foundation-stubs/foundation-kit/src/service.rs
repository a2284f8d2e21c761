//! The start-up and serve sequence every foundation service follows: connect and migrate,
//! seed when asked, serve, and run the outbox relay beside the server until it has drained.

use service_runtime::{GrpcApp, Listeners, ServeError, cli::Shutdown};
use tokio_util::sync::CancellationToken;

use crate::{
    FoundationError,
    outbox::Relay,
    seed::{Seed, SeedSettings},
};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot open the database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot prepare the service: {0}")]
    Prepare(#[from] FoundationError),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// The seed dataset, when seeding is enabled.
pub fn seed(settings: &SeedSettings) -> Option<Seed> {
    settings
        .enabled
        .then(|| Seed::generate(settings.users, settings.tracks))
}

/// Serves `app` until `shutdown` resolves and the server has drained; the relay, if any, runs
/// until then too.
pub async fn serve(
    app: GrpcApp,
    listeners: Listeners,
    shutdown: Shutdown,
    relay: Option<Relay>,
) -> Result<(), RunError> {
    let relay_stop = CancellationToken::new();
    let relay_task = relay.map(|relay| tokio::spawn(relay.run(relay_stop.clone())));
    let served = service_runtime::serve(app, listeners, shutdown).await;
    relay_stop.cancel();
    if let Some(task) = relay_task
        && let Err(error) = task.await
    {
        tracing::error!(%error, "outbox relay task failed");
    }
    Ok(served?)
}
