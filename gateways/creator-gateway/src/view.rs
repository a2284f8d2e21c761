//! The owner's Track view (`creator.v1.Track`): which foundation data each of its fields needs,
//! declared once, and the conversion from the foundation records into the view.
//!
//! Every field comes from `tracks` except `stats.*`, which come from
//! `counts.BatchGetTrackCounts`. `tracks` is also what authorization needs (it says who owns
//! the track), so it is called whatever the mask; a mask that does not touch `stats` makes no
//! `counts` call. [`CreatorView::explain`] prints the decision for a mask.

use std::collections::HashMap;

use field_mask::{
    Explain, FanoutSpec, Input, Mask, MaskError, SpecError, ViewSchema, call_batched, run_plan,
};
use gateway_kit::{Audit, Cost, Deadline, UpstreamError};
use prost_reflect::DescriptorPool;
use protos::{
    creator::v1::{self as pb, geoblocking, track},
    foundation::{counts::v1::TrackCounts, tracks::v1 as tracks_pb},
};

use crate::{GatewayError, upstream::Clients};

/// The view's full message name.
pub const VIEW: &str = "creator.v1.Track";

/// The method of [`Upstream::Counts`], as the degraded-responses metric names it.
pub(crate) const COUNTS_METHOD: &str = "foundation.counts.v1.CountsService/BatchGetTrackCounts";

/// The foundation calls the view's fields need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Upstream {
    /// The track records: `BatchGetTracks` for one track, `ListTracksByOwner` for a page.
    Tracks,
    /// The track's counters.
    Counts,
}

impl field_mask::Source for Upstream {
    fn method(&self) -> &'static str {
        match self {
            Self::Tracks => "foundation.tracks.v1.TracksService/BatchGetTracks",
            Self::Counts => COUNTS_METHOD,
        }
    }

    fn input(&self) -> Input {
        Input::TrackId
    }
}

/// Fields whose data lives in the track record.
const FROM_TRACKS: &[&str] = &[
    "id",
    "title",
    "description",
    "genre",
    "duration",
    "artwork_url",
    "created_at",
    "updated_at",
    "visibility",
    "secret_token",
    "geoblocking",
    "downloadable",
    "audio",
];

/// Fields whose data lives in counts. Declared one by one, so that a degraded response names
/// each missing counter.
const FROM_COUNTS: &[&str] = &[
    "stats.likes_count",
    "stats.reposts_count",
    "stats.downloads_count",
];

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("cannot decode the creator descriptor set: {0}")]
    Descriptor(#[from] prost_reflect::DescriptorError),
    #[error("the descriptor set has no message {VIEW}")]
    Missing,
    #[error("{VIEW} cannot serve as a field mask view: {0}")]
    Schema(#[from] field_mask::SchemaError),
    #[error("the fanout declaration of {VIEW} is invalid: {0}")]
    Spec(#[from] SpecError),
}

/// The view's schema and fanout declaration, built once at start-up.
#[derive(Debug, Clone)]
pub struct CreatorView {
    spec: FanoutSpec<Upstream>,
    /// `id` alone: what a command reads to check ownership, so it makes no counts call.
    ownership_only: Mask,
}

impl CreatorView {
    /// Builds the view from the generated descriptor set.
    pub fn load() -> Result<Self, ViewError> {
        let pool = DescriptorPool::decode(protos::descriptors::CREATOR)?;
        let track = pool.get_message_by_name(VIEW).ok_or(ViewError::Missing)?;
        let schema = ViewSchema::new(track)?;
        let mut builder = FanoutSpec::builder(schema).authorization(&[Upstream::Tracks]);
        for path in FROM_TRACKS {
            builder = builder.field(path, &[Upstream::Tracks]);
        }
        for path in FROM_COUNTS {
            builder = builder.field(path, &[Upstream::Counts]);
        }
        let spec = builder.build()?;
        let ownership_only =
            spec.schema()
                .parse_paths(["id"])
                .map_err(|reason| SpecError::InvalidPath {
                    path: "id".into(),
                    reason,
                })?;
        Ok(Self {
            spec,
            ownership_only,
        })
    }

    pub fn schema(&self) -> &ViewSchema {
        self.spec.schema()
    }

    /// Parses a request's mask; unset or empty means the whole view.
    pub fn parse(&self, mask: Option<prost_types::FieldMask>) -> Result<Mask, MaskError> {
        self.schema().parse_field_mask(mask)
    }

    /// The planned cost of reading `tracks` tracks with `mask`: the planned calls, each
    /// carrying up to `tracks` keys.
    pub(crate) fn cost(&self, mask: &Mask, tracks: usize) -> Cost {
        Cost {
            calls: self.spec.plan(mask).len() as u64,
            keys: tracks as u64,
            extra: 0,
        }
    }

    /// The planned cost of a page of `size` of the caller's tracks with `mask`: one call lists
    /// the page, with the records; counts, when the mask wants them, carries `size` keys.
    pub(crate) fn page_cost(&self, mask: &Mask, size: usize) -> Cost {
        Cost {
            calls: u64::from(self.needs_counts(mask)),
            keys: size as u64,
            extra: 1,
        }
    }

    /// Whether `mask` needs the counts call.
    pub fn needs_counts(&self, mask: &Mask) -> bool {
        self.spec.plan(mask).contains(Upstream::Counts)
    }

    /// The calls `mask` makes, and why.
    pub fn explain(&self, mask: &Mask) -> Explain {
        self.spec.explain(mask)
    }

    /// The mask paths to list in `x-degraded-fields` when counts gave no data.
    pub fn degraded_by_counts(&self, mask: &Mask) -> Vec<String> {
        self.spec.degraded_paths(mask, &[Upstream::Counts])
    }

    /// The mask a command reads the track with to check ownership.
    pub(crate) fn ownership_only(&self) -> &Mask {
        &self.ownership_only
    }
}

/// What the caller may see of one of their tracks: the record, its counters when the mask
/// wants them and counts answered, and the mask paths missing because counts failed.
#[derive(Debug)]
pub(crate) struct Owned {
    pub(crate) track: tracks_pb::Track,
    pub(crate) counts: Option<TrackCounts>,
    pub(crate) degraded: Vec<String>,
}

/// What one planned call brought back.
enum Fetched {
    Track(Option<tracks_pb::Track>),
    Counts(HashMap<String, TrackCounts>),
}

impl CreatorView {
    /// The caller's track `track_id`, fetched as `mask` plans it. Another user's track is
    /// [`GatewayError::TrackNotFound`], like a missing one, and audited; its counters, fetched
    /// alongside, are dropped.
    pub(crate) async fn owned_track(
        &self,
        clients: &Clients,
        audit: &Audit,
        user: &str,
        track_id: &str,
        mask: &Mask,
        deadline: Deadline,
    ) -> Result<Owned, GatewayError> {
        let plan = self.spec.plan(mask);
        let ids = [track_id.to_owned()];
        let (track, mut results) = run_plan(
            &plan,
            &ids,
            |source, keys| fetch(clients, source, keys, deadline),
            |granted| {
                let track = granted
                    .into_iter()
                    .find_map(|(_, fetched)| match fetched {
                        Fetched::Track(track) => Some(track),
                        Fetched::Counts(_) => None,
                    })
                    .ok_or_else(|| {
                        GatewayError::Internal("the tracks call was not planned".into())
                    })?;
                match track {
                    Some(track) if track.owner_id == user => Ok((track, Vec::new())),
                    Some(_) => {
                        audit.track_withheld(track_id, Some(user), "not_owner");
                        Err(GatewayError::TrackNotFound(track_id.to_owned()))
                    }
                    None => Err(GatewayError::TrackNotFound(track_id.to_owned())),
                }
            },
        )
        .await?;
        let (counts, degraded) = match results.take(Upstream::Counts) {
            None => (None, Vec::new()),
            Some(Ok(Fetched::Counts(mut counts))) => (counts.remove(track_id), Vec::new()),
            Some(Ok(Fetched::Track(_))) => {
                return Err(GatewayError::Internal(
                    "counts answered with a track".into(),
                ));
            }
            Some(Err(error)) => {
                tracing::warn!(%error, track_id, "counts failed; stats are degraded");
                audit.degraded(COUNTS_METHOD);
                (None, self.degraded_by_counts(mask))
            }
        };
        Ok(Owned {
            track,
            counts,
            degraded,
        })
    }
}

/// The one call of `source` for `keys`.
async fn fetch(
    clients: &Clients,
    source: Upstream,
    keys: Vec<String>,
    deadline: Deadline,
) -> Result<Fetched, GatewayError> {
    Ok(match source {
        Upstream::Tracks => {
            let wanted = keys.clone();
            let tracks = clients.read_tracks.values(keys, deadline).await?;
            Fetched::Track(tracks.into_iter().find(|track| wanted.contains(&track.id)))
        }
        Upstream::Counts => Fetched::Counts(counts(clients, keys, deadline).await?),
    })
}

/// One counts call for all of `track_ids`, by track id.
pub(crate) async fn counts(
    clients: &Clients,
    track_ids: Vec<String>,
    deadline: Deadline,
) -> Result<HashMap<String, TrackCounts>, UpstreamError> {
    call_batched(track_ids, |track_ids| async move {
        let counts = clients.read_counts.get(track_ids, deadline).await?;
        Ok(counts.into_iter())
    })
    .await
}

/// The owner's view of a track record, with its counters when counts answered.
pub fn to_view(track: tracks_pb::Track, counts: Option<&TrackCounts>) -> pb::Track {
    let geo = track.geoblocking.unwrap_or_default();
    let audio = track.audio.unwrap_or_default();
    pb::Track {
        id: track.id,
        title: track.title,
        description: track.description,
        genre: track.genre,
        duration: track.duration,
        artwork_url: track.artwork_url,
        created_at: track.create_time,
        updated_at: track.update_time,
        visibility: visibility_to_view(track.visibility),
        secret_token: track.secret_token,
        geoblocking: Some(pb::Geoblocking {
            mode: mode_to_view(geo.mode),
            territories: geo.territories,
        }),
        downloadable: track.downloadable,
        stats: counts.map(|counts| pb::Stats {
            likes_count: Some(counts.likes_count),
            reposts_count: Some(counts.reposts_count),
            downloads_count: Some(counts.downloads_count),
        }),
        audio: Some(pb::Audio {
            size_bytes: audio.size_bytes,
            sha256: audio.sha256,
        }),
    }
}

fn visibility_to_view(value: i32) -> i32 {
    match tracks_pb::Visibility::try_from(value) {
        Ok(tracks_pb::Visibility::Public) => track::Visibility::Public as i32,
        Ok(tracks_pb::Visibility::Private) => track::Visibility::Private as i32,
        _ => track::Visibility::Unspecified as i32,
    }
}

fn mode_to_view(value: i32) -> i32 {
    match tracks_pb::GeoblockingMode::try_from(value) {
        Ok(tracks_pb::GeoblockingMode::None) => geoblocking::Mode::None as i32,
        Ok(tracks_pb::GeoblockingMode::AllowList) => geoblocking::Mode::AllowList as i32,
        Ok(tracks_pb::GeoblockingMode::BlockList) => geoblocking::Mode::BlockList as i32,
        _ => geoblocking::Mode::Unspecified as i32,
    }
}

/// The view's visibility as the tracks service spells it. Values outside the enum pass
/// through, so that tracks rejects them naming the field.
pub(crate) fn visibility_to_tracks(value: i32) -> i32 {
    match track::Visibility::try_from(value) {
        Ok(track::Visibility::Unspecified) => tracks_pb::Visibility::Unspecified as i32,
        Ok(track::Visibility::Public) => tracks_pb::Visibility::Public as i32,
        Ok(track::Visibility::Private) => tracks_pb::Visibility::Private as i32,
        Err(_) => value,
    }
}

/// The view's geoblocking mode as the tracks service spells it; values outside the enum pass
/// through, as for [`visibility_to_tracks`].
pub(crate) fn mode_to_tracks(value: i32) -> i32 {
    match geoblocking::Mode::try_from(value) {
        Ok(geoblocking::Mode::Unspecified) => tracks_pb::GeoblockingMode::Unspecified as i32,
        Ok(geoblocking::Mode::None) => tracks_pb::GeoblockingMode::None as i32,
        Ok(geoblocking::Mode::AllowList) => tracks_pb::GeoblockingMode::AllowList as i32,
        Ok(geoblocking::Mode::BlockList) => tracks_pb::GeoblockingMode::BlockList as i32,
        Err(_) => value,
    }
}

/// The writable fields of a view track as the tracks service's metadata, for `owner_id`.
pub(crate) fn to_metadata(track: &pb::Track, owner_id: String) -> tracks_pb::TrackMetadata {
    let geo = track.geoblocking.clone().unwrap_or_default();
    tracks_pb::TrackMetadata {
        owner_id,
        title: track.title.clone(),
        description: track.description.clone(),
        genre: track.genre.clone(),
        duration: track.duration,
        artwork_url: track.artwork_url.clone(),
        visibility: visibility_to_tracks(track.visibility),
        geoblocking: Some(tracks_pb::Geoblocking {
            mode: mode_to_tracks(geo.mode),
            territories: geo.territories,
        }),
        downloadable: track.downloadable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> CreatorView {
        CreatorView::load().unwrap()
    }

    fn mask(view: &CreatorView, paths: &[&str]) -> Mask {
        view.schema().parse_paths(paths.iter().copied()).unwrap()
    }

    #[test]
    fn the_declaration_covers_every_field_and_counts_only_serves_stats() {
        let view = view();
        assert!(view.needs_counts(&Mask::all()));
        assert!(view.needs_counts(&mask(&view, &["stats"])));
        assert!(view.needs_counts(&mask(&view, &["title", "stats.likes_count"])));
        for path in FROM_TRACKS {
            assert!(!view.needs_counts(&mask(&view, &[path])), "{path}");
        }
    }

    #[test]
    fn explain_names_the_calls_and_their_causes() {
        let view = view();
        let explained = view
            .explain(&mask(&view, &["title", "stats.likes_count"]))
            .to_string();
        assert_eq!(
            explained,
            "view creator.v1.Track with mask \"stats.likes_count,title\"\n\
             stage 1 (by track id):\n  \
             foundation.tracks.v1.TracksService/BatchGetTracks\n    \
             <- authorization\n    \
             <- mask path title\n  \
             foundation.counts.v1.CountsService/BatchGetTrackCounts\n    \
             <- mask path stats.likes_count\n"
        );
        let id_only = view.explain(&mask(&view, &["id"])).to_string();
        assert!(
            id_only
                .ends_with("not called: foundation.counts.v1.CountsService/BatchGetTrackCounts\n"),
            "{id_only}"
        );
    }

    #[test]
    fn degraded_paths_name_each_missing_counter_the_mask_asked_for() {
        let view = view();
        assert_eq!(
            view.degraded_by_counts(&Mask::all()),
            [
                "stats.downloads_count",
                "stats.likes_count",
                "stats.reposts_count"
            ]
        );
        assert_eq!(
            view.degraded_by_counts(&mask(&view, &["title", "stats.reposts_count"])),
            vec!["stats.reposts_count"]
        );
        assert!(view.degraded_by_counts(&mask(&view, &["title"])).is_empty());
    }

    #[test]
    fn enums_map_both_ways_and_unknown_values_pass_through() {
        for (view_value, tracks_value) in [(0, 0), (1, 1), (2, 2)] {
            assert_eq!(visibility_to_tracks(view_value), tracks_value);
            assert_eq!(visibility_to_view(tracks_value), view_value);
        }
        for (view_value, tracks_value) in [(0, 0), (1, 1), (2, 2), (3, 3)] {
            assert_eq!(mode_to_tracks(view_value), tracks_value);
            assert_eq!(mode_to_view(tracks_value), view_value);
        }
        assert_eq!(visibility_to_tracks(9), 9);
        assert_eq!(mode_to_tracks(-1), -1);
    }
}
