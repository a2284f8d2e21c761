//! Idempotency keys for commands: a client that retries a command with the same
//! `idempotency-key` metadata gets the first call's result, and the command takes effect once;
//! the same key with a different request is refused. Keys are scoped by the caller (the
//! verified subject), so one caller's key never answers another's call.
//!
//! Results are kept in this process's memory for `ttl`: a retry must reach the same instance
//! (or the command's own idempotency holds, as every command here is idempotent by state).
//! Only results worth replaying are kept: successes and definite refusals. A retryable failure
//! (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, INTERNAL, UNKNOWN) frees the
//! key, so the retry runs the command again.

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

/// The results of keyed commands, per caller and key.
#[derive(Debug)]
pub struct IdempotencyStore {
    entries: Mutex<HashMap<(String, String), Entry>>,
    ttl: Duration,
    max_entries: usize,
}

impl IdempotencyStore {
    pub fn new(ttl: Duration, max_entries: usize) -> Arc<Self> {
        Arc::new(Self {
            entries: Mutex::new(HashMap::new()),
            ttl,
            max_entries: max_entries.max(1),
        })
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
        let mut hasher = DefaultHasher::new();
        method.hash(&mut hasher);
        request.encode_to_vec().hash(&mut hasher);
        let fingerprint = hasher.finish();
        let slot = (caller.to_owned(), key);

        {
            let mut entries = self
                .entries
                .lock()
                .map_err(|_| Status::internal("internal error"))?;
            match entries.get(&slot) {
                Some(Entry::Done { at, .. }) if at.elapsed() > self.ttl => {
                    entries.remove(&slot);
                }
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
                        Status::aborted(
                            "a call with this idempotency-key is in progress; retry later",
                        )
                    } else {
                        reused()
                    });
                }
                None => {}
            }
            if entries.len() >= self.max_entries {
                let ttl = self.ttl;
                entries.retain(|_, entry| match entry {
                    Entry::Done { at, .. } => at.elapsed() <= ttl,
                    Entry::InFlight { .. } => true,
                });
                if entries.len() >= self.max_entries {
                    return Err(Status::resource_exhausted(
                        "too many idempotency keys are held; retry later",
                    ));
                }
            }
            entries.insert(slot.clone(), Entry::InFlight { fingerprint });
        }

        let mut guard = Release {
            store: self.clone(),
            slot: Some(slot),
        };
        let result = command().await;
        let kept = match &result {
            Ok(response) => Some(Ok(response.encode_to_vec())),
            Err(status) if replayable(status.code()) => {
                Some(Err((status.code(), status.message().to_owned())))
            }
            Err(_) => None,
        };
        // Without a result worth keeping the guard frees the key when it drops.
        if let Some(kept) = kept
            && let Some(slot) = guard.slot.take()
            && let Ok(mut entries) = self.entries.lock()
        {
            entries.insert(
                slot,
                Entry::Done {
                    fingerprint,
                    result: kept,
                    at: Instant::now(),
                },
            );
        }
        result
    }
}

fn reused() -> Status {
    Status::invalid_argument("idempotency-key: already used for a different request")
}

/// Refusals that will not change on retry; everything else frees the key.
fn replayable(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::Unauthenticated
            | Code::Unimplemented
    )
}

/// Frees an in-flight key whose command did not leave a result (it failed retryably, or the
/// call was dropped).
struct Release {
    store: Arc<IdempotencyStore>,
    slot: Option<(String, String)>,
}

impl Drop for Release {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take()
            && let Ok(mut entries) = self.store.entries.lock()
        {
            entries.remove(&slot);
        }
    }
}

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
        let store = IdempotencyStore::new(Duration::from_secs(60), 100);
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
        let store = IdempotencyStore::new(Duration::from_secs(60), 100);
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
                Err::<u32, _>(Status::not_found("track not found"))
            })
            .await
            .unwrap_err();
        let replayed = store
            .run(&keyed("r"), "u", "/m", &2u32, || async { Ok(1u32) })
            .await
            .unwrap_err();
        assert_eq!(
            (refused.code(), replayed.message()),
            (Code::NotFound, "track not found")
        );
    }

    #[tokio::test]
    async fn bad_keys_are_invalid() {
        let store = IdempotencyStore::new(Duration::from_secs(60), 100);
        let long = "k".repeat(129);
        let status = store
            .run(&keyed(&long), "u", "/m", &1u32, || async { Ok(1u32) })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
    }
}
