//! Trimming a message to a mask: every field the mask does not cover is cleared.
//!
//! The walk follows the message, not the mask: at each level it looks each set field up in the
//! slice of mask paths under that level (a binary search, because the paths are sorted), keeps
//! it whole, recurses into it, or clears it. Unknown fields and extensions are cleared at every
//! level the walk enters, since no path can cover them.
//!
//! Generated messages ([`ViewSchema::trim_prost`], [`Mask::trim_reflect`]) are trimmed by the
//! same rules on their encoding: `trim_wire` copies the fields the mask covers, as the
//! descriptor names them, with no `DynamicMessage` in between. `Mask::trim` stays the direct
//! form for dynamic messages, and the property laws check that the two agree.

use prost::Message;
use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, ReflectMessage};

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

    /// Trims a generated message that implements [`ReflectMessage`], on its encoding (see
    /// [`ViewSchema::trim_prost`]).
    pub fn trim_reflect<M>(&self, message: &mut M) -> Result<(), prost::DecodeError>
    where
        M: ReflectMessage + Default,
    {
        let Some(paths) = self.paths() else {
            return Ok(());
        };
        trim_message(&message.descriptor(), paths, message)
    }
}

impl ViewSchema {
    /// Trims any generated message of this view's type (it need not implement
    /// [`ReflectMessage`]) on its encoding: the fields the mask does not cover are dropped from
    /// the bytes, walked with the view's descriptor, and the rest decoded again. The same
    /// result as [`Mask::trim`] on a [`DynamicMessage`], at a fraction of the cost (no field
    /// map is built).
    ///
    /// Fails only if `message` is not of the view's type.
    pub fn trim_prost<M>(&self, mask: &Mask, message: &mut M) -> Result<(), prost::DecodeError>
    where
        M: Message + Default,
    {
        let Some(paths) = mask.paths() else {
            return Ok(());
        };
        trim_message(self.descriptor(), paths, message)
    }

    /// The encoding of a message of this view's type, trimmed to `mask`: every field the mask
    /// does not cover is left out, unknown fields too.
    pub fn trim_encoded(&self, mask: &Mask, encoded: &[u8]) -> Result<Vec<u8>, prost::DecodeError> {
        let Some(paths) = mask.paths() else {
            return Ok(encoded.to_vec());
        };
        let mut kept = Vec::with_capacity(encoded.len());
        trim_wire(self.descriptor(), paths, 0, encoded, &mut kept)?;
        Ok(kept)
    }
}

fn trim_message<M: Message + Default>(
    descriptor: &MessageDescriptor,
    paths: &[String],
    message: &mut M,
) -> Result<(), prost::DecodeError> {
    let encoded = message.encode_to_vec();
    let mut kept = Vec::with_capacity(encoded.len());
    trim_wire(descriptor, paths, 0, &encoded, &mut kept)?;
    *message = M::decode(kept.as_slice())?;
    Ok(())
}

/// Appends to `out` the fields of the encoded message `input` (of type `descriptor`) that its
/// mask paths `paths` cover (sorted, sharing their first `offset` bytes, as in
/// [`trim_level`]), with the same rules: a singular message field the mask enters is trimmed
/// inside and stays present, a repeated or map field is kept whole or dropped, unknown fields
/// are dropped.
fn trim_wire(
    descriptor: &MessageDescriptor,
    paths: &[String],
    offset: usize,
    mut input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), prost::DecodeError> {
    use prost::encoding::{
        DecodeContext, WireType, decode_key, decode_varint, encode_key, encode_varint, skip_field,
    };
    while !input.is_empty() {
        let field_start = input;
        let (number, wire_type) = decode_key(&mut input)?;
        let value_start = input;
        skip_field(wire_type, number, &mut input, DecodeContext::default())?;
        let whole = &field_start[..field_start.len() - input.len()];
        let Some(field) = descriptor.get_field(number) else {
            continue;
        };
        match select(paths, offset, field.name()) {
            Selection::Whole => out.extend_from_slice(whole),
            Selection::None => {}
            Selection::Inside(range) => match field.kind() {
                Kind::Message(inner)
                    if !field.is_list()
                        && !field.is_map()
                        && wire_type == WireType::LengthDelimited =>
                {
                    // The value without its length prefix: what `skip_field` passed over.
                    let mut body = &value_start[..value_start.len() - input.len()];
                    decode_varint(&mut body)?;
                    let mut nested = Vec::with_capacity(body.len());
                    trim_wire(
                        &inner,
                        &paths[range],
                        offset + field.name().len() + 1,
                        body,
                        &mut nested,
                    )?;
                    encode_key(number, WireType::LengthDelimited, out);
                    encode_varint(nested.len() as u64, out);
                    out.extend_from_slice(&nested);
                }
                _ => out.extend_from_slice(whole),
            },
        }
    }
    Ok(())
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
