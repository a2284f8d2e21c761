use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;
use tonic::{Code, Status};

use super::*;

/// A fake foundation method: records each call's keys, holds every call until the test lets
/// it go (one permit per call), answers `key * 10` for keys below 100, nothing for the others,
/// and fails every call that carries key 13.
#[derive(Clone)]
struct Fake {
    calls: Arc<Mutex<Vec<Vec<u32>>>>,
    gate: Arc<Semaphore>,
}

impl Fake {
    fn new() -> Self {
        Self {
            calls: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
        }
    }

    fn loader(&self) -> Loader<u32, u32> {
        let fake = self.clone();
        Arc::new(move |keys: Arc<[u32]>, deadline: Deadline| {
            let fake = fake.clone();
            Box::pin(async move {
                fake.calls.lock().unwrap().push(keys.to_vec());
                let budget = deadline.budget(Duration::from_secs(5));
                match tokio::time::timeout(budget, fake.gate.acquire()).await {
                    Ok(permit) => permit.unwrap().forget(),
                    Err(_) => return Err(UpstreamError::new("fake", UpstreamFailure::Timeout)),
                }
                if keys.contains(&13) {
                    return Err(UpstreamError::new(
                        "fake",
                        UpstreamFailure::Status(Status::unavailable("key 13 fails its call")),
                    ));
                }
                Ok(keys
                    .iter()
                    .copied()
                    .filter(|key| *key < 100)
                    .map(|key| (key, key * 10))
                    .collect())
            })
        })
    }

    fn calls(&self) -> Vec<Vec<u32>> {
        self.calls.lock().unwrap().clone()
    }

    /// Waits until `n` calls have started.
    async fn started(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.calls.lock().unwrap().len() < n {
            assert!(Instant::now() < deadline, "{n} calls did not start");
            tokio::task::yield_now().await;
        }
    }
}

/// Settings with a fixed limit of calls in flight.
fn settings(max_in_flight: usize, max_batch: usize) -> FanoutSettings {
    FanoutSettings {
        max_in_flight,
        max_in_flight_ceiling: max_in_flight,
        max_batch,
        ..FanoutSettings::default()
    }
}

fn read(settings: &FanoutSettings, fake: &Fake, cached: bool) -> (Read<u32, u32>, Registry) {
    read_with(settings, fake.loader(), cached)
}

/// The read of `fake.BatchGet` through `loader`, and the registry of its metrics.
fn read_with(
    settings: &FanoutSettings,
    loader: Loader<u32, u32>,
    cached: bool,
) -> (Read<u32, u32>, Registry) {
    let mut registry = Registry::default();
    let fanout = Fanout::register(settings, &mut registry).unwrap();
    let read = fanout.read(
        "fake.BatchGet",
        "fake",
        Duration::from_secs(5),
        cached,
        loader,
    );
    (read, registry)
}

fn sorted(mut found: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    found.sort_unstable();
    found
}

/// Waits until `read` has `n` keys queued for the next call.
async fn queued(read: &Read<u32, u32>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while read.inner.lock().queued() < n {
        assert!(Instant::now() < deadline, "{n} keys did not queue");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_read_alone_goes_out_at_once_and_gets_only_what_exists() {
    let fake = Fake::new();
    let (read, _registry) = read(&settings(1, 100), &fake, false);
    fake.gate.add_permits(1);
    let found = read.get(vec![1, 2, 200], Deadline::none()).await.unwrap();
    assert_eq!(sorted(found), [(1, 10), (2, 20)]);
    assert_eq!(fake.calls(), [vec![1, 2, 200]]);
}

#[tokio::test]
async fn reads_that_arrive_while_a_call_is_in_flight_go_out_together_in_the_next_call() {
    let fake = Fake::new();
    let (read, _registry) = read(&settings(1, 100), &fake, false);
    let first = tokio::spawn({
        let read = read.clone();
        async move { read.get(vec![1], Deadline::none()).await }
    });
    fake.started(1).await;
    // Three requests arrive while the first call is in flight: one call carries them all,
    // with the key two of them share once.
    let others: Vec<_> = [vec![2, 3], vec![3, 4], vec![5]]
        .into_iter()
        .map(|keys| {
            let read = read.clone();
            tokio::spawn(async move { read.get(keys, Deadline::none()).await })
        })
        .collect();
    queued(&read, 4).await;
    fake.gate.add_permits(2);
    assert_eq!(first.await.unwrap().unwrap(), [(1, 10)]);
    let mut answers = Vec::new();
    for other in others {
        answers.push(sorted(other.await.unwrap().unwrap()));
    }
    assert_eq!(
        answers,
        [
            vec![(2, 20), (3, 30)],
            vec![(3, 30), (4, 40)],
            vec![(5, 50)]
        ]
    );
    assert_eq!(fake.calls(), [vec![1], vec![2, 3, 4, 5]]);
}

#[tokio::test]
async fn a_key_in_flight_is_not_fetched_twice() {
    let fake = Fake::new();
    let (read, registry) = read(&settings(2, 100), &fake, false);
    let first = tokio::spawn({
        let read = read.clone();
        async move { read.get(vec![7, 8], Deadline::none()).await }
    });
    fake.started(1).await;
    // Key 7 is in flight: the second reader waits for it and fetches only key 9.
    let second = tokio::spawn({
        let read = read.clone();
        async move { read.get(vec![7, 9], Deadline::none()).await }
    });
    fake.started(2).await;
    fake.gate.add_permits(2);
    assert_eq!(sorted(first.await.unwrap().unwrap()), [(7, 70), (8, 80)]);
    assert_eq!(sorted(second.await.unwrap().unwrap()), [(7, 70), (9, 90)]);
    assert_eq!(fake.calls(), [vec![7, 8], vec![9]]);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains(r#"gateway_fanout_keys_total{method="fake.BatchGet",source="shared"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"gateway_fanout_keys_total{method="fake.BatchGet",source="fetched"} 3"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_failed_call_fails_exactly_the_readers_of_its_keys() {
    let fake = Fake::new();
    let (read, _registry) = read(&settings(2, 100), &fake, false);
    let failing = tokio::spawn({
        let read = read.clone();
        async move { read.get(vec![13, 1], Deadline::none()).await }
    });
    fake.started(1).await;
    // One reader shares key 1 of the failing call; the other's call stands alone.
    let sharing = tokio::spawn({
        let read = read.clone();
        async move { read.get(vec![1], Deadline::none()).await }
    });
    let apart = tokio::spawn({
        let read = read.clone();
        async move { read.get(vec![2], Deadline::none()).await }
    });
    fake.started(2).await;
    fake.gate.add_permits(2);
    let error = failing.await.unwrap().unwrap_err();
    assert_eq!(error.code(), Some(Code::Unavailable));
    assert_eq!(
        sharing.await.unwrap().unwrap_err().code(),
        Some(Code::Unavailable)
    );
    assert_eq!(apart.await.unwrap().unwrap(), [(2, 20)]);
    assert_eq!(fake.calls(), [vec![13, 1], vec![2]]);
}

#[tokio::test(start_paused = true)]
async fn each_reader_keeps_its_own_deadline() {
    let fake = Fake::new();
    let (read, _registry) = read(&settings(1, 100), &fake, false);
    let patient = tokio::spawn({
        let read = read.clone();
        async move { read.get(vec![1], Deadline::none()).await }
    });
    fake.started(1).await;
    // A reader with a short deadline gives up while the call it joined is held; the reader
    // that started it still gets its answer.
    let hurried = read
        .get(
            vec![1],
            Deadline::at(Instant::now() + Duration::from_millis(20)),
        )
        .await;
    assert!(matches!(
        hurried,
        Err(UpstreamError {
            failure: UpstreamFailure::Timeout,
            ..
        })
    ));
    fake.gate.add_permits(1);
    assert_eq!(patient.await.unwrap().unwrap(), [(1, 10)]);
    assert_eq!(fake.calls(), [vec![1]]);
}

#[tokio::test(start_paused = true)]
async fn a_reader_whose_joined_call_runs_out_of_time_first_sends_its_key_again() {
    let fake = Fake::new();
    let (read, _registry) = read(&settings(2, 100), &fake, false);
    let soon = tokio::spawn({
        let read = read.clone();
        async move {
            read.get(
                vec![1],
                Deadline::at(Instant::now() + Duration::from_millis(50)),
            )
            .await
        }
    });
    fake.started(1).await;
    // The second reader joins the first call, which ends at the first reader's deadline; it
    // then sends key 1 again in a call of its own deadline, and gets the answer.
    let later = tokio::spawn({
        let read = read.clone();
        async move { read.get(vec![1], Deadline::none()).await }
    });
    assert!(matches!(
        soon.await.unwrap(),
        Err(UpstreamError {
            failure: UpstreamFailure::Timeout,
            ..
        })
    ));
    fake.started(2).await;
    fake.gate.add_permits(1);
    assert_eq!(later.await.unwrap().unwrap(), [(1, 10)]);
    assert_eq!(fake.calls(), [vec![1], vec![1]]);
}

#[tokio::test]
async fn the_keys_of_a_reader_that_went_away_are_not_sent() {
    let fake = Fake::new();
    let (read, _registry) = read(&settings(1, 100), &fake, false);
    let first = tokio::spawn({
        let read = read.clone();
        async move { read.get(vec![1], Deadline::none()).await }
    });
    fake.started(1).await;
    let gone = tokio::spawn({
        let read = read.clone();
        async move { read.get(vec![2], Deadline::none()).await }
    });
    let staying = tokio::spawn({
        let read = read.clone();
        async move { read.get(vec![3], Deadline::none()).await }
    });
    queued(&read, 2).await;
    gone.abort();
    assert!(gone.await.unwrap_err().is_cancelled());
    fake.gate.add_permits(2);
    first.await.unwrap().unwrap();
    assert_eq!(staying.await.unwrap().unwrap(), [(3, 30)]);
    assert_eq!(fake.calls(), [vec![1], vec![3]]);
}

#[tokio::test]
async fn a_queue_longer_than_the_batch_limit_goes_out_in_several_calls() {
    let fake = Fake::new();
    let (read, _registry) = read(&settings(1, 2), &fake, false);
    fake.gate.add_permits(3);
    let found = read
        .get(vec![1, 2, 3, 4, 5], Deadline::none())
        .await
        .unwrap();
    assert_eq!(sorted(found).len(), 5);
    assert_eq!(fake.calls(), [vec![1, 2], vec![3, 4], vec![5]]);
}

#[tokio::test]
async fn with_coalescing_off_every_read_is_its_own_call() {
    let fake = Fake::new();
    let settings = FanoutSettings {
        coalesce: false,
        ..settings(1, 100)
    };
    let (read, _registry) = read(&settings, &fake, true);
    let reads: Vec<_> = (0..3)
        .map(|_| {
            let read = read.clone();
            tokio::spawn(async move { read.get(vec![1, 2], Deadline::none()).await })
        })
        .collect();
    fake.started(3).await;
    fake.gate.add_permits(3);
    for read in reads {
        assert_eq!(sorted(read.await.unwrap().unwrap()), [(1, 10), (2, 20)]);
    }
    // Nor is anything cached.
    fake.gate.add_permits(1);
    read.get(vec![1], Deadline::none()).await.unwrap();
    assert_eq!(fake.calls().len(), 4);
}

#[tokio::test]
async fn the_counts_cache_serves_a_key_again_and_fetches_only_what_it_lacks() {
    let fake = Fake::new();
    let (read, _registry) = read(&settings(1, 100), &fake, true);
    fake.gate.add_permits(2);
    read.get(vec![1, 2], Deadline::none()).await.unwrap();
    let found = read.get(vec![1, 2, 3], Deadline::none()).await.unwrap();
    assert_eq!(sorted(found), [(1, 10), (2, 20), (3, 30)]);
    assert_eq!(fake.calls(), [vec![1, 2], vec![3]]);
    // A failed call leaves nothing in the cache.
    fake.gate.add_permits(2);
    assert!(read.get(vec![13], Deadline::none()).await.is_err());
    assert!(read.get(vec![13], Deadline::none()).await.is_err());
    assert_eq!(fake.calls().len(), 4);

    // Without a time to live there is no cache.
    let fake = Fake::new();
    let mut no_cache = settings(1, 100);
    no_cache.counts_cache.ttl_ms = 0;
    let (read, _registry) = super::tests::read(&no_cache, &fake, true);
    fake.gate.add_permits(2);
    read.get(vec![1], Deadline::none()).await.unwrap();
    read.get(vec![1], Deadline::none()).await.unwrap();
    assert_eq!(fake.calls().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_cached_counter_is_served_for_its_time_to_live_and_fetched_again_after() {
    let fake = Fake::new();
    let (read, _registry) = read(&settings(1, 100), &fake, true);
    let ttl = Duration::from_millis(FanoutSettings::default().counts_cache.ttl_ms);
    fake.gate.add_permits(2);
    read.get(vec![1], Deadline::none()).await.unwrap();
    tokio::time::advance(ttl - Duration::from_millis(1)).await;
    read.get(vec![1], Deadline::none()).await.unwrap();
    assert_eq!(
        fake.calls(),
        [vec![1]],
        "served from the cache within its time to live"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    let found = read.get(vec![1], Deadline::none()).await.unwrap();
    assert_eq!(found, [(1, 10)]);
    assert_eq!(
        fake.calls(),
        [vec![1], vec![1]],
        "fetched again once it expired"
    );
}

#[tokio::test(start_paused = true)]
async fn a_window_gathers_the_reads_that_arrive_within_it() {
    let fake = Fake::new();
    let settings = FanoutSettings {
        window_us: 2000,
        ..settings(1, 100)
    };
    let (read, _registry) = read(&settings, &fake, false);
    fake.gate.add_permits(1);
    let reads: Vec<_> = [1, 2]
        .into_iter()
        .map(|key| {
            let read = read.clone();
            tokio::spawn(async move { read.get(vec![key], Deadline::none()).await })
        })
        .collect();
    for read in reads {
        read.await.unwrap().unwrap();
    }
    assert_eq!(fake.calls(), [vec![1, 2]]);
}

#[test]
fn settings_that_cannot_work_are_refused() {
    let mut registry = Registry::default();
    for (bad, key) in [
        (settings(0, 100), "fanout.max_in_flight"),
        (settings(1, 0), "fanout.max_batch"),
        (
            FanoutSettings {
                max_in_flight_ceiling: 1,
                ..settings(2, 100)
            },
            "fanout.max_in_flight_ceiling",
        ),
    ] {
        let error = Fanout::register(&bad, &mut registry).unwrap_err();
        assert!(error.starts_with(key), "{error}");
    }
}

#[test]
fn the_limit_rises_while_calls_take_as_long_as_the_fastest_and_falls_when_they_queue() {
    let ms = Duration::from_millis;
    let gauge = Gauge::default();
    let mut limit = Limit::new(2, 6, gauge.clone());
    let now = std::cell::Cell::new(Instant::now());
    let observe = |limit: &mut Limit, latency| {
        now.set(now.get() + ms(1));
        limit.observe(latency, now.get());
    };
    // An upstream that takes 20 ms whatever the load: a step up after each round of calls.
    let mut calls = 0;
    while limit.current() < 6 {
        observe(&mut limit, ms(20));
        calls += 1;
        assert!(calls <= 100, "the limit never reached its ceiling");
    }
    assert_eq!(
        calls,
        2 + 3 + 4 + 5,
        "one step per round of as many calls as the limit"
    );
    for _ in 0..50 {
        observe(&mut limit, ms(20));
    }
    assert_eq!(limit.current(), 6, "the ceiling holds");
    assert_eq!(gauge.get(), 6, "the metric shows the limit");
    // Calls queue at the upstream (three times the fastest): once the smoothed latency passes
    // twice the fastest, each call takes a step down, to the floor.
    for _ in 0..6 {
        observe(&mut limit, ms(60));
    }
    assert_eq!(limit.current(), 6, "one slow call does not move it at once");
    for _ in 0..20 {
        observe(&mut limit, ms(60));
    }
    assert_eq!(limit.current(), 2);
    // The upstream stays at 60 ms: after two windows that is its new fastest, and it has room.
    now.set(now.get() + FASTEST_WINDOW * 2);
    for _ in 0..100 {
        observe(&mut limit, ms(60));
    }
    assert_eq!(limit.current(), 6);

    let mut fixed = Limit::new(2, 2, Gauge::default());
    for _ in 0..100 {
        observe(&mut fixed, ms(20));
    }
    assert_eq!(
        fixed.current(),
        2,
        "a floor equal to its ceiling is a fixed limit"
    );
}

/// Readers of a new key every 5 ms against an upstream that takes 20 ms however many calls it
/// has: how long each waited, and the most calls in flight at once.
async fn steady_reads(settings: &FanoutSettings) -> (Vec<Duration>, usize) {
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let loader: Loader<u32, u32> = Arc::new({
        let (in_flight, most) = (in_flight.clone(), most.clone());
        move |keys: Arc<[u32]>, _| {
            let (in_flight, most) = (in_flight.clone(), most.clone());
            Box::pin(async move {
                let now = in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                Ok(keys.iter().map(|key| (*key, *key)).collect())
            })
        }
    });
    let (read, _registry) = read_with(settings, loader, false);
    let mut readers = Vec::new();
    for key in 0..200 {
        let read = read.clone();
        readers.push(tokio::spawn(async move {
            let started = Instant::now();
            let found = read.get(vec![key], Deadline::none()).await.unwrap();
            assert_eq!(found, [(key, key)]);
            started.elapsed()
        }));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut waited = Vec::new();
    for reader in readers {
        waited.push(reader.await.unwrap());
    }
    (waited, most.load(std::sync::atomic::Ordering::SeqCst))
}

#[tokio::test(start_paused = true)]
async fn readers_do_not_queue_behind_an_upstream_that_is_slow_but_not_loaded() {
    let call = Duration::from_millis(20);
    let adaptive = FanoutSettings {
        max_in_flight_ceiling: 8,
        ..settings(2, 100)
    };
    let (waited, most) = steady_reads(&adaptive).await;
    assert!(
        waited[50..].iter().all(|waited| *waited <= call),
        "readers still queued once the limit had adapted: {:?}",
        &waited[50..]
    );
    assert!((3..=8).contains(&most), "{most} calls in flight at most");
    let (_, registry) = read_with(
        &adaptive,
        Arc::new(|_, _| Box::pin(async { Ok(Vec::new()) })),
        false,
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("gateway_fanout_in_flight_limit{method=\"fake.BatchGet\"} 2"),
        "a new read's limit is max_in_flight: {text}"
    );

    // The same readers against a fixed limit of two queue behind the calls in flight.
    let (waited, most) = steady_reads(&settings(2, 100)).await;
    assert!(waited[50..].iter().any(|waited| *waited > call));
    assert_eq!(most, 2);
}
