//! The per-view data that mask validation needs, computed once from the view's descriptor.
//!
//! Validation runs on every request, so the schema flattens the view into a table of message
//! nodes whose fields are sorted by name: looking a segment up is a binary search over a few
//! boxed strings, with no hashing and no descriptor traversal.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};

use crate::error::{MaskError, SchemaError};
use crate::syntax;

/// Bounds on what a caller may ask for in one mask.
///
/// They bound the work of parsing, and they keep error messages short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most paths a mask may have, counted as given (before duplicates are dropped).
    pub max_paths: usize,
    /// The most segments a path may have.
    pub max_depth: usize,
    /// The longest a path may be, in bytes, in the form the caller used.
    pub max_path_len: usize,
}

impl Default for Limits {
    /// Generous for any real view (a Track view has about twenty leaf paths, two levels deep),
    /// tight enough to bound the work of a hostile mask.
    fn default() -> Self {
        Self {
            max_paths: 100,
            max_depth: 8,
            max_path_len: 256,
        }
    }
}

/// The form a path is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// snake_case segments, as in `google.protobuf.FieldMask.paths`.
    Path,
    /// lowerCamelCase segments, as in the canonical JSON string.
    Json,
}

/// What a field lets a path do after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// A singular scalar or enum field: paths end here.
    Scalar,
    /// A singular message field: paths may continue into the node at this index.
    Message(usize),
    /// A repeated field: paths end here.
    List,
    /// A map field: paths end here.
    Map,
}

#[derive(Debug)]
pub(crate) struct FieldEntry {
    pub(crate) name: Box<str>,
    pub(crate) shape: Shape,
}

#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) message: MessageDescriptor,
    /// Sorted by name.
    pub(crate) fields: Vec<FieldEntry>,
}

impl Node {
    pub(crate) fn field(&self, name: &str) -> Option<&FieldEntry> {
        self.fields
            .binary_search_by(|entry| entry.name.as_ref().cmp(name))
            .ok()
            .map(|index| &self.fields[index])
    }
}

#[derive(Debug)]
struct Inner {
    limits: Limits,
    /// Node 0 is the view itself; every message reachable through singular message fields has
    /// exactly one node, so recursive messages are fine.
    nodes: Vec<Node>,
}

/// A view message prepared for field mask work: build it once per view (for example in a
/// `LazyLock`) and share it; cloning is cheap.
#[derive(Clone)]
pub struct ViewSchema {
    inner: Arc<Inner>,
}

impl fmt::Debug for ViewSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ViewSchema")
            .field("view", &self.name())
            .field("limits", &self.inner.limits)
            .finish()
    }
}

impl ViewSchema {
    /// Prepares `view` with the default [`Limits`].
    pub fn new(view: MessageDescriptor) -> Result<Self, SchemaError> {
        Self::with_limits(view, Limits::default())
    }

    /// Prepares `view` with the given limits.
    ///
    /// Fails when a reachable field name has no canonical JSON form (for example `ipv4_1`),
    /// because masks naming it could not round trip.
    pub fn with_limits(view: MessageDescriptor, limits: Limits) -> Result<Self, SchemaError> {
        let mut index_of: HashMap<String, usize> = HashMap::new();
        let mut pending = vec![view.clone()];
        index_of.insert(view.full_name().to_owned(), 0);
        let mut nodes = Vec::new();
        while nodes.len() < pending.len() {
            let message = pending[nodes.len()].clone();
            let mut fields = Vec::with_capacity(message.fields().len());
            for field in message.fields() {
                syntax::check_snake(field.name()).map_err(|problem| SchemaError::FieldName {
                    message: message.full_name().to_owned(),
                    field: field.name().to_owned(),
                    problem,
                })?;
                let shape = shape_of(&field, &mut index_of, &mut pending);
                fields.push(FieldEntry {
                    name: field.name().into(),
                    shape,
                });
            }
            fields.sort_unstable_by(|a, b| a.name.cmp(&b.name));
            nodes.push(Node { message, fields });
        }
        Ok(Self {
            inner: Arc::new(Inner { limits, nodes }),
        })
    }

    /// The view's message descriptor.
    pub fn descriptor(&self) -> &MessageDescriptor {
        &self.inner.nodes[0].message
    }

    /// The view's full message name, e.g. `consumer.v1.Track`.
    pub fn name(&self) -> &str {
        self.descriptor().full_name()
    }

    /// The limits masks for this view are held to.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// The view's leaf paths in path form, sorted: every field a path can end on that has no
    /// fields of its own to select, with the well-known types (`google.protobuf.Timestamp`,
    /// `Duration`, …) counted as leaves, and a recursive message followed no deeper than
    /// `max_depth`. A bounded vocabulary for reporting which fields are read, and the one a
    /// contract check compares descriptor sets by.
    pub fn leaf_paths(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_leaves(0, String::new(), 1, &mut out);
        out.sort_unstable();
        out
    }

    fn collect_leaves(&self, node: usize, prefix: String, depth: usize, out: &mut Vec<String>) {
        for entry in &self.node(node).fields {
            let path = format!("{prefix}{}", entry.name);
            match entry.shape {
                Shape::Message(next)
                    if depth < self.inner.limits.max_depth
                        && !self
                            .node(next)
                            .message
                            .full_name()
                            .starts_with("google.protobuf.")
                        && !self.node(next).fields.is_empty() =>
                {
                    self.collect_leaves(next, format!("{path}."), depth + 1, out);
                }
                _ => out.push(path),
            }
        }
    }

    pub(crate) fn node(&self, index: usize) -> &Node {
        &self.inner.nodes[index]
    }

    /// The node a valid path-form path leads to, if the path ends on a message field.
    pub(crate) fn message_node(&self, path: &str) -> Option<usize> {
        let mut node = 0;
        for segment in path.split('.') {
            match self.node(node).field(segment)?.shape {
                Shape::Message(next) => node = next,
                Shape::Scalar | Shape::List | Shape::Map => return None,
            }
        }
        Some(node)
    }

    /// Checks one path against the limits, the segment grammar of `form` and the view.
    ///
    /// For the JSON form, the path form of the path is appended to `snake`.
    pub(crate) fn check_path(
        &self,
        path: &str,
        form: Form,
        mut snake: Option<&mut String>,
    ) -> Result<(), MaskError> {
        let limits = self.inner.limits;
        if path.len() > limits.max_path_len {
            return Err(MaskError::PathTooLong {
                prefix: syntax::prefix(path, 40),
                max: limits.max_path_len,
            });
        }
        let depth = path.bytes().filter(|&byte| byte == b'.').count() + 1;
        if depth > limits.max_depth {
            return Err(MaskError::TooDeep {
                path: path.to_owned(),
                depth,
                max: limits.max_depth,
            });
        }
        let mut node = self.node(0);
        let mut segments = path.split('.').peekable();
        while let Some(segment) = segments.next() {
            if segment.is_empty() {
                return Err(MaskError::EmptySegment {
                    path: path.to_owned(),
                });
            }
            if segment == "*" {
                return Err(MaskError::MisplacedWildcard {
                    path: path.to_owned(),
                });
            }
            let checked = match form {
                Form::Path => syntax::check_snake(segment),
                Form::Json => syntax::check_camel(segment),
            };
            checked.map_err(|problem| MaskError::InvalidSegment {
                path: path.to_owned(),
                segment: segment.to_owned(),
                problem,
            })?;
            let entry = match (form, snake.as_deref_mut()) {
                (Form::Json, Some(out)) => {
                    let start = out.len();
                    syntax::camel_to_snake(segment, out);
                    node.field(&out[start..])
                }
                _ => node.field(segment),
            };
            let Some(entry) = entry else {
                return Err(MaskError::UnknownField {
                    path: path.to_owned(),
                    field: segment.to_owned(),
                    message: node.message.full_name().to_owned(),
                });
            };
            if segments.peek().is_none() {
                break;
            }
            node = match entry.shape {
                Shape::Message(next) => self.node(next),
                Shape::Scalar => {
                    return Err(MaskError::ThroughScalar {
                        path: path.to_owned(),
                        field: segment.to_owned(),
                    });
                }
                Shape::List => {
                    return Err(MaskError::ThroughRepeated {
                        path: path.to_owned(),
                        field: segment.to_owned(),
                    });
                }
                Shape::Map => {
                    return Err(MaskError::ThroughMap {
                        path: path.to_owned(),
                        field: segment.to_owned(),
                    });
                }
            };
            if let Some(out) = snake.as_deref_mut() {
                out.push('.');
            }
        }
        Ok(())
    }
}

fn shape_of(
    field: &FieldDescriptor,
    index_of: &mut HashMap<String, usize>,
    pending: &mut Vec<MessageDescriptor>,
) -> Shape {
    if field.is_map() {
        return Shape::Map;
    }
    if field.is_list() {
        return Shape::List;
    }
    match field.kind() {
        Kind::Message(message) => {
            let next = pending.len();
            let index = *index_of
                .entry(message.full_name().to_owned())
                .or_insert_with(|| {
                    pending.push(message);
                    next
                });
            Shape::Message(index)
        }
        _ => Shape::Scalar,
    }
}

#[cfg(test)]
mod tests;
