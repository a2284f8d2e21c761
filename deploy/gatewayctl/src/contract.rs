//! `gatewayctl contract`: refuses a proto change that removes a path of a view that a BFF
//! client still reads. BFFs select a view's fields by mask path, so a path is the contract: a
//! removed or renamed field fails every client that names it, whatever the binary wire form
//! says. `buf breaking` (WIRE_JSON) refuses renames and unreserved deletions by itself; this
//! check decides the deletions it lets through (the field's number and name reserved), from
//! evidence of who reads what: the usage snapshots `gatewayctl usage --export` writes.
//!
//! The check compares the leaf paths of each view in two descriptor sets (`buf build -o` output,
//! or any encoded `FileDescriptorSet` with its imports). A leaf path ends at a scalar, an enum,
//! a repeated or map field, a well-known type (`google.protobuf.*`: Timestamp, Duration, …), an
//! empty message, or a message already on the path (recursion stops there). A path in the base
//! and not in the head was removed or renamed; it fails the check when a snapshot shows a
//! client read it within the window before that snapshot's `taken_at`.
//!
//! The window is anchored at `taken_at`, not at the time the check runs: a snapshot is evidence
//! of what clients did up to when it was taken, and says nothing of the time since. Anchored
//! at the present, an old snapshot would stop blocking a removal only because it aged, while
//! the readers it recorded may still be there; anchored at `taken_at`, only a newer snapshot,
//! one that shows the readers gone, lets the removal through. The check notes a snapshot that
//! is older than the window.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use prost_reflect::{DescriptorPool, Kind, MessageDescriptor};

use crate::usage::{PathUsage, Snapshot};

/// The views checked when none is named.
pub const DEFAULT_VIEWS: [&str; 2] = ["consumer.v1.Track", "creator.v1.Track"];

/// A leaf path of a view and the field numbers along it (to tell a rename from a removal).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LeafPath {
    /// Snake-case field names joined by `.`, as masks name them: `creator.followers_count`.
    pub path: String,
    pub numbers: Vec<u32>,
}

/// The leaf paths of `message`, in field order.
pub fn leaf_paths(message: &MessageDescriptor) -> Vec<LeafPath> {
    let mut paths = Vec::new();
    let mut stack = vec![message.full_name().to_owned()];
    walk(message, "", &[], &mut stack, &mut paths);
    paths
}

fn walk(
    message: &MessageDescriptor,
    prefix: &str,
    numbers: &[u32],
    stack: &mut Vec<String>,
    paths: &mut Vec<LeafPath>,
) {
    for field in message.fields() {
        let path = format!("{prefix}{}", field.name());
        let mut numbers = numbers.to_vec();
        numbers.push(field.number());
        let nested = match field.kind() {
            Kind::Message(nested) if !field.is_list() && !field.is_map() => Some(nested),
            _ => None,
        };
        match nested {
            Some(nested)
                if !nested.full_name().starts_with("google.protobuf.")
                    && nested.fields().len() > 0
                    && !stack.iter().any(|name| name == nested.full_name()) =>
            {
                stack.push(nested.full_name().to_owned());
                walk(&nested, &format!("{path}."), &numbers, stack, paths);
                stack.pop();
            }
            _ => paths.push(LeafPath { path, numbers }),
        }
    }
}

/// The leaf paths of `view` in the descriptor sets built into gatewayctl (the gateways' APIs
/// as of this build); none for a view they lack.
pub fn known_leaf_paths(view: &str) -> Vec<String> {
    [protos::descriptors::CONSUMER, protos::descriptors::CREATOR]
        .into_iter()
        .filter_map(|set| DescriptorPool::decode(set).ok())
        .find_map(|pool| pool.get_message_by_name(view))
        .map(|message| {
            leaf_paths(&message)
                .into_iter()
                .map(|leaf| leaf.path)
                .collect()
        })
        .unwrap_or_default()
}

/// A span of time given as a whole number with a unit: `30d`, `12h`, `90m` or `3600s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub seconds: u64,
    /// The number and unit as written, for messages.
    amount: u64,
    unit: char,
}

impl Window {
    /// Parses `30d`, `12h`, `90m` or `3600s`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let unit = text
            .chars()
            .last()
            .ok_or_else(|| "an empty window".to_owned())?;
        let scale = match unit {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => {
                return Err(format!(
                    "{text:?} has no unit: write it as 30d, 12h, 90m or 3600s"
                ));
            }
        };
        let amount: u64 = text[..text.len() - 1]
            .parse()
            .map_err(|_| format!("{text:?} is not a whole number of d, h, m or s"))?;
        let seconds = amount
            .checked_mul(scale)
            .ok_or_else(|| format!("{text:?} is too long"))?;
        Ok(Self {
            seconds,
            amount,
            unit,
        })
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.amount, self.unit)
    }
}

/// One usage snapshot and the name it is reported by (its file).
#[derive(Debug, Clone)]
pub struct Evidence {
    pub name: String,
    pub snapshot: Snapshot,
}

/// What the check found, for people: the failures, the warnings and the notes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// A removed path a client read within the window: each fails the check.
    pub failures: Vec<String>,
    /// Paths a snapshot recorded that neither descriptor set has: stale evidence.
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
}

impl Report {
    /// Every line, failures first.
    pub fn render(&self) -> String {
        let mut text = String::new();
        for failure in &self.failures {
            text.push_str(&format!("error: {failure}\n"));
        }
        for warning in &self.warnings {
            text.push_str(&format!("warning: {warning}\n"));
        }
        for note in &self.notes {
            text.push_str(&format!("note: {note}\n"));
        }
        text
    }
}

/// The command: reads the descriptor sets `base` and `head` and the usage snapshots `usage`,
/// checks `views`, and returns the report, or an error that holds the report when a removed path
/// is still read. `now` is the present in Unix seconds.
pub fn contract(
    base: &Path,
    head: &Path,
    views: &[String],
    usage: &[PathBuf],
    window: Window,
    now: u64,
) -> anyhow::Result<String> {
    let read = |file: &Path| -> anyhow::Result<DescriptorPool> {
        let bytes = std::fs::read(file)
            .with_context(|| format!("cannot read descriptor set {}", file.display()))?;
        decode_set(&bytes, &file.display().to_string())
    };
    let (base_pool, head_pool) = (read(base)?, read(head)?);
    let evidence = usage
        .iter()
        .map(|file| {
            Ok(Evidence {
                name: file.display().to_string(),
                snapshot: Snapshot::read(file)?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let report = check(&base_pool, &head_pool, views, &evidence, window, now)?;
    let summary = format!(
        "{} in {} against {}, window {window}",
        views.join(", "),
        head.display(),
        base.display(),
    );
    if report.failures.is_empty() {
        Ok(format!("{}contract holds: {summary}\n", report.render()))
    } else {
        bail!(
            "the change removes paths that clients still read ({summary}); add the new field, \
             wait for these clients to move to it, then remove the old one\n{}",
            report.render().trim_end()
        )
    }
}

/// Decodes an encoded `FileDescriptorSet` (with its imports, as `buf build -o` writes it).
fn decode_set(bytes: &[u8], name: &str) -> anyhow::Result<DescriptorPool> {
    DescriptorPool::decode(bytes)
        .with_context(|| format!("{name} is not an encoded FileDescriptorSet with all its imports"))
}

/// Compares the leaf paths of each of `views` in `base` and `head` and weighs every removed
/// one against `evidence`. `now` (Unix seconds) only dates the notes about old snapshots.
pub fn check(
    base: &DescriptorPool,
    head: &DescriptorPool,
    views: &[String],
    evidence: &[Evidence],
    window: Window,
    now: u64,
) -> anyhow::Result<Report> {
    if let Some(view) = views.iter().find(|view| {
        base.get_message_by_name(view).is_none() && head.get_message_by_name(view).is_none()
    }) {
        bail!("neither descriptor set has the view {view}");
    }
    let mut report = Report::default();
    if evidence.is_empty() {
        report.notes.push(
            "no usage snapshot given: a removed path passes unchecked against its readers".into(),
        );
    }
    for item in evidence {
        let age = now.saturating_sub(item.snapshot.taken_at);
        if age > window.seconds {
            report.notes.push(format!(
                "{} was taken {} ({}), longer ago than the {window} window: it blocks removals \
                 of the paths it shows read until a fresh export replaces it",
                item.name,
                crate::usage::ago(now, item.snapshot.taken_at),
                utc(item.snapshot.taken_at),
            ));
        }
    }
    for view in views {
        let base_paths = base
            .get_message_by_name(view)
            .map(|message| leaf_paths(&message));
        let head_paths = head
            .get_message_by_name(view)
            .map(|message| leaf_paths(&message));
        let (base_paths, head_paths) = match (base_paths, head_paths) {
            (None, None) => unreachable!("checked above"),
            (None, Some(head_paths)) => {
                report.notes.push(format!(
                    "{view} is new ({} paths): nothing to remove",
                    head_paths.len()
                ));
                continue;
            }
            (Some(base_paths), head_paths) => (base_paths, head_paths.unwrap_or_default()),
        };
        let head_by_path: BTreeSet<&str> = head_paths.iter().map(|l| l.path.as_str()).collect();
        let head_by_numbers: BTreeMap<&[u32], &str> = head_paths
            .iter()
            .map(|leaf| (leaf.numbers.as_slice(), leaf.path.as_str()))
            .collect();
        let removed: Vec<(&LeafPath, Option<&str>)> = base_paths
            .iter()
            .filter(|leaf| !head_by_path.contains(leaf.path.as_str()))
            .map(|leaf| (leaf, head_by_numbers.get(leaf.numbers.as_slice()).copied()))
            .collect();
        if removed.is_empty() {
            report.notes.push(format!(
                "{view}: no path removed ({} in base, {} in head)",
                base_paths.len(),
                head_paths.len()
            ));
        }
        for (leaf, renamed_to) in removed {
            let change = match renamed_to {
                Some(new) => format!("{view} path {} is renamed to {new}", leaf.path),
                None => format!("{view} path {} is removed", leaf.path),
            };
            let mut read_within = Vec::new();
            let mut read_before = Vec::new();
            for item in evidence {
                for (client, path, usage) in readers(&item.snapshot, view, &leaf.path) {
                    let at = usage.last_read.unwrap_or(item.snapshot.taken_at);
                    let within = at.saturating_add(window.seconds) >= item.snapshot.taken_at;
                    let last = match usage.last_read {
                        Some(at) => format!(
                            "last at {} ({} before the snapshot)",
                            utc(at),
                            span(item.snapshot.taken_at.saturating_sub(at))
                        ),
                        None => "last read time unknown, counted as at the snapshot".to_owned(),
                    };
                    let through = if path == leaf.path {
                        String::new()
                    } else {
                        format!(" (through {path})")
                    };
                    let line = format!(
                        "client {client} read it{through} {} times, {last}, in {}",
                        usage.reads, item.name
                    );
                    if within {
                        read_within.push(line);
                    } else {
                        read_before.push(line);
                    }
                }
            }
            if evidence.is_empty() {
                report
                    .notes
                    .push(format!("{change}; no usage snapshot to weigh it against"));
            } else if read_within.is_empty() {
                let mut note = format!("{change}; no client read it within the {window} window");
                if !read_before.is_empty() {
                    note.push_str(&format!(" (earlier: {})", read_before.join("; ")));
                }
                report.notes.push(note);
            } else {
                for line in read_within {
                    report
                        .failures
                        .push(format!("{change}, but {line}, within the {window} window"));
                }
            }
        }
        let known: BTreeSet<&str> = base_paths
            .iter()
            .chain(&head_paths)
            .map(|leaf| leaf.path.as_str())
            .collect();
        for item in evidence {
            for path in unknown_paths(&item.snapshot, view, &known) {
                report.warnings.push(format!(
                    "{} shows reads of {view} path {path}, which neither descriptor set has: \
                     the snapshot is stale or of another version of the API",
                    item.name
                ));
            }
        }
    }
    for item in evidence {
        for view in item.snapshot.views.keys() {
            if !views.contains(view) {
                report.notes.push(format!(
                    "{} records {view}, which is not checked (add --view {view})",
                    item.name
                ));
            }
        }
    }
    Ok(report)
}

/// The paths of `view` that `snapshot` shows read and that are neither in `known` nor above a
/// path of it.
fn unknown_paths<'a>(
    snapshot: &'a Snapshot,
    view: &str,
    known: &BTreeSet<&str>,
) -> BTreeSet<&'a str> {
    let Some(clients) = snapshot.views.get(view) else {
        return BTreeSet::new();
    };
    clients
        .values()
        .flat_map(|paths| paths.keys())
        .filter(|path| {
            let below = format!("{path}.");
            !known.contains(path.as_str()) && !known.iter().any(|k| k.starts_with(&below))
        })
        .map(String::as_str)
        .collect()
}

/// The reads in `snapshot` of `path` of `view`: of the path itself, or of a path above it (a
/// client that read `creator` read `creator.id` too).
fn readers<'a>(
    snapshot: &'a Snapshot,
    view: &str,
    path: &str,
) -> Vec<(&'a str, &'a str, &'a PathUsage)> {
    let Some(clients) = snapshot.views.get(view) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for (client, paths) in clients {
        for (read, usage) in paths {
            let covers = read == path
                || path
                    .strip_prefix(read.as_str())
                    .is_some_and(|rest| rest.starts_with('.'));
            if covers && usage.was_read() {
                found.push((client.as_str(), read.as_str(), usage));
            }
        }
    }
    found
}

/// A span of seconds in the largest whole unit: `45d`, `3h`, `12m`, `5s`.
fn span(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3_600 => format!("{}m", seconds / 60),
        3_600..86_400 => format!("{}h", seconds / 3_600),
        _ => format!("{}d", seconds / 86_400),
    }
}

/// A Unix second as `2026-11-30T10:00:00Z`.
pub fn utc(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests;
