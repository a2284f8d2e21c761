//! The one error type of mask parsing and validation.
//!
//! Every variant that concerns a single path names it, as the caller wrote it (path form or JSON
//! form), so that a gateway can hand the message straight back with `INVALID_ARGUMENT`.

use std::fmt;

/// Why a path segment is not a well-formed field name.
///
/// In the path form a segment is a lower snake_case field name; in the JSON form it is the
/// lowerCamelCase spelling of one. Both grammars are strict so that the two forms map one to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SegmentProblem {
    /// The segment starts with an underscore.
    LeadingUnderscore,
    /// The segment starts with a digit.
    LeadingDigit,
    /// The path form segment has an upper case letter.
    UpperCase,
    /// An underscore is followed by a digit.
    DigitAfterUnderscore,
    /// An underscore is followed by another underscore.
    DoubleUnderscore,
    /// The segment ends with an underscore.
    TrailingUnderscore,
    /// The JSON form segment has an underscore.
    UnderscoreInJson,
    /// The JSON form segment starts with an upper case letter.
    LeadingUpperCase,
    /// The segment has a character that no field name has.
    InvalidCharacter,
}

impl fmt::Display for SegmentProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::LeadingUnderscore => "it starts with an underscore",
            Self::LeadingDigit => "it starts with a digit",
            Self::UpperCase => "it has an upper case letter (paths are snake_case)",
            Self::DigitAfterUnderscore => "an underscore is followed by a digit",
            Self::DoubleUnderscore => "it has two underscores in a row",
            Self::TrailingUnderscore => "it ends with an underscore",
            Self::UnderscoreInJson => "it has an underscore (the JSON form is lowerCamelCase)",
            Self::LeadingUpperCase => "it starts with an upper case letter",
            Self::InvalidCharacter => "it has a character outside a-z, A-Z, 0-9 and _",
        })
    }
}

/// A field mask that cannot be accepted for a view.
///
/// The `Display` form is the user-facing message (see [`MaskError::user_message`]); it quotes
/// the offending path with Rust string escaping so control characters cannot leak into logs or
/// responses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MaskError {
    /// A path is empty or has an empty segment (`""`, `"a..b"`, `"a."`, `",a"`).
    #[error("field mask path {path:?} has an empty segment")]
    EmptySegment {
        /// The path as given.
        path: String,
    },
    /// A segment is not a well-formed field name.
    #[error("field mask path {path:?} has an invalid segment {segment:?}: {problem}")]
    InvalidSegment {
        /// The path as given.
        path: String,
        /// The offending segment.
        segment: String,
        /// What is wrong with it.
        problem: SegmentProblem,
    },
    /// `*` is used inside a path; it only stands alone, for the whole view.
    #[error(
        "field mask path {path:?} uses \"*\" inside a path; \"*\" stands alone for the whole view"
    )]
    MisplacedWildcard {
        /// The path as given.
        path: String,
    },
    /// A segment names no field of the message it is looked up in.
    #[error("field mask path {path:?} names unknown field {field:?} in {message}")]
    UnknownField {
        /// The path as given.
        path: String,
        /// The unknown field, in the form the caller used.
        field: String,
        /// The full name of the message that has no such field.
        message: String,
    },
    /// A path continues after a field that is not a message.
    #[error("field mask path {path:?} continues through {field:?}, which is not a message")]
    ThroughScalar {
        /// The path as given.
        path: String,
        /// The scalar field the path continues through.
        field: String,
    },
    /// A path continues after a repeated field; a mask selects whole lists only.
    #[error("field mask path {path:?} continues through repeated field {field:?}")]
    ThroughRepeated {
        /// The path as given.
        path: String,
        /// The repeated field the path continues through.
        field: String,
    },
    /// A path continues after a map field; a mask selects whole maps only.
    #[error("field mask path {path:?} continues through map field {field:?}")]
    ThroughMap {
        /// The path as given.
        path: String,
        /// The map field the path continues through.
        field: String,
    },
    /// The mask has more paths than the view allows.
    #[error("field mask has more than {max} paths")]
    TooManyPaths {
        /// The limit.
        max: usize,
    },
    /// A path has more segments than the view allows.
    #[error("field mask path {path:?} is {depth} fields deep, more than the limit of {max}")]
    TooDeep {
        /// The path as given.
        path: String,
        /// Its number of segments.
        depth: usize,
        /// The limit.
        max: usize,
    },
    /// A path is longer than the view allows. Only its beginning is kept.
    #[error("field mask path starting {prefix:?} is longer than the limit of {max} bytes")]
    PathTooLong {
        /// The first bytes of the path (cut at a character boundary).
        prefix: String,
        /// The limit.
        max: usize,
    },
}

impl MaskError {
    /// The message to send to the caller, e.g. as the `INVALID_ARGUMENT` status message.
    ///
    /// It names the offending path and says what is wrong, and never reveals more than the
    /// view's public shape.
    pub fn user_message(&self) -> String {
        self.to_string()
    }

    /// The offending path as the caller wrote it, when the error concerns one path.
    ///
    /// Gateways can use it as the `field` of a `BadRequest.FieldViolation` detail.
    pub fn path(&self) -> Option<&str> {
        match self {
            Self::EmptySegment { path }
            | Self::InvalidSegment { path, .. }
            | Self::MisplacedWildcard { path }
            | Self::UnknownField { path, .. }
            | Self::ThroughScalar { path, .. }
            | Self::ThroughRepeated { path, .. }
            | Self::ThroughMap { path, .. }
            | Self::TooDeep { path, .. } => Some(path),
            Self::PathTooLong { prefix, .. } => Some(prefix),
            Self::TooManyPaths { .. } => None,
        }
    }
}

/// A view that cannot serve as a field mask schema. This is a programming error in the view
/// definition, found once at startup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// A field name has no canonical JSON field mask form, so masks naming it could not round
    /// trip.
    #[error("field {message}.{field} cannot appear in a field mask: {problem}")]
    FieldName {
        /// The full name of the message.
        message: String,
        /// The field name.
        field: String,
        /// What is wrong with it.
        problem: SegmentProblem,
    },
}
