//! What the tests of this binary share: the foundation services and the gateway started
//! in-process on ephemeral ports, authenticated requests, uploads, waiting for a condition with
//! a deadline, and reading `/metrics` over plain HTTP/1.0.

use std::net::SocketAddr;

use authorization::token::mint_development_token;
use foundation_kit::{DatabaseSettings, db::testing};
use protos::{
    creator::v1::{
        Track, UploadTrackRequest, creator_gateway_client::CreatorGatewayClient,
        upload_track_request::Part,
    },
    foundation::{
        counts::v1::counts_service_client::CountsServiceClient,
        likes::v1::likes_service_client::LikesServiceClient,
    },
};
use service_runtime::{faults::FaultSettings, spawn::Running};
use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tonic::{Request, Status, transport::Channel};

pub(crate) use test_support::{eventually, http_get};

pub(crate) const OWNER: &str = "usr_0001";
pub(crate) const OTHER: &str = "usr_0002";
pub(crate) const TRACKS_SERVICE: &str = "foundation.tracks.v1.TracksService";
pub(crate) const COUNTS_SERVICE: &str = "foundation.counts.v1.CountsService";
pub(crate) const LIKES_SERVICE: &str = "foundation.likes.v1.LikesService";

pub(crate) type Client = CreatorGatewayClient<Channel>;

/// How a test wants its topology.
#[derive(Debug, Default)]
pub(crate) struct Options {
    /// The gateway's upload cap; the default keeps the built-in one.
    pub(crate) gateway_max_bytes: Option<u64>,
    pub(crate) tracks_faults: FaultSettings,
    pub(crate) counts_faults: FaultSettings,
    /// The tracks database; SQLite in memory when unset.
    pub(crate) tracks_database: Option<DatabaseSettings>,
    /// The gateway's `calls.margin_ms`.
    pub(crate) margin_ms: Option<u64>,
    /// The gateway's `upstreams.tracks.timeout_ms`.
    pub(crate) tracks_timeout_ms: Option<u64>,
    /// The gateway's `server.max_concurrent_requests` and `max_concurrent_streams`, and its
    /// `server.request_idle_timeout_ms`.
    pub(crate) gateway_limits: Option<(usize, usize, u64)>,
    /// The gateway's `[allowed_masks]`.
    pub(crate) allowed_masks: Option<gateway_kit::AllowedMaskSettings>,
    /// The gateway's `[fanout_budget]`.
    pub(crate) fanout_budget: Option<gateway_kit::BudgetSettings>,
    /// The gateway's `[fanout]`.
    pub(crate) fanout: Option<gateway_kit::FanoutSettings>,
}

/// The foundation services a creator gateway needs, and the gateway in front of them. Each is
/// optional so that a test can stop one.
#[derive(Debug)]
pub(crate) struct Topology {
    pub(crate) tracks: Option<Running>,
    pub(crate) likes: Option<Running>,
    pub(crate) counts: Option<Running>,
    pub(crate) gateway: Running,
}

impl Topology {
    pub(crate) async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub(crate) async fn start_with(options: Options) -> Self {
        let mut counts_settings = counts::Settings::defaults();
        counts_settings.database = testing::sqlite();
        counts_settings.server.drain_timeout_ms = 2000;
        counts_settings.faults = options.counts_faults;
        let counts = Running::ephemeral("counts", |listeners, shutdown| {
            counts::run(counts_settings, listeners, shutdown)
        })
        .await
        .unwrap();

        let mut tracks_settings = tracks::Settings::defaults();
        tracks_settings.database = options.tracks_database.unwrap_or_else(testing::sqlite);
        tracks_settings.server.drain_timeout_ms = 2000;
        tracks_settings.outbox.counts_url = counts.url();
        tracks_settings.outbox.poll_interval_ms = 20;
        tracks_settings.outbox.max_backoff_ms = 200;
        tracks_settings.faults = options.tracks_faults;
        let tracks = Running::ephemeral("tracks", |listeners, shutdown| {
            tracks::run(tracks_settings, listeners, shutdown)
        })
        .await
        .unwrap();

        let mut likes_settings = likes::Settings::defaults();
        likes_settings.database = testing::sqlite();
        likes_settings.server.drain_timeout_ms = 2000;
        likes_settings.outbox.counts_url = counts.url();
        likes_settings.outbox.poll_interval_ms = 20;
        likes_settings.outbox.max_backoff_ms = 200;
        let likes = Running::ephemeral("likes", |listeners, shutdown| {
            likes::run(likes_settings, listeners, shutdown)
        })
        .await
        .unwrap();

        let mut settings = creator_gateway::Settings::defaults();
        settings.upstreams.tracks.url = tracks.url();
        settings.upstreams.likes.url = likes.url();
        settings.upstreams.counts.url = counts.url();
        settings.server.drain_timeout_ms = 2000;
        if let Some(max_bytes) = options.gateway_max_bytes {
            settings.upload.max_bytes = max_bytes;
        }
        if let Some(margin_ms) = options.margin_ms {
            settings.calls.margin_ms = margin_ms;
        }
        if let Some(timeout_ms) = options.tracks_timeout_ms {
            settings.upstreams.tracks.timeout_ms = timeout_ms;
        }
        if let Some((requests, streams, idle_ms)) = options.gateway_limits {
            settings.server.max_concurrent_requests = requests;
            settings.server.max_concurrent_streams = streams;
            settings.server.request_idle_timeout_ms = idle_ms;
        }
        if let Some(masks) = options.allowed_masks {
            settings.allowed_masks = masks;
        }
        if let Some(budget) = options.fanout_budget {
            settings.fanout_budget = budget;
        }
        if let Some(fanout) = options.fanout {
            settings.fanout = fanout;
        }
        let gateway = Running::ephemeral("creator-gateway", |listeners, shutdown| {
            creator_gateway::run(settings, listeners, shutdown)
        })
        .await
        .unwrap();

        Self {
            tracks: Some(tracks),
            likes: Some(likes),
            counts: Some(counts),
            gateway,
        }
    }

    pub(crate) async fn client(&self) -> Client {
        CreatorGatewayClient::connect(self.gateway.url())
            .await
            .unwrap()
    }

    pub(crate) async fn likes_client(&self) -> LikesServiceClient<Channel> {
        LikesServiceClient::connect(self.likes.as_ref().unwrap().url())
            .await
            .unwrap()
    }

    pub(crate) async fn counts_client(&self) -> CountsServiceClient<Channel> {
        CountsServiceClient::connect(self.counts.as_ref().unwrap().url())
            .await
            .unwrap()
    }

    /// The gateway's upstream calls of `service`/`method` that ended with `code`.
    pub(crate) async fn upstream_calls(&self, service: &str, method: &str, code: &str) -> u64 {
        let (_, body) = http_get(self.gateway.metrics_addr, "/metrics").await;
        sample(
            &body,
            "grpc_client_handled_total",
            &[
                ("grpc_service", service),
                ("grpc_method", method),
                ("grpc_code", code),
            ],
        )
        .map_or(0, |value| value as u64)
    }

    /// How many `CreateTrack` calls the tracks service finished with `code`.
    pub(crate) async fn creates_finished(&self, code: &str) -> u64 {
        let (_, body) = http_get(self.tracks.as_ref().unwrap().metrics_addr, "/metrics").await;
        sample(
            &body,
            "grpc_server_handled_total",
            &[
                ("grpc_service", TRACKS_SERVICE),
                ("grpc_method", "CreateTrack"),
                ("grpc_code", code),
            ],
        )
        .map_or(0, |value| value as u64)
    }

    /// Every upstream call the gateway made so far, by `service/method`.
    pub(crate) async fn all_upstream_calls(&self) -> Vec<(String, u64)> {
        let (_, body) = http_get(self.gateway.metrics_addr, "/metrics").await;
        let mut calls: Vec<(String, u64)> = Vec::new();
        for line in body.lines() {
            let Some(rest) = line.strip_prefix("grpc_client_handled_total{") else {
                continue;
            };
            let Some((labels, value)) = rest.split_once("} ") else {
                continue;
            };
            let label = |name: &str| {
                labels.split(',').find_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    (key == name).then(|| value.trim_matches('"').to_owned())
                })
            };
            let key = format!(
                "{}/{}",
                label("grpc_service").unwrap_or_default(),
                label("grpc_method").unwrap_or_default()
            );
            let value: u64 = value.parse::<f64>().map_or(0, |value| value as u64);
            match calls.iter_mut().find(|(known, _)| *known == key) {
                Some((_, total)) => *total += value,
                None => calls.push((key, value)),
            }
        }
        calls.sort();
        calls
    }
}

/// A TCP proxy to `target` for one connection; aborting the task drops both sockets, as a
/// caller whose machine or network goes away would.
pub(crate) async fn one_connection_proxy(target: SocketAddr) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut inbound, _) = listener.accept().await.unwrap();
        let mut outbound = TcpStream::connect(target).await.unwrap();
        drop(tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await);
    });
    (addr, task)
}

/// A request carrying a development token for `user` (anonymous when `None`).
pub(crate) fn as_user<T>(user: Option<&str>, message: T) -> Request<T> {
    let mut request = Request::new(message);
    let token = mint_development_token(user, "US", 600);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

pub(crate) fn owner<T>(message: T) -> Request<T> {
    as_user(Some(OWNER), message)
}

/// Metadata of a new track.
pub(crate) fn new_track(title: &str) -> Track {
    Track {
        title: title.into(),
        description: "a description".into(),
        genre: "ambient".into(),
        duration: Some(prost_types::Duration {
            seconds: 185,
            nanos: 0,
        }),
        artwork_url: "https://img.example.com/a.jpg".into(),
        visibility: protos::creator::v1::track::Visibility::Public as i32,
        downloadable: true,
        ..Track::default()
    }
}

/// Deterministic audio bytes.
pub(crate) fn audio(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ salt)
        .collect()
}

/// The messages of an upload: the metadata, the audio in `chunk`-byte pieces, the commit.
pub(crate) fn upload_messages(
    metadata: Track,
    audio: &[u8],
    chunk: usize,
) -> Vec<UploadTrackRequest> {
    let mut messages = vec![UploadTrackRequest {
        part: Some(Part::Metadata(metadata)),
    }];
    messages.extend(audio.chunks(chunk).map(|piece| UploadTrackRequest {
        part: Some(Part::AudioChunk(piece.to_vec().into())),
    }));
    messages.push(commit_message(audio));
    messages
}

/// The commit that ends an upload of `audio`.
pub(crate) fn commit_message(audio: &[u8]) -> UploadTrackRequest {
    use sha2::Digest;
    UploadTrackRequest {
        part: Some(Part::Commit(protos::creator::v1::UploadCommit {
            size_bytes: audio.len() as u64,
            sha256: hex::encode(sha2::Sha256::digest(audio)),
        })),
    }
}

/// Uploads a track as `user` through the gateway.
pub(crate) async fn upload_as(
    client: &mut Client,
    user: &str,
    metadata: Track,
    audio: &[u8],
) -> Result<Track, Status> {
    let messages = upload_messages(metadata, audio, 4096);
    client
        .upload_track(as_user(Some(user), futures::stream::iter(messages)))
        .await
        .map(tonic::Response::into_inner)
}

/// Uploads a small track as the owner and returns it.
pub(crate) async fn uploaded(client: &mut Client, title: &str) -> Track {
    upload_as(client, OWNER, new_track(title), &audio(10_000, 1))
        .await
        .unwrap()
}

pub(crate) fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|path| (*path).to_owned()).collect(),
    })
}

/// The value of the sample `name{…}` whose labels include every pair of `labels`.
pub(crate) fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (label_text, value) = if let Some(rest) = rest.strip_prefix('{') {
            rest.split_once("} ")?
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
