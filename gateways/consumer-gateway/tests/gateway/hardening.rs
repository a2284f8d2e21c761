//! Overload and upstream failure: shedding instead of queueing, per-subject rate limits, request
//! size limits, and circuit breaking of a dead upstream.

use std::time::{Duration, Instant};

use protos::consumer::v1::{BatchGetTracksRequest, GetTrackRequest};
use service_runtime::{
    faults::{FaultCode, MethodFault},
    metrics::sample,
};
use tonic::Code;

use crate::fixture::{Topology, as_user, mask};

fn get(track: &str) -> GetTrackRequest {
    GetTrackRequest {
        track_id: track.into(),
        read_mask: mask(&["title"]),
        secret_token: None,
    }
}

/// Tracks answering BatchGetTracks after 400 ms, so that the gateway's calls stay in flight.
fn slow_tracks(tracks: &mut tracks::Settings) {
    tracks.faults.insert(
        "BatchGetTracks".into(),
        MethodFault {
            latency_ms: 400,
            error_rate: 0.0,
            code: FaultCode::Unavailable,
        },
    );
}

#[tokio::test]
async fn calls_beyond_the_concurrency_limit_are_shed_at_once() {
    let t = Topology::start_tuned(
        |gateway| gateway.server.max_concurrent_requests = 2,
        slow_tracks,
    )
    .await;
    let calls = (0..8).map(|_| {
        let mut client = t.client.clone();
        async move {
            let started = Instant::now();
            let outcome = client
                .get_track(as_user(get("trk_00001"), None, "US"))
                .await;
            (
                outcome.map(|_| ()).map_err(|status| status.code()),
                started.elapsed(),
            )
        }
    });
    let outcomes = futures::future::join_all(calls).await;
    let served = outcomes
        .iter()
        .filter(|(outcome, _)| outcome.is_ok())
        .count();
    let shed: Vec<_> = outcomes
        .iter()
        .filter(|(outcome, _)| *outcome == Err(Code::ResourceExhausted))
        .collect();
    assert_eq!(served, 2, "{outcomes:?}");
    assert_eq!(shed.len(), 6, "{outcomes:?}");
    assert!(
        shed.iter()
            .all(|(_, took)| *took < Duration::from_millis(300)),
        "shed calls are answered at once, not queued: {outcomes:?}"
    );
    // Health checks are never shed.
    t.gateway
        .wait_serving(std::time::Instant::now() + Duration::from_secs(5))
        .await
        .unwrap();
}

#[tokio::test]
async fn each_verified_subject_has_its_own_rate_limit() {
    let t = Topology::start_with(|gateway| {
        gateway.rate_limit.per_user_per_second = 1;
        gateway.rate_limit.per_user_burst = 3;
    })
    .await;
    let mut client = t.client.clone();
    for _ in 0..3 {
        client
            .get_track(as_user(get("trk_00001"), Some("usr_0010"), "US"))
            .await
            .unwrap();
    }
    let limited = client
        .get_track(as_user(get("trk_00001"), Some("usr_0010"), "US"))
        .await
        .unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert!(
        limited.message().contains("rate limit"),
        "{}",
        limited.message()
    );
    // The same BFF connection serves another user at once.
    client
        .get_track(as_user(get("trk_00001"), Some("usr_0011"), "US"))
        .await
        .unwrap();
}

#[tokio::test]
async fn oversized_requests_are_refused() {
    let t = Topology::start().await;
    let huge = BatchGetTracksRequest {
        track_ids: vec!["x".repeat(64); 1200],
        read_mask: None,
    };
    let status = t
        .client
        .clone()
        .batch_get_tracks(as_user(huge, None, "US"))
        .await
        .unwrap_err();
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
}

#[tokio::test]
async fn a_dead_upstream_opens_its_circuit_and_costs_nothing_per_request() {
    // A long cooldown, so that no half-open probe happens during the test.
    let mut t =
        Topology::start_with(|gateway| gateway.upstreams.counts.breaker_cooldown_ms = 60_000).await;
    t.counts.take().unwrap().stop().await.unwrap();
    let counts_calls = |text: &str| {
        sample(
            text,
            "grpc_client_handled_total",
            &[("grpc_service", "foundation.counts.v1.CountsService")],
        )
    };
    let mut client = t.client.clone();
    for _ in 0..5 {
        let response = client
            .get_track(as_user(
                GetTrackRequest {
                    read_mask: None,
                    ..get("trk_00001")
                },
                Some("usr_0012"),
                "US",
            ))
            .await
            .expect("reads stay OK, degraded");
        assert!(
            response
                .metadata()
                .get(consumer_gateway::DEGRADED_FIELDS)
                .is_some()
        );
    }
    let before = t.gateway.scrape().await.unwrap();
    for _ in 0..10 {
        let response = client
            .get_track(as_user(
                GetTrackRequest {
                    read_mask: None,
                    ..get("trk_00001")
                },
                Some("usr_0012"),
                "US",
            ))
            .await
            .expect("reads stay OK, degraded");
        assert!(
            response
                .metadata()
                .get(consumer_gateway::DEGRADED_FIELDS)
                .is_some()
        );
    }
    let after = t.gateway.scrape().await.unwrap();
    assert_eq!(
        counts_calls(&after),
        counts_calls(&before),
        "an open circuit makes no call to counts"
    );
    let refused = sample(
        &after,
        "grpc_client_short_circuited_total",
        &[("upstream", "counts")],
    );
    assert!(refused >= 20.0, "{refused}");
}

#[tokio::test]
async fn one_subject_cannot_take_every_place_in_flight() {
    let t = Topology::start_tuned(
        |gateway| {
            gateway.rate_limit.max_in_flight_per_user = 2;
            gateway.rate_limit.max_in_flight_anonymous_per_territory = 2;
        },
        slow_tracks,
    )
    .await;
    // Six calls each of one user and of anonymous callers in the US, two each of anonymous
    // callers in DE and of another user, all at once.
    let callers = [
        (Some("usr_0010"), "US", 6),
        (None, "US", 6),
        (None, "DE", 2),
        (Some("usr_0011"), "US", 2),
    ];
    let client = &t.client;
    let calls = callers.iter().flat_map(|&(user, territory, n)| {
        (0..n).map(move |_| {
            let mut client = client.clone();
            async move {
                let outcome = client
                    .get_track(as_user(get("trk_00001"), user, territory))
                    .await;
                ((user, territory), outcome.map(|_| ()))
            }
        })
    });
    let outcomes = futures::future::join_all(calls).await;
    for &(user, territory, n) in &callers {
        let mine: Vec<_> = outcomes
            .iter()
            .filter(|(who, _)| *who == (user, territory))
            .map(|(_, outcome)| outcome)
            .collect();
        let served = mine.iter().filter(|outcome| outcome.is_ok()).count();
        let refused = mine
            .iter()
            .filter(|outcome| {
                outcome.as_ref().is_err_and(|status| {
                    status.code() == Code::ResourceExhausted
                        && status.message().contains("calls in flight")
                })
            })
            .count();
        assert_eq!(
            (served, refused),
            (2, n - 2),
            "{user:?} in {territory}: {mine:?}"
        );
    }
}
