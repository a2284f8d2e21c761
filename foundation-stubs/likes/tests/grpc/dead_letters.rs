//! Poison events through gRPC: an event counts refuses for good, or one whose payload does not
//! decode, moves to the dead-letter table (counted, logged) while the events around it, in the
//! same batch, still reach counts, and later writes keep flowing.

use std::time::Duration;

use foundation_kit::{DatabaseSettings, db::testing};
use prost::Message;
use protos::foundation::{
    counts::v1::{BatchGetTrackCountsRequest, Event},
    likes::v1::ReactionRequest,
};
use service_runtime::Listeners;
use sqlx::Row;
use tokio::net::TcpListener;

use crate::support::{
    counts_client, counts_settings, eventually, free_addr, http_get, likes_client, likes_settings,
    postgres_pair, sample, start_counts_on, start_likes,
};

#[tokio::test]
async fn a_poison_event_is_set_aside_and_the_rest_keeps_flowing() {
    let dir = tempfile::tempdir().unwrap();
    let file = DatabaseSettings {
        url: format!("sqlite://{}", dir.path().join("likes.db").display()),
        max_connections: 2,
    };
    poison_on(file, testing::sqlite()).await;
    if let Some((likes_db, counts_db)) = postgres_pair("a_poison_event_is_set_aside").await {
        poison_on(likes_db, counts_db).await;
    }
}

async fn poison_on(likes_db: DatabaseSettings, counts_db: DatabaseSettings) {
    let counts_addr = free_addr().await;
    let mut settings = likes_settings(likes_db.clone()).await;
    settings.outbox.counts_url = format!("http://{counts_addr}");
    let likes = start_likes(settings).await;
    let mut client = likes_client(&likes).await;
    let like = |user: &str, track: &str| ReactionRequest {
        user_id: user.into(),
        track_id: track.into(),
    };
    assert!(
        client
            .like(like("usr_a", "trk_1"))
            .await
            .unwrap()
            .into_inner()
            .changed
    );
    // The service answered, so its database exists and is migrated; the test reaches into its
    // outbox as a bug or a version skew would.
    sqlx::any::install_default_drivers();
    let inspect = sqlx::AnyPool::connect(&likes_db.url).await.unwrap();
    let first: String = sqlx::query("SELECT id FROM outbox")
        .fetch_one(&inspect)
        .await
        .unwrap()
        .try_get("id")
        .unwrap();
    // Two poison events right behind the first, so that all of them share one batch: one that
    // counts refuses (an event without a kind), one that does not decode.
    let refused = Event {
        id: format!("{first}-refused"),
        occur_time: None,
        kind: None,
    };
    for (id, payload) in [
        (refused.id.clone(), refused.encode_to_vec()),
        (format!("{first}-garbled"), vec![0xff, 0xff, 0xff]),
    ] {
        sqlx::query("INSERT INTO outbox (id, create_time_us, payload) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(0_i64)
            .bind(payload)
            .execute(&inspect)
            .await
            .unwrap();
    }
    assert!(
        client
            .like(like("usr_b", "trk_1"))
            .await
            .unwrap()
            .into_inner()
            .changed
    );
    assert!(
        client
            .like(like("usr_c", "trk_2"))
            .await
            .unwrap()
            .into_inner()
            .changed
    );

    let counts = start_counts_on(
        counts_settings(counts_db),
        Listeners {
            grpc: TcpListener::bind(counts_addr).await.unwrap(),
            metrics: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        },
    );
    let counts_api = counts_client(&counts).await;
    let likes_of = |expected: [u64; 2]| {
        let api = counts_api.clone();
        move || {
            let mut api = api.clone();
            async move {
                let counts = api
                    .batch_get_track_counts(BatchGetTrackCountsRequest {
                        track_ids: vec!["trk_1".into(), "trk_2".into()],
                    })
                    .await
                    .map_err(|status| status.to_string())?
                    .into_inner()
                    .counts;
                let got = [counts[0].likes_count, counts[1].likes_count];
                if got == expected {
                    Ok(())
                } else {
                    Err(format!("likes {got:?}, expected {expected:?}"))
                }
            }
        }
    };
    eventually(
        "the good events around the poison ones",
        Duration::from_secs(20),
        likes_of([2, 1]),
    )
    .await;

    let metrics = likes.metrics_addr;
    eventually(
        "the dead letters counted",
        Duration::from_secs(10),
        || async move {
            let (_, body) = http_get(metrics, "/metrics").await;
            let dead = sample(&body, "outbox_dead_letters_total", &[]);
            let delivered = sample(&body, "outbox_delivered_events_total", &[]);
            if (dead, delivered) == (Some(2.0), Some(3.0)) {
                Ok(())
            } else {
                Err(format!("dead letters {dead:?}, delivered {delivered:?}"))
            }
        },
    )
    .await;
    let dead: Vec<(String, String, String)> =
        sqlx::query("SELECT id, code, reason FROM outbox_dead_letters ORDER BY id")
            .fetch_all(&inspect)
            .await
            .unwrap()
            .iter()
            .map(|row| {
                (
                    row.try_get("id").unwrap(),
                    row.try_get("code").unwrap(),
                    row.try_get("reason").unwrap(),
                )
            })
            .collect();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(
        (dead[0].0.as_str(), dead[0].1.as_str()),
        (format!("{first}-garbled").as_str(), "Undecodable"),
        "{dead:?}"
    );
    assert_eq!(
        (dead[1].0.as_str(), dead[1].1.as_str()),
        (refused.id.as_str(), "InvalidArgument"),
        "{dead:?}"
    );
    assert!(
        dead[1].2.starts_with("events."),
        "counts' refusal is kept: {dead:?}"
    );
    let outbox: i64 = sqlx::query("SELECT COUNT(*) AS n FROM outbox")
        .fetch_one(&inspect)
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
    assert_eq!(outbox, 0);

    // Later writes flow as before.
    assert!(
        client
            .like(like("usr_d", "trk_2"))
            .await
            .unwrap()
            .into_inner()
            .changed
    );
    eventually("a later event", Duration::from_secs(20), likes_of([2, 2])).await;

    likes.stop().await.unwrap();
    counts.stop().await.unwrap();
}
