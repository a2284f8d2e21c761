//! Events through NATS JetStream: the relay publishes to the stream instead of calling counts,
//! and counts consumes it. Stopping NATS in the middle of the writes loses nothing: every like
//! is acknowledged meanwhile, the events wait in the outbox, and once NATS is back counts
//! converges to exactly what the writes say.

use std::time::{Duration, Instant};

use foundation_kit::db::testing;
use protos::foundation::likes::v1::ReactionRequest;
use test_support::NatsServer;

use crate::support::{
    await_likes_per_track, counts_settings, eventually, http_get, likes_client, likes_settings,
    sample, start_counts, start_likes,
};

const USERS: usize = 50;
const TRACKS: usize = 10;

#[tokio::test]
async fn likes_reach_counts_through_nats_across_an_outage_of_nats() {
    let Some(mut nats) = NatsServer::start("events through NATS").await else {
        return;
    };
    let mut counts_settings = counts_settings(testing::sqlite());
    counts_settings.events.url = nats.url();
    counts_settings.events.timeout_ms = 1000;
    let counts = start_counts(counts_settings).await;
    let mut settings = likes_settings(testing::sqlite()).await;
    // Counts' gRPC port is not where the relay sends: NATS is.
    settings.outbox.nats.url = nats.url();
    settings.outbox.nats.timeout_ms = 1000;
    settings.outbox.batch_size = 20;
    let likes = start_likes(settings).await;
    let mut client = likes_client(&likes).await;

    let like = |user: usize, track: usize| ReactionRequest {
        user_id: format!("usr_{user}"),
        track_id: format!("trk_{track}"),
    };
    let mut written = 0;
    for user in 0..USERS {
        if user == USERS / 2 {
            // NATS goes away halfway: the writes go on.
            nats.kill();
        }
        for track in 0..TRACKS {
            assert!(
                client
                    .like(like(user, track))
                    .await
                    .unwrap()
                    .into_inner()
                    .changed
            );
            written += 1;
        }
    }
    // While NATS is away the relay fails, and the events wait in the outbox.
    let metrics = likes.metrics_addr;
    eventually("a failed publish", Duration::from_secs(20), || async move {
        let (_, body) = http_get(metrics, "/metrics").await;
        sample(&body, "outbox_delivery_failures_total", &[]).unwrap_or(0.0) >= 1.0
    })
    .await;
    let (_, body) = http_get(metrics, "/metrics").await;
    let before_outage = sample(&body, "outbox_delivered_events_total", &[]).unwrap_or(0.0);
    assert!(
        before_outage < written as f64,
        "every event left the outbox while NATS was away"
    );
    let back = Instant::now();
    nats.resume().await;

    await_likes_per_track(&counts, TRACKS, USERS as u64, Duration::from_secs(60)).await;
    let converged = back.elapsed();
    let (_, relay) = http_get(likes.metrics_addr, "/metrics").await;
    let (_, applied) = http_get(counts.metrics_addr, "/metrics").await;
    assert_eq!(
        sample(&relay, "outbox_delivered_events_total", &[]),
        Some(written as f64),
        "every event left the outbox once"
    );
    assert_eq!(
        sample(&applied, "counts_events_applied_total", &[]),
        Some(written as f64)
    );
    println!("NATS: {written} likes, counts exact {converged:?} after NATS came back");
}
