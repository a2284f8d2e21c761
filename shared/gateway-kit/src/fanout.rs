//! Foundation work shared between concurrent requests: the gateways' batched reads go through
//! a [`Read`] per foundation method, which coalesces them.
//!
//! - **Cross-request batching.** A read whose method has fewer than `fanout.max_in_flight`
//!   calls in flight goes out at once, alone: at low load nothing waits. Otherwise its keys
//!   queue, and the keys every request queued meanwhile go out together in the next call, up
//!   to `fanout.max_batch` keys, as soon as a call of the method ends. So the calls per request
//!   fall as the load rises. `fanout.window_us` can hold a call back that long to gather more
//!   keys; it is 0 (no wait) by default.
//! - **A slow upstream does not make readers wait.** Queueing behind a call in flight costs a
//!   reader up to that call's whole latency: nothing when calls take a millisecond under load,
//!   half the latency on average when an upstream takes 20 ms while idle. So the limit of calls
//!   in flight adapts per method ([`Limit`]): while calls take about as long as the method's
//!   fastest recent call, the upstream is slow but not loaded, and the limit rises by one per
//!   round of calls up to `fanout.max_in_flight_ceiling`; when they take more than twice as
//!   long, calls are queueing at the upstream, and it falls back toward `max_in_flight`, where
//!   batching saves the upstream most.
//! - **Single flight.** A key already queued or in flight is not fetched again: the reader
//!   waits for that answer. A key holds everything
//!   the foundation's answer depends on (the track id; the viewer and the track; the viewer and
//!   the owner), and only foundation data is shared: authorization, masks and trimming stay per
//!   request, after the read.
//! - **Counts cache.** The counters (track and user counts), which are eventually consistent
//!   by design, are kept for `fanout.counts_cache.ttl_ms` in a bounded cache (quick_cache): a counter
//!   a gateway serves is at most that much older than the foundation's. Nothing that
//!   authorization reads, and no viewer relation, is ever cached.
//!
//! Each reader keeps its own deadline and its own cancellation: a call runs on its own task
//! with the latest deadline of its readers, a reader stops waiting at its own deadline (and
//! when a call it joined runs out of time first, sends the key again within its own), and a
//! reader that goes away leaves the others waiting. A shared call is traced in the trace of
//! its first reader. A failed call fails exactly the readers of
//! the keys it carried. `fanout.coalesce = false` turns all of it off, for A/B runs: each read
//! is then its own call, as it is without this module.

use std::{
    fmt,
    future::Future,
    hash::Hash,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::FutureExt as _;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use tokio::{sync::mpsc, time::Instant};
use tonic::Status;
use tracing::Instrument;

use crate::{Deadline, UpstreamError, UpstreamFailure};

/// `[fanout]`: how the gateway shares foundation work between concurrent requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FanoutSettings {
    /// Batching across requests, single flight and the counts cache; `false` makes every read
    /// its own call.
    pub coalesce: bool,
    /// Calls of one foundation method in flight before further keys queue for the next call,
    /// while the method's calls take longer than its fastest recent ones (under load).
    pub max_in_flight: usize,
    /// How far that limit rises while the method's calls take about as long as its fastest
    /// recent one (an upstream slow but not loaded). Equal to `max_in_flight`, it stays fixed.
    pub max_in_flight_ceiling: usize,
    /// The most keys in one call: the foundation's batch limit.
    pub max_batch: usize,
    /// How long a call waits to gather keys when it could go at once (0: it does not wait).
    pub window_us: u64,
    pub counts_cache: CacheSettings,
}

impl Default for FanoutSettings {
    fn default() -> Self {
        Self {
            coalesce: true,
            max_in_flight: 2,
            max_in_flight_ceiling: 16,
            max_batch: 100,
            window_us: 0,
            counts_cache: CacheSettings::default(),
        }
    }
}

/// `[fanout.counts_cache]`: the cache of the counters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// How long a counter is served from the cache: the staleness bound it adds (0: no cache).
    pub ttl_ms: u64,
    /// The most counters kept.
    pub max_entries: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            ttl_ms: 1000,
            max_entries: 100_000,
        }
    }
}

impl FanoutSettings {
    /// Refuses settings that cannot work, naming the key.
    pub fn check(&self) -> Result<(), String> {
        if self.max_in_flight == 0 {
            return Err("fanout.max_in_flight must be at least 1".into());
        }
        if self.max_in_flight_ceiling < self.max_in_flight {
            return Err(
                "fanout.max_in_flight_ceiling must be at least fanout.max_in_flight".into(),
            );
        }
        if self.max_batch == 0 {
            return Err("fanout.max_batch must be at least 1".into());
        }
        Ok(())
    }
}

/// What one call of a method answers: the value of each key it found. Keys it does not
/// answer have no value (a track that does not exist).
pub type Loaded<K, V> = Result<Vec<(K, V)>, UpstreamError>;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The readers' maps hash with foldhash: their keys are ids.
type HashMap<K, V> = field_mask::IdMap<K, V>;

/// The readers of one key: almost always one.
type Waiters<V> = SmallVec<[Waiter<V>; 1]>;

/// One call of a method for a batch of keys, within a deadline. The keys are shared with the
/// call's bookkeeping: a loader copies only what its request needs.
pub type Loader<K, V> = Arc<dyn Fn(Arc<[K]>, Deadline) -> BoxFuture<Loaded<K, V>> + Send + Sync>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    method: &'static str,
    /// `cache`, `shared` (another request's call brought it) or `fetched`.
    source: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

/// The metrics of every [`Read`] of a gateway, and the settings they share.
#[derive(Debug, Clone)]
pub struct Fanout {
    settings: Arc<FanoutSettings>,
    keys: Family<KeyLabels, Counter>,
    limits: Family<MethodLabels, Gauge>,
}

impl Fanout {
    /// Registers `gateway_fanout_keys_total{method,source}`: the keys reads asked for, by
    /// where their answer came from.
    pub fn register(settings: &FanoutSettings, registry: &mut Registry) -> Result<Self, String> {
        settings.check()?;
        let keys = Family::<KeyLabels, Counter>::default();
        registry.register(
            "gateway_fanout_keys",
            "Keys of foundation reads, by method and by where the answer came from: the counts \
             cache, another request's call (shared) or a call of their own (fetched)",
            keys.clone(),
        );
        let limits = Family::<MethodLabels, Gauge>::default();
        registry.register(
            "gateway_fanout_in_flight_limit",
            "Calls of each foundation method that may be in flight before further keys queue \
             for the next call: fanout.max_in_flight under load, up to \
             fanout.max_in_flight_ceiling while calls take about as long as the fastest",
            limits.clone(),
        );
        Ok(Self {
            settings: Arc::new(settings.clone()),
            keys,
            limits,
        })
    }

    pub fn settings(&self) -> &FanoutSettings {
        &self.settings
    }

    /// The read of `method` (such as `tracks.BatchGetTracks`), whose calls take at most `cap`
    /// and are made by `load`; `cached` for the counters.
    pub fn read<K, V>(
        &self,
        method: &'static str,
        service: &'static str,
        cap: Duration,
        cached: bool,
        load: Loader<K, V>,
    ) -> Read<K, V>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
    {
        let settings = &self.settings;
        let cache = (settings.coalesce && cached && settings.counts_cache.ttl_ms > 0).then(|| {
            let entries = usize::try_from(settings.counts_cache.max_entries).unwrap_or(usize::MAX);
            Cache::with(
                entries,
                settings.counts_cache.max_entries,
                quick_cache::UnitWeighter,
                foldhash::fast::RandomState::default(),
                quick_cache::sync::DefaultLifecycle::default(),
            )
        });
        let counter = |source| {
            self.keys
                .get_or_create(&KeyLabels { method, source })
                .clone()
        };
        Read {
            inner: Arc::new(Inner {
                service,
                cap,
                coalesce: settings.coalesce,
                max_batch: settings.max_batch,
                window: Duration::from_micros(settings.window_us),
                load,
                cache,
                ttl: Duration::from_millis(settings.counts_cache.ttl_ms),
                state: Mutex::new(State::new(Limit::new(
                    settings.max_in_flight,
                    settings.max_in_flight_ceiling,
                    self.limits.get_or_create(&MethodLabels { method }).clone(),
                ))),
                from_cache: counter("cache"),
                shared: counter("shared"),
                fetched: counter("fetched"),
            }),
        }
    }
}

/// The reads of one foundation method, coalesced across the requests of the gateway.
pub struct Read<K, V> {
    inner: Arc<Inner<K, V>>,
}

impl<K, V> Clone for Read<K, V> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<K, V> fmt::Debug for Read<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Read")
            .field("service", &self.inner.service)
            .field("coalesce", &self.inner.coalesce)
            .finish_non_exhaustive()
    }
}

/// A key's answer, as a reader gets it: its value, none, or the failure of its call.
type Outcome<V> = Result<Option<V>, UpstreamError>;

/// The answers one call has for one reader, each at its place among the reader's keys: a
/// reader gets one message per call, not one per key.
type Answers<V> = Vec<(usize, Outcome<V>)>;

/// One reader, shared by its waiters: where its answers go, when it stops waiting, and its
/// span (a call is traced in the trace of its first reader).
struct Reader<V> {
    answers: mpsc::UnboundedSender<Answers<V>>,
    end: Instant,
    span: tracing::Span,
}

/// A reader waiting for one key, at which place of its keys.
struct Waiter<V> {
    reader: Arc<Reader<V>>,
    index: usize,
}

/// A call in flight: its number and its readers.
struct Flight<V> {
    call: u64,
    waiters: Waiters<V>,
}

/// The cached counters, each with when it was fetched.
type Cache<K, V> = quick_cache::sync::Cache<
    K,
    (V, Instant),
    quick_cache::UnitWeighter,
    foldhash::fast::RandomState,
>;

/// Keys waiting for a call that has not started: its number is taken when it opens, so that
/// its readers wait in [`State::in_flight`] beside the readers of the calls under way.
struct Pending<K> {
    call: u64,
    /// In the order they came, each once.
    keys: Vec<K>,
}

struct State<K, V> {
    calls_in_flight: usize,
    /// How many calls may be in flight.
    limit: Limit,
    next_call: u64,
    /// The calls waiting to start, oldest first, each of at most `max_batch` keys. Their
    /// numbers are above those of every call under way.
    pending: std::collections::VecDeque<Pending<K>>,
    /// The readers of each key, per call, started or pending. A key can be in more than one
    /// call: a reader whose joined call ran out of time before the reader's deadline sends the
    /// key again.
    in_flight: HashMap<K, SmallVec<[Flight<V>; 1]>>,
    /// A call is held back by `window` and will take the queue when the window ends.
    window_pending: bool,
}

impl<K: Hash + Eq + Clone, V> State<K, V> {
    /// The keys waiting for a call.
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.pending.iter().map(|pending| pending.keys.len()).sum()
    }

    /// Adds a reader of `key`: to a call for it that is under way when `join` allows, else to
    /// one that waits to start, else to the newest call waiting (opened when there is none, or
    /// it is full), where the key waits once however many readers want it. True when another
    /// reader already asked for the key.
    fn register(&mut self, key: &K, waiter: Waiter<V>, join: bool, max_batch: usize) -> bool {
        let first_pending = self.pending.front().map(|first| first.call);
        let pending = |call: u64| first_pending.is_some_and(|first| call >= first);
        if let Some(flights) = self.in_flight.get_mut(key) {
            let joined = match flights.iter().rposition(|flight| !pending(flight.call)) {
                Some(at) if join => Some(at),
                _ => flights.iter().rposition(|flight| pending(flight.call)),
            };
            if let Some(at) = joined {
                flights[at].waiters.push(waiter);
                return true;
            }
        }
        let open = match self.pending.back_mut() {
            Some(last) if last.keys.len() < max_batch => last,
            _ => {
                let call = self.next_call;
                self.next_call += 1;
                self.pending.push_back(Pending {
                    call,
                    keys: Vec::new(),
                });
                self.pending.back_mut().expect("just pushed")
            }
        };
        open.keys.push(key.clone());
        self.in_flight.entry(key.clone()).or_default().push(Flight {
            call: open.call,
            waiters: smallvec::smallvec![waiter],
        });
        false
    }

    /// The readers of `key` in call `call`, taken out of the calls in flight.
    fn take_flight(&mut self, key: &K, call: u64) -> Option<Flight<V>> {
        // One lookup in the usual case, where the key is in this call alone.
        let (key, mut flights) = self.in_flight.remove_entry(key)?;
        let flight = flights
            .iter()
            .position(|flight| flight.call == call)
            .map(|at| flights.swap_remove(at));
        if !flights.is_empty() {
            self.in_flight.insert(key, flights);
        }
        flight
    }
}

impl<K, V> State<K, V> {
    fn new(limit: Limit) -> Self {
        Self {
            calls_in_flight: 0,
            limit,
            next_call: 0,
            pending: std::collections::VecDeque::new(),
            in_flight: HashMap::default(),
            window_pending: false,
        }
    }
}

/// How long the fastest call of a method is remembered: two windows of this, so that the
/// baseline follows an upstream whose latency rose within a few seconds.
const FASTEST_WINDOW: Duration = Duration::from_secs(2);

/// The limit of one method's calls in flight, from the latency of its calls.
///
/// The baseline is the fastest call of the last two [`FASTEST_WINDOW`]s: what a call takes when
/// nothing queues at the upstream. Calls that take about that long (a smoothed latency within
/// 1.5 × the baseline) say the upstream has room: after a round of them (as many as the limit)
/// the limit rises by one, up to the ceiling. Calls that take more than twice as long say they
/// queue at the upstream: the limit falls by one at each, down to the floor, where keys queue
/// for batched calls and each call carries more of them. In between, it holds. Failed calls are
/// not measured: they can end at once.
#[derive(Debug)]
struct Limit {
    floor: usize,
    ceiling: usize,
    current: usize,
    /// The latency of recent calls, smoothed (a tenth of each new one).
    smoothed: Option<Duration>,
    /// The fastest call of this window and of the one before.
    fastest: [Option<Duration>; 2],
    window_start: Option<Instant>,
    /// Calls near the baseline since the limit last changed.
    calm: usize,
    /// `gateway_fanout_in_flight_limit` of the method.
    gauge: Gauge,
}

impl Limit {
    fn new(floor: usize, ceiling: usize, gauge: Gauge) -> Self {
        gauge.set(i64::try_from(floor).unwrap_or(i64::MAX));
        Self {
            floor,
            ceiling,
            current: floor,
            smoothed: None,
            fastest: [None, None],
            window_start: None,
            calm: 0,
            gauge,
        }
    }

    fn current(&self) -> usize {
        self.current
    }

    /// A call that succeeded in `latency`, ending at `now`.
    fn observe(&mut self, latency: Duration, now: Instant) {
        if self.floor == self.ceiling {
            return;
        }
        match self.window_start {
            Some(start) if now.duration_since(start) < FASTEST_WINDOW => {}
            Some(start) if now.duration_since(start) < 2 * FASTEST_WINDOW => {
                self.fastest = [None, self.fastest[0]];
                self.window_start = Some(now);
            }
            _ => {
                self.fastest = [None, None];
                self.window_start = Some(now);
            }
        }
        let this_window = self.fastest[0].map_or(latency, |fastest| fastest.min(latency));
        self.fastest[0] = Some(this_window);
        let baseline = self.fastest[1].map_or(this_window, |before| before.min(this_window));
        let smoothed = self
            .smoothed
            .map_or(latency, |smoothed| (smoothed * 9 + latency) / 10);
        self.smoothed = Some(smoothed);
        let before = self.current;
        if smoothed > baseline * 2 {
            self.current = self.current.saturating_sub(1).max(self.floor);
            self.calm = 0;
        } else if smoothed * 2 <= baseline * 3 {
            self.calm += 1;
            if self.calm >= self.current {
                self.current = (self.current + 1).min(self.ceiling);
                self.calm = 0;
            }
        }
        if self.current != before {
            self.gauge
                .set(i64::try_from(self.current).unwrap_or(i64::MAX));
        }
    }
}

struct Inner<K, V> {
    service: &'static str,
    cap: Duration,
    coalesce: bool,
    max_batch: usize,
    window: Duration,
    load: Loader<K, V>,
    cache: Option<Cache<K, V>>,
    /// How long a cached counter is served.
    ttl: Duration,
    state: Mutex<State<K, V>>,
    from_cache: Counter,
    shared: Counter,
    fetched: Counter,
}

/// A call taken off the queue, to be made.
struct Batch<K> {
    call: u64,
    keys: Arc<[K]>,
    end: Instant,
    span: tracing::Span,
}

/// What the queue is ready for: a call, or a window's wait before one.
enum Start<K> {
    Call(Batch<K>),
    Window(Instant),
}

/// The answers of a call that ended, gathered per reader while the state is locked and sent
/// after: the waiters of one reader's keys come one after another, so a reader's answers
/// gather in one message (a key shared with other readers may start another).
struct Replies<V> {
    replies: Vec<(Arc<Reader<V>>, Answers<V>)>,
}

impl<V: Clone> Replies<V> {
    fn new() -> Self {
        Self {
            replies: Vec::new(),
        }
    }

    /// The outcome of one key for each of its waiters; the last takes it, the others get
    /// clones.
    fn answer(&mut self, waiters: Waiters<V>, outcome: Outcome<V>) {
        let mut outcome = Some(outcome);
        let mut waiters = waiters.into_iter().peekable();
        while let Some(waiter) = waiters.next() {
            let outcome = if waiters.peek().is_some() {
                outcome.clone().expect("taken by the last waiter only")
            } else {
                outcome.take().expect("taken by the last waiter only")
            };
            match self.replies.last_mut() {
                Some((reader, answers)) if Arc::ptr_eq(reader, &waiter.reader) => {
                    answers.push((waiter.index, outcome));
                }
                _ => self
                    .replies
                    .push((waiter.reader, vec![(waiter.index, outcome)])),
            }
        }
    }

    fn send(self) {
        for (reader, answers) in self.replies {
            // A reader that went away takes no answer.
            let _ = reader.answers.send(answers);
        }
    }
}

impl<K, V> Read<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The values of `keys` (callers pass each key once), by `deadline`: the keys the
    /// foundation answered, with their values, in no particular order.
    pub async fn get(&self, keys: Vec<K>, deadline: Deadline) -> Loaded<K, V> {
        let inner = &self.inner;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        if !inner.coalesce {
            inner.fetched.inc_by(keys.len() as u64);
            return (inner.load)(keys.into(), deadline).await;
        }
        let mut found = Vec::with_capacity(keys.len());
        let keys = match &inner.cache {
            None => keys,
            Some(cache) => {
                let mut missing = Vec::with_capacity(keys.len());
                let now = Instant::now();
                for key in keys {
                    match cache.get(&key) {
                        Some((value, fetched)) if now.duration_since(fetched) < inner.ttl => {
                            found.push((key, value));
                        }
                        _ => missing.push(key),
                    }
                }
                inner.from_cache.inc_by(found.len() as u64);
                if missing.is_empty() {
                    return Ok(found);
                }
                missing
            }
        };
        let end = deadline
            .remaining()
            .map_or(inner.cap, |left| left.min(inner.cap));
        let end = Instant::now() + end;
        let (answers, mut received) = mpsc::unbounded_channel();
        let reader = Arc::new(Reader {
            answers,
            end,
            span: tracing::Span::current(),
        });
        let starts = {
            let mut state = inner.lock();
            let (shared, starts) = inner.register_reader(&mut state, &keys, &reader);
            inner.shared.inc_by(shared);
            starts
        };
        self.start(starts);

        let mut outcomes: Vec<Option<Outcome<V>>> = (0..keys.len()).map(|_| None).collect();
        let mut retried = vec![false; keys.len()];
        let mut left = keys.len();
        let waited = tokio::time::timeout_at(end, async {
            while left > 0 {
                let Some(answers) = received.recv().await else {
                    break;
                };
                for (index, outcome) in answers {
                    // A call this reader joined ran out of its time before this reader's own
                    // deadline: the key goes again, in a call of this reader's deadline.
                    if let Err(UpstreamError {
                        failure: UpstreamFailure::Timeout,
                        ..
                    }) = &outcome
                        && !retried[index]
                        && Instant::now() < end
                    {
                        retried[index] = true;
                        let waiter = Waiter {
                            reader: reader.clone(),
                            index,
                        };
                        let starts = {
                            let mut state = inner.lock();
                            state.register(&keys[index], waiter, false, inner.max_batch);
                            inner.take_batches(&mut state, false)
                        };
                        self.start(starts);
                        continue;
                    }
                    if outcomes[index].replace(outcome).is_none() {
                        left -= 1;
                    }
                }
            }
        })
        .await;
        if waited.is_err() {
            return Err(UpstreamError::new(inner.service, UpstreamFailure::Timeout));
        }
        for (key, outcome) in keys.into_iter().zip(outcomes) {
            match outcome {
                Some(Ok(Some(value))) => found.push((key, value)),
                Some(Ok(None)) => {}
                Some(Err(error)) => return Err(error),
                None => {
                    return Err(UpstreamError::new(
                        inner.service,
                        UpstreamFailure::Status(Status::internal(
                            "a coalesced call ended without an answer",
                        )),
                    ));
                }
            }
        }
        Ok(found)
    }

    /// The values of `keys`, as [`Read::get`] without the keys.
    pub async fn values(&self, keys: Vec<K>, deadline: Deadline) -> Result<Vec<V>, UpstreamError> {
        Ok(self
            .get(keys, deadline)
            .await?
            .into_iter()
            .map(|(_, value)| value)
            .collect())
    }

    fn start(&self, starts: Vec<Start<K>>) {
        for start in starts {
            match start {
                Start::Call(batch) => self.spawn(batch),
                Start::Window(at) => self.window_timer(at),
            }
        }
    }

    /// Makes one call on its own task, so that no reader's cancellation cancels it, then
    /// answers its readers and starts the calls the queue is ready for.
    fn spawn(&self, batch: Batch<K>) {
        let read = self.clone();
        let span = batch.span.clone();
        let task = async move {
            let inner = &read.inner;
            let load = (inner.load)(batch.keys.clone(), Deadline::at(batch.end));
            let started = Instant::now();
            // A call that panics fails its readers instead of leaving them and the method's
            // place in flight behind.
            let loaded = match std::panic::AssertUnwindSafe(load).catch_unwind().await {
                Ok(loaded) => loaded,
                Err(_) => Err(UpstreamError::new(
                    inner.service,
                    UpstreamFailure::Status(Status::internal("a coalesced call failed")),
                )),
            };
            let next = inner.complete(batch, loaded, started);
            read.start(next);
        };
        tokio::spawn(task.instrument(span));
    }
}

impl<K, V> Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn lock(&self) -> std::sync::MutexGuard<'_, State<K, V>> {
        // A panic while the lock is held cannot leave the state half written in a way that
        // matters more than stopping every read of the method.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a reader of `keys`: the keys in flight are joined, the others go out at once
    /// in a call of the reader's own when the method has room and nothing queues before them,
    /// else they queue. The keys another reader asked for first, and the calls to start.
    fn register_reader(
        &self,
        state: &mut State<K, V>,
        keys: &[K],
        reader: &Arc<Reader<V>>,
    ) -> (u64, Vec<Start<K>>) {
        let waiter = |index| Waiter {
            reader: reader.clone(),
            index,
        };
        let mut shared = 0;
        let direct = state.pending.is_empty()
            && state.calls_in_flight < state.limit.current()
            && self.window.is_zero()
            && keys.len() <= self.max_batch;
        if !direct {
            for (index, key) in keys.iter().enumerate() {
                shared += u64::from(state.register(key, waiter(index), true, self.max_batch));
            }
            return (shared, self.take_batches(state, false));
        }
        // The reader's own call: what the queue would have sent at once, without queueing.
        let call = state.next_call;
        let mut own = Vec::with_capacity(keys.len());
        for (index, key) in keys.iter().enumerate() {
            let flights = state.in_flight.entry(key.clone()).or_default();
            match flights.last_mut() {
                Some(flight) => {
                    flight.waiters.push(waiter(index));
                    shared += 1;
                }
                None => {
                    flights.push(Flight {
                        call,
                        waiters: smallvec::smallvec![waiter(index)],
                    });
                    own.push(key.clone());
                }
            }
        }
        if own.is_empty() {
            return (shared, Vec::new());
        }
        state.next_call += 1;
        state.calls_in_flight += 1;
        self.fetched.inc_by(own.len() as u64);
        let batch = Batch {
            call,
            keys: own.into(),
            end: reader.end,
            span: reader.span.clone(),
        };
        (shared, vec![Start::Call(batch)])
    }

    /// The calls to start now: while fewer than the limit are in flight and keys queue,
    /// the oldest waiting call each (of up to `max_batch` keys). A window holds the first call
    /// back unless it is full, `after_window` says it has waited, or a call just ended.
    fn take_batches(&self, state: &mut State<K, V>, after_window: bool) -> Vec<Start<K>> {
        let mut batches = Vec::new();
        while state.calls_in_flight < state.limit.current() {
            let Some(first) = state.pending.front() else {
                break;
            };
            if !self.window.is_zero()
                && !after_window
                && state.calls_in_flight == 0
                && first.keys.len() < self.max_batch
            {
                if !state.window_pending {
                    state.window_pending = true;
                    batches.push(Start::Window(Instant::now() + self.window));
                }
                break;
            }
            let Pending { call, keys: queued } = state.pending.pop_front().expect("a front");
            let mut keys = Vec::with_capacity(queued.len());
            let mut end: Option<Instant> = None;
            let mut span = None;
            for key in queued {
                let Some(flights) = state.in_flight.get_mut(&key) else {
                    continue;
                };
                let Some(at) = flights.iter().position(|flight| flight.call == call) else {
                    continue;
                };
                // Readers that went away need nothing.
                let waiters = &mut flights[at].waiters;
                waiters.retain(|waiter| !waiter.reader.answers.is_closed());
                let Some(latest) = waiters.iter().map(|waiter| waiter.reader.end).max() else {
                    flights.swap_remove(at);
                    if flights.is_empty() {
                        state.in_flight.remove(&key);
                    }
                    continue;
                };
                end = Some(end.map_or(latest, |end| end.max(latest)));
                span.get_or_insert_with(|| waiters[0].reader.span.clone());
                keys.push(key);
            }
            let (Some(end), Some(span)) = (end, span) else {
                continue;
            };
            self.fetched.inc_by(keys.len() as u64);
            state.calls_in_flight += 1;
            batches.push(Start::Call(Batch {
                call,
                keys: keys.into(),
                end,
                span,
            }));
        }
        batches
    }

    /// Answers the readers of a call that ended, and takes the calls the queue is ready for.
    fn complete(&self, batch: Batch<K>, loaded: Loaded<K, V>, started: Instant) -> Vec<Start<K>> {
        let now = Instant::now();
        if let (Some(cache), Ok(found)) = (&self.cache, &loaded) {
            for (key, value) in found {
                cache.insert(key.clone(), (value.clone(), now));
            }
        }
        let mut replies = Replies::new();
        let next = {
            let mut state = self.lock();
            state.calls_in_flight -= 1;
            if loaded.is_ok() {
                state.limit.observe(now.duration_since(started), now);
            }
            match loaded {
                Ok(found) => {
                    let mut answered = 0;
                    for (key, value) in found {
                        if let Some(flight) = state.take_flight(&key, batch.call) {
                            answered += 1;
                            replies.answer(flight.waiters, Ok(Some(value)));
                        }
                    }
                    // The keys the foundation did not answer exist no more (each key of the
                    // call is answered once at most, so the count says whether any is left).
                    let unanswered = answered < batch.keys.len();
                    for key in batch.keys.iter().filter(|_| unanswered) {
                        if let Some(flight) = state.take_flight(key, batch.call) {
                            replies.answer(flight.waiters, Ok(None));
                        }
                    }
                }
                Err(error) => {
                    for key in batch.keys.iter() {
                        if let Some(flight) = state.take_flight(key, batch.call) {
                            replies.answer(flight.waiters, Err(error.clone()));
                        }
                    }
                }
            }
            self.take_batches(&mut state, true)
        };
        replies.send();
        next
    }
}

impl<K, V> Read<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Runs the window's timer: when it ends, the queue goes out.
    fn window_timer(&self, at: Instant) {
        let read = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let starts = {
                let mut state = read.inner.lock();
                state.window_pending = false;
                read.inner.take_batches(&mut state, true)
            };
            read.start(starts);
        });
    }
}

#[cfg(test)]
mod tests;
