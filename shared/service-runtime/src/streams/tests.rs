use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use futures::StreamExt;
use tonic::Code;

use super::*;

fn bounds_of(idle_ms: u64, max_ms: u64) -> (StreamLimits, Registry) {
    let mut registry = Registry::default();
    let limits = StreamLimits::new(
        &StreamSettings {
            max_duration_ms: max_ms,
            idle_timeout_ms: idle_ms,
        },
        &mut registry,
    );
    (limits, registry)
}

fn counting(done: Arc<AtomicUsize>) -> impl FnOnce() -> future::Ready<Result<(), Status>> {
    move || {
        done.fetch_add(1, Ordering::SeqCst);
        future::ready(Ok(()))
    }
}

#[tokio::test]
async fn a_stream_read_to_its_end_completes_once_after_its_last_item() {
    let (limits, _registry) = bounds_of(1000, 10_000);
    let done = Arc::new(AtomicUsize::new(0));
    let mut bounded = limits.bound("Read", stream::iter((0..5).map(Ok)), counting(done.clone()));
    for expected in 0..5 {
        assert_eq!(bounded.next().await.unwrap().unwrap(), expected);
        assert_eq!(
            done.load(Ordering::SeqCst),
            0,
            "not before the end is asked for"
        );
    }
    assert!(bounded.next().await.is_none());
    assert_eq!(done.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_reader_that_stops_is_cut_off_at_the_idle_bound_and_never_completes() {
    let (limits, registry) = bounds_of(100, 10_000);
    let done = Arc::new(AtomicUsize::new(0));
    let mut bounded = limits.bound(
        "Read",
        stream::iter((0..100).map(Ok)),
        counting(done.clone()),
    );
    assert_eq!(bounded.next().await.unwrap().unwrap(), 0);
    // The reader stops; the source task gives up once the idle bound passes.
    test_support::eventually("the cut-off", Duration::from_secs(10), || {
        let text = crate::metrics::encode(&registry);
        future::ready(text.contains(CUT_OFF))
    })
    .await;
    let mut rest = Vec::new();
    let status = loop {
        match bounded.next().await.unwrap() {
            Ok(item) => rest.push(item),
            Err(status) => break status,
        }
    };
    assert!(
        rest.len() <= 2,
        "only what was handed over is left: {rest:?}"
    );
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert!(bounded.next().await.is_none());
    assert_eq!(done.load(Ordering::SeqCst), 0);
}

const CUT_OFF: &str = r#"grpc_server_streams_cut_off_total{grpc_method="Read",reason="idle"} 1"#;

#[tokio::test]
async fn a_source_that_stalls_or_runs_too_long_is_cut_off() {
    let (limits, _registry) = bounds_of(100, 10_000);
    let stalled = stream::iter([Ok(1)]).chain(stream::pending());
    let ends: Vec<_> = limits
        .bound("Read", stalled, || future::ready(Ok(())))
        .collect()
        .await;
    assert_eq!(ends.len(), 2);
    assert_eq!(ends[1].as_ref().unwrap_err().code(), Code::DeadlineExceeded);

    let (limits, _registry) = bounds_of(100, 250);
    let slow = stream::unfold(0, |n| async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Some((Ok(n), n + 1))
    });
    let ends: Vec<_> = limits
        .bound("Read", slow, || future::ready(Ok(())))
        .collect()
        .await;
    let status = ends.last().unwrap().as_ref().unwrap_err();
    assert!(status.message().contains("250 ms"), "{status:?}");
    assert!(ends.len() <= 6, "{}", ends.len());
}

#[tokio::test]
async fn a_failing_completion_ends_the_stream_with_its_error() {
    let (limits, _registry) = bounds_of(1000, 10_000);
    let ends: Vec<Result<i32, Status>> = limits
        .bound("Read", stream::iter([Ok(1)]), || {
            future::ready(Err(Status::unavailable("not recorded")))
        })
        .collect()
        .await;
    assert_eq!(ends.len(), 2);
    assert_eq!(ends[1].as_ref().unwrap_err().code(), Code::Unavailable);
}
