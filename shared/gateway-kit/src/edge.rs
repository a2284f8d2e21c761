//! What both gateways do at their gRPC edge the same way: name the degraded mask paths of a
//! response, find the signed-in user, check ids, and keep command results for retries.

use std::{sync::Arc, time::Duration};

use authorization::Principal;
use serde::{Deserialize, Serialize};
use service_runtime::idempotency::IdempotencyStore;
use tonic::{Response, metadata::MetadataValue};

/// The response metadata key that lists the mask paths a degraded response lacks, comma
/// separated, because an upstream that serves them failed.
pub const DEGRADED_FIELDS: &str = "x-degraded-fields";

/// `message` as a response, naming the `degraded` mask paths, if any, in [`DEGRADED_FIELDS`].
pub fn with_degraded<T>(message: T, degraded: &[String]) -> Response<T> {
    let mut response = Response::new(message);
    if !degraded.is_empty()
        && let Ok(value) = MetadataValue::try_from(degraded.join(","))
    {
        response.metadata_mut().insert(DEGRADED_FIELDS, value);
    }
    response
}

/// The caller is anonymous where a signed-in user is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the token has no subject: a signed-in user is needed")]
pub struct Anonymous;

/// The signed-in user of a verified principal: the token's `sub`.
pub fn signed_in(principal: &Principal) -> Result<&str, Anonymous> {
    principal.user().ok_or(Anonymous)
}

/// An id at the edge that breaks the id rule; `field` names the request field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidId {
    pub field: &'static str,
    pub reason: service_runtime::ids::IdProblem,
}

/// Checks an id at the edge with the rule the foundation services apply
/// ([`service_runtime::ids`]), so that a bad id never costs an upstream call.
pub fn check_id(field: &'static str, id: &str) -> Result<(), InvalidId> {
    service_runtime::ids::check(id).map_err(|reason| InvalidId { field, reason })
}

/// `[idempotency]`: how long command results are kept for retries carrying the same
/// `idempotency-key`, and where: this instance's memory, or Valkey shared by the replicas.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencySettings {
    pub ttl_seconds: u64,
    /// The most keys held at once; beyond it keyed commands are RESOURCE_EXHAUSTED.
    pub max_keys: usize,
    /// The most keys one caller holds at once; beyond it that caller's keyed commands are
    /// RESOURCE_EXHAUSTED, and no one else's.
    pub max_keys_per_caller: usize,
    /// A Valkey or Redis server every replica shares the keys in (`redis://host:port`);
    /// empty: this instance's memory.
    pub valkey_url: String,
    /// With `valkey_url`, how long a command in flight holds its key: a replica that dies
    /// mid-command frees it after this.
    pub in_flight_ms: u64,
}

impl IdempotencySettings {
    /// The store these settings describe; a bad `valkey_url` is an error.
    pub fn store(&self) -> Result<Arc<IdempotencyStore>, String> {
        let ttl = Duration::from_secs(self.ttl_seconds);
        if self.valkey_url.is_empty() {
            return Ok(IdempotencyStore::new(
                ttl,
                self.max_keys,
                self.max_keys_per_caller,
            ));
        }
        IdempotencyStore::valkey(
            &self.valkey_url,
            ttl,
            self.max_keys_per_caller,
            Duration::from_millis(self.in_flight_ms),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_foundation_rule_and_name_the_field() {
        assert!(check_id("track_id", "trk_00001").is_ok());
        assert_eq!(
            check_id("track_id", "").unwrap_err().to_string(),
            "track_id: is required"
        );
        let long = "x".repeat(65);
        assert!(
            check_id("track_ids", &long)
                .unwrap_err()
                .to_string()
                .starts_with("track_ids: ")
        );
        assert!(check_id("user_id", "a b").is_err());
    }

    #[test]
    fn degraded_paths_become_one_header_and_none_adds_nothing() {
        let response = with_degraded((), &["stats.likes_count".into(), "viewer".into()]);
        assert_eq!(
            response.metadata().get(DEGRADED_FIELDS).unwrap(),
            "stats.likes_count,viewer"
        );
        assert!(
            with_degraded((), &[])
                .metadata()
                .get(DEGRADED_FIELDS)
                .is_none()
        );
    }
}
