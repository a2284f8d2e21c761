//! Field masks for gateway views, and the fanout plans they drive.
//!
//! A gateway serves a *view* of the core entity (a protobuf message such as `consumer.v1.Track`)
//! and lets the caller choose the fields it wants with a `google.protobuf.FieldMask`
//! (AIP-157 read masks, AIP-161 semantics). This crate is the one implementation both gateways
//! share. It knows no view: each gateway plugs its own in.
//!
//! # Masks
//!
//! Build a [`ViewSchema`] once per view from its descriptor, then parse each request's mask
//! with it:
//!
//! ```
//! # use field_mask::ViewSchema;
//! # let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests");
//! # let files = protox::compile(["view.proto"], [dir])?;
//! # let pool = prost_reflect::DescriptorPool::from_file_descriptor_set(files)?;
//! let track = pool.get_message_by_name("testview.v1.Track").expect("the view exists");
//! let schema = ViewSchema::new(track)?;
//!
//! // In a handler: `request.read_mask.take()`, and on error
//! // `Status::invalid_argument(error.user_message())`.
//! let read_mask = Some(prost_types::FieldMask {
//!     paths: vec!["title".into(), "creator.followers_count".into(), "creator".into()],
//! });
//! let mask = schema.parse_field_mask(read_mask).map_err(|error| error.user_message())?;
//! assert_eq!(mask.to_string(), "creator,title");
//! assert_eq!(mask.to_json(), "creator,title");
//!
//! let error = schema.parse_json("creator.followerCount").unwrap_err();
//! assert_eq!(
//!     error.user_message(),
//!     r#"field mask path "creator.followerCount" names unknown field "followerCount" in testview.v1.Creator"#,
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! - Unset or empty masks and `*` mean the whole view ([`Mask::all`]).
//! - Every path is validated against the view: an unknown field, a path that continues through
//!   a scalar, a repeated field or a map, a malformed segment, or a path beyond the [`Limits`]
//!   is a [`MaskError`] naming the path. Gateways map it to `INVALID_ARGUMENT` with
//!   [`MaskError::user_message`].
//! - A [`Mask`] is always normalized: paths sorted, duplicates and covered paths dropped. Equal
//!   masks select the same fields; the converse fails only where one mask names a message and
//!   the other lists each of its fields (or each top-level field, against `*`).
//! - The algebra: [`Mask::union`], [`Mask::intersect`], [`Mask::subtract`], [`Mask::covers`],
//!   [`Mask::covers_mask`], [`Mask::touches`].
//! - Trimming: [`Mask::trim`] on a [`prost_reflect::DynamicMessage`], [`Mask::trim_reflect`] for
//!   generated messages implementing `ReflectMessage`, [`ViewSchema::trim_prost`] for any
//!   generated message of the view's type, [`ViewSchema::trim_encoded`] for its encoding. The
//!   last three drop fields from the encoding (a walk with the descriptor, no field map), with
//!   the same result as [`Mask::trim`].
//! - The canonical JSON form: [`ViewSchema::parse_json`] and [`Mask::to_json`]
//!   (`"creator.followersCount,title"`), which round trip for every valid mask.
//!
//! # Fanout plans
//!
//! A view declares once, per field path, the foundation calls ([`Source`]s) the field needs, and
//! which sources authorization always needs ([`FanoutSpec::builder`]). For a mask,
//! [`FanoutSpec::plan`] gives the minimal set of calls in two stages (by track id, then by the
//! track's owner), and [`FanoutSpec::explain`] says which mask path caused each call.
//! [`FanoutSpec::degraded_paths`] names the mask paths to report when a call failed.
//! [`run_plan`] runs a plan for a batch of tracks: stage one concurrently, stage two as soon as
//! the authorization calls answered and the gateway authorized them, failing closed when an
//! authorization call fails; [`unique_keys`] and [`call_batched`] make one call per source for
//! a whole batch or page.
//!
//! # Deliberate differences from protobuf's FieldMaskUtil
//!
//! - Validation is part of parsing, so an invalid mask never exists as a value. FieldMaskUtil's
//!   `FromString` and `FromJsonString` accept any text and leave checking to `IsValidPath`.
//!   The rules themselves are FieldMaskUtil's: a path ends at a scalar, repeated or map field.
//! - `*` is accepted (AIP-161) as a path on its own and means the whole view; inside a path it
//!   is an error. An unset or empty mask also means the whole view.
//! - The JSON form is strict where FieldMaskUtil is lenient: empty paths (`"a,,b"`, trailing
//!   commas) are errors rather than skipped, segments must be lowerCamelCase starting with a
//!   lower case letter, and whitespace is not trimmed.
//! - Path form segments must be lower snake_case whose underscores are each followed by a lower
//!   case letter, so every valid path has a JSON form and the two forms map one to one. A view
//!   with a field name outside this grammar (such as `ipv4_1`) is refused when its schema is
//!   built, instead of failing later in `ToJsonString`.
//! - Trimming also clears unknown fields and extensions at every level it enters; FieldMaskUtil
//!   keeps them. Data the mask did not ask for never leaves the gateway.
//! - Subtracting from the whole view expands it into the view's top-level fields.
//! - Limits on path count, depth and length are enforced (FieldMaskUtil has none).
//! - [`Mask::to_field_mask`] spells the whole view `*`. The empty mask that only the algebra
//!   can produce ([`Mask::nothing`]) has no wire form: written out, it reads back as the whole
//!   view.
//! - Errors name the offending path and are meant for the caller as they are.
//!
//! # Fuzzing
//!
//! `fuzz/` holds a cargo-fuzz target, `parse_mask`, that feeds arbitrary strings to the path and
//! JSON parsers and checks the round trip and the algebra of whatever they accept. It is a
//! workspace of its own, outside the main one. With cargo-fuzz installed, from
//! `shared/field-mask`:
//!
//! ```text
//! RUSTC_BOOTSTRAP=1 cargo fuzz run parse_mask -- -dict=fuzz/parse_mask.dict -max_total_time=60
//! ```
//!
//! (`cargo +nightly fuzz run …` where a nightly toolchain exists.) See `fuzz/README.md`.

mod error;
mod exec;
mod mask;
mod plan;
mod schema;
mod syntax;
mod trim;

#[cfg(test)]
mod test_view;

pub use error::{MaskError, SchemaError, SegmentProblem};
pub use exec::{IdMap, PlanResults, call_batched, run_plan, unique_keys};
pub use mask::Mask;
pub use plan::{
    Cause, Explain, FanoutSpec, FanoutSpecBuilder, Input, MAX_SOURCES, NamedSource, Plan,
    PlannedCall, Source, SpecError, Stage,
};
pub use schema::{Limits, ViewSchema};
