//! What the tests of this binary share: settings and start-up of the services under test, the
//! databases a scenario runs on, waiting for a condition with a deadline, and reading
//! `/metrics` over plain HTTP/1.0.

use std::net::SocketAddr;

use foundation_kit::{DatabaseSettings, db::testing};
use protos::foundation::{
    counts::v1::counts_service_client::CountsServiceClient,
    likes::v1::likes_service_client::LikesServiceClient,
};
use service_runtime::{Listeners, spawn::Running};
use tokio::net::TcpListener;
use tonic::transport::Channel;

pub(crate) use test_support::{eventually, http_get};

pub(crate) const LIKES_SERVICE: &str = "foundation.likes.v1.LikesService";

/// A loopback address nothing listens on: bound to find a free port, then released.
pub(crate) async fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Likes settings for a test. The relay points at a free port, so that events stay in the
/// outbox and never reach a topology that may be running on this machine.
pub(crate) async fn likes_settings(database: DatabaseSettings) -> likes::Settings {
    let mut settings = likes::Settings::defaults();
    settings.database = database;
    settings.outbox.counts_url = format!("http://{}", free_addr().await);
    settings.outbox.poll_interval_ms = 20;
    settings.outbox.max_backoff_ms = 200;
    settings.outbox.timeout_ms = 2000;
    settings.server.drain_timeout_ms = 5000;
    settings
}

pub(crate) fn counts_settings(database: DatabaseSettings) -> counts::Settings {
    let mut settings = counts::Settings::defaults();
    settings.database = database;
    settings.server.drain_timeout_ms = 5000;
    settings
}

pub(crate) async fn start_likes(settings: likes::Settings) -> Running {
    Running::ephemeral("likes", |listeners, shutdown| {
        likes::run(settings, listeners, shutdown)
    })
    .await
    .unwrap()
}

pub(crate) fn start_counts_on(settings: counts::Settings, listeners: Listeners) -> Running {
    Running::start("counts", listeners, |listeners, shutdown| {
        counts::run(settings, listeners, shutdown)
    })
    .unwrap()
}

pub(crate) async fn start_counts(settings: counts::Settings) -> Running {
    start_counts_on(settings, Listeners::ephemeral().await.unwrap())
}

pub(crate) async fn likes_client(running: &Running) -> LikesServiceClient<Channel> {
    LikesServiceClient::connect(running.url()).await.unwrap()
}

pub(crate) async fn counts_client(running: &Running) -> CountsServiceClient<Channel> {
    CountsServiceClient::connect(running.url()).await.unwrap()
}

/// Two fresh PostgreSQL schemas (one per service), or `None` when `TEST_DATABASE_URL` is unset.
pub(crate) async fn postgres_pair(test: &str) -> Option<(DatabaseSettings, DatabaseSettings)> {
    let first = testing::postgres(test).await?;
    let second = testing::postgres(test).await?;
    Some((first, second))
}

/// The value of the sample `name{…}` whose labels include every pair of `labels`.
pub(crate) fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (label_text, value) = if let Some(rest) = rest.strip_prefix('{') {
            let (label_text, value) = rest.split_once("} ")?;
            (label_text, value)
        } else {
            ("", rest.strip_prefix(' ')?)
        };
        let present: Vec<(&str, &str)> = label_text
            .split(',')
            .filter_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                Some((key, value.trim_matches('"')))
            })
            .collect();
        labels
            .iter()
            .all(|wanted| present.contains(wanted))
            .then(|| value.split(' ').next()?.parse().ok())
            .flatten()
    })
}

/// A connected channel, for clients generated without a `connect` of their own.
pub(crate) async fn channel(url: String) -> Channel {
    Channel::from_shared(url).unwrap().connect().await.unwrap()
}

/// Waits until counts says each of the tracks `trk_0` … `trk_{tracks - 1}` has `likes` likes.
pub(crate) async fn await_likes_per_track(
    counts: &Running,
    tracks: usize,
    likes: u64,
    within: std::time::Duration,
) {
    use protos::foundation::counts::v1::BatchGetTrackCountsRequest;
    let api = counts_client(counts).await;
    eventually("exact likes per track", within, || {
        let mut api = api.clone();
        async move {
            let track_ids = (0..tracks).map(|track| format!("trk_{track}")).collect();
            let counts = api
                .batch_get_track_counts(BatchGetTrackCountsRequest { track_ids })
                .await
                .map_err(|status| status.to_string())?
                .into_inner()
                .counts;
            let got: Vec<u64> = counts.iter().map(|c| c.likes_count).collect();
            if got == vec![likes; tracks] {
                Ok(())
            } else {
                Err(format!("likes per track {got:?}"))
            }
        }
    })
    .await;
}
