//! Idempotency keys for commands: a client that retries a command with the same
//! `idempotency-key` metadata gets the first call's result, and the command takes effect once;
//! the same key with a different request is refused. Keys are scoped by the caller (the
//! verified subject), so one caller's key never answers another's call.
//!
//! Results are kept for `ttl`, in this process's memory ([`IdempotencyStore::new`]: a retry
//! must reach the same instance, or the command's own idempotency holds, as every command here
//! is idempotent by state), or in Valkey or Redis shared by every replica
//! ([`IdempotencyStore::valkey`], feature `valkey`): a retry that reaches another replica gets
//! the first result, and a duplicate sent to two replicas at once runs once (the other gets
//! ABORTED).
//! Only results worth replaying are kept: successes, and refusals the command itself met in the
//! data (FAILED_PRECONDITION, ALREADY_EXISTS, OUT_OF_RANGE). A refusal decided before anything
//! could change (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, UNAUTHENTICATED,
//! UNIMPLEMENTED) and a retryable failure (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED,
//! ABORTED, INTERNAL, UNKNOWN) free the key: the retry runs the command again, which is
//! harmless since nothing happened, and a caller cannot fill the store with calls that cost it
//! nothing.
//!
//! Capacity is bounded twice: each caller holds at most `max_per_caller` keys, so that one
//! caller cannot refuse everyone else's keyed commands, and the store at most `max_entries`.
//! A keyed command over either bound is RESOURCE_EXHAUSTED, for its caller only in the first
//! case; commands without a key are never refused here.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use prost::Message;
use tonic::{Code, Status, metadata::MetadataMap};

/// The metadata key clients set.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

#[derive(Debug)]
enum Entry {
    InFlight {
        fingerprint: u64,
    },
    Done {
        fingerprint: u64,
        result: Result<Vec<u8>, (Code, String)>,
        at: Instant,
    },
}

impl Entry {
    fn expired(&self, ttl: Duration) -> bool {
        matches!(self, Entry::Done { at, .. } if at.elapsed() > ttl)
    }
}

/// The keys of every caller, and how many there are in all.
#[derive(Debug, Default)]
struct Held {
    by_caller: HashMap<String, HashMap<String, Entry>>,
    total: usize,
}

impl Held {
    /// Drops `caller`'s expired results.
    fn expire_caller(&mut self, caller: &str, ttl: Duration) {
        if let Some(keys) = self.by_caller.get_mut(caller) {
            let before = keys.len();
            keys.retain(|_, entry| !entry.expired(ttl));
            self.total -= before - keys.len();
        }
    }

    /// Drops every expired result.
    fn expire_all(&mut self, ttl: Duration) {
        let mut total = 0;
        self.by_caller.retain(|_, keys| {
            keys.retain(|_, entry| !entry.expired(ttl));
            total += keys.len();
            !keys.is_empty()
        });
        self.total = total;
    }

    fn remove(&mut self, caller: &str, key: &str) {
        if let Some(keys) = self.by_caller.get_mut(caller) {
            if keys.remove(key).is_some() {
                self.total -= 1;
            }
            if keys.is_empty() {
                self.by_caller.remove(caller);
            }
        }
    }
}

/// The results of keyed commands, per caller and key.
#[derive(Debug)]
pub struct IdempotencyStore {
    held: Mutex<Held>,
    ttl: Duration,
    max_entries: usize,
    max_per_caller: usize,
    /// Where the keys live when they are shared; `held` is unused then.
    #[cfg(feature = "valkey")]
    shared: Option<valkey::Shared>,
}

impl IdempotencyStore {
    /// A store keeping results for `ttl`, at most `max_entries` keys in all and
    /// `max_per_caller` per caller.
    pub fn new(ttl: Duration, max_entries: usize, max_per_caller: usize) -> Arc<Self> {
        Arc::new(Self {
            held: Mutex::new(Held::default()),
            ttl,
            max_entries: max_entries.max(1),
            max_per_caller: max_per_caller.max(1),
            #[cfg(feature = "valkey")]
            shared: None,
        })
    }

    /// A store in the Valkey or Redis server at `url` (`redis://host:port`, plaintext: keep it
    /// on a private network), shared by every replica that names it: results kept for `ttl`, at most
    /// `max_per_caller` keys per caller, and a command in flight marked for `in_flight` (a
    /// replica that dies mid-command frees its key after that). The connection is made on first
    /// use and remade when it breaks; while the server is unreachable, keyed commands are
    /// UNAVAILABLE and commands without a key run as ever.
    #[cfg(feature = "valkey")]
    pub fn valkey(
        url: &str,
        ttl: Duration,
        max_per_caller: usize,
        in_flight: Duration,
    ) -> Result<Arc<Self>, String> {
        let shared = valkey::Shared::new(url, in_flight)?;
        Ok(Arc::new(Self {
            held: Mutex::new(Held::default()),
            ttl,
            max_entries: usize::MAX,
            max_per_caller: max_per_caller.max(1),
            shared: Some(shared),
        }))
    }

    /// How many keys `caller` holds now (in flight or with a result), for tests and metrics.
    pub fn held_by(&self, caller: &str) -> usize {
        self.held
            .lock()
            .map_or(0, |held| held.by_caller.get(caller).map_or(0, HashMap::len))
    }

    /// Runs `command` once per (`caller`, key) when the call carries an idempotency key, and
    /// replays the first result to retries; without a key it simply runs `command`.
    /// `method` and `request` identify the request, so a key reused for another request is
    /// refused.
    pub async fn run<Req, Resp, F, Fut>(
        self: &Arc<Self>,
        metadata: &MetadataMap,
        caller: &str,
        method: &str,
        request: &Req,
        command: F,
    ) -> Result<Resp, Status>
    where
        Req: Message,
        Resp: Message + Default,
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Resp, Status>>,
    {
        let Some(key) = metadata.get(IDEMPOTENCY_KEY) else {
            return command().await;
        };
        let key = key
            .to_str()
            .ok()
            .filter(|key| !key.is_empty() && key.len() <= 128)
            .ok_or_else(|| {
                Status::invalid_argument(
                    "idempotency-key: must be 1 to 128 visible ASCII characters",
                )
            })?
            .to_owned();
        #[cfg(feature = "valkey")]
        if let Some(shared) = &self.shared {
            return shared
                .run(self, caller, &key, method, request, command)
                .await;
        }
        let mut hasher = DefaultHasher::new();
        method.hash(&mut hasher);
        request.encode_to_vec().hash(&mut hasher);
        let fingerprint = hasher.finish();

        {
            let mut held = self
                .held
                .lock()
                .map_err(|_| Status::internal("internal error"))?;
            let found = held.by_caller.get(caller).and_then(|keys| keys.get(&key));
            match found {
                Some(entry) if entry.expired(self.ttl) => held.remove(caller, &key),
                Some(Entry::Done {
                    fingerprint: known,
                    result,
                    ..
                }) => {
                    if *known != fingerprint {
                        return Err(reused());
                    }
                    return match result {
                        Ok(bytes) => Resp::decode(bytes.as_slice())
                            .map_err(|_| Status::internal("internal error")),
                        Err((code, message)) => Err(Status::new(*code, message.clone())),
                    };
                }
                Some(Entry::InFlight { fingerprint: known }) => {
                    return Err(if *known == fingerprint {
                        in_progress()
                    } else {
                        reused()
                    });
                }
                None => {}
            }
            if held.by_caller.get(caller).map_or(0, HashMap::len) >= self.max_per_caller {
                held.expire_caller(caller, self.ttl);
                if held.by_caller.get(caller).map_or(0, HashMap::len) >= self.max_per_caller {
                    return Err(over_quota(self.max_per_caller));
                }
            }
            if held.total >= self.max_entries {
                held.expire_all(self.ttl);
                if held.total >= self.max_entries {
                    return Err(Status::resource_exhausted(
                        "too many idempotency keys are held; retry later",
                    ));
                }
            }
            held.by_caller
                .entry(caller.to_owned())
                .or_default()
                .insert(key.clone(), Entry::InFlight { fingerprint });
            held.total += 1;
        }

        let mut guard = Release {
            store: self.clone(),
            slot: Some((caller.to_owned(), key)),
        };
        let result = command().await;
        let kept = kept(&result);
        // Without a result worth keeping the guard frees the key when it drops.
        if let Some(kept) = kept
            && let Ok(mut held) = self.held.lock()
            && let Some((caller, key)) = guard.slot.take()
            && let Some(entry) = held
                .by_caller
                .get_mut(&caller)
                .and_then(|keys| keys.get_mut(&key))
        {
            *entry = Entry::Done {
                fingerprint,
                result: kept,
                at: Instant::now(),
            };
        }
        result
    }
}

/// Whether a result is kept for retries: the response, or a refusal worth replaying.
fn kept<Resp: Message>(result: &Result<Resp, Status>) -> Option<Result<Vec<u8>, (Code, String)>> {
    match result {
        Ok(response) => Some(Ok(response.encode_to_vec())),
        Err(status) if replayable(status.code()) => {
            Some(Err((status.code(), status.message().to_owned())))
        }
        Err(_) => None,
    }
}

fn in_progress() -> Status {
    Status::aborted("a call with this idempotency-key is in progress; retry later")
}

fn over_quota(max_per_caller: usize) -> Status {
    Status::resource_exhausted(format!(
        "this caller holds {max_per_caller} idempotency keys, the most one caller may; \
         retry without a key, or once older keys expire"
    ))
}

fn reused() -> Status {
    Status::invalid_argument("idempotency-key: already used for a different request")
}

/// Refusals the command met in the data, which a retry must see too; everything else frees the
/// key.
fn replayable(code: Code) -> bool {
    matches!(
        code,
        Code::FailedPrecondition | Code::AlreadyExists | Code::OutOfRange
    )
}

/// Frees an in-flight key whose command did not leave a result (it failed, or the call was
/// dropped).
struct Release {
    store: Arc<IdempotencyStore>,
    slot: Option<(String, String)>,
}

impl Drop for Release {
    fn drop(&mut self) {
        if let Some((caller, key)) = self.slot.take()
            && let Ok(mut held) = self.store.held.lock()
        {
            held.remove(&caller, &key);
        }
    }
}

#[cfg(feature = "valkey")]
mod valkey;

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tonic::metadata::MetadataValue;

    use super::*;

    fn keyed(key: &str) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert(IDEMPOTENCY_KEY, MetadataValue::try_from(key).unwrap());
        metadata
    }

    #[tokio::test]
    async fn a_retry_replays_the_first_result_and_runs_nothing() {
        let store = IdempotencyStore::new(Duration::from_secs(60), 100, 10);
        let runs = AtomicUsize::new(0);
        let call = |value: &'static str| {
            let runs = &runs;
            move || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<String, Status>(value.to_owned())
            }
        };
        let first: String = store
            .run(
                &keyed("k1"),
                "usr_a",
                "/x/Like",
                &"trk_1".to_owned(),
                call("first"),
            )
            .await
            .unwrap();
        let retry: String = store
            .run(
                &keyed("k1"),
                "usr_a",
                "/x/Like",
                &"trk_1".to_owned(),
                call("second"),
            )
            .await
            .unwrap();
        assert_eq!((first.as_str(), retry.as_str()), ("first", "first"));
        assert_eq!(runs.load(Ordering::SeqCst), 1);

        let other_caller: String = store
            .run(
                &keyed("k1"),
                "usr_b",
                "/x/Like",
                &"trk_1".to_owned(),
                call("theirs"),
            )
            .await
            .unwrap();
        assert_eq!(other_caller, "theirs", "keys are per caller");

        let reused = store
            .run(
                &keyed("k1"),
                "usr_a",
                "/x/Like",
                &"trk_2".to_owned(),
                call("x"),
            )
            .await
            .unwrap_err();
        assert_eq!(reused.code(), Code::InvalidArgument);

        let unkeyed: String = store
            .run(
                &MetadataMap::new(),
                "usr_a",
                "/x/Like",
                &"trk_1".to_owned(),
                call("free"),
            )
            .await
            .unwrap();
        assert_eq!(unkeyed, "free");
    }

    #[tokio::test]
    async fn retryable_failures_free_the_key_and_refusals_are_replayed() {
        let store = IdempotencyStore::new(Duration::from_secs(60), 100, 10);
        let down = store
            .run(&keyed("k"), "u", "/m", &1u32, || async {
                Err::<u32, _>(Status::unavailable("down"))
            })
            .await
            .unwrap_err();
        assert_eq!(down.code(), Code::Unavailable);
        let ran: u32 = store
            .run(&keyed("k"), "u", "/m", &1u32, || async { Ok(7u32) })
            .await
            .unwrap();
        assert_eq!(ran, 7, "the retry ran");

        let refused = store
            .run(&keyed("r"), "u", "/m", &2u32, || async {
                Err::<u32, _>(Status::failed_precondition("the upload is incomplete"))
            })
            .await
            .unwrap_err();
        let replayed = store
            .run(&keyed("r"), "u", "/m", &2u32, || async { Ok(1u32) })
            .await
            .unwrap_err();
        assert_eq!(
            (refused.code(), replayed.message()),
            (Code::FailedPrecondition, "the upload is incomplete")
        );
    }

    #[tokio::test]
    async fn refusals_that_changed_nothing_are_not_kept() {
        let store = IdempotencyStore::new(Duration::from_secs(60), 100, 10);
        for (n, status) in [
            Status::not_found("track not found"),
            Status::invalid_argument("track_id: is required"),
            Status::permission_denied("not yours"),
        ]
        .into_iter()
        .enumerate()
        {
            let key = format!("k{n}");
            let code = status.code();
            let refused = store
                .run(&keyed(&key), "u", "/m", &1u32, || async {
                    Err::<u32, _>(status)
                })
                .await
                .unwrap_err();
            assert_eq!(refused.code(), code);
            let retried: u32 = store
                .run(&keyed(&key), "u", "/m", &1u32, || async { Ok(5u32) })
                .await
                .unwrap();
            assert_eq!(retried, 5, "{code:?}: the retry runs the command");
        }
        assert_eq!(store.held_by("u"), 3, "only the successes are held");
    }

    #[tokio::test]
    async fn one_caller_cannot_take_the_store_from_the_others() {
        let store = IdempotencyStore::new(Duration::from_secs(60), 6, 2);
        for key in ["a", "b"] {
            let _: u32 = store
                .run(&keyed(key), "greedy", "/m", &1u32, || async { Ok(1u32) })
                .await
                .unwrap();
        }
        let over = store
            .run(&keyed("c"), "greedy", "/m", &1u32, || async { Ok(1u32) })
            .await
            .unwrap_err();
        assert_eq!(over.code(), Code::ResourceExhausted);
        assert!(over.message().contains("this caller"), "{over:?}");
        // Replays of held keys and unkeyed commands still work for the greedy caller.
        let replay: u32 = store
            .run(&keyed("a"), "greedy", "/m", &1u32, || async { Ok(9u32) })
            .await
            .unwrap();
        assert_eq!(replay, 1);
        // Everyone else is unaffected.
        for caller in ["u1", "u2"] {
            for key in ["a", "b"] {
                let _: u32 = store
                    .run(&keyed(key), caller, "/m", &1u32, || async { Ok(2u32) })
                    .await
                    .unwrap_or_else(|status| panic!("{caller}/{key}: {status:?}"));
            }
        }
        // The store's own bound (6) is met now.
        let full = store
            .run(&keyed("a"), "u3", "/m", &1u32, || async { Ok(3u32) })
            .await
            .unwrap_err();
        assert_eq!(full.code(), Code::ResourceExhausted);
        assert_eq!(store.held_by("greedy"), 2);
    }

    #[tokio::test]
    async fn bad_keys_are_invalid() {
        let store = IdempotencyStore::new(Duration::from_secs(60), 100, 10);
        let long = "k".repeat(129);
        let status = store
            .run(&keyed(&long), "u", "/m", &1u32, || async { Ok(1u32) })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
    }
}
