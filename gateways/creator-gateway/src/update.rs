//! `UpdateTrack`'s `update_mask` (AIP-134): which creator view paths a caller may change, and
//! their names in the tracks service's `TrackMetadata`.
//!
//! The mask is required: proto3 cannot tell an unset scalar from one set to its default, so an
//! implied mask of "the populated fields" could never clear a description or turn
//! `downloadable` off. `*` means every updatable field (a full replacement of the writable
//! part). Output-only paths are refused with a message that says so, unknown paths with the
//! field mask crate's message naming the path.

use field_mask::ViewSchema;

use crate::GatewayError;

/// Output-only fields of the view and everything inside them.
const OUTPUT_ONLY: &[&str] = &[
    "audio",
    "created_at",
    "id",
    "secret_token",
    "stats",
    "updated_at",
];

/// The updatable view paths and their `TrackMetadata` paths in the tracks service.
pub(crate) const UPDATABLE: &[(&str, &str)] = &[
    ("artwork_url", "artwork_url"),
    ("description", "description"),
    ("downloadable", "downloadable"),
    ("duration", "duration"),
    ("genre", "genre"),
    ("geoblocking", "geoblocking"),
    ("geoblocking.mode", "geoblocking.mode"),
    ("geoblocking.territories", "geoblocking.territories"),
    ("title", "title"),
    ("visibility", "visibility"),
];

/// Checks `update_mask` against the view and returns the tracks service's paths for it.
pub fn tracks_paths(
    schema: &ViewSchema,
    update_mask: Option<prost_types::FieldMask>,
) -> Result<Vec<String>, GatewayError> {
    let given = update_mask.map(|mask| mask.paths).unwrap_or_default();
    if given.is_empty() {
        return Err(GatewayError::invalid(
            "update_mask",
            "is required: name the fields to change",
        ));
    }
    let mask = schema
        .parse_paths(given.iter().map(String::as_str))
        .map_err(|error| GatewayError::invalid("update_mask", error.user_message()))?;
    let Some(paths) = mask.paths() else {
        // `*`: every updatable field, and nothing output only. An output-only path beside the
        // `*` is still refused by name rather than swallowed by it.
        for path in given.iter().filter(|path| *path != "*") {
            writable(path)?;
        }
        return Ok(UPDATABLE
            .iter()
            .filter(|(view, _)| !view.contains('.'))
            .map(|(_, tracks)| (*tracks).to_owned())
            .collect());
    };
    paths
        .iter()
        .map(|path| {
            writable(path)?;
            UPDATABLE
                .iter()
                .find(|(view, _)| view == path)
                .map(|(_, tracks)| (*tracks).to_owned())
                .ok_or_else(|| {
                    GatewayError::invalid(
                        "update_mask",
                        format!("{path:?} cannot be changed on its own: name its field as a whole"),
                    )
                })
        })
        .collect()
}

/// Refuses an output-only path by name.
fn writable(path: &str) -> Result<(), GatewayError> {
    match OUTPUT_ONLY.iter().find(|field| within(path, field)) {
        Some(field) => Err(GatewayError::invalid(
            "update_mask",
            format!("{path:?} is output only: {field} cannot be changed"),
        )),
        None => Ok(()),
    }
}

/// Whether `path` is `field` or inside it.
fn within(path: &str, field: &str) -> bool {
    path.strip_prefix(field)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::CreatorView;

    fn paths(given: &[&str]) -> Result<Vec<String>, String> {
        let view = CreatorView::load().unwrap();
        let mask = prost_types::FieldMask {
            paths: given.iter().map(|p| (*p).to_owned()).collect(),
        };
        tracks_paths(view.schema(), Some(mask)).map_err(|error| error.to_string())
    }

    #[test]
    fn updatable_paths_map_to_the_tracks_metadata_paths() {
        assert_eq!(
            paths(&["title", "geoblocking.mode"]).unwrap(),
            ["geoblocking.mode", "title"]
        );
        assert_eq!(
            paths(&["geoblocking", "geoblocking.territories"]).unwrap(),
            ["geoblocking"]
        );
        let everything = paths(&["*"]).unwrap();
        assert_eq!(everything.len(), 8);
        assert!(!everything.iter().any(|p| OUTPUT_ONLY.contains(&p.as_str())));
    }

    #[test]
    fn output_only_unknown_partial_and_missing_paths_are_refused_by_name() {
        for output_only in [
            "id",
            "created_at",
            "updated_at",
            "stats",
            "stats.likes_count",
            "secret_token",
            "audio",
            "audio.sha256",
            "created_at.seconds",
        ] {
            let error = paths(&["title", output_only]).unwrap_err();
            assert!(
                error.starts_with(&format!("update_mask: {output_only:?} is output only")),
                "{error}"
            );
            // A `*` beside it does not hide it (the `creator_request` fuzz target checks this too).
            for given in [["*", output_only], [output_only, "*"]] {
                let error = paths(&given).unwrap_err();
                assert!(
                    error.starts_with(&format!("update_mask: {output_only:?} is output only")),
                    "{given:?}: {error}"
                );
            }
        }
        let unknown = paths(&["title", "owner_id"]).unwrap_err();
        assert!(unknown.contains("\"owner_id\""), "{unknown}");
        assert!(unknown.starts_with("update_mask: "), "{unknown}");
        let partial = paths(&["duration.seconds"]).unwrap_err();
        assert!(
            partial.contains("cannot be changed on its own"),
            "{partial}"
        );
        assert_eq!(
            paths(&[]).unwrap_err(),
            "update_mask: is required: name the fields to change"
        );
    }
}
