//! The test view for unit tests: the shared helpers of `tests/common/view.rs` plus its schema.

use std::sync::LazyLock;

use crate::schema::ViewSchema;

#[path = "../tests/common/view.rs"]
mod view;

pub(crate) use view::{full_track, leaf_paths, message};

static TRACK: LazyLock<ViewSchema> =
    LazyLock::new(|| ViewSchema::new(message("Track")).expect("the track view is a valid view"));

/// The schema of the Track test view.
pub(crate) fn track() -> ViewSchema {
    TRACK.clone()
}
