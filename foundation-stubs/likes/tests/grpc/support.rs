//! What the tests of this binary share: settings and start-up of the services under test, the
//! databases a scenario runs on, waiting for a condition with a deadline, and reading
//! `/metrics` over plain HTTP/1.0.

use std::{
    future::Future,
    net::SocketAddr,
    time::{Duration, Instant},
};

use foundation_kit::{DatabaseSettings, db::testing};
use protos::foundation::{
    counts::v1::counts_service_client::CountsServiceClient,
    likes::v1::likes_service_client::LikesServiceClient,
};
use service_runtime::{Listeners, spawn::Running};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tonic::transport::Channel;

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

/// Polls `check` until it succeeds, failing the test with the last reason after `deadline`.
pub(crate) async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        match check().await {
            Ok(value) => return value,
            Err(reason) if started.elapsed() > deadline => {
                panic!("{what} did not happen within {deadline:?}; last: {reason}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// `GET path` over HTTP/1.0 (the server closes the connection after the response); returns
/// the status code and the body.
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        String::from_utf8(response).unwrap()
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("the metrics server answers within 10 s");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status code in {head:?}"));
    (status, body.to_owned())
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
