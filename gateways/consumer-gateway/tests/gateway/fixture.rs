//! Starts the foundation services (seeded, in memory) and the gateway, and hands out clients.

use std::time::{Duration, Instant};

use authorization::token::mint_development_token;
use foundation_kit::db::testing;
use protos::{
    consumer::v1::consumer_gateway_client::ConsumerGatewayClient,
    foundation::tracks::v1::{
        BatchGetTracksRequest, Track, tracks_service_client::TracksServiceClient,
    },
};
use service_runtime::{faults::FaultSettings, metrics::sample, spawn::Running};
use tonic::{Request, metadata::MetadataValue, transport::Channel};

pub(crate) const USERS: u32 = 60;
pub(crate) const TRACKS: u32 = 120;

#[allow(dead_code)] // Every service is kept so that each test can stop the one it needs.
pub(crate) struct Topology {
    pub(crate) tracks: Option<Running>,
    pub(crate) likes: Option<Running>,
    pub(crate) follows: Option<Running>,
    pub(crate) counts: Option<Running>,
    pub(crate) gateway: Running,
    pub(crate) client: ConsumerGatewayClient<Channel>,
    pub(crate) tracks_client: TracksServiceClient<Channel>,
}

fn seeded<T>(mut settings: T, seed: impl FnOnce(&mut T)) -> T {
    seed(&mut settings);
    settings
}

impl Topology {
    pub(crate) async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub(crate) async fn start_with(tune: impl FnOnce(&mut consumer_gateway::Settings)) -> Self {
        Self::start_tuned(tune, |_| {}).await
    }

    /// Starts with the gateway's and the tracks service's settings tuned.
    pub(crate) async fn start_tuned(
        tune: impl FnOnce(&mut consumer_gateway::Settings),
        tune_tracks: impl FnOnce(&mut tracks::Settings),
    ) -> Self {
        Self::start_faulty(
            tune,
            tune_tracks,
            FaultSettings::new(),
            FaultSettings::new(),
        )
        .await
    }

    /// Starts with the gateway's and the tracks service's settings tuned, and faults injected
    /// into likes and counts.
    pub(crate) async fn start_faulty(
        tune: impl FnOnce(&mut consumer_gateway::Settings),
        tune_tracks: impl FnOnce(&mut tracks::Settings),
        likes_faults: FaultSettings,
        counts_faults: FaultSettings,
    ) -> Self {
        let counts = seeded(counts::Settings::defaults(), |s| {
            s.database = testing::sqlite();
            s.seed.enabled = true;
            s.seed.users = USERS;
            s.seed.tracks = TRACKS;
            s.faults = counts_faults;
        });
        let counts = Running::ephemeral("counts", move |l, stop| counts::run(counts, l, stop))
            .await
            .unwrap();
        let relay = |s: &mut foundation_kit::outbox::RelaySettings| {
            s.counts_url = counts.url();
            s.poll_interval_ms = 20;
            s.max_backoff_ms = 200;
        };
        let tracks = seeded(tracks::Settings::defaults(), |s| {
            s.database = testing::sqlite();
            s.seed.enabled = true;
            s.seed.users = USERS;
            s.seed.tracks = TRACKS;
            relay(&mut s.outbox);
            tune_tracks(s);
        });
        let likes = seeded(likes::Settings::defaults(), |s| {
            s.database = testing::sqlite();
            s.seed.enabled = true;
            s.seed.users = USERS;
            s.seed.tracks = TRACKS;
            relay(&mut s.outbox);
            s.faults = likes_faults;
        });
        let follows = seeded(follows::Settings::defaults(), |s| {
            s.database = testing::sqlite();
            s.seed.enabled = true;
            s.seed.users = USERS;
            s.seed.tracks = TRACKS;
            relay(&mut s.outbox);
        });
        let tracks = Running::ephemeral("tracks", move |l, stop| tracks::run(tracks, l, stop))
            .await
            .unwrap();
        let likes = Running::ephemeral("likes", move |l, stop| likes::run(likes, l, stop))
            .await
            .unwrap();
        let follows = Running::ephemeral("follows", move |l, stop| follows::run(follows, l, stop))
            .await
            .unwrap();
        let mut settings =
            gateway_settings([tracks.url(), likes.url(), follows.url(), counts.url()]);
        tune(&mut settings);
        let gateway = Running::ephemeral("consumer-gateway", move |l, stop| {
            consumer_gateway::run(settings, l, stop)
        })
        .await
        .unwrap();
        let client = ConsumerGatewayClient::connect(gateway.url()).await.unwrap();
        let tracks_client = TracksServiceClient::connect(tracks.url()).await.unwrap();
        // Seeding finishes before a service answers; wait for all four.
        for service in [&tracks, &likes, &follows, &counts] {
            service
                .wait_serving(Instant::now() + Duration::from_secs(30))
                .await
                .unwrap();
        }
        Self {
            tracks: Some(tracks),
            likes: Some(likes),
            follows: Some(follows),
            counts: Some(counts),
            gateway,
            client,
            tracks_client,
        }
    }

    /// Another replica of the gateway in front of the same foundation services, its settings
    /// tuned, and a client of it.
    pub(crate) async fn replica(
        &self,
        tune: impl FnOnce(&mut consumer_gateway::Settings),
    ) -> (Running, ConsumerGatewayClient<Channel>) {
        let url = |service: &Option<Running>| service.as_ref().expect("a running service").url();
        let mut settings = gateway_settings([
            url(&self.tracks),
            url(&self.likes),
            url(&self.follows),
            url(&self.counts),
        ]);
        tune(&mut settings);
        let gateway = Running::ephemeral("consumer-gateway", move |l, stop| {
            consumer_gateway::run(settings, l, stop)
        })
        .await
        .unwrap();
        let client = ConsumerGatewayClient::connect(gateway.url()).await.unwrap();
        (gateway, client)
    }

    /// The foundation's record of a seeded track.
    pub(crate) async fn foundation_track(&self, id: &str) -> Track {
        self.tracks_client
            .clone()
            .batch_get_tracks(BatchGetTracksRequest {
                ids: vec![id.to_owned()],
            })
            .await
            .unwrap()
            .into_inner()
            .tracks
            .remove(0)
    }

    pub(crate) async fn foundation_track_owner(&self, id: &str) -> String {
        self.tracks_client
            .clone()
            .batch_get_tracks(BatchGetTracksRequest {
                ids: vec![id.to_owned()],
            })
            .await
            .unwrap()
            .into_inner()
            .tracks
            .first()
            .map(|track| track.owner_id.clone())
            .unwrap_or_default()
    }

    /// How many calls the gateway has made to `method` of `service` (any status).
    pub(crate) async fn upstream_calls(&self, service: &str, method: &str) -> u64 {
        let text = self.gateway.scrape().await.unwrap();
        sample(
            &text,
            "grpc_client_handled_total",
            &[("grpc_service", service), ("grpc_method", method)],
        ) as u64
    }

    /// How many calls to `upstream` the gateway's open circuit refused.
    pub(crate) async fn short_circuited(&self, upstream: &str) -> u64 {
        let text = self.gateway.scrape().await.unwrap();
        sample(
            &text,
            "grpc_client_short_circuited_total",
            &[("upstream", upstream)],
        ) as u64
    }

    /// Every upstream call the gateway has made, by `service/method`.
    pub(crate) async fn upstream_snapshot(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for (service, method) in UPSTREAM_METHODS {
            out.push((
                format!("{service}/{method}"),
                self.upstream_calls(service, method).await,
            ));
        }
        out
    }
}

/// The gateway's settings in front of the foundation at `[tracks, likes, follows, counts]`.
fn gateway_settings(urls: [String; 4]) -> consumer_gateway::Settings {
    let mut settings = consumer_gateway::Settings::defaults();
    let [tracks, likes, follows, counts] = urls;
    settings.upstreams.tracks.url = tracks;
    settings.upstreams.likes.url = likes;
    settings.upstreams.follows.url = follows;
    settings.upstreams.counts.url = counts;
    // Tests run many topologies at once on few cores: generous caps keep slowness from looking
    // like failure, except where a test tightens them.
    for upstream in [
        &mut settings.upstreams.tracks,
        &mut settings.upstreams.likes,
        &mut settings.upstreams.follows,
        &mut settings.upstreams.counts,
    ] {
        upstream.timeout_ms = 5000;
        upstream.connect_timeout_ms = 5000;
    }
    settings
}

pub(crate) const UPSTREAM_METHODS: [(&str, &str); 5] = [
    ("foundation.tracks.v1.TracksService", "BatchGetTracks"),
    ("foundation.likes.v1.LikesService", "BatchGetReactions"),
    ("foundation.counts.v1.CountsService", "BatchGetTrackCounts"),
    ("foundation.follows.v1.FollowsService", "BatchGetFollowing"),
    ("foundation.counts.v1.CountsService", "BatchGetUserCounts"),
];

/// A request carrying a development token for `user` (anonymous when `None`) in `territory`.
pub(crate) fn as_user<T>(message: T, user: Option<&str>, territory: &str) -> Request<T> {
    let mut request = Request::new(message);
    let token = mint_development_token(user, territory, 300);
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    request
}

pub(crate) fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}
