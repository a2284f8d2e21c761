use std::future::pending;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::mask::Mask;
use crate::plan::Input;
use crate::test_view::{Upstream, Upstream::*, track_spec};

/// What the fake upstreams return: the source and the keys they were asked for.
#[derive(Debug, PartialEq, Eq)]
struct Answer(Upstream);

#[derive(Debug, PartialEq, Eq)]
struct Unavailable;

/// Fake upstreams: each source answers after its delay in ms, or fails when it is `failing`.
fn fake<'a>(
    calls: &'a Mutex<Vec<(Upstream, Vec<String>, u128)>>,
    started: Instant,
    delay: impl Fn(Upstream) -> u64 + Copy + 'a,
    failing: Option<Upstream>,
) -> impl FnMut(
    Upstream,
    Vec<String>,
) -> futures::future::LocalBoxFuture<'a, Result<Answer, Unavailable>>
+ 'a {
    move |source, keys| {
        Box::pin(async move {
            let delay = delay(source);
            if delay == u64::MAX {
                pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_millis(delay)).await;
            calls
                .lock()
                .unwrap()
                .push((source, keys, started.elapsed().as_millis()));
            if failing == Some(source) {
                Err(Unavailable)
            } else {
                Ok(Answer(source))
            }
        })
    }
}

fn ids(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}

/// Authorizes every track and names two owners.
fn grant_all(granted: Vec<(Upstream, Answer)>) -> Result<(usize, Vec<String>), Unavailable> {
    assert_eq!(granted, [(Tracks, Answer(Tracks))]);
    Ok((granted.len(), ids(&["u1", "u2"])))
}

#[tokio::test(start_paused = true)]
async fn stage_two_starts_when_authorization_answers_beside_the_rest_of_stage_one() {
    let spec = track_spec();
    let plan = spec.plan(&Mask::all());
    let started = Instant::now();
    let calls = Mutex::new(Vec::new());
    let delay = |source| match source {
        Tracks => 100,
        _ => 300,
    };
    let (authorized, results) = run_plan(
        &plan,
        &ids(&["t1", "t2"]),
        fake(&calls, started, delay, None),
        grant_all,
    )
    .await
    .unwrap();
    // Stage two ran beside the rest of stage one: 100 + 300 ms, not 300 + 300.
    assert_eq!(started.elapsed(), Duration::from_millis(400));
    assert_eq!(authorized, 1);
    assert_eq!(
        results.into_inner(),
        [
            (TrackCounts, Ok(Answer(TrackCounts))),
            (UserCounts, Ok(Answer(UserCounts))),
            (FollowStates, Ok(Answer(FollowStates))),
            (LikeStates, Ok(Answer(LikeStates))),
        ],
        "every call but the authorization's, in declaration order"
    );
    let calls = calls.into_inner().unwrap();
    assert_eq!(calls.len(), 5);
    assert!(calls.contains(&(UserCounts, ids(&["u1", "u2"]), 400)));
    assert!(calls.contains(&(LikeStates, ids(&["t1", "t2"]), 300)));
}

#[tokio::test(start_paused = true)]
async fn a_failed_authorization_call_drops_the_calls_still_running() {
    let spec = track_spec();
    let plan = spec.plan(&Mask::all());
    let started = Instant::now();
    let calls = Mutex::new(Vec::new());
    let delay = |source| match source {
        Tracks => 10,
        _ => u64::MAX,
    };
    let outcome = run_plan(
        &plan,
        &ids(&["t1"]),
        fake(&calls, started, delay, Some(Tracks)),
        |_: Vec<(Upstream, Answer)>| -> Result<((), Vec<String>), Unavailable> {
            unreachable!("nothing to authorize")
        },
    )
    .await;
    assert_eq!(outcome.unwrap_err(), Unavailable);
    assert_eq!(started.elapsed(), Duration::from_millis(10), "at once");
    assert_eq!(calls.into_inner().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_refusal_fails_the_plan_and_no_visible_owner_makes_no_second_stage() {
    let spec = track_spec();
    let plan = spec.plan(&Mask::all());
    let started = Instant::now();
    let calls = Mutex::new(Vec::new());
    let outcome = run_plan(
        &plan,
        &ids(&["t1"]),
        fake(&calls, started, |_| 5, None),
        |_| Err::<((), Vec<String>), _>(Unavailable),
    )
    .await;
    assert_eq!(outcome.unwrap_err(), Unavailable);

    let calls = Mutex::new(Vec::new());
    let (_, results) = run_plan(
        &plan,
        &ids(&["t1"]),
        fake(&calls, started, |_| 5, None),
        |_| Ok::<_, Unavailable>(((), Vec::new())),
    )
    .await
    .unwrap();
    assert_eq!(results.len(), 2, "stage one's other calls only");
    assert!(
        calls
            .into_inner()
            .unwrap()
            .iter()
            .all(|(source, _, _)| source.input() == Input::TrackId)
    );
}

#[tokio::test(start_paused = true)]
async fn other_failures_are_reported_and_stop_nothing() {
    let spec = track_spec();
    let mask = spec
        .schema()
        .parse_paths(["stats", "creator.followers_count"])
        .unwrap();
    let plan = spec.plan(&mask);
    let started = Instant::now();
    let calls = Mutex::new(Vec::new());
    let (_, results) = run_plan(
        &plan,
        &ids(&["t1"]),
        fake(&calls, started, |_| 5, Some(TrackCounts)),
        grant_all,
    )
    .await
    .unwrap();
    assert_eq!(results.failed().collect::<Vec<_>>(), [TrackCounts]);
    assert_eq!(
        results.into_inner(),
        [
            (TrackCounts, Err(Unavailable)),
            (UserCounts, Ok(Answer(UserCounts)))
        ],
        "only what the mask planned"
    );
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
