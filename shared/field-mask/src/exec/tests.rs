use std::future::pending;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::mask::Mask;
use crate::test_view::{Upstream, Upstream::*, track_spec};

/// What the fake upstreams return: the source and the keys they were asked for.
#[derive(Debug, PartialEq, Eq)]
struct Answer(Upstream);

#[derive(Debug, PartialEq, Eq)]
struct Unavailable;

#[tokio::test(start_paused = true)]
async fn runs_a_stage_concurrently_in_declaration_order() {
    let spec = track_spec();
    let plan = spec.plan(&Mask::all());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(1);
    let results = run_stage(&plan, Stage::First, deadline, |source| async move {
        // The first source is the slowest: concurrency lets the others finish first.
        let delay = match source {
            Tracks => 300,
            _ => 100,
        };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        Ok::<_, Unavailable>(Answer(source))
    })
    .await;
    assert_eq!(started.elapsed(), Duration::from_millis(300));
    let results = results.into_inner();
    assert_eq!(
        results,
        [
            (Tracks, Ok(Answer(Tracks))),
            (TrackCounts, Ok(Answer(TrackCounts))),
            (LikeStates, Ok(Answer(LikeStates))),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn calls_past_the_deadline_are_dropped() {
    let spec = track_spec();
    let mask = spec.schema().parse_paths(["stats", "viewer"]).unwrap();
    let plan = spec.plan(&mask);
    let started = Instant::now();
    let deadline = started + Duration::from_millis(50);
    let mut results = run_stage(&plan, Stage::First, deadline, |source| async move {
        match source {
            LikeStates => pending().await,
            _ => Ok::<_, Unavailable>(Answer(source)),
        }
    })
    .await;
    assert_eq!(started.elapsed(), Duration::from_millis(50));
    assert_eq!(results.failed().collect::<Vec<_>>(), [LikeStates]);
    assert_eq!(
        results.take(LikeStates),
        Some(Err(CallError::DeadlineExceeded))
    );
    assert_eq!(results.take(TrackCounts), Some(Ok(Answer(TrackCounts))));
    assert_eq!(results.take(UserCounts), None);
    assert_eq!(results.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_authorization_call_abandons_the_stage() {
    let spec = track_spec();
    let plan = spec.plan(&Mask::all());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(10);
    let mut results = run_stage(&plan, Stage::First, deadline, |source| async move {
        match source {
            Tracks => Err::<Answer, _>(Unavailable),
            _ => pending().await,
        }
    })
    .await;
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(
        results.take(Tracks),
        Some(Err(CallError::Failed(Unavailable)))
    );
    assert_eq!(results.take(TrackCounts), Some(Err(CallError::Abandoned)));
    assert_eq!(results.take(LikeStates), Some(Err(CallError::Abandoned)));
    assert!(results.is_empty());
}

#[tokio::test(start_paused = true)]
async fn other_failures_do_not_stop_the_stage() {
    let spec = track_spec();
    let plan = spec.plan(&Mask::all());
    let results = run_stage(
        &plan,
        Stage::Second,
        Instant::now() + Duration::from_secs(1),
        |source| async move {
            match source {
                UserCounts => Err(Unavailable),
                _ => Ok(Answer(source)),
            }
        },
    )
    .await;
    assert_eq!(
        results.into_inner(),
        [
            (UserCounts, Err(CallError::Failed(Unavailable))),
            (FollowStates, Ok(Answer(FollowStates))),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn run_calls_pipelines_the_second_stage_after_the_authorization_call() {
    let spec = track_spec();
    let plan = spec.plan(&Mask::all());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(1);
    let calls = Mutex::new(Vec::new());
    let call = |source| {
        let calls = &calls;
        async move {
            let delay = match source {
                Tracks => 100,
                _ => 300,
            };
            tokio::time::sleep(Duration::from_millis(delay)).await;
            calls
                .lock()
                .unwrap()
                .push((source, started.elapsed().as_millis()));
            Ok::<_, Unavailable>(Answer(source))
        }
    };
    let authorized = async {
        let tracks = run_calls(&plan, [Tracks], deadline, call).await;
        let second = run_stage(&plan, Stage::Second, deadline, call).await;
        (tracks, second)
    };
    let rest = run_calls(
        &plan,
        plan.stage(Stage::First).filter(|source| *source != Tracks),
        deadline,
        call,
    );
    let ((tracks, second), rest) = tokio::join!(authorized, rest);
    // Stage two ran beside the rest of stage one: 100 + 300 ms, not 300 + 300.
    assert_eq!(started.elapsed(), Duration::from_millis(400));
    assert_eq!(tracks.into_inner(), [(Tracks, Ok(Answer(Tracks)))]);
    assert_eq!(
        rest.into_inner(),
        [
            (TrackCounts, Ok(Answer(TrackCounts))),
            (LikeStates, Ok(Answer(LikeStates))),
        ]
    );
    assert_eq!(second.len(), 2);
    let calls = calls.into_inner().unwrap();
    assert_eq!(calls.len(), 5);
    assert!(calls.contains(&(UserCounts, 400)) && calls.contains(&(LikeStates, 300)));
}

#[tokio::test(start_paused = true)]
async fn join_with_deadline_keeps_the_order_of_its_calls() {
    let deadline = Instant::now() + Duration::from_millis(10);
    let calls: Vec<futures::future::BoxFuture<'_, Result<u32, Unavailable>>> = vec![
        Box::pin(async { Ok(1) }),
        Box::pin(pending()),
        Box::pin(async { Err(Unavailable) }),
    ];
    let results = join_with_deadline(deadline, calls).await;
    assert_eq!(
        results,
        [
            Ok(1),
            Err(CallError::DeadlineExceeded),
            Err(CallError::Failed(Unavailable))
        ]
    );
}

#[test]
fn the_upstream_deadline_is_the_inbound_budget_less_the_margin_capped() {
    let start = Instant::now();
    let margin = Duration::from_millis(20);
    let cap = Duration::from_millis(500);
    let deadline = |inbound| upstream_deadline(start, inbound, margin, cap) - start;
    assert_eq!(deadline(None), cap);
    assert_eq!(deadline(Some(Duration::from_secs(5))), cap);
    assert_eq!(
        deadline(Some(Duration::from_millis(220))),
        Duration::from_millis(200)
    );
    assert_eq!(deadline(Some(Duration::from_millis(10))), Duration::ZERO);
}

#[test]
fn unique_keys_keeps_the_first_occurrence() {
    assert_eq!(unique_keys(["b", "a", "b", "c", "a"]), ["b", "a", "c"]);
    assert!(unique_keys(Vec::<u32>::new()).is_empty());
}

#[tokio::test]
async fn call_batched_makes_one_call_for_all_items() {
    let calls = Mutex::new(Vec::new());
    let owners = ["u1", "u2", "u1", "u3", "u2"];
    let counts = call_batched(owners, |keys: Vec<&str>| {
        calls.lock().unwrap().push(keys.clone());
        async move {
            Ok::<_, Unavailable>(
                keys.into_iter()
                    .filter(|key| *key != "u3")
                    .map(|key| (key, key.len())),
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(calls.into_inner().unwrap(), [vec!["u1", "u2", "u3"]]);
    assert_eq!(counts.len(), 2);
    assert_eq!(counts.get("u1"), Some(&2));
    assert_eq!(counts.get("u3"), None);
}

#[tokio::test]
async fn call_batched_skips_the_call_without_keys() {
    let counts = call_batched(Vec::<u32>::new(), |_keys| async {
        Err::<Vec<(u32, u32)>, _>(Unavailable)
    })
    .await;
    assert_eq!(counts, Ok(HashMap::new()));
}
