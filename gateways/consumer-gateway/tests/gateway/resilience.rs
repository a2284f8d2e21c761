//! Failing upstreams: counts degrades the response, tracks fails it closed within the deadline.

use std::time::{Duration, Instant};

use protos::consumer::v1::{BatchGetTracksRequest, GetTrackRequest};
use service_runtime::faults::{FaultCode, FaultSettings, MethodFault};
use tonic::Code;

use crate::fixture::{Topology, as_user, mask};

fn get(track: &str) -> GetTrackRequest {
    GetTrackRequest {
        track_id: track.into(),
        read_mask: None,
        secret_token: None,
    }
}

#[tokio::test]
async fn with_counts_down_reads_stay_ok_and_name_the_degraded_paths() {
    let mut t = Topology::start().await;
    t.counts.take().unwrap().stop().await.unwrap();
    let response = t
        .client
        .clone()
        .get_track(as_user(get("trk_00006"), Some("usr_0059"), "US"))
        .await
        .unwrap();
    let degraded = response
        .metadata()
        .get(consumer_gateway::DEGRADED_FIELDS)
        .expect("degraded fields are named")
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        degraded,
        "creator.followers_count,stats.likes_count,stats.reposts_count"
    );
    let track = response.into_inner();
    assert!(!track.title.is_empty());
    assert_eq!(track.stats.unwrap().likes_count, None);
    assert_eq!(track.creator.as_ref().unwrap().followers_count, None);
    assert!(
        track.creator.unwrap().followed_by_viewer.is_some(),
        "follows still answers"
    );

    // A mask that needs nothing from counts is not degraded at all.
    let title_only = t
        .client
        .clone()
        .get_track(as_user(
            GetTrackRequest {
                read_mask: mask(&["title", "viewer"]),
                ..get("trk_00006")
            },
            Some("usr_0059"),
            "US",
        ))
        .await
        .unwrap();
    assert!(
        title_only
            .metadata()
            .get(consumer_gateway::DEGRADED_FIELDS)
            .is_none()
    );

    let batch = t
        .client
        .clone()
        .batch_get_tracks(as_user(
            BatchGetTracksRequest {
                track_ids: vec!["trk_00001".into(), "trk_00002".into()],
                read_mask: mask(&["stats.likes_count"]),
            },
            None,
            "US",
        ))
        .await
        .unwrap();
    assert_eq!(
        batch
            .metadata()
            .get(consumer_gateway::DEGRADED_FIELDS)
            .unwrap(),
        "stats.likes_count"
    );
    assert_eq!(batch.into_inner().tracks.len(), 2);
}

#[tokio::test]
async fn with_tracks_down_reads_fail_unavailable_within_the_deadline() {
    let mut t = Topology::start().await;
    t.tracks.take().unwrap().stop().await.unwrap();
    let mut request = as_user(get("trk_00006"), Some("usr_0059"), "US");
    request.set_timeout(Duration::from_millis(800));
    let started = Instant::now();
    let status = t.client.clone().get_track(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_slow_tracks_service_is_a_deadline_exceeded_bounded_by_the_caller() {
    let t = Topology::start_tuned(
        // Debug builds are slow: keep enough of the caller's deadline to answer in time.
        |gateway| gateway.calls.margin_ms = 150,
        |tracks| {
            tracks.faults.insert(
                "BatchGetTracks".into(),
                MethodFault {
                    latency_ms: 3000,
                    error_rate: 0.0,
                    code: FaultCode::Unavailable,
                },
            );
        },
    )
    .await;
    let mut request = as_user(get("trk_00006"), Some("usr_0059"), "US");
    request.set_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let status = t.client.clone().get_track(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(status.message(), "tracks did not answer in time");
    assert!(
        started.elapsed() < Duration::from_millis(2000),
        "{:?}",
        started.elapsed()
    );
}

fn fault(latency_ms: u64, error_rate: f64) -> MethodFault {
    MethodFault {
        latency_ms,
        error_rate,
        code: FaultCode::Unavailable,
    }
}

#[tokio::test]
async fn one_callers_tiny_deadlines_leave_the_circuit_closed_for_everyone_else() {
    // Tracks takes 100 ms: a 15 ms deadline leaves nothing after the margin (no call is made),
    // a 70 ms one starts the call and abandons it.
    let t = Topology::start_tuned(
        |_| {},
        |tracks| {
            tracks
                .faults
                .insert("BatchGetTracks".into(), fault(100, 0.0));
        },
    )
    .await;
    let mut tiny = Vec::new();
    for n in 0..40 {
        let mut client = t.client.clone();
        let mut request = as_user(get("trk_00006"), None, "US");
        request.set_timeout(Duration::from_millis(if n % 2 == 0 { 15 } else { 70 }));
        tiny.push(tokio::spawn(async move { client.get_track(request).await }));
    }
    for call in tiny {
        // The gateway's answer, or the caller's own timer when it fires first.
        let status = call.await.unwrap().unwrap_err();
        assert!(
            matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
            "{status:?}"
        );
    }
    for user in ["usr_0001", "usr_0002", "usr_0003", "usr_0004", "usr_0005"] {
        t.client
            .clone()
            .get_track(as_user(get("trk_00006"), Some(user), "US"))
            .await
            .unwrap_or_else(|status| panic!("{user} was refused: {status:?}"));
    }
    assert_eq!(t.short_circuited("tracks").await, 0);
}

#[tokio::test]
async fn a_tracks_failure_leaves_the_circuits_of_the_calls_it_dropped_closed() {
    // Tracks fails after 20 ms while likes and counts are still answering: each request drops
    // its likes and counts calls. Tracks' own breaker is off, so every request gets that far.
    let mut slow = FaultSettings::new();
    slow.insert("BatchGetReactions".into(), fault(300, 0.0));
    let mut slow_counts = FaultSettings::new();
    slow_counts.insert("BatchGetTrackCounts".into(), fault(300, 0.0));
    let t = Topology::start_faulty(
        |gateway| gateway.upstreams.tracks.breaker_failures = 0,
        |tracks| {
            tracks
                .faults
                .insert("BatchGetTracks".into(), fault(20, 1.0));
        },
        slow,
        slow_counts,
    )
    .await;
    for _ in 0..12 {
        let status = t
            .client
            .clone()
            .get_track(as_user(get("trk_00006"), Some("usr_0059"), "US"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    assert_eq!(t.short_circuited("likes").await, 0);
    assert_eq!(t.short_circuited("counts").await, 0);
}
