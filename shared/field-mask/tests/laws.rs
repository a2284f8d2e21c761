//! Property tests for the laws of masks: the algebra, trimming and the JSON form.
//!
//! Masks are drawn from every valid path of the Track test view (through `duration` and
//! `created_at` too), plus the whole view; messages are the full test Track with random fields
//! cleared.

#[path = "common/view.rs"]
mod view;

use std::collections::BTreeSet;
use std::sync::LazyLock;

use field_mask::{Mask, ViewSchema};
use proptest::prelude::*;
use prost::Message;
use prost_reflect::{DynamicMessage, ReflectMessage};

use view::{all_paths, clear_paths, full_track, message, value_paths};

static SCHEMA: LazyLock<ViewSchema> =
    LazyLock::new(|| ViewSchema::new(message("Track")).expect("the track view is valid"));

static PATHS: LazyLock<Vec<String>> = LazyLock::new(|| all_paths(&message("Track"), 3));

fn path() -> impl Strategy<Value = String> {
    prop::sample::select(PATHS.clone())
}

fn paths() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(path(), 1..8)
}

fn mask() -> impl Strategy<Value = Mask> {
    prop_oneof![
        1 => Just(Mask::all()),
        9 => paths().prop_map(|paths| SCHEMA.parse_paths(paths).expect("generated paths are valid")),
    ]
}

/// The full test Track with some fields cleared.
fn track_message() -> impl Strategy<Value = DynamicMessage> {
    prop::collection::vec(path(), 0..6).prop_map(|cleared| {
        let mut message = full_track();
        clear_paths(&mut message, &cleared);
        message
    })
}

fn trimmed(message: &DynamicMessage, mask: &Mask) -> DynamicMessage {
    let mut message = message.clone();
    mask.trim(&mut message);
    message
}

fn kept(message: &DynamicMessage, mask: &Mask) -> BTreeSet<String> {
    value_paths(&trimmed(message, mask)).into_iter().collect()
}

proptest! {
    #[test]
    fn normalize_is_idempotent(mask in mask()) {
        let again = match mask.paths() {
            None => SCHEMA.parse_paths(["*"]).unwrap(),
            Some(paths) => SCHEMA.parse_paths(paths.iter().cloned()).unwrap(),
        };
        prop_assert_eq!(&again, &mask);
    }

    #[test]
    fn normal_form_ignores_order_and_repetition(mut paths in paths()) {
        let mask = SCHEMA.parse_paths(paths.clone()).unwrap();
        paths.reverse();
        paths.extend(paths.clone());
        prop_assert_eq!(SCHEMA.parse_paths(paths).unwrap(), mask);
    }

    #[test]
    fn union_is_commutative(a in mask(), b in mask()) {
        prop_assert_eq!(a.union(&b), b.union(&a));
    }

    #[test]
    fn union_is_associative(a in mask(), b in mask(), c in mask()) {
        prop_assert_eq!(a.union(&b).union(&c), a.union(&b.union(&c)));
    }

    #[test]
    fn union_covers_both(a in mask(), b in mask()) {
        let union = a.union(&b);
        prop_assert!(union.covers_mask(&a));
        prop_assert!(union.covers_mask(&b));
    }

    #[test]
    fn intersect_is_covered_by_both(a in mask(), b in mask()) {
        let both = a.intersect(&b);
        prop_assert!(a.covers_mask(&both));
        prop_assert!(b.covers_mask(&both));
        prop_assert_eq!(&both, &b.intersect(&a));
    }

    #[test]
    fn trim_with_the_whole_view_is_the_identity(message in track_message()) {
        prop_assert_eq!(trimmed(&message, &Mask::all()), message.clone());
        prop_assert_eq!(trimmed(&message, &SCHEMA.parse_json("*").unwrap()), message);
    }

    #[test]
    fn trim_with_a_union_keeps_what_either_keeps(
        message in track_message(),
        a in mask(),
        b in mask(),
    ) {
        let either: BTreeSet<String> = kept(&message, &a).union(&kept(&message, &b)).cloned().collect();
        prop_assert_eq!(kept(&message, &a.union(&b)), either);
    }

    #[test]
    fn trim_with_an_intersection_keeps_what_both_keep(
        message in track_message(),
        a in mask(),
        b in mask(),
    ) {
        let both: BTreeSet<String> = kept(&message, &a).intersection(&kept(&message, &b)).cloned().collect();
        prop_assert_eq!(kept(&message, &a.intersect(&b)), both);
    }

    #[test]
    fn trim_with_a_difference_keeps_what_only_the_first_keeps(
        message in track_message(),
        a in mask(),
        b in mask(),
    ) {
        let only_a: BTreeSet<String> = kept(&message, &a).difference(&kept(&message, &b)).cloned().collect();
        prop_assert_eq!(kept(&message, &a.subtract(&b, &SCHEMA)), only_a);
    }

    #[test]
    fn a_path_is_covered_iff_trim_keeps_it(message in track_message(), mask in mask()) {
        let kept = kept(&message, &mask);
        for path in value_paths(&message) {
            prop_assert_eq!(mask.covers(&path), kept.contains(&path), "path {}", path);
        }
    }

    #[test]
    fn trimming_the_encoding_keeps_what_trimming_the_message_keeps(
        message in track_message(),
        mask in mask(),
    ) {
        let encoded = message.encode_to_vec();
        let kept = SCHEMA.trim_encoded(&mask, &encoded).unwrap();
        let decoded = DynamicMessage::decode(message.descriptor(), kept.as_slice()).unwrap();
        prop_assert_eq!(decoded, trimmed(&message, &mask));
    }

    #[test]
    fn trimming_twice_changes_nothing(message in track_message(), mask in mask()) {
        let once = trimmed(&message, &mask);
        prop_assert_eq!(trimmed(&once, &mask), once);
    }

    #[test]
    fn the_json_form_round_trips(mask in mask()) {
        let json = mask.to_json();
        prop_assert_eq!(SCHEMA.parse_json(&json).unwrap(), mask.clone());
        prop_assert_eq!(SCHEMA.parse_paths(mask.to_field_mask().paths).unwrap(), mask);
    }

    #[test]
    fn accepted_json_strings_round_trip(json in "[a-zA-Z_.,*]{0,40}") {
        if let Ok(mask) = SCHEMA.parse_json(&json) {
            prop_assert_eq!(SCHEMA.parse_json(&mask.to_json()).unwrap(), mask);
        }
    }

    #[test]
    fn arbitrary_paths_parse_or_fail_cleanly(paths in prop::collection::vec(".{0,24}", 0..4)) {
        match SCHEMA.parse_paths(paths.clone()) {
            Ok(mask) => prop_assert_eq!(SCHEMA.parse_json(&mask.to_json()).unwrap(), mask),
            Err(error) => prop_assert!(!error.user_message().is_empty()),
        }
    }
}
