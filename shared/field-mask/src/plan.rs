//! Declarative, mask-driven fanout planning.
//!
//! A view declares once which foundation calls each of its fields needs, and which calls
//! authorization needs whatever the mask. For a request's mask the planner then names the
//! minimal set of calls, split into two stages: calls keyed by the track id run first (together
//! with the track itself), calls keyed by the track's owner run once the track is known.
//!
//! Planning is on the request path, so [`FanoutSpec::plan`] allocates nothing: a plan is a bit
//! set over the view's sources. [`FanoutSpec::explain`] builds the readable account of the same
//! decision, for logs, debugging endpoints and tests.

use std::fmt;

use crate::mask::{Mask, covered_by_sorted, path_covers};
use crate::schema::{Form, Shape, ViewSchema};

/// A foundation call a view field can need: a method and the key it is called with.
///
/// Gateways implement it on a small `Copy` enum of their upstream methods, so that plan
/// results can be matched exhaustively; [`NamedSource`] serves where a plain value is enough.
pub trait Source: Copy + Eq + fmt::Debug + Send + Sync + 'static {
    /// The foundation method, e.g. `counts.v1.Counts/BatchGetTrackCounts`.
    fn method(&self) -> &'static str;
    /// The key the method is called with, which decides its stage.
    fn input(&self) -> Input;
}

/// The key a source is called with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Input {
    /// The track id from the request: the call can start at once.
    TrackId,
    /// The track's owner, known only from the track itself: the call waits for stage one.
    Owner,
}

impl Input {
    /// The stage a source with this input runs in.
    pub fn stage(self) -> Stage {
        match self {
            Self::TrackId => Stage::First,
            Self::Owner => Stage::Second,
        }
    }
}

/// When a planned call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Keyed by the track id; runs concurrently with the call that fetches the track.
    First,
    /// Keyed by the track's owner; runs after stage one.
    Second,
}

impl Stage {
    /// Both stages, in order.
    pub const ALL: [Stage; 2] = [Stage::First, Stage::Second];

    /// The stage's number, 1 or 2.
    pub fn number(self) -> u8 {
        match self {
            Self::First => 1,
            Self::Second => 2,
        }
    }
}

/// A source given by value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NamedSource {
    /// The foundation method.
    pub method: &'static str,
    /// Its key.
    pub input: Input,
}

impl NamedSource {
    /// A source for `method`, keyed by `input`.
    pub const fn new(method: &'static str, input: Input) -> Self {
        Self { method, input }
    }
}

impl Source for NamedSource {
    fn method(&self) -> &'static str {
        self.method
    }

    fn input(&self) -> Input {
        self.input
    }
}

/// The most sources a view may declare: a plan is a 64-bit set.
pub const MAX_SOURCES: usize = 64;

/// A view declaration that cannot be used. These are programming errors in the view,
/// found once at startup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// A declared path is not a valid path of the view.
    #[error("declared path {path:?} is not valid for the view: {reason}")]
    InvalidPath {
        /// The declared path.
        path: String,
        /// Why the view rejects it.
        reason: crate::MaskError,
    },
    /// A path is declared twice.
    #[error("path {path:?} is declared twice")]
    DuplicatePath {
        /// The declared path.
        path: String,
    },
    /// Fields of the view that no declaration covers: every field must say what it needs,
    /// if only that it needs nothing.
    #[error("view fields without a declaration: {}", paths.join(", "))]
    Undeclared {
        /// The fields, in path form.
        paths: Vec<String>,
    },
    /// More than [`MAX_SOURCES`] sources.
    #[error("a view may declare at most {MAX_SOURCES} sources")]
    TooManySources,
    /// Owner-keyed sources are declared, but no source is named as the one giving the owner.
    #[error("owner-keyed sources need a source that gives the owner (owner_from)")]
    NoOwnerSource,
    /// The source named as giving the owner is itself keyed by the owner.
    #[error("the owner source {method} must be keyed by the track id")]
    OwnerSourceNotFirstStage {
        /// Its method.
        method: &'static str,
    },
}

#[derive(Debug, Clone)]
struct Declaration {
    path: String,
    sources: u64,
}

/// A view's declaration of what each field needs. Build it once per view with
/// [`FanoutSpec::builder`].
#[derive(Debug, Clone)]
pub struct FanoutSpec<S> {
    schema: ViewSchema,
    /// In order of first mention: a plan lists its calls in this order.
    sources: Vec<S>,
    /// Sorted by path.
    declarations: Vec<Declaration>,
    authorization: u64,
    owner_source: Option<usize>,
    /// The union of every declaration's sources, for the whole view.
    all_declared: u64,
    second_stage: u64,
}

/// Collects a view's declarations; see [`FanoutSpec::builder`].
#[derive(Debug)]
pub struct FanoutSpecBuilder<S> {
    schema: ViewSchema,
    sources: Vec<S>,
    declarations: Vec<Declaration>,
    authorization: u64,
    owner_source: Option<usize>,
    error: Option<SpecError>,
}

impl<S: Source> FanoutSpecBuilder<S> {
    fn bit(&mut self, source: S) -> u64 {
        let index = match self.sources.iter().position(|known| *known == source) {
            Some(index) => index,
            None => {
                if self.sources.len() == MAX_SOURCES {
                    self.error.get_or_insert(SpecError::TooManySources);
                    return 0;
                }
                self.sources.push(source);
                self.sources.len() - 1
            }
        };
        1 << index
    }

    fn bits(&mut self, sources: &[S]) -> u64 {
        sources
            .iter()
            .fold(0, |bits, &source| bits | self.bit(source))
    }

    /// Sources that authorizing any read needs, whatever the mask (typically the call that
    /// fetches the track with its visibility policy).
    pub fn authorization(mut self, sources: &[S]) -> Self {
        self.authorization |= self.bits(sources);
        self
    }

    /// The stage-one source whose result gives the track's owner, which owner-keyed sources
    /// need. It is planned whenever an owner-keyed source is.
    pub fn owner_from(mut self, source: S) -> Self {
        let bit = self.bit(source);
        self.owner_source = Some(bit.trailing_zeros() as usize);
        if source.input() != Input::TrackId {
            self.error
                .get_or_insert(SpecError::OwnerSourceNotFirstStage {
                    method: source.method(),
                });
        }
        self
    }

    /// Declares that the field at `path` (path form), and everything inside it, needs
    /// `sources`. An empty list declares that the field needs no call of its own.
    ///
    /// Declarations nest: with `creator` needing the track and `creator.followers_count`
    /// needing user counts too, the mask `creator` plans both and `creator.id` only the track.
    pub fn field(mut self, path: &str, sources: &[S]) -> Self {
        if let Err(reason) = self.schema.check_path(path, Form::Path, None) {
            self.error.get_or_insert(SpecError::InvalidPath {
                path: path.to_owned(),
                reason,
            });
            return self;
        }
        if self.declarations.iter().any(|known| known.path == path) {
            self.error.get_or_insert(SpecError::DuplicatePath {
                path: path.to_owned(),
            });
            return self;
        }
        let sources = self.bits(sources);
        self.declarations.push(Declaration {
            path: path.to_owned(),
            sources,
        });
        self
    }

    /// Checks the declarations: every field of the view is covered by one, and owner-keyed
    /// sources have an owner source.
    pub fn build(mut self) -> Result<FanoutSpec<S>, SpecError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        self.declarations
            .sort_unstable_by(|a, b| a.path.cmp(&b.path));
        let declared: Vec<String> = self
            .declarations
            .iter()
            .map(|declaration| declaration.path.clone())
            .collect();
        let mut undeclared = Vec::new();
        find_undeclared(&self.schema, 0, "", &declared, &mut undeclared);
        if !undeclared.is_empty() {
            return Err(SpecError::Undeclared { paths: undeclared });
        }
        let second_stage = self
            .sources
            .iter()
            .enumerate()
            .filter(|(_, source)| source.input() == Input::Owner)
            .fold(0, |bits, (index, _)| bits | 1 << index);
        if second_stage != 0 && self.owner_source.is_none() {
            return Err(SpecError::NoOwnerSource);
        }
        let all_declared = self
            .declarations
            .iter()
            .fold(0, |bits, declaration| bits | declaration.sources);
        Ok(FanoutSpec {
            schema: self.schema,
            sources: self.sources,
            declarations: self.declarations,
            authorization: self.authorization,
            owner_source: self.owner_source,
            all_declared,
            second_stage,
        })
    }
}

/// Collects the fields under `prefix` (at `node`) that no declaration covers. A field counts
/// as declared when a declaration covers it, or when it is a message whose fields all are.
fn find_undeclared(
    schema: &ViewSchema,
    node: usize,
    prefix: &str,
    declared: &[String],
    out: &mut Vec<String>,
) {
    for entry in &schema.node(node).fields {
        let path = format!("{prefix}{}", entry.name);
        if covered_by_sorted(declared, &path) {
            continue;
        }
        let inside = format!("{path}.");
        let has_inner = declared
            .iter()
            .any(|declared| declared.starts_with(&inside));
        match entry.shape {
            Shape::Message(next) if has_inner => {
                find_undeclared(schema, next, &inside, declared, out);
            }
            _ => out.push(path),
        }
    }
}

impl<S: Source> FanoutSpec<S> {
    /// Starts the declaration of `schema`'s fanout.
    pub fn builder(schema: ViewSchema) -> FanoutSpecBuilder<S> {
        FanoutSpecBuilder {
            schema,
            sources: Vec::new(),
            declarations: Vec::new(),
            authorization: 0,
            owner_source: None,
            error: None,
        }
    }

    /// The view.
    pub fn schema(&self) -> &ViewSchema {
        &self.schema
    }

    /// Every source the view declares, in order of first mention.
    pub fn sources(&self) -> &[S] {
        &self.sources
    }

    /// Whether authorization needs `source` whatever the mask.
    pub fn is_authorization(&self, source: S) -> bool {
        self.bit_of(source) & self.authorization != 0
    }

    /// The calls `mask` needs, plus the ones authorization always needs.
    pub fn plan(&self, mask: &Mask) -> Plan<'_, S> {
        let mut bits = self.authorization;
        match mask.paths() {
            None => bits |= self.all_declared,
            Some(paths) => {
                for path in paths {
                    bits |= self.overlapping(path).fold(0, |bits, d| bits | d.sources);
                }
            }
        }
        if bits & self.second_stage != 0
            && let Some(owner) = self.owner_source
        {
            bits |= 1 << owner;
        }
        Plan { spec: self, bits }
    }

    /// The plan for `mask` with the reasons for each call.
    pub fn explain(&self, mask: &Mask) -> Explain {
        let plan = self.plan(mask);
        let mut calls = Vec::new();
        let mut skipped = Vec::new();
        for (index, &source) in self.sources.iter().enumerate() {
            let bit = 1 << index;
            if plan.bits & bit == 0 {
                skipped.push(source.method());
                continue;
            }
            let mut causes = Vec::new();
            if self.authorization & bit != 0 {
                causes.push(Cause::Authorization);
            }
            match mask.paths() {
                None => {
                    for declaration in &self.declarations {
                        if declaration.sources & bit != 0 {
                            causes.push(Cause::Path {
                                mask_path: "*".to_owned(),
                                declared_path: declaration.path.clone(),
                            });
                        }
                    }
                }
                Some(paths) => {
                    for path in paths {
                        for declaration in self.overlapping(path) {
                            if declaration.sources & bit != 0 {
                                causes.push(Cause::Path {
                                    mask_path: path.clone(),
                                    declared_path: declaration.path.clone(),
                                });
                            }
                        }
                    }
                }
            }
            if self.owner_source == Some(index) && plan.bits & self.second_stage != 0 {
                causes.push(Cause::Owner);
            }
            calls.push(PlannedCall {
                method: source.method(),
                input: source.input(),
                stage: source.input().stage(),
                causes,
            });
        }
        calls.sort_by_key(|call| call.stage);
        Explain {
            view: self.schema.name().to_owned(),
            mask: mask.to_string(),
            calls,
            skipped,
        }
    }

    /// The mask paths to report as missing when `failed` sources gave no data: for each
    /// declaration needing a failed source that the mask touches, the more specific of the
    /// declared path and the mask path. Sorted, without covered paths.
    ///
    /// This is what a gateway lists in `x-degraded-fields`.
    pub fn degraded_paths(&self, mask: &Mask, failed: &[S]) -> Vec<String> {
        let failed = failed
            .iter()
            .fold(0, |bits, &source| bits | self.bit_of(source));
        let mut out = Vec::new();
        match mask.paths() {
            None => {
                for declaration in &self.declarations {
                    if declaration.sources & failed != 0 {
                        out.push(declaration.path.clone());
                    }
                }
            }
            Some(paths) => {
                for path in paths {
                    for declaration in self.overlapping(path) {
                        if declaration.sources & failed != 0 {
                            let specific = if path_covers(path, &declaration.path) {
                                &declaration.path
                            } else {
                                path
                            };
                            out.push(specific.clone());
                        }
                    }
                }
            }
        }
        crate::mask::normalize(&mut out);
        out
    }

    fn bit_of(&self, source: S) -> u64 {
        self.sources
            .iter()
            .position(|known| *known == source)
            .map_or(0, |index| 1 << index)
    }

    /// The declarations at, above or inside `path`.
    fn overlapping<'a>(&'a self, path: &'a str) -> impl Iterator<Item = &'a Declaration> + 'a {
        // Declarations are sorted, so those inside `path` follow the first one not before it.
        let start = self
            .declarations
            .partition_point(|declaration| declaration.path.as_str() < path);
        let above = self.declarations[..start]
            .iter()
            .filter(move |declaration| path_covers(&declaration.path, path));
        let at_or_inside = self.declarations[start..]
            .iter()
            .take_while(move |declaration| path_covers(path, &declaration.path));
        above.chain(at_or_inside)
    }
}

/// The calls one mask needs: a set of the view's sources.
#[derive(Clone, Copy)]
pub struct Plan<'a, S> {
    spec: &'a FanoutSpec<S>,
    bits: u64,
}

impl<S: Source> fmt::Debug for Plan<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.sources()).finish()
    }
}

impl<'a, S: Source> Plan<'a, S> {
    /// Whether `source` is called.
    pub fn contains(&self, source: S) -> bool {
        self.spec.bit_of(source) & self.bits != 0
    }

    /// The planned sources, in declaration order.
    pub fn sources(&self) -> impl Iterator<Item = S> + 'a {
        let bits = self.bits;
        self.spec
            .sources
            .iter()
            .enumerate()
            .filter(move |(index, _)| bits & 1 << index != 0)
            .map(|(_, &source)| source)
    }

    /// The planned sources of one stage, in declaration order.
    pub fn stage(&self, stage: Stage) -> impl Iterator<Item = S> + 'a {
        self.sources()
            .filter(move |source| source.input().stage() == stage)
    }

    /// How many calls are planned.
    pub fn len(&self) -> usize {
        self.bits.count_ones() as usize
    }

    /// Whether no call is planned.
    pub fn is_empty(&self) -> bool {
        self.bits == 0
    }

    /// The view's declaration the plan comes from.
    pub fn spec(&self) -> &'a FanoutSpec<S> {
        self.spec
    }
}

/// Why a call is planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// Authorization needs it for every read.
    Authorization,
    /// It gives the owner that a planned owner-keyed call needs.
    Owner,
    /// A mask path touches a field declared to need it.
    Path {
        /// The path in the (normalized) mask, `*` for the whole view.
        mask_path: String,
        /// The declared path: the mask path, a field inside it or a field around it.
        declared_path: String,
    },
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Authorization => f.write_str("authorization"),
            Self::Owner => f.write_str("owner for stage 2"),
            Self::Path {
                mask_path,
                declared_path,
            } if mask_path == declared_path => write!(f, "mask path {mask_path}"),
            Self::Path {
                mask_path,
                declared_path,
            } => write!(f, "mask path {mask_path} (declared at {declared_path})"),
        }
    }
}

/// One planned call and its causes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedCall {
    /// The foundation method.
    pub method: &'static str,
    /// Its key.
    pub input: Input,
    /// Its stage.
    pub stage: Stage,
    /// Why it is planned, authorization first.
    pub causes: Vec<Cause>,
}

/// The readable account of a plan; `Display` renders it as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explain {
    /// The view's full message name.
    pub view: String,
    /// The normalized mask in path form (`*` for the whole view).
    pub mask: String,
    /// The planned calls, stage one first, each stage in declaration order.
    pub calls: Vec<PlannedCall>,
    /// The methods of the view's sources that are not called.
    pub skipped: Vec<&'static str>,
}

impl fmt::Display for Explain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "view {} with mask {:?}", self.view, self.mask)?;
        for stage in Stage::ALL {
            let mut calls = self
                .calls
                .iter()
                .filter(|call| call.stage == stage)
                .peekable();
            if calls.peek().is_none() {
                continue;
            }
            let key = match stage {
                Stage::First => "track id",
                Stage::Second => "owner",
            };
            writeln!(f, "stage {} (by {key}):", stage.number())?;
            for call in calls {
                writeln!(f, "  {}", call.method)?;
                for cause in &call.causes {
                    writeln!(f, "    <- {cause}")?;
                }
            }
        }
        if !self.skipped.is_empty() {
            writeln!(f, "not called: {}", self.skipped.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
