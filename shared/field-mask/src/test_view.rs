//! The test view for unit tests: the shared helpers of `tests/common/view.rs` plus its schema.

use std::sync::LazyLock;

use crate::plan::{FanoutSpec, Input, Source};
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

/// The foundation calls of the test view, as a gateway would declare them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Upstream {
    Tracks,
    TrackCounts,
    LikeStates,
    UserCounts,
    FollowStates,
}

impl Source for Upstream {
    fn method(&self) -> &'static str {
        match self {
            Self::Tracks => "tracks.v1.Tracks/BatchGetTracks",
            Self::TrackCounts => "counts.v1.Counts/BatchGetTrackCounts",
            Self::LikeStates => "likes.v1.Likes/BatchGetLikeStates",
            Self::UserCounts => "counts.v1.Counts/BatchGetUserCounts",
            Self::FollowStates => "follows.v1.Follows/BatchGetFollowStates",
        }
    }

    fn input(&self) -> Input {
        match self {
            Self::Tracks | Self::TrackCounts | Self::LikeStates => Input::TrackId,
            Self::UserCounts | Self::FollowStates => Input::Owner,
        }
    }
}

/// The fanout declaration of the test view, shaped like the consumer gateway's.
pub(crate) fn track_spec() -> FanoutSpec<Upstream> {
    use Upstream::*;
    FanoutSpec::builder(track())
        .authorization(&[Tracks])
        .owner_from(Tracks)
        .field("id", &[])
        .field("title", &[Tracks])
        .field("description", &[Tracks])
        .field("genre", &[Tracks])
        .field("duration", &[Tracks])
        .field("artwork_url", &[Tracks])
        .field("created_at", &[Tracks])
        .field("tags", &[Tracks])
        .field("labels", &[Tracks])
        .field("collaborators", &[Tracks])
        .field("plays_count", &[TrackCounts])
        .field("creator", &[Tracks])
        .field("creator.followers_count", &[UserCounts])
        .field("creator.followed_by_viewer", &[FollowStates])
        .field("stats", &[TrackCounts])
        .field("viewer", &[LikeStates])
        .field("access", &[Tracks])
        .build()
        .expect("the test view's fanout declaration is complete")
}
