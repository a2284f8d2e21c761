//! The test view of `tests/view.proto`, compiled once per test binary, and sample messages of
//! it. Shared by the unit tests, the integration tests and the benchmarks through `#[path]`.

// Each includer uses only some of these helpers.
#![allow(dead_code)]

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, Value};

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests");
    let files = protox::compile(["view.proto"], [dir]).expect("the test view compiles");
    DescriptorPool::from_file_descriptor_set(files).expect("the test view is a valid pool")
});

/// A message of the test package by its short name.
pub(crate) fn message(name: &str) -> MessageDescriptor {
    POOL.get_message_by_name(&format!("testview.v1.{name}"))
        .expect("the test package has the message")
}

/// A Track with every field set to a non-default value.
pub(crate) fn full_track() -> DynamicMessage {
    let mut track = DynamicMessage::new(message("Track"));
    for (name, value) in [
        ("id", "t1"),
        ("title", "Night Drive"),
        ("description", "a long one"),
        ("genre", "ambient"),
        ("artwork_url", "https://art/t1.png"),
    ] {
        track.set_field_by_name(name, Value::String(value.to_owned()));
    }
    track.set_field_by_name(
        "duration",
        Value::Message(sub(
            "google.protobuf.Duration",
            &[("seconds", Value::I64(215)), ("nanos", Value::I32(5))],
        )),
    );
    track.set_field_by_name(
        "created_at",
        Value::Message(sub(
            "google.protobuf.Timestamp",
            &[("seconds", Value::I64(1_700_000_000))],
        )),
    );
    track.set_field_by_name(
        "creator",
        Value::Message(sub(
            "testview.v1.Creator",
            &[
                ("id", Value::String("u1".to_owned())),
                ("display_name", Value::String("Ada".to_owned())),
                ("followers_count", Value::I64(42)),
                ("followed_by_viewer", Value::Bool(true)),
            ],
        )),
    );
    track.set_field_by_name(
        "stats",
        Value::Message(sub(
            "testview.v1.Stats",
            &[
                ("likes_count", Value::I64(7)),
                ("reposts_count", Value::I64(3)),
            ],
        )),
    );
    track.set_field_by_name(
        "viewer",
        Value::Message(sub(
            "testview.v1.Viewer",
            &[
                ("liked", Value::Bool(true)),
                ("reposted", Value::Bool(true)),
            ],
        )),
    );
    track.set_field_by_name(
        "access",
        Value::Message(sub(
            "testview.v1.Access",
            &[("downloadable", Value::Bool(true))],
        )),
    );
    track.set_field_by_name(
        "tags",
        Value::List(vec![
            Value::String("night".to_owned()),
            Value::String("synth".to_owned()),
        ]),
    );
    let mut labels = std::collections::HashMap::new();
    labels.insert(
        prost_reflect::MapKey::String("mood".to_owned()),
        Value::String("calm".to_owned()),
    );
    track.set_field_by_name("labels", Value::Map(labels));
    track.set_field_by_name(
        "collaborators",
        Value::List(vec![Value::Message(sub(
            "testview.v1.Creator",
            &[("id", Value::String("u2".to_owned()))],
        ))]),
    );
    track.set_field_by_name("plays_count", Value::I64(0));
    track
}

fn sub(full_name: &str, fields: &[(&str, Value)]) -> DynamicMessage {
    let descriptor = POOL
        .get_message_by_name(full_name)
        .expect("the pool has the message");
    let mut message = DynamicMessage::new(descriptor);
    for (name, value) in fields {
        message.set_field_by_name(name, value.clone());
    }
    message
}

/// Every leaf path set in `message`: scalars, lists and maps, and message fields that are set
/// but empty.
pub(crate) fn leaf_paths(message: &DynamicMessage) -> Vec<String> {
    let mut out = Vec::new();
    collect_leaves(message, "", &mut out);
    out.sort();
    out
}

fn collect_leaves(message: &DynamicMessage, prefix: &str, out: &mut Vec<String>) {
    for (field, value) in message.fields() {
        let path = format!("{prefix}{}", field.name());
        match value {
            Value::Message(inner) if !field.is_list() && !field.is_map() => {
                let before = out.len();
                collect_leaves(inner, &format!("{path}."), out);
                if out.len() == before {
                    out.push(path);
                }
            }
            _ => out.push(path),
        }
    }
}

/// The paths of the set fields that hold values (scalars, lists, maps), leaving out message
/// fields: what a trim keeps or clears.
pub(crate) fn value_paths(message: &DynamicMessage) -> Vec<String> {
    let mut out = Vec::new();
    collect_values(message, "", &mut out);
    out.sort();
    out
}

fn collect_values(message: &DynamicMessage, prefix: &str, out: &mut Vec<String>) {
    for (field, value) in message.fields() {
        let path = format!("{prefix}{}", field.name());
        match value {
            Value::Message(inner) if !field.is_list() && !field.is_map() => {
                collect_values(inner, &format!("{path}."), out);
            }
            _ => out.push(path),
        }
    }
}

/// Every valid path of `message`'s view, through singular message fields, down to `depth`
/// segments.
pub(crate) fn all_paths(message: &MessageDescriptor, depth: usize) -> Vec<String> {
    let mut out = Vec::new();
    collect_paths(message, "", depth, &mut out);
    out.sort();
    out
}

fn collect_paths(message: &MessageDescriptor, prefix: &str, depth: usize, out: &mut Vec<String>) {
    if depth == 0 {
        return;
    }
    for field in message.fields() {
        let path = format!("{prefix}{}", field.name());
        if let prost_reflect::Kind::Message(inner) = field.kind()
            && !field.is_list()
            && !field.is_map()
        {
            collect_paths(&inner, &format!("{path}."), depth - 1, out);
        }
        out.push(path);
    }
}

/// Clears the fields at `paths` where they are set; paths through unset messages are skipped.
pub(crate) fn clear_paths(message: &mut DynamicMessage, paths: &[String]) {
    for path in paths {
        let mut current = &mut *message;
        let mut segments = path.split('.').peekable();
        while let Some(segment) = segments.next() {
            if segments.peek().is_none() {
                current.clear_field_by_name(segment);
                break;
            }
            if !current.has_field_by_name(segment) {
                break;
            }
            match current
                .get_field_by_name_mut(segment)
                .and_then(Value::as_message_mut)
            {
                Some(inner) => current = inner,
                None => break,
            }
        }
    }
}
