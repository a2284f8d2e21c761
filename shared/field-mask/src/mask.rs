//! The validated, normalized mask and its algebra.
//!
//! A [`Mask`] is either the whole view or a sorted list of paths in which no path covers
//! another. Sorting plain strings gives the order the algebra needs: `.` sorts before every
//! character a field name may contain, so a path's descendants follow it directly, and a path is
//! covered by a normalized mask exactly when the greatest mask path not after it covers it.

use std::fmt;

use crate::error::MaskError;
use crate::schema::{Form, ViewSchema};
use crate::syntax;

/// A field mask validated against a view and kept in normal form.
///
/// Equal masks select the same fields. The converse fails only where one mask names a message
/// and the other lists each of its fields: normalization does not merge siblings into their
/// parent, as in FieldMaskUtil, and [`Mask::all`] equals no list of paths.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Mask {
    repr: Repr,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    /// The whole view: an unset or empty mask, or `*`.
    All,
    /// Sorted, with no path covering another. Empty means nothing is selected.
    Paths(Vec<String>),
}

impl fmt::Debug for Mask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::All => f.write_str("Mask(*)"),
            Repr::Paths(paths) if paths.is_empty() => f.write_str("Mask(nothing)"),
            Repr::Paths(_) => write!(f, "Mask({self})"),
        }
    }
}

/// The path form, comma-separated: `creator.followers_count,title`, or `*` for the whole view.
/// A mask that selects nothing displays as the empty string.
impl fmt::Display for Mask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::All => f.write_str("*"),
            Repr::Paths(paths) => {
                for (index, path) in paths.iter().enumerate() {
                    if index > 0 {
                        f.write_str(",")?;
                    }
                    f.write_str(path)?;
                }
                Ok(())
            }
        }
    }
}

impl Mask {
    /// The whole view.
    pub fn all() -> Self {
        Self { repr: Repr::All }
    }

    /// No field at all. Only the algebra produces it: a caller's empty mask means the whole
    /// view, so this mask has no wire form of its own (see [`Mask::to_field_mask`]).
    pub fn nothing() -> Self {
        Self {
            repr: Repr::Paths(Vec::new()),
        }
    }

    /// Whether the mask selects the whole view.
    pub fn is_all(&self) -> bool {
        matches!(self.repr, Repr::All)
    }

    /// Whether the mask selects no field.
    pub fn is_nothing(&self) -> bool {
        matches!(&self.repr, Repr::Paths(paths) if paths.is_empty())
    }

    /// The normalized paths in path form, or `None` for the whole view.
    pub fn paths(&self) -> Option<&[String]> {
        match &self.repr {
            Repr::All => None,
            Repr::Paths(paths) => Some(paths),
        }
    }

    /// The mask as a `google.protobuf.FieldMask`: the whole view is `["*"]`.
    ///
    /// A mask that selects nothing becomes an empty `FieldMask`, which a parser reads back as
    /// the whole view: do not send it to a peer.
    pub fn to_field_mask(&self) -> prost_types::FieldMask {
        let paths = match &self.repr {
            Repr::All => vec!["*".to_owned()],
            Repr::Paths(paths) => paths.clone(),
        };
        prost_types::FieldMask { paths }
    }

    /// The canonical JSON string: comma-separated lowerCamelCase paths,
    /// `creator.followersCount,title`, or `*` for the whole view.
    ///
    /// Every mask a [`ViewSchema`] accepted has one, and
    /// [`ViewSchema::parse_json`] reads it back to an equal mask. A mask that selects nothing
    /// becomes the empty string, which reads back as the whole view.
    pub fn to_json(&self) -> String {
        match &self.repr {
            Repr::All => "*".to_owned(),
            Repr::Paths(paths) => {
                let mut out = String::with_capacity(paths.iter().map(|p| p.len() + 1).sum());
                for (index, path) in paths.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    for (depth, segment) in path.split('.').enumerate() {
                        if depth > 0 {
                            out.push('.');
                        }
                        syntax::snake_to_camel(segment, &mut out);
                    }
                }
                out
            }
        }
    }

    /// Whether the mask selects the field at `path` (path form), wholly.
    ///
    /// This is a prefix test and does not validate `path`: the whole view covers any path.
    pub fn covers(&self, path: &str) -> bool {
        match &self.repr {
            Repr::All => true,
            Repr::Paths(paths) => covered_by_sorted(paths, path),
        }
    }

    /// Whether every field `other` selects is selected by `self` too.
    pub fn covers_mask(&self, other: &Mask) -> bool {
        match (&self.repr, &other.repr) {
            (Repr::All, _) => true,
            (Repr::Paths(_), Repr::All) => false,
            (Repr::Paths(ours), Repr::Paths(theirs)) => {
                theirs.iter().all(|path| covered_by_sorted(ours, path))
            }
        }
    }

    /// Whether `self` selects `path` or anything inside it (an ancestor, the path itself or a
    /// descendant is in the mask).
    pub fn touches(&self, path: &str) -> bool {
        match &self.repr {
            Repr::All => true,
            Repr::Paths(paths) => {
                covered_by_sorted(paths, path) || first_descendant(paths, path).is_some()
            }
        }
    }

    /// The fields selected by either mask.
    pub fn union(&self, other: &Mask) -> Mask {
        match (&self.repr, &other.repr) {
            (Repr::All, _) | (_, Repr::All) => Mask::all(),
            (Repr::Paths(a), Repr::Paths(b)) => {
                let mut merged = Vec::with_capacity(a.len() + b.len());
                let (mut i, mut j) = (0, 0);
                while i < a.len() && j < b.len() {
                    if a[i] <= b[j] {
                        merged.push(a[i].clone());
                        i += 1;
                    } else {
                        merged.push(b[j].clone());
                        j += 1;
                    }
                }
                merged.extend(a[i..].iter().cloned());
                merged.extend(b[j..].iter().cloned());
                drop_covered(&mut merged);
                Mask::from_sorted(merged)
            }
        }
    }

    /// The fields selected by both masks.
    pub fn intersect(&self, other: &Mask) -> Mask {
        match (&self.repr, &other.repr) {
            (Repr::All, _) => other.clone(),
            (_, Repr::All) => self.clone(),
            (Repr::Paths(a), Repr::Paths(b)) => {
                // A path of one mask is in the intersection iff the other mask covers it; a path
                // covered by the other mask's path is more specific, so it is the one kept.
                let mut out: Vec<String> = a
                    .iter()
                    .filter(|path| covered_by_sorted(b, path))
                    .chain(b.iter().filter(|path| covered_by_sorted(a, path)))
                    .cloned()
                    .collect();
                normalize(&mut out);
                Mask::from_sorted(out)
            }
        }
    }

    /// The fields `self` selects and `other` does not.
    ///
    /// Needs the view: removing `creator.id` from `creator` leaves the other fields of
    /// `creator`, one path each, and removing anything from the whole view leaves top-level
    /// fields. Both masks must come from `schema`.
    pub fn subtract(&self, other: &Mask, schema: &ViewSchema) -> Mask {
        let Repr::Paths(removed) = &other.repr else {
            return Mask::nothing();
        };
        let mut out = Vec::new();
        match &self.repr {
            Repr::All => {
                for entry in &schema.node(0).fields {
                    subtract_path(entry.name.to_string(), removed, schema, &mut out);
                }
            }
            Repr::Paths(paths) => {
                for path in paths {
                    subtract_path(path.clone(), removed, schema, &mut out);
                }
            }
        }
        normalize(&mut out);
        Mask::from_sorted(out)
    }

    pub(crate) fn from_sorted(paths: Vec<String>) -> Mask {
        Mask {
            repr: Repr::Paths(paths),
        }
    }
}

impl ViewSchema {
    /// Parses and validates a mask given in path form, as in `google.protobuf.FieldMask.paths`.
    ///
    /// No paths, or a `*` path, mean the whole view. Owned strings are kept without copying.
    pub fn parse_paths<I, S>(&self, paths: I) -> Result<Mask, MaskError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str> + Into<String>,
    {
        let limits = self.limits();
        let mut out = Vec::new();
        let mut count = 0;
        let mut all = false;
        for path in paths {
            count += 1;
            if count > limits.max_paths {
                return Err(MaskError::TooManyPaths {
                    max: limits.max_paths,
                });
            }
            if path.as_ref() == "*" {
                all = true;
                continue;
            }
            self.check_path(path.as_ref(), Form::Path, None)?;
            if !all {
                out.push(path.into());
            }
        }
        if count == 0 || all {
            return Ok(Mask::all());
        }
        normalize(&mut out);
        Ok(Mask::from_sorted(out))
    }

    /// Parses and validates a request's `google.protobuf.FieldMask` field: unset means the
    /// whole view.
    pub fn parse_field_mask(
        &self,
        mask: Option<prost_types::FieldMask>,
    ) -> Result<Mask, MaskError> {
        match mask {
            None => Ok(Mask::all()),
            Some(mask) => self.parse_paths(mask.paths),
        }
    }

    /// Parses and validates the canonical JSON string form, `creator.followersCount,title`.
    ///
    /// The empty string and `*` mean the whole view. Segments must be lowerCamelCase; empty
    /// paths (`a,,b`, a trailing comma) are errors.
    pub fn parse_json(&self, json: &str) -> Result<Mask, MaskError> {
        if json.is_empty() {
            return Ok(Mask::all());
        }
        let limits = self.limits();
        let mut out = Vec::new();
        let mut all = false;
        for (index, path) in json.split(',').enumerate() {
            if index >= limits.max_paths {
                return Err(MaskError::TooManyPaths {
                    max: limits.max_paths,
                });
            }
            if path == "*" {
                all = true;
                continue;
            }
            let mut snake = String::with_capacity(path.len() + 4);
            self.check_path(path, Form::Json, Some(&mut snake))?;
            if !all {
                out.push(snake);
            }
        }
        if all {
            return Ok(Mask::all());
        }
        normalize(&mut out);
        Ok(Mask::from_sorted(out))
    }
}

/// Whether `ancestor` covers `path`: equal, or a prefix followed by `.`.
pub(crate) fn path_covers(ancestor: &str, path: &str) -> bool {
    path.len() >= ancestor.len()
        && path.starts_with(ancestor)
        && (path.len() == ancestor.len() || path.as_bytes()[ancestor.len()] == b'.')
}

/// Whether a sorted list without covered paths covers `path`.
pub(crate) fn covered_by_sorted(paths: &[String], path: &str) -> bool {
    let after = paths.partition_point(|candidate| candidate.as_str() <= path);
    after > 0 && path_covers(&paths[after - 1], path)
}

/// The index of the first path strictly inside `path` in a sorted list, if any.
pub(crate) fn first_descendant(paths: &[String], path: &str) -> Option<usize> {
    let start = paths.partition_point(|candidate| candidate.as_str() <= path);
    paths
        .get(start)
        .filter(|candidate| candidate.len() > path.len() && path_covers(path, candidate))
        .map(|_| start)
}

/// Sorts `paths` and drops duplicates and paths covered by another.
pub(crate) fn normalize(paths: &mut Vec<String>) {
    paths.sort_unstable();
    drop_covered(paths);
}

/// Drops duplicates and covered paths from a sorted list, in place.
fn drop_covered(paths: &mut Vec<String>) {
    let mut kept = 0;
    for index in 0..paths.len() {
        if kept > 0 && path_covers(&paths[kept - 1], &paths[index]) {
            continue;
        }
        paths.swap(kept, index);
        kept += 1;
    }
    paths.truncate(kept);
}

fn subtract_path(path: String, removed: &[String], schema: &ViewSchema, out: &mut Vec<String>) {
    if covered_by_sorted(removed, &path) {
        return;
    }
    if first_descendant(removed, &path).is_none() {
        out.push(path);
        return;
    }
    // Something inside `path` is removed: keep each of its fields but the removed ones.
    let Some(node) = schema.message_node(&path) else {
        // Masks from another view; nothing sensible to expand, so keep the path.
        out.push(path);
        return;
    };
    for entry in &schema.node(node).fields {
        let child = format!("{path}.{}", entry.name);
        subtract_path(child, removed, schema, out);
    }
}

#[cfg(test)]
mod tests;
