//! `ApplyEvents` is the only write path of counts: it validates whole batches, applies each
//! event id once, drops a deleted track's counters for good, and moves follower counts.

use foundation_kit::{DatabaseSettings, db::testing};
use protos::foundation::counts::v1::{
    ApplyEventsRequest, ApplyEventsResponse, BatchGetTrackCountsRequest, BatchGetUserCountsRequest,
    Event, TrackCounts, TrackDeleted, TrackReaction, UserCounts, UserFollow,
    counts_service_client::CountsServiceClient, event::Kind,
};
use service_runtime::spawn::Running;
use tonic::{Code, transport::Channel};

const MAX_EVENTS: usize = 5;

async fn start(database: DatabaseSettings) -> (Running, CountsServiceClient<Channel>) {
    let mut settings = counts::Settings::defaults();
    settings.database = database;
    settings.limits.max_events = MAX_EVENTS;
    settings.limits.max_batch = 100;
    let running = Running::ephemeral("counts", |listeners, shutdown| {
        counts::run(settings, listeners, shutdown)
    })
    .await
    .unwrap();
    let client = CountsServiceClient::connect(running.url()).await.unwrap();
    (running, client)
}

/// Event ids only need to be unique; these are readable.
fn event(id: &str, kind: Kind) -> Event {
    Event {
        id: id.into(),
        occur_time: None,
        kind: Some(kind),
    }
}

fn reaction(track_id: &str, user_id: &str) -> TrackReaction {
    TrackReaction {
        track_id: track_id.into(),
        user_id: user_id.into(),
    }
}

fn follow(follower_id: &str, followee_id: &str) -> UserFollow {
    UserFollow {
        follower_id: follower_id.into(),
        followee_id: followee_id.into(),
    }
}

async fn apply(
    client: &mut CountsServiceClient<Channel>,
    events: Vec<Event>,
) -> Result<ApplyEventsResponse, tonic::Status> {
    client
        .apply_events(ApplyEventsRequest { events })
        .await
        .map(|response| response.into_inner())
}

async fn tracks(client: &mut CountsServiceClient<Channel>, ids: &[&str]) -> Vec<(u64, u64, u64)> {
    let counts = client
        .batch_get_track_counts(BatchGetTrackCountsRequest {
            track_ids: ids.iter().map(|id| id.to_string()).collect(),
        })
        .await
        .unwrap()
        .into_inner()
        .counts;
    let returned: Vec<&str> = counts.iter().map(|c| c.track_id.as_str()).collect();
    assert_eq!(returned, ids, "request order");
    counts
        .into_iter()
        .map(
            |TrackCounts {
                 likes_count,
                 reposts_count,
                 downloads_count,
                 ..
             }| { (likes_count, reposts_count, downloads_count) },
        )
        .collect()
}

async fn users(client: &mut CountsServiceClient<Channel>, ids: &[&str]) -> Vec<(u64, u64)> {
    let counts = client
        .batch_get_user_counts(BatchGetUserCountsRequest {
            user_ids: ids.iter().map(|id| id.to_string()).collect(),
        })
        .await
        .unwrap()
        .into_inner()
        .counts;
    let returned: Vec<&str> = counts.iter().map(|c| c.user_id.as_str()).collect();
    assert_eq!(returned, ids, "request order");
    counts
        .into_iter()
        .map(
            |UserCounts {
                 followers_count,
                 following_count,
                 ..
             }| (followers_count, following_count),
        )
        .collect()
}

fn assert_invalid<T: std::fmt::Debug>(outcome: Result<T, tonic::Status>, field: &str) {
    let status = outcome.expect_err("bad input must be rejected");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with(&format!("{field}: "))
            || status.message().starts_with(&format!("{field} ")),
        "the message must name {field}: {:?}",
        status.message()
    );
}

#[tokio::test]
async fn events_are_validated_as_a_whole_batch() {
    events_are_validated_on(testing::sqlite()).await;
    if let Some(database) = testing::postgres("events_are_validated").await {
        events_are_validated_on(database).await;
    }
}

async fn events_are_validated_on(database: DatabaseSettings) {
    let (running, mut client) = start(database).await;
    let liked = |id: &str| event(id, Kind::TrackLiked(reaction("trk_1", "usr_1")));

    let no_kind = Event {
        id: "ev-no-kind".into(),
        occur_time: None,
        kind: None,
    };
    assert_invalid(apply(&mut client, vec![no_kind]).await, "events.kind");
    for bad_id in ["", "a b", "x/y", &"e".repeat(65)] {
        assert_invalid(apply(&mut client, vec![liked(bad_id)]).await, "events.id");
    }
    for (track, user) in [
        ("", "usr_1"),
        ("trk_1", ""),
        ("trk 1", "usr_1"),
        ("trk_1", "usr/1"),
    ] {
        let bad = event("ev-bad-ids", Kind::TrackReposted(reaction(track, user)));
        assert_invalid(apply(&mut client, vec![bad]).await, "events.kind");
    }
    let bad_follow = event("ev-bad-follow", Kind::UserFollowed(follow("usr_1", "")));
    assert_invalid(apply(&mut client, vec![bad_follow]).await, "events.kind");
    let bad_delete = event(
        "ev-bad-delete",
        Kind::TrackDeleted(TrackDeleted {
            track_id: "é".into(),
        }),
    );
    assert_invalid(apply(&mut client, vec![bad_delete]).await, "events.kind");

    // Too many events: the limit passes, one more does not.
    let batch = |n: usize| {
        (0..n)
            .map(|i| liked(&format!("ev-batch-{n}-{i}")))
            .collect::<Vec<_>>()
    };
    assert_invalid(apply(&mut client, batch(MAX_EVENTS + 1)).await, "events");
    assert_eq!(tracks(&mut client, &["trk_1"]).await, vec![(0, 0, 0)]);
    let applied = apply(&mut client, batch(MAX_EVENTS)).await.unwrap();
    assert_eq!(
        (applied.applied, applied.duplicates),
        (MAX_EVENTS as u32, 0)
    );
    assert_eq!(
        tracks(&mut client, &["trk_1"]).await,
        vec![(MAX_EVENTS as u64, 0, 0)]
    );

    // One bad event rejects the whole batch: the good one before it is not applied.
    let mixed = vec![liked("ev-good"), liked("bad id")];
    assert_invalid(apply(&mut client, mixed).await, "events.id");
    assert_eq!(
        tracks(&mut client, &["trk_1"]).await,
        vec![(MAX_EVENTS as u64, 0, 0)]
    );
    // …and was not remembered as applied either.
    let retried = apply(&mut client, vec![liked("ev-good")]).await.unwrap();
    assert_eq!((retried.applied, retried.duplicates), (1, 0));

    // Batch reads: bad ids and too many ids.
    let ids = |n: usize| (0..n).map(|i| format!("trk_{i}")).collect::<Vec<_>>();
    assert_invalid(
        client
            .batch_get_track_counts(BatchGetTrackCountsRequest {
                track_ids: ids(101),
            })
            .await,
        "track_ids",
    );
    assert_invalid(
        client
            .batch_get_track_counts(BatchGetTrackCountsRequest {
                track_ids: vec!["a b".into()],
            })
            .await,
        "track_ids",
    );
    assert_invalid(
        client
            .batch_get_user_counts(BatchGetUserCountsRequest {
                user_ids: vec![String::new()],
            })
            .await,
        "user_ids",
    );
    let full = client
        .batch_get_track_counts(BatchGetTrackCountsRequest {
            track_ids: ids(100),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(full.counts.len(), 100);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn counters_follow_events_and_redelivery_changes_nothing() {
    counters_follow_events_on(testing::sqlite()).await;
    let dir = tempfile::tempdir().unwrap();
    counters_follow_events_on(testing::sqlite_file(dir.path())).await;
    if let Some(database) = testing::postgres("counters_follow_events").await {
        counters_follow_events_on(database).await;
    }
}

async fn counters_follow_events_on(database: DatabaseSettings) {
    let (running, mut client) = start(database).await;

    // Unknown ids count zero, in request order, duplicates included.
    assert_eq!(
        tracks(&mut client, &["trk_x", "trk_y", "trk_x"]).await,
        vec![(0, 0, 0); 3]
    );
    assert_eq!(
        users(&mut client, &["usr_x", "usr_y"]).await,
        vec![(0, 0); 2]
    );
    assert!(tracks(&mut client, &[]).await.is_empty());
    let empty = apply(&mut client, vec![]).await.unwrap();
    assert_eq!((empty.applied, empty.duplicates), (0, 0));

    let events = vec![
        event("ev-1", Kind::TrackLiked(reaction("trk_a", "usr_1"))),
        event("ev-2", Kind::TrackLiked(reaction("trk_a", "usr_2"))),
        event("ev-3", Kind::TrackReposted(reaction("trk_a", "usr_1"))),
        event("ev-4", Kind::TrackDownloaded(reaction("trk_a", "usr_3"))),
        event("ev-5", Kind::TrackLiked(reaction("trk_b", "usr_1"))),
    ];
    let first = apply(&mut client, events.clone()).await.unwrap();
    assert_eq!((first.applied, first.duplicates), (5, 0));
    let expected = vec![(2, 1, 1), (1, 0, 0)];
    assert_eq!(tracks(&mut client, &["trk_a", "trk_b"]).await, expected);

    // Redelivery: the same events again, whole or in part, change nothing.
    let again = apply(&mut client, events.clone()).await.unwrap();
    assert_eq!((again.applied, again.duplicates), (0, 5));
    let one = apply(&mut client, vec![events[0].clone()]).await.unwrap();
    assert_eq!((one.applied, one.duplicates), (0, 1));
    assert_eq!(tracks(&mut client, &["trk_a", "trk_b"]).await, expected);
    // The same id twice in one batch counts once.
    let twice = event("ev-6", Kind::TrackUnliked(reaction("trk_b", "usr_1")));
    let both = apply(&mut client, vec![twice.clone(), twice])
        .await
        .unwrap();
    assert_eq!((both.applied, both.duplicates), (1, 1));
    assert_eq!(tracks(&mut client, &["trk_b"]).await, vec![(0, 0, 0)]);

    // Deltas commute: an unrepost that overtakes its repost reads as zero, and the pair nets
    // out to zero once both have arrived.
    apply(
        &mut client,
        vec![event(
            "ev-7",
            Kind::TrackUnreposted(reaction("trk_c", "usr_1")),
        )],
    )
    .await
    .unwrap();
    assert_eq!(tracks(&mut client, &["trk_c"]).await, vec![(0, 0, 0)]);
    apply(
        &mut client,
        vec![event(
            "ev-8",
            Kind::TrackReposted(reaction("trk_c", "usr_1")),
        )],
    )
    .await
    .unwrap();
    assert_eq!(tracks(&mut client, &["trk_c"]).await, vec![(0, 0, 0)]);

    // A deleted track's counters go, and later reaction events for it are ignored.
    let deleted = apply(
        &mut client,
        vec![event(
            "ev-9",
            Kind::TrackDeleted(TrackDeleted {
                track_id: "trk_a".into(),
            }),
        )],
    )
    .await
    .unwrap();
    assert_eq!(deleted.applied, 1);
    assert_eq!(
        tracks(&mut client, &["trk_a", "trk_b"]).await,
        vec![(0, 0, 0), (0, 0, 0)]
    );
    let late = apply(
        &mut client,
        vec![
            event("ev-10", Kind::TrackLiked(reaction("trk_a", "usr_4"))),
            event("ev-11", Kind::TrackReposted(reaction("trk_a", "usr_4"))),
            event("ev-12", Kind::TrackDownloaded(reaction("trk_a", "usr_4"))),
            event("ev-13", Kind::TrackLiked(reaction("trk_d", "usr_4"))),
        ],
    )
    .await
    .unwrap();
    assert_eq!((late.applied, late.duplicates), (4, 0));
    assert_eq!(
        tracks(&mut client, &["trk_a", "trk_d"]).await,
        vec![(0, 0, 0), (1, 0, 0)]
    );

    // Follows move followers of the followee and followings of the follower.
    apply(
        &mut client,
        vec![
            event("ev-20", Kind::UserFollowed(follow("usr_1", "usr_9"))),
            event("ev-21", Kind::UserFollowed(follow("usr_2", "usr_9"))),
            event("ev-22", Kind::UserFollowed(follow("usr_9", "usr_1"))),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        users(&mut client, &["usr_9", "usr_1", "usr_2", "usr_3"]).await,
        vec![(2, 1), (1, 1), (0, 1), (0, 0)]
    );
    apply(
        &mut client,
        vec![event(
            "ev-23",
            Kind::UserUnfollowed(follow("usr_1", "usr_9")),
        )],
    )
    .await
    .unwrap();
    let redelivered = apply(
        &mut client,
        vec![event(
            "ev-23",
            Kind::UserUnfollowed(follow("usr_1", "usr_9")),
        )],
    )
    .await
    .unwrap();
    assert_eq!(redelivered.duplicates, 1);
    assert_eq!(
        users(&mut client, &["usr_9", "usr_1", "usr_2"]).await,
        vec![(1, 1), (1, 0), (0, 1)]
    );
    running.stop().await.unwrap();
}
