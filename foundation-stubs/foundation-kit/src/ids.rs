//! Identifier checks. Ids are opaque to callers: 1 to 64 characters of ASCII letters, digits,
//! `_` and `-`. Seed data uses readable ids (`trk_00042`, `usr_0007`), new tracks get
//! `trk_` and a UUIDv7.

use crate::FoundationError;

/// Checks one id with the topology's id rule ([`service_runtime::ids`]), naming `field` in the
/// error.
pub fn check(field: &'static str, id: &str) -> Result<(), FoundationError> {
    service_runtime::ids::check(id)
        .map_err(|problem| FoundationError::invalid(field, problem.to_string()))
}

/// Checks a batch of ids against the batch limit, naming `field` in the error.
pub fn check_batch(field: &'static str, ids: &[String], max: usize) -> Result<(), FoundationError> {
    if ids.len() > max {
        return Err(FoundationError::invalid(
            field,
            format!("holds {} ids, more than the maximum of {max}", ids.len()),
        ));
    }
    ids.iter().try_for_each(|id| check(field, id))
}

/// A new track id.
pub fn new_track_id() -> String {
    format!("trk_{}", uuid::Uuid::now_v7().simple())
}

/// A new event id: UUIDv7, so that ids sort roughly by time.
pub fn new_event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_good_ids_and_names_the_field_for_bad_ones() {
        check("track_id", "trk_00042").unwrap();
        check("track_id", &new_track_id()).unwrap();
        for bad in ["", "a b", "x/y", "é", &"a".repeat(65)] {
            let error = check("track_id", bad).unwrap_err().to_string();
            assert!(error.starts_with("track_id: "), "{error}");
        }
    }

    #[test]
    fn a_batch_over_the_limit_is_rejected() {
        let ids = vec!["a".to_string(); 3];
        check_batch("ids", &ids, 3).unwrap();
        let error = check_batch("ids", &ids, 2).unwrap_err().to_string();
        assert!(error.contains("more than the maximum of 2"), "{error}");
    }
}
