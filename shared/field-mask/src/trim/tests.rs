use prost::Message;
use prost_reflect::{DynamicMessage, ReflectMessage, Value};

use crate::mask::Mask;
use crate::test_view::{full_track, leaf_paths, track};

fn mask(paths: &[&str]) -> Mask {
    track().parse_paths(paths.iter().copied()).unwrap()
}

fn trimmed(paths: &[&str]) -> DynamicMessage {
    let mut message = full_track();
    mask(paths).trim(&mut message);
    message
}

#[test]
fn the_whole_view_keeps_everything() {
    let mut message = full_track();
    Mask::all().trim(&mut message);
    assert_eq!(message, full_track());
}

#[test]
fn keeps_exactly_the_covered_leaves() {
    let message = trimmed(&["title", "creator.followers_count", "stats", "tags"]);
    assert_eq!(
        leaf_paths(&message),
        [
            "creator.followers_count",
            "stats.likes_count",
            "stats.reposts_count",
            "tags",
            "title"
        ]
    );
}

#[test]
fn a_message_field_the_mask_enters_stays_present() {
    let mut message = full_track();
    message.clear_field_by_name("creator");
    let mut creator = DynamicMessage::new(crate::test_view::message("Creator"));
    creator.set_field_by_name("id", Value::String("u1".to_owned()));
    message.set_field_by_name("creator", Value::Message(creator));
    mask(&["creator.followers_count"]).trim(&mut message);
    assert!(message.has_field_by_name("creator"));
    assert_eq!(leaf_paths(&message), ["creator"]);
}

#[test]
fn an_unset_message_field_is_not_created() {
    let mut message = full_track();
    message.clear_field_by_name("viewer");
    mask(&["viewer.liked", "id"]).trim(&mut message);
    assert!(!message.has_field_by_name("viewer"));
    assert_eq!(leaf_paths(&message), ["id"]);
}

#[test]
fn nothing_clears_everything() {
    let mut message = full_track();
    Mask::nothing().trim(&mut message);
    assert!(leaf_paths(&message).is_empty());
}

#[test]
fn unknown_fields_are_cleared() {
    // Field 99 is not in the view: append it to the encoding and decode again.
    let mut bytes = full_track().encode_to_vec();
    bytes.extend_from_slice(&[0x98, 0x06, 0x01]);
    let mut message =
        DynamicMessage::decode(crate::test_view::message("Track"), bytes.as_slice()).unwrap();
    assert_eq!(message.unknown_fields().count(), 1);
    mask(&["title"]).trim(&mut message);
    assert_eq!(message.unknown_fields().count(), 0);
    assert_eq!(leaf_paths(&message), ["title"]);
}

#[test]
fn trims_generated_messages() {
    // prost_types::Duration stands in for a generated message of a view: prost-reflect knows its
    // descriptor, so it serves both helpers.
    let schema = crate::ViewSchema::new(prost_types::Duration::default().descriptor()).unwrap();
    let seconds_only = schema.parse_paths(["seconds"]).unwrap();
    let expected = prost_types::Duration {
        seconds: 3,
        nanos: 0,
    };

    let mut duration = prost_types::Duration {
        seconds: 3,
        nanos: 4,
    };
    schema.trim_prost(&seconds_only, &mut duration).unwrap();
    assert_eq!(duration, expected);

    let mut duration = prost_types::Duration {
        seconds: 3,
        nanos: 4,
    };
    seconds_only.trim_reflect(&mut duration).unwrap();
    assert_eq!(duration, expected);
}

#[test]
fn trimming_the_encoding_drops_unknown_fields_and_keeps_entered_messages() {
    let mut bytes = full_track().encode_to_vec();
    bytes.extend_from_slice(&[0x98, 0x06, 0x01]);
    let kept = track()
        .trim_encoded(&mask(&["creator.followers_count", "title"]), &bytes)
        .unwrap();
    let message =
        DynamicMessage::decode(crate::test_view::message("Track"), kept.as_slice()).unwrap();
    assert_eq!(message.unknown_fields().count(), 0);
    assert_eq!(leaf_paths(&message), ["creator.followers_count", "title"]);
}

#[test]
fn trimming_an_encoding_that_is_not_a_message_fails() {
    // A length-delimited field 1 that claims 100 bytes where there are 2.
    let error = track().trim_encoded(&mask(&["title"]), &[0x0a, 100, 1, 2]);
    assert!(error.is_err());
}

#[test]
fn trimming_the_encoding_keeps_an_entered_message_present_when_nothing_in_it_is_covered() {
    // The creator carries only its id; the mask enters it for a count it does not carry.
    let mut message = full_track();
    let mut creator = DynamicMessage::new(crate::test_view::message("Creator"));
    creator.set_field_by_name("id", Value::String("u1".to_owned()));
    message.set_field_by_name("creator", Value::Message(creator));
    let kept = track()
        .trim_encoded(
            &mask(&["creator.followers_count"]),
            &message.encode_to_vec(),
        )
        .unwrap();
    let trimmed =
        DynamicMessage::decode(crate::test_view::message("Track"), kept.as_slice()).unwrap();
    assert!(
        trimmed.has_field_by_name("creator"),
        "the creator stays, empty"
    );
    assert_eq!(leaf_paths(&trimmed), ["creator"]);
    // As `Mask::trim` keeps it on the message itself.
    mask(&["creator.followers_count"]).trim(&mut message);
    assert_eq!(trimmed, message);
}
