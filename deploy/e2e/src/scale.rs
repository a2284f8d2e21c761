//! Chaos on the scaled Compose topology (deploy/compose.scale.yaml): two replicas of each
//! gateway behind Envoy and of each writer on PostgreSQL, events through NATS, idempotency keys
//! in Valkey. Each scenario names the replica or engine it stops by its Compose service.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use protos::consumer::v1::{GetTrackRequest, LikeTrackRequest};
use tonic::Code;

use crate::{Endpoints, chaos::Compose, eventually, mask, scenarios::likes_count, signed, unique};

/// What the scaled chaos measured, for the report.
#[derive(Debug, Default)]
pub struct ScaleFigures {
    pub reads_around_replica_kill: usize,
    pub reads_failed_around_replica_kill: usize,
    pub likes_during_nats_outage: usize,
    pub counts_exact_after_nats_returned: Duration,
    pub writes_after_postgres_restart: Duration,
    pub writes_attempted_around_writer_kill: usize,
    pub writes_acknowledged_around_writer_kill: usize,
}

/// A public track playable in US.
const TRACK: &str = "trk_00012";

fn get() -> GetTrackRequest {
    GetTrackRequest {
        track_id: TRACK.into(),
        read_mask: mask(&["title", "stats"]),
        secret_token: None,
    }
}

/// One gateway replica killed under load: reads through Envoy keep succeeding; only calls in
/// flight on the killed replica may fail, with UNAVAILABLE. The replica comes back afterwards.
pub async fn gateway_replica_killed_under_load(
    e: &Endpoints,
    compose: &Compose,
    figures: &mut ScaleFigures,
) {
    const CALLERS: usize = 8;
    const CALLS: usize = 150;
    let consumer = e.consumer().await;
    // A listener per call, so that no caller's own rate limit is what refuses a read.
    let prefix = unique("e2e_load");
    let done = Arc::new(AtomicUsize::new(0));
    let load = (0..CALLERS).map(|caller| {
        let mut consumer = consumer.clone();
        let (prefix, done) = (prefix.clone(), done.clone());
        tokio::spawn(async move {
            let mut failed = Vec::new();
            for n in 0..CALLS {
                let user = format!("{prefix}_{caller}_{n}");
                if let Err(status) = consumer.get_track(signed(get(), Some(&user), "US")).await {
                    failed.push((n, status.code()));
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            failed
        })
    });
    let load: Vec<_> = load.collect();
    // A quarter of the reads in, one replica dies.
    eventually(
        "a quarter of the reads done",
        Duration::from_secs(60),
        || {
            let done = done.load(Ordering::Relaxed);
            async move { done >= CALLERS * CALLS / 4 }
        },
    )
    .await;
    compose.kill("consumer-gateway-a");
    let done_at_kill = done.load(Ordering::Relaxed);
    let mut failed = Vec::new();
    for task in load {
        failed.extend(task.await.expect("a load task"));
    }
    assert!(
        done_at_kill < CALLERS * CALLS / 2,
        "the load was nearly over ({done_at_kill} reads done) when the replica died"
    );
    for (_, code) in &failed {
        assert_eq!(
            *code,
            Code::Unavailable,
            "a read failed with {code:?}: {failed:?}"
        );
    }
    // Only calls in flight on the killed replica fail: one per caller at most, since Envoy
    // retries a refused connection on the other replica.
    assert!(
        failed.len() <= CALLERS,
        "{} of {} reads failed around the kill",
        failed.len(),
        CALLERS * CALLS
    );
    figures.reads_around_replica_kill = CALLERS * CALLS;
    figures.reads_failed_around_replica_kill = failed.len();
    compose.start("consumer-gateway-a");
}

/// The same keyed command sent at once through Envoy, which spreads it over both replicas,
/// runs once: every answer is the first result or ABORTED, and the like is counted once.
pub async fn keyed_command_at_both_replicas_runs_once(e: &Endpoints) {
    let user = unique("e2e_keyed");
    let (before, _) = likes_count(e, TRACK, &user).await;
    let consumer = e.consumer().await;
    let key = unique("key");
    let calls = (0..8).map(|_| {
        let mut consumer = consumer.clone();
        let mut request = signed(
            LikeTrackRequest {
                track_id: TRACK.into(),
            },
            Some(&user),
            "US",
        );
        request
            .metadata_mut()
            .insert("idempotency-key", key.parse().expect("an ASCII key"));
        async move { consumer.like_track(request).await }
    });
    let mut answered = 0;
    for outcome in futures::future::join_all(calls).await {
        match outcome {
            Ok(response) => {
                assert!(
                    response.into_inner().changed,
                    "a replay says the like changed"
                );
                answered += 1;
            }
            Err(status) => assert_eq!(status.code(), Code::Aborted, "{status:?}"),
        }
    }
    assert!(answered >= 1);
    eventually("the like counted once", Duration::from_secs(30), || async {
        likes_count(e, TRACK, &user).await == (before + 1, true)
    })
    .await;
}

/// NATS stopped during 500 likes: every like is acknowledged, and once NATS is back the counts
/// are exact.
pub async fn nats_outage_during_likes(
    e: &Endpoints,
    compose: &Compose,
    figures: &mut ScaleFigures,
) {
    const LIKES: usize = 500;
    let prefix = unique("e2e_nats");
    let (before, _) = likes_count(e, TRACK, &format!("{prefix}_reader")).await;
    let consumer = e.consumer().await;
    compose.stop("nats");
    let outcomes: Vec<_> = futures::stream::iter(0..LIKES)
        .map(|n| {
            let mut consumer = consumer.clone();
            let user = format!("{prefix}_{n}");
            async move {
                consumer
                    .like_track(signed(
                        LikeTrackRequest {
                            track_id: TRACK.into(),
                        },
                        Some(&user),
                        "US",
                    ))
                    .await
            }
        })
        .buffer_unordered(25)
        .collect()
        .await;
    let mut acknowledged = 0;
    for outcome in outcomes {
        assert!(
            outcome
                .expect("a like while NATS is away")
                .into_inner()
                .changed
        );
        acknowledged += 1;
    }
    let back = Instant::now();
    compose.start("nats");
    eventually(
        "exact counts after NATS came back",
        Duration::from_secs(120),
        || async {
            likes_count(e, TRACK, &format!("{prefix}_reader")).await.0 == before + LIKES as u64
        },
    )
    .await;
    figures.likes_during_nats_outage = acknowledged;
    figures.counts_exact_after_nats_returned = back.elapsed();
}

/// PostgreSQL restarted: the writers recover without a restart of their own; a like succeeds
/// again within the time measured.
pub async fn postgres_restart(e: &Endpoints, compose: &Compose, figures: &mut ScaleFigures) {
    let user = unique("e2e_pg");
    let consumer = e.consumer().await;
    compose.restart("postgres");
    let back = Instant::now();
    eventually(
        "a like after PostgreSQL restarted",
        Duration::from_secs(60),
        || {
            let mut consumer = consumer.clone();
            let user = user.clone();
            async move {
                consumer
                    .like_track(signed(
                        LikeTrackRequest {
                            track_id: TRACK.into(),
                        },
                        Some(&user),
                        "US",
                    ))
                    .await
                    .is_ok()
            }
        },
    )
    .await;
    figures.writes_after_postgres_restart = back.elapsed();
}

/// One writer replica killed in the middle of writes, the other replica serving on: nothing
/// acknowledged is lost and counts is exact (see [`crate::chaos::writes_around_a_kill`]).
pub async fn writer_replica_killed_mid_writes(
    e: &Endpoints,
    compose: &Compose,
    figures: &mut ScaleFigures,
) {
    let (attempted, acknowledged) =
        crate::chaos::writes_around_a_kill(e, compose, "likes-a", false).await;
    figures.writes_attempted_around_writer_kill = attempted;
    figures.writes_acknowledged_around_writer_kill = acknowledged;
}
