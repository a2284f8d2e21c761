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

/// Checks a batch of id pairs, such as (user, track), against the batch limit, naming `field`,
/// the entry and the member (`names`) in the error.
pub fn check_pairs<'a>(
    field: &'static str,
    names: (&str, &str),
    pairs: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
    max: usize,
) -> Result<(), FoundationError> {
    if pairs.len() > max {
        return Err(FoundationError::invalid(
            field,
            format!("holds {} keys, more than the maximum of {max}", pairs.len()),
        ));
    }
    for (index, (first, second)) in pairs.enumerate() {
        for (name, id) in [(names.0, first), (names.1, second)] {
            service_runtime::ids::check(id).map_err(|problem| {
                FoundationError::invalid(field, format!("entry {index}: {name}: {problem}"))
            })?;
        }
    }
    Ok(())
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

    #[test]
    fn pairs_are_checked_against_the_limit_and_name_the_bad_member() {
        let pairs = [("usr_1", "trk_1"), ("usr_2", "a b")];
        let error = check_pairs("keys", ("user_id", "track_id"), pairs.into_iter(), 2)
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("keys: entry 1: track_id: "), "{error}");
        let error = check_pairs("keys", ("user_id", "track_id"), pairs.into_iter(), 1)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("holds 2 keys, more than the maximum of 1"),
            "{error}"
        );
        check_pairs(
            "keys",
            ("user_id", "track_id"),
            pairs[..1].iter().copied(),
            1,
        )
        .unwrap();
    }
}
