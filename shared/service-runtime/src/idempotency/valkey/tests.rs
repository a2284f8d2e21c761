//! The shared store against a real Valkey or Redis server (skipped, saying so, when neither is
//! installed; CI installs one): two stores on one server stand for two gateway replicas.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use test_support::{KeyValueServer, eventually};
use tonic::{Code, Status, metadata::MetadataMap};

use crate::idempotency::{IDEMPOTENCY_KEY, IdempotencyStore};

fn keyed(key: &str) -> MetadataMap {
    let mut metadata = MetadataMap::new();
    metadata.insert(IDEMPOTENCY_KEY, key.parse().unwrap());
    metadata
}

/// A keyed call of `caller` at `store`, running `command` unless the key answers.
async fn call<F>(
    store: &Arc<IdempotencyStore>,
    key: &str,
    caller: &str,
    method: &str,
    request: &str,
    command: F,
) -> Result<String, Status>
where
    F: FnOnce() -> std::future::Ready<Result<String, Status>>,
{
    store
        .run(&keyed(key), caller, method, &request.to_owned(), command)
        .await
}

fn replica(server: &KeyValueServer, max_per_caller: usize) -> Arc<IdempotencyStore> {
    IdempotencyStore::valkey(
        &server.url(),
        Duration::from_secs(60),
        max_per_caller,
        Duration::from_secs(30),
    )
    .unwrap()
}

/// A command that counts its runs and answers `answer`.
fn counted(
    runs: &AtomicUsize,
    answer: Result<String, Status>,
) -> impl FnOnce() -> std::future::Ready<Result<String, Status>> + '_ {
    move || {
        runs.fetch_add(1, Ordering::SeqCst);
        std::future::ready(answer)
    }
}

#[tokio::test]
async fn a_retry_at_another_replica_gets_the_first_result() {
    let Some(server) = KeyValueServer::start("the shared idempotency store").await else {
        return;
    };
    let (a, b) = (replica(&server, 10), replica(&server, 10));
    let runs = AtomicUsize::new(0);
    let request = "like trk_1".to_owned();
    let first: String = call(
        &a,
        "k1",
        "usr_1",
        "/Like",
        &request,
        counted(&runs, Ok("first".into())),
    )
    .await
    .unwrap();
    let again: String = call(
        &b,
        "k1",
        "usr_1",
        "/Like",
        &request,
        counted(&runs, Ok("second".into())),
    )
    .await
    .unwrap();
    assert_eq!((first.as_str(), again.as_str()), ("first", "first"));
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // The same key for another request, another method or another caller.
    let status = call(
        &b,
        "k1",
        "usr_1",
        "/Like",
        "like trk_2",
        counted(&runs, Ok("x".into())),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let other: String = call(
        &b,
        "k1",
        "usr_2",
        "/Like",
        &request,
        counted(&runs, Ok("theirs".into())),
    )
    .await
    .unwrap();
    assert_eq!(other, "theirs", "keys are per caller");

    // A refusal met in the data is replayed; a retryable failure frees the key.
    let refused = Status::failed_precondition("you cannot repost your own track");
    let status = call(
        &a,
        "k2",
        "usr_1",
        "/Repost",
        &request,
        counted(&runs, Err(refused)),
    )
    .await
    .unwrap_err();
    let replayed = call(
        &b,
        "k2",
        "usr_1",
        "/Repost",
        &request,
        counted(&runs, Ok("no".into())),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (replayed.code(), replayed.message()),
        (status.code(), status.message())
    );
    let runs_before = runs.load(Ordering::SeqCst);
    let _ = call(
        &a,
        "k3",
        "usr_1",
        "/Like",
        &request,
        counted(&runs, Err(Status::unavailable("down"))),
    )
    .await;
    let retried: String = call(
        &b,
        "k3",
        "usr_1",
        "/Like",
        &request,
        counted(&runs, Ok("ran".into())),
    )
    .await
    .unwrap();
    assert_eq!(retried, "ran");
    assert_eq!(runs.load(Ordering::SeqCst), runs_before + 2);
}

#[tokio::test]
async fn a_duplicate_at_two_replicas_at_once_runs_once() {
    let Some(server) = KeyValueServer::start("the shared idempotency store").await else {
        return;
    };
    let (a, b) = (replica(&server, 10), replica(&server, 10));
    let (release, hold) = tokio::sync::oneshot::channel::<()>();
    let (started, running) = tokio::sync::oneshot::channel::<()>();
    let request = "follow usr_9".to_owned();
    let first = tokio::spawn({
        let (a, request) = (a.clone(), request.clone());
        async move {
            a.run(&keyed("dup"), "usr_1", "/Follow", &request, || async move {
                started.send(()).unwrap();
                hold.await.unwrap();
                Ok::<String, Status>("followed".into())
            })
            .await
        }
    });
    running.await.unwrap();
    let runs = AtomicUsize::new(0);
    let status = call(
        &b,
        "dup",
        "usr_1",
        "/Follow",
        &request,
        counted(&runs, Ok("twice".into())),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    release.send(()).unwrap();
    assert_eq!(first.await.unwrap().unwrap(), "followed");
    let replayed: String = call(
        &b,
        "dup",
        "usr_1",
        "/Follow",
        &request,
        counted(&runs, Ok("twice".into())),
    )
    .await
    .unwrap();
    assert_eq!(replayed, "followed");
    assert_eq!(runs.load(Ordering::SeqCst), 0, "the duplicate never ran");
}

#[tokio::test]
async fn each_caller_holds_at_most_its_quota_and_a_dropped_call_frees_its_key() {
    let Some(server) = KeyValueServer::start("the shared idempotency store").await else {
        return;
    };
    let (a, b) = (replica(&server, 2), replica(&server, 2));
    let runs = AtomicUsize::new(0);
    for (store, key) in [(&a, "q1"), (&b, "q2")] {
        let _: String = store
            .run(
                &keyed(key),
                "greedy",
                "/Like",
                &key.to_owned(),
                counted(&runs, Ok("ok".into())),
            )
            .await
            .unwrap();
    }
    let status = call(
        &a,
        "q3",
        "greedy",
        "/Like",
        "q3",
        counted(&runs, Ok("ok".into())),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let _: String = call(
        &b,
        "q3",
        "modest",
        "/Like",
        "q3",
        counted(&runs, Ok("ok".into())),
    )
    .await
    .expect("another caller is not refused");

    // A call dropped mid-command frees its key: the retry runs.
    let (started, running) = tokio::sync::oneshot::channel::<()>();
    let dropped = tokio::spawn({
        let a = a.clone();
        async move {
            a.run(
                &keyed("gone"),
                "modest",
                "/Like",
                &"gone".to_owned(),
                || async move {
                    started.send(()).unwrap();
                    std::future::pending::<Result<String, Status>>().await
                },
            )
            .await
        }
    });
    running.await.unwrap();
    dropped.abort();
    let ran = eventually(
        "the dropped call's key freed",
        Duration::from_secs(10),
        || {
            let b = b.clone();
            async move {
                b.run(
                    &keyed("gone"),
                    "modest",
                    "/Like",
                    &"gone".to_owned(),
                    || async { Ok::<String, Status>("ran".into()) },
                )
                .await
                .ok()
            }
        },
    )
    .await;
    assert_eq!(ran, "ran");
}

#[tokio::test]
async fn keyed_commands_are_unavailable_while_the_store_is_down() {
    let Some(mut server) = KeyValueServer::start("the shared idempotency store").await else {
        return;
    };
    let store = replica(&server, 10);
    server.kill();
    let runs = AtomicUsize::new(0);
    let status = call(
        &store,
        "k",
        "usr_1",
        "/Like",
        "r",
        counted(&runs, Ok("ok".into())),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "a keyed command never runs unguarded"
    );
    let unkeyed: String = store
        .run(
            &MetadataMap::new(),
            "usr_1",
            "/Like",
            &"r".to_owned(),
            counted(&runs, Ok("ok".into())),
        )
        .await
        .unwrap();
    assert_eq!(unkeyed, "ok");
}
