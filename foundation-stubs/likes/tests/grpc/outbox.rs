//! The transactional outbox through gRPC: while counts is down, likes keeps accepting writes;
//! once counts comes up, its counters converge to exactly what the writes say, and an event
//! delivered twice is counted once.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use foundation_kit::{DatabaseSettings, db::testing};
use protos::foundation::{
    counts::v1::{
        ApplyEventsRequest, BatchGetTrackCountsRequest, Event, TrackCounts, TrackReaction, event,
    },
    likes::v1::ReactionRequest,
};
use service_runtime::Listeners;
use tokio::net::TcpListener;

use crate::support::{
    counts_client, counts_settings, eventually, free_addr, http_get, likes_client, likes_settings,
    postgres_pair, sample, start_counts_on, start_likes,
};

const USERS: usize = 5;
const TRACKS: usize = 7;
const WRITES: usize = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Like,
    Unlike,
    Repost,
    Unrepost,
}

#[tokio::test]
async fn counts_converge_exactly_after_an_outage() {
    counts_converge_on(testing::sqlite(), testing::sqlite()).await;
    if let Some((likes_db, counts_db)) = postgres_pair("counts_converge_exactly").await {
        counts_converge_on(likes_db, counts_db).await;
    }
}

async fn counts_converge_on(likes_db: DatabaseSettings, counts_db: DatabaseSettings) {
    let counts_addr = free_addr().await;
    let mut settings = likes_settings(likes_db).await;
    settings.outbox.counts_url = format!("http://{counts_addr}");
    settings.outbox.batch_size = 7; // several deliveries, one of them partial
    let likes = start_likes(settings).await;
    let mut client = likes_client(&likes).await;

    // N writes across users and tracks, checked against a model of the reactions.
    let mut model: BTreeSet<(usize, usize, bool)> = BTreeSet::new(); // (user, track, is_like)
    let mut events = 0_u64;
    let mut rng = 0x0C0F_FEE5_u64;
    for _ in 0..WRITES {
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let pick = (rng >> 33) as usize;
        let (user, track) = (pick % USERS, (pick / USERS) % TRACKS);
        // Mostly additions, so that the counters end up well above zero.
        let op = [
            Op::Like,
            Op::Like,
            Op::Repost,
            Op::Unlike,
            Op::Like,
            Op::Unrepost,
        ][(pick / (USERS * TRACKS)) % 6];
        let request = ReactionRequest {
            user_id: format!("usr_{user}"),
            track_id: format!("trk_{track}"),
        };
        let changed = match op {
            Op::Like => client.like(request).await,
            Op::Unlike => client.unlike(request).await,
            Op::Repost => client.repost(request).await,
            Op::Unrepost => client.unrepost(request).await,
        }
        .unwrap()
        .into_inner()
        .changed;
        let key = (user, track, matches!(op, Op::Like | Op::Unlike));
        let expected = match op {
            Op::Like | Op::Repost => model.insert(key),
            Op::Unlike | Op::Unrepost => model.remove(&key),
        };
        assert_eq!(changed, expected, "{op:?} of {key:?}");
        events += u64::from(changed);
    }
    assert!(
        events >= 30,
        "the scenario must produce events, got {events}"
    );

    let mut expected: BTreeMap<String, (u64, u64)> = (0..TRACKS)
        .map(|track| (format!("trk_{track}"), (0, 0)))
        .collect();
    for (_, track, is_like) in &model {
        let entry = expected.get_mut(&format!("trk_{track}")).unwrap();
        if *is_like {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }

    // The relay is failing while counts is down, and nothing has been delivered.
    let metrics = likes.metrics_addr;
    eventually(
        "a failed delivery",
        Duration::from_secs(10),
        || async move {
            let (_, body) = http_get(metrics, "/metrics").await;
            match sample(&body, "outbox_delivery_failures_total", &[]) {
                Some(failures) if failures >= 1.0 => Ok(()),
                other => Err(format!("failures: {other:?}")),
            }
        },
    )
    .await;
    let (_, body) = http_get(metrics, "/metrics").await;
    assert_eq!(
        sample(&body, "outbox_delivered_events_total", &[]),
        Some(0.0)
    );

    // Counts comes up where the relay expects it.
    let counts = start_counts_on(
        counts_settings(counts_db),
        Listeners {
            grpc: TcpListener::bind(counts_addr).await.unwrap(),
            metrics: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        },
    );
    let mut counts_api = counts_client(&counts).await;
    let track_ids: Vec<String> = expected.keys().cloned().collect();
    let read =
        |mut api: protos::foundation::counts::v1::counts_service_client::CountsServiceClient<_>,
         ids: Vec<String>| async move {
            api.batch_get_track_counts(BatchGetTrackCountsRequest { track_ids: ids })
                .await
                .map(|response| response.into_inner().counts)
                .map_err(|status| status.to_string())
        };
    let as_map = |counts: Vec<TrackCounts>| -> BTreeMap<String, (u64, u64)> {
        counts
            .into_iter()
            .map(|c| (c.track_id, (c.likes_count, c.reposts_count)))
            .collect()
    };
    eventually("exact counts", Duration::from_secs(20), || {
        let (api, ids, expected) = (counts_api.clone(), track_ids.clone(), &expected);
        async move {
            let got = as_map(read(api, ids).await?);
            if &got == expected {
                Ok(())
            } else {
                Err(format!("counts {got:?}, expected {expected:?}"))
            }
        }
    })
    .await;
    // Every acknowledged change left the outbox exactly once.
    eventually(
        "every event delivered",
        Duration::from_secs(10),
        || async move {
            let (_, body) = http_get(metrics, "/metrics").await;
            match sample(&body, "outbox_delivered_events_total", &[]) {
                Some(delivered) if delivered == events as f64 => Ok(()),
                other => Err(format!("delivered {other:?} of {events}")),
            }
        },
    )
    .await;

    // A relay that sends an event again (it delivered, then crashed before deleting it) does
    // not count it twice.
    let again = Event {
        id: "0199a0b0-0000-7000-8000-000000000001".into(),
        occur_time: None,
        kind: Some(event::Kind::TrackLiked(TrackReaction {
            track_id: "trk_0".into(),
            user_id: "usr_late".into(),
        })),
    };
    let first = counts_api
        .apply_events(ApplyEventsRequest {
            events: vec![again.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((first.applied, first.duplicates), (1, 0));
    let after_first = as_map(read(counts_api.clone(), track_ids.clone()).await.unwrap());
    assert_eq!(after_first["trk_0"].0, expected["trk_0"].0 + 1);
    let second = counts_api
        .apply_events(ApplyEventsRequest {
            events: vec![again],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((second.applied, second.duplicates), (0, 1));
    let after_second = as_map(read(counts_api.clone(), track_ids.clone()).await.unwrap());
    assert_eq!(after_second, after_first);

    likes.stop().await.unwrap();
    counts.stop().await.unwrap();
}
