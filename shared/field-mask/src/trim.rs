//! Trimming a message to a mask: every field the mask does not cover is cleared.
//!
//! The walk follows the message, not the mask: at each level it looks each set field up in the
//! slice of mask paths under that level (a binary search, because the paths are sorted), keeps
//! it whole, recurses into it, or clears it. Unknown fields and extensions are cleared at every
//! level the walk enters, since no path can cover them.

use prost::Message;
use prost_reflect::{DynamicMessage, ReflectMessage};

use crate::mask::{Mask, path_covers};
use crate::schema::ViewSchema;

/// What a mask does with one field at one level.
enum Selection {
    /// The field is covered: keep it as it is.
    Whole,
    /// Only paths inside the field are selected: these ones, at this index range.
    Inside(std::ops::Range<usize>),
    /// Nothing in the field is selected.
    None,
}

impl Mask {
    /// Clears every field of `message` that the mask does not cover.
    ///
    /// A message field that the mask enters (for `creator.id`, the field `creator`) stays
    /// present when it was present, even if nothing inside it survives, as in FieldMaskUtil.
    pub fn trim(&self, message: &mut DynamicMessage) {
        if let Some(paths) = self.paths() {
            trim_level(message, paths, 0);
        }
    }

    /// Trims a generated message that implements [`ReflectMessage`], by way of a
    /// [`DynamicMessage`] (one encode and two decodes).
    pub fn trim_reflect<M>(&self, message: &mut M) -> Result<(), prost::DecodeError>
    where
        M: ReflectMessage + Default,
    {
        if self.is_all() {
            return Ok(());
        }
        let mut dynamic = message.transcode_to_dynamic();
        self.trim(&mut dynamic);
        *message = dynamic.transcode_to()?;
        Ok(())
    }
}

impl ViewSchema {
    /// Trims any generated message of this view's type (it need not implement
    /// [`ReflectMessage`]), by way of a [`DynamicMessage`] of the view's descriptor.
    ///
    /// Fails only if `message` is not of the view's type.
    pub fn trim_prost<M>(&self, mask: &Mask, message: &mut M) -> Result<(), prost::DecodeError>
    where
        M: Message + Default,
    {
        if mask.is_all() {
            return Ok(());
        }
        let mut dynamic = DynamicMessage::decode(
            self.descriptor().clone(),
            message.encode_to_vec().as_slice(),
        )?;
        mask.trim(&mut dynamic);
        *message = dynamic.transcode_to()?;
        Ok(())
    }
}

/// Trims `message`, whose mask paths are `paths`: sorted, none covering another, all sharing
/// their first `offset` bytes (the path of `message` and a dot).
fn trim_level(message: &mut DynamicMessage, paths: &[String], offset: usize) {
    for _ in message.take_unknown_fields() {}
    for _ in message.take_extensions() {}
    let descriptor = message.descriptor();
    for field in descriptor.fields() {
        if !message.has_field(&field) {
            continue;
        }
        match select(paths, offset, field.name()) {
            Selection::Whole => {}
            Selection::Inside(range) => {
                if let Some(inner) = message.get_field_mut(&field).as_message_mut() {
                    trim_level(inner, &paths[range], offset + field.name().len() + 1);
                }
            }
            Selection::None => message.clear_field(&field),
        }
    }
}

fn select(paths: &[String], offset: usize, name: &str) -> Selection {
    let start = paths.partition_point(|path| &path[offset..] < name);
    let Some(first) = paths.get(start) else {
        return Selection::None;
    };
    let relative = &first[offset..];
    if relative == name {
        return Selection::Whole;
    }
    if !path_covers(name, relative) {
        return Selection::None;
    }
    let end = start
        + paths[start..]
            .iter()
            .take_while(|path| path_covers(name, &path[offset..]))
            .count();
    Selection::Inside(start..end)
}

#[cfg(test)]
mod tests;
