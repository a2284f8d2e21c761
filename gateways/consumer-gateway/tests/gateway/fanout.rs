//! Foundation work shared between concurrent requests (`[fanout]`): reads that wait at the
//! same time share calls, the counters come from a cache within its time to live, and with
//! coalescing on every response is the response with it off, for any mix of callers.

use std::collections::BTreeSet;

use futures::future::join_all;
use proptest::{
    prelude::*,
    sample::{select, subsequence},
    strategy::ValueTree,
    test_runner::{Config, RngAlgorithm, TestRng, TestRunner},
};
use protos::{
    consumer::v1::{
        BatchGetTracksRequest, GetTrackRequest, Track as View,
        consumer_gateway_client::ConsumerGatewayClient,
    },
    foundation::{
        follows::v1::{BatchGetFollowingRequest, follows_service_client::FollowsServiceClient},
        likes::v1::{BatchGetReactionsRequest, likes_service_client::LikesServiceClient},
        tracks::v1::DeleteTrackRequest,
    },
};
use service_runtime::faults::{FaultCode, FaultSettings, MethodFault};
use tonic::transport::Channel;

use service_runtime::{metrics::sample, spawn::Running};

use crate::fixture::{TRACKS, Topology, as_user, mask};

const COUNTS: &str = "foundation.counts.v1.CountsService";
const TRACKS_SERVICE: &str = "foundation.tracks.v1.TracksService";

fn slow(latency_ms: u64) -> MethodFault {
    MethodFault {
        latency_ms,
        error_rate: 0.0,
        code: FaultCode::Unavailable,
    }
}

fn track(n: u32) -> String {
    format!("trk_{n:05}")
}

fn user(n: u32) -> String {
    format!("usr_{n:04}")
}

fn stats_of(n: u32) -> Request {
    Request::Get {
        track: track(n),
        secret: Secret::None,
        mask: Some(vec!["id", "stats"]),
    }
}

/// How many calls `gateway` has made to `method` of `service`.
async fn calls_of(gateway: &Running, service: &str, method: &str) -> u64 {
    let text = gateway.scrape().await.unwrap();
    sample(
        &text,
        "grpc_client_handled_total",
        &[("grpc_service", service), ("grpc_method", method)],
    ) as u64
}

/// Sends `n` reads of the counters of different public tracks at once, and returns the calls
/// `gateway` made to counts.BatchGetTrackCounts for them.
async fn concurrent_counts_reads(gateway: &Running, client: &Client, n: usize) -> u64 {
    let before = calls_of(gateway, COUNTS, "BatchGetTrackCounts").await;
    // Public tracks only: n % 10 == 3 is private, n % 20 of 7 and 11 geoblocked.
    let public = (1..=TRACKS).filter(|n| n % 10 != 3 && n % 20 != 7 && n % 20 != 11);
    let reads = public
        .take(n)
        .map(|n| async move { stats_of(n).send(client, Some("usr_0001"), "US", None).await });
    for outcome in join_all(reads).await {
        let views = outcome.expect("a public track");
        assert!(views[0].stats.is_some(), "{views:?}");
    }
    calls_of(gateway, COUNTS, "BatchGetTrackCounts").await - before
}

#[tokio::test]
async fn reads_waiting_at_once_share_foundation_calls_and_coalescing_off_shares_none() {
    // Counts answers slowly, so that the reads queue behind the calls in flight.
    let mut counts_faults = FaultSettings::new();
    counts_faults.insert("BatchGetTrackCounts".into(), slow(300));
    let t = Topology::start_faulty(
        |s| s.fanout.counts_cache.ttl_ms = 0,
        |_| {},
        FaultSettings::new(),
        counts_faults,
    )
    .await;
    let (off_gateway, off) = t.replica(|s| s.fanout.coalesce = false).await;

    // Two calls go out at once (`max_in_flight`); the other reads queue behind them and go
    // out together as soon as one ends.
    let shared = concurrent_counts_reads(&t.gateway, &Client(t.client.clone()), 20).await;
    assert!(
        (2..=8).contains(&shared),
        "20 reads at once made {shared} counts calls"
    );
    let alone = concurrent_counts_reads(&off_gateway, &Client(off), 20).await;
    assert_eq!(alone, 20, "with coalescing off every read is its own call");
}

#[tokio::test]
async fn the_counters_of_a_repeated_read_come_from_the_cache_within_its_time_to_live() {
    let t = Topology::start_with(|s| s.fanout.counts_cache.ttl_ms = 600_000).await;
    let client = Client(t.client.clone());
    let before = t.upstream_calls(COUNTS, "BatchGetTrackCounts").await;
    let first = stats_of(1)
        .send(&client, Some("usr_0001"), "US", None)
        .await;
    let again = stats_of(1)
        .send(&client, Some("usr_0002"), "CA", None)
        .await;
    assert_eq!(first, again);
    assert_eq!(
        t.upstream_calls(COUNTS, "BatchGetTrackCounts").await - before,
        1,
        "the second read's counters came from the cache"
    );
    // The tracks themselves are never cached: authorization reads them every time.
    let before = t.upstream_calls(TRACKS_SERVICE, "BatchGetTracks").await;
    stats_of(1)
        .send(&client, Some("usr_0001"), "US", None)
        .await
        .unwrap();
    assert_eq!(
        t.upstream_calls(TRACKS_SERVICE, "BatchGetTracks").await - before,
        1
    );
}

#[derive(Clone)]
struct Client(ConsumerGatewayClient<Channel>);

/// What a reader may hold of a private track's secret token.
#[derive(Debug, Clone, Copy)]
enum Secret {
    None,
    Right,
    Wrong,
}

/// One read of the property test.
#[derive(Debug, Clone)]
enum Request {
    Get {
        track: String,
        secret: Secret,
        mask: Option<Vec<&'static str>>,
    },
    Batch {
        tracks: Vec<String>,
        mask: Option<Vec<&'static str>>,
    },
}

/// A read's answer, comparable: the tracks (none for a missing or hidden one) or the status
/// code and message.
type Answer = Result<Vec<View>, (tonic::Code, String)>;

impl Request {
    fn read_mask(paths: &Option<Vec<&'static str>>) -> Option<prost_types::FieldMask> {
        paths.as_ref().and_then(|paths| mask(paths))
    }

    async fn send(
        &self,
        client: &Client,
        viewer: Option<&str>,
        territory: &str,
        token: Option<&str>,
    ) -> Answer {
        let mut client = client.0.clone();
        let status = |status: tonic::Status| (status.code(), status.message().to_owned());
        match self {
            Self::Get {
                track,
                secret,
                mask,
            } => {
                let secret_token = match secret {
                    Secret::None => None,
                    Secret::Right => token.map(str::to_owned),
                    Secret::Wrong => Some("not-the-secret-token".to_owned()),
                };
                let request = GetTrackRequest {
                    track_id: track.clone(),
                    read_mask: Self::read_mask(mask),
                    secret_token,
                };
                client
                    .get_track(as_user(request, viewer, territory))
                    .await
                    .map(|response| vec![response.into_inner()])
                    .map_err(status)
            }
            Self::Batch { tracks, mask } => {
                let request = BatchGetTracksRequest {
                    track_ids: tracks.clone(),
                    read_mask: Self::read_mask(mask),
                };
                client
                    .batch_get_tracks(as_user(request, viewer, territory))
                    .await
                    .map(|response| response.into_inner().tracks)
                    .map_err(status)
            }
        }
    }
}

/// Every path of `consumer.v1.Track`.
const PATHS: [&str; 15] = [
    "id",
    "title",
    "genre",
    "created_at",
    "creator",
    "creator.id",
    "creator.followers_count",
    "creator.followed_by_viewer",
    "stats",
    "stats.likes_count",
    "viewer",
    "viewer.liked",
    "viewer.reposted",
    "access",
    "artwork_url",
];

/// One caller's read: who, from where, what.
#[derive(Debug, Clone)]
struct Case {
    viewer: Option<u32>,
    territory: &'static str,
    request: Request,
}

fn masks() -> impl Strategy<Value = Option<Vec<&'static str>>> {
    prop_oneof![
        1 => Just(None),
        4 => subsequence(PATHS.to_vec(), 1..6).prop_map(Some),
    ]
}

fn cases() -> impl Strategy<Value = Vec<Case>> {
    // A small set of tracks and viewers, so that concurrent reads share keys and owners.
    let ids = 1..=40u32;
    let request = prop_oneof![
        (
            ids.clone(),
            select(vec![Secret::None, Secret::Right, Secret::Wrong]),
            masks()
        )
            .prop_map(|(n, secret, mask)| Request::Get {
                track: track(n),
                secret,
                mask,
            }),
        (proptest::collection::vec(ids, 1..8), masks()).prop_map(|(ns, mask)| {
            Request::Batch {
                tracks: ns.into_iter().map(track).collect(),
                mask,
            }
        }),
    ];
    let case = (
        prop_oneof![1 => Just(None), 4 => (1..=12u32).prop_map(Some)],
        select(vec!["US", "CA", "DE", "FR", "GB"]),
        request,
    )
        .prop_map(|(viewer, territory, request)| Case {
            viewer,
            territory,
            request,
        });
    proptest::collection::vec(case, 8..32)
}

#[tokio::test]
async fn coalesced_responses_equal_uncoalesced_ones_for_any_mix_of_callers() {
    // The coalescing gateway shares as much as it can: one call per method in flight and a
    // window that gathers the reads of a round into few calls.
    let t = Topology::start_with(|s| {
        s.fanout.max_in_flight = 1;
        s.fanout.window_us = 2000;
    })
    .await;
    let (_off, off) = t.replica(|s| s.fanout.coalesce = false).await;
    let on = Client(t.client.clone());
    let off = Client(off);
    let mut tokens = std::collections::HashMap::new();
    for n in 1..=40 {
        let record = t.foundation_track(&track(n)).await;
        if !record.secret_token.is_empty() {
            tokens.insert(track(n), record.secret_token);
        }
    }
    let likes = LikesServiceClient::connect(t.likes.as_ref().unwrap().url())
        .await
        .unwrap();
    let follows = FollowsServiceClient::connect(t.follows.as_ref().unwrap().url())
        .await
        .unwrap();

    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: 24,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let strategy = (cases(), proptest::option::weighted(0.3, 1..=40u32));
    let mut deleted = BTreeSet::new();
    for _ in 0..24 {
        let (round, delete) = strategy.new_tree(&mut runner).unwrap().current();
        // A deletion between rounds: both gateways read the same foundation.
        if let Some(n) = delete
            && deleted.insert(n)
        {
            t.tracks_client
                .clone()
                .delete_track(DeleteTrackRequest { track_id: track(n) })
                .await
                .unwrap();
        }
        // Every read of the round at once on both gateways, so that the coalescing one
        // shares calls between callers.
        let sends = round.iter().flat_map(|case| {
            let viewer = case.viewer.map(user);
            let token = match &case.request {
                Request::Get { track: id, .. } => tokens.get(id).cloned(),
                Request::Batch { .. } => None,
            };
            [&on, &off].map(|client| {
                let (viewer, token, case) = (viewer.clone(), token.clone(), case.clone());
                let client = client.clone();
                async move {
                    case.request
                        .send(&client, viewer.as_deref(), case.territory, token.as_deref())
                        .await
                }
            })
        });
        let answers: Vec<Answer> = join_all(sends).await;
        for (case, pair) in round.iter().zip(answers.chunks(2)) {
            assert_eq!(
                pair[0], pair[1],
                "coalescing on and off answered differently for {case:?}"
            );
            if let Ok(views) = &pair[0] {
                check_relations(&likes, &follows, case, views).await;
            }
        }
    }
}

/// The viewer relations in `views` are the caller's own, as the foundation has them.
async fn check_relations(
    likes: &LikesServiceClient<Channel>,
    follows: &FollowsServiceClient<Channel>,
    case: &Case,
    views: &[View],
) {
    let Some(viewer) = case.viewer.map(user) else {
        for view in views {
            assert!(view.viewer.is_none(), "an anonymous caller got {view:?}");
            if let Some(creator) = &view.creator {
                assert!(creator.followed_by_viewer.is_none(), "{view:?}");
            }
        }
        return;
    };
    // Views without their id (the mask left it out) cannot be checked here; on and off
    // answered them alike.
    for view in views.iter().filter(|view| !view.id.is_empty()) {
        if let Some(liked) = view.viewer.as_ref().and_then(|v| v.liked) {
            let truth = likes
                .clone()
                .batch_get_reactions(BatchGetReactionsRequest {
                    user_id: viewer.clone(),
                    track_ids: vec![view.id.clone()],
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .reactions[0]
                .liked;
            assert_eq!(liked, truth, "{viewer} on {} in {view:?}", view.id);
        }
        if let Some(creator) = &view.creator
            && let Some(following) = creator.followed_by_viewer
            && !creator.id.is_empty()
        {
            let truth = follows
                .clone()
                .batch_get_following(BatchGetFollowingRequest {
                    follower_id: viewer.clone(),
                    followee_ids: vec![creator.id.clone()],
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .states[0]
                .following;
            assert_eq!(
                following, truth,
                "{viewer} following {} in {view:?}",
                creator.id
            );
        }
    }
}
