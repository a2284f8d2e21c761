//! Two replicas of likes on one PostgreSQL database, each with its relay: every acknowledged
//! like reaches counts, and no event is sent twice while both run, because each relay claims
//! the events it sends.

use std::time::Duration;

use protos::foundation::likes::v1::ReactionRequest;

use crate::support::{
    await_likes_per_track, counts_settings, eventually, http_get, likes_client, likes_settings,
    postgres_pair, sample, start_counts, start_likes,
};

const USERS: usize = 25;
const TRACKS: usize = 8;

#[tokio::test]
async fn two_relays_on_one_postgresql_database_send_each_event_once() {
    let Some((likes_db, counts_db)) = postgres_pair("two_relays_send_each_event_once").await else {
        return;
    };
    let counts = start_counts(counts_settings(counts_db)).await;
    let mut settings = likes_settings(likes_db).await;
    settings.outbox.counts_url = counts.url();
    // Small batches and a fast poll: each relay keeps looking at the rows the other one wrote.
    settings.outbox.batch_size = 3;
    settings.outbox.poll_interval_ms = 5;
    // The first replica migrates the database; the second finds it ready.
    let first = start_likes(settings.clone()).await;
    let second = start_likes(settings).await;
    let clients = [likes_client(&first).await, likes_client(&second).await];

    // Every like goes to one replica or the other, several at once.
    let likes: Vec<(usize, usize)> = (0..USERS)
        .flat_map(|user| (0..TRACKS).map(move |track| (user, track)))
        .collect();
    for chunk in likes.chunks(8) {
        let calls = chunk.iter().enumerate().map(|(n, &(user, track))| {
            let mut client = clients[n % 2].clone();
            async move {
                client
                    .like(ReactionRequest {
                        user_id: format!("usr_{user}"),
                        track_id: format!("trk_{track}"),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .changed
            }
        });
        assert!(
            futures::future::join_all(calls)
                .await
                .into_iter()
                .all(|c| c)
        );
    }
    let events = likes.len() as f64;

    await_likes_per_track(&counts, TRACKS, USERS as u64, Duration::from_secs(30)).await;
    let delivered = |metrics| async move {
        let (_, body) = http_get(metrics, "/metrics").await;
        sample(&body, "outbox_delivered_events_total", &[]).unwrap_or(0.0)
    };
    let (first_metrics, second_metrics) = (first.metrics_addr, second.metrics_addr);
    eventually(
        "every event delivered",
        Duration::from_secs(10),
        || async move {
            let sent = delivered(first_metrics).await + delivered(second_metrics).await;
            if sent >= events {
                Ok(())
            } else {
                Err(format!("{sent} of {events} delivered"))
            }
        },
    )
    .await;
    let by_first = delivered(first_metrics).await;
    let by_second = delivered(second_metrics).await;
    // Both relays stop: no delivery is under way when counts is asked what it saw.
    first.stop().await.unwrap();
    second.stop().await.unwrap();
    let (_, body) = http_get(counts.metrics_addr, "/metrics").await;
    assert_eq!(
        sample(&body, "counts_events_duplicates_total", &[]),
        Some(0.0),
        "an event was sent twice (relays sent {by_first} and {by_second} of {events})"
    );
    assert_eq!(
        sample(&body, "counts_events_applied_total", &[]),
        Some(events)
    );
    assert_eq!(by_first + by_second, events);
    println!("two relays: {by_first} and {by_second} of {events} events, none sent twice");
}
