//! What both targets check of a trimmed view, written from the field mask rules rather than
//! with the field-mask crate's own coverage functions.

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, Value};

/// A view message's descriptor from one of `protos::descriptors`.
pub fn descriptor(set: &[u8], name: &str) -> MessageDescriptor {
    DescriptorPool::decode(set)
        .expect("the descriptor set decodes")
        .get_message_by_name(name)
        .expect("the view is in its descriptor set")
}

/// Whether a mask (`None`: the whole view) covers `path`: names it or one of its ancestors.
pub fn covers(mask: Option<&[String]>, path: &str) -> bool {
    mask.is_none_or(|paths| {
        paths.iter().any(|masked| {
            path.strip_prefix(masked.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        })
    })
}

/// Whether a mask names a path strictly inside `path`.
pub fn enters(mask: Option<&[String]>, path: &str) -> bool {
    mask.is_some_and(|paths| {
        paths.iter().any(|masked| {
            masked
                .strip_prefix(path)
                .is_some_and(|rest| rest.starts_with('.'))
        })
    })
}

/// Every set field of `message` by path: message fields without a value (their fields follow),
/// the others with theirs.
pub fn set_fields(
    descriptor: &MessageDescriptor,
    message: &impl Message,
) -> Vec<(String, Option<Value>)> {
    let dynamic = DynamicMessage::decode(descriptor.clone(), message.encode_to_vec().as_slice())
        .expect("a view message decodes as its descriptor");
    let mut out = Vec::new();
    walk(&dynamic, "", &mut out);
    out
}

fn walk(message: &DynamicMessage, prefix: &str, out: &mut Vec<(String, Option<Value>)>) {
    for (field, value) in message.fields() {
        let path = format!("{prefix}{}", field.name());
        match value {
            Value::Message(inner) => {
                out.push((path.clone(), None));
                walk(inner, &format!("{path}."), out);
            }
            other => out.push((path, Some(other.clone()))),
        }
    }
}

/// A trimmed view holds only what the mask covers (and the messages leading to a masked
/// path), and everything the mask covers that the whole view had.
pub fn check_trimmed(
    descriptor: &MessageDescriptor,
    mask: Option<&[String]>,
    whole: &impl Message,
    trimmed: &impl Message,
) {
    let kept = set_fields(descriptor, trimmed);
    for (path, value) in &kept {
        assert!(
            covers(mask, path) || (value.is_none() && enters(mask, path)),
            "{path} survived a trim to {mask:?}"
        );
    }
    for (path, value) in set_fields(descriptor, whole) {
        if value.is_some() && covers(mask, &path) {
            assert!(
                kept.contains(&(path.clone(), value)),
                "{path} was covered by {mask:?} but trimmed away"
            );
        }
    }
}
