//! The idempotency keys in Valkey or Redis, shared by every replica of a gateway.
//!
//! Each key is one string, `idem:{caller}:{key}`, and each caller's keys are listed in a sorted
//! set, `idem-keys:{caller}`, scored by when they expire, which bounds how many one caller
//! holds. Three Lua scripts change them atomically on the server, with the server's clock:
//!
//! - acquire: the entry if the key is held (a result, or a marker of a call in flight), else
//!   the caller's quota, else the key is marked in flight for `in_flight` by this call;
//! - complete: the marker becomes the result, kept for `ttl`, if the marker is still this
//!   call's;
//! - release: the marker goes, if it is still this call's (the command left nothing worth
//!   replaying, or its call was dropped).
//!
//! Values start with a kind byte (`i` in flight, `o` a response, `e` a refusal), then the
//! request's fingerprint (SHA-256 of the method and the encoded request, in hex, the same in
//! every replica); a marker ends with a nonce of its call, a response with its encoded bytes,
//! a refusal with its code, a newline and its message.

use std::{sync::Arc, time::Duration};

use prost::Message;
use redis::{
    Script,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use sha2::{Digest, Sha256};
use tonic::{Code, Status};

use super::{IdempotencyStore, in_progress, kept, over_quota, reused};

/// KEYS: the entry, the caller's set. ARGV: the marker, the in-flight milliseconds, the
/// caller's quota, the set's lifetime in milliseconds.
const ACQUIRE: &str = r"
local held = redis.call('GET', KEYS[1])
if held then return {'held', held} end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return {'quota', ''} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), KEYS[1])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return {'acquired', ''}
";

/// KEYS: the entry, the caller's set. ARGV: the marker, the result, its milliseconds, the
/// set's lifetime in milliseconds.
const COMPLETE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), KEYS[1])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
";

/// KEYS: the entry, the caller's set. ARGV: the marker.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], KEYS[1])
return 1
";

/// The connection and the scripts.
#[derive(Clone)]
pub(super) struct Shared {
    connection: ConnectionManager,
    in_flight: Duration,
    acquire: Arc<Script>,
    complete: Arc<Script>,
    release: Arc<Script>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

/// The keys of one (caller, key).
struct Slot {
    entry: String,
    set: String,
    marker: Vec<u8>,
}

fn unavailable(error: &redis::RedisError) -> Status {
    tracing::warn!(%error, "the idempotency store is unreachable");
    Status::unavailable("the idempotency store is unavailable; retry later")
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl Shared {
    pub(super) fn new(url: &str, in_flight: Duration) -> Result<Self, String> {
        let client =
            redis::Client::open(url).map_err(|error| format!("idempotency.valkey_url: {error}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|error| format!("idempotency.valkey_url: {error}"))?;
        Ok(Self {
            connection,
            in_flight,
            acquire: Arc::new(Script::new(ACQUIRE)),
            complete: Arc::new(Script::new(COMPLETE)),
            release: Arc::new(Script::new(RELEASE)),
        })
    }

    /// [`IdempotencyStore::run`] on the shared store, once the key is known good.
    pub(super) async fn run<Req, Resp, F, Fut>(
        &self,
        store: &IdempotencyStore,
        caller: &str,
        key: &str,
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
        let mut digest = Sha256::new();
        digest.update(method.as_bytes());
        digest.update([0]);
        digest.update(request.encode_to_vec());
        let fingerprint = hex::encode(digest.finalize());
        let mut marker = Vec::with_capacity(1 + 64 + 16);
        marker.push(b'i');
        marker.extend_from_slice(fingerprint.as_bytes());
        marker.extend_from_slice(format!("{:016x}", fastrand::u64(..)).as_bytes());
        let slot = Slot {
            entry: format!("idem:{caller}:{key}"),
            set: format!("idem-keys:{caller}"),
            marker,
        };
        let lifetime = millis(store.ttl.max(self.in_flight));

        let mut connection = self.connection.clone();
        let (state, held): (String, Vec<u8>) = self
            .acquire
            .key(&slot.entry)
            .key(&slot.set)
            .arg(&slot.marker)
            .arg(millis(self.in_flight))
            .arg(store.max_per_caller)
            .arg(lifetime)
            .invoke_async(&mut connection)
            .await
            .map_err(|error| unavailable(&error))?;
        match state.as_str() {
            "acquired" => {}
            "quota" => return Err(over_quota(store.max_per_caller)),
            _ => return replay(&held, fingerprint.as_bytes()),
        }

        let mut guard = Release {
            shared: self.clone(),
            slot: Some(slot),
        };
        let result = command().await;
        let Some(slot) = guard.slot.take() else {
            return result;
        };
        match kept(&result) {
            Some(kept) => {
                let mut value = Vec::with_capacity(65);
                match kept {
                    Ok(bytes) => {
                        value.push(b'o');
                        value.extend_from_slice(fingerprint.as_bytes());
                        value.extend_from_slice(&bytes);
                    }
                    Err((code, message)) => {
                        value.push(b'e');
                        value.extend_from_slice(fingerprint.as_bytes());
                        value.extend_from_slice(format!("{}\n{message}", code as i32).as_bytes());
                    }
                }
                let stored: Result<i64, _> = self
                    .complete
                    .key(&slot.entry)
                    .key(&slot.set)
                    .arg(&slot.marker)
                    .arg(value)
                    .arg(millis(store.ttl))
                    .arg(lifetime)
                    .invoke_async(&mut connection)
                    .await;
                // The command ran: its answer goes back whatever the store says. A result that
                // could not be kept leaves the marker to lapse, and a retry until then is
                // ABORTED rather than run twice.
                if let Err(error) = stored {
                    tracing::warn!(%error, "cannot keep a command's result for its retries");
                }
            }
            None => self.free(slot).await,
        }
        result
    }

    /// Removes this call's marker.
    async fn free(&self, slot: Slot) {
        let mut connection = self.connection.clone();
        let freed: Result<i64, _> = self
            .release
            .key(&slot.entry)
            .key(&slot.set)
            .arg(&slot.marker)
            .invoke_async(&mut connection)
            .await;
        if let Err(error) = freed {
            tracing::warn!(%error, "cannot free an idempotency key; it lapses with its marker");
        }
    }
}

/// What a held key answers: its result, ABORTED while its call is in flight, or
/// INVALID_ARGUMENT when it was used for another request.
fn replay<Resp: Message + Default>(held: &[u8], fingerprint: &[u8]) -> Result<Resp, Status> {
    let internal = || Status::internal("internal error");
    let (kind, rest) = held.split_first().ok_or_else(internal)?;
    if rest.len() < fingerprint.len() || &rest[..fingerprint.len()] != fingerprint {
        return Err(reused());
    }
    let body = &rest[fingerprint.len()..];
    match kind {
        b'i' => Err(in_progress()),
        b'o' => Resp::decode(body).map_err(|_| internal()),
        b'e' => {
            let text = std::str::from_utf8(body).map_err(|_| internal())?;
            let (code, message) = text.split_once('\n').ok_or_else(internal)?;
            let code: i32 = code.parse().map_err(|_| internal())?;
            Err(Status::new(Code::from(code), message))
        }
        _ => Err(internal()),
    }
}

/// Frees the marker of a call that was dropped before its command ended.
struct Release {
    shared: Shared,
    slot: Option<Slot>,
}

impl Drop for Release {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let shared = self.shared.clone();
            runtime.spawn(async move { shared.free(slot).await });
        }
    }
}

#[cfg(test)]
mod tests;
