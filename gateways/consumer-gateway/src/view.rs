//! The consumer's Track view: which foundation data each field needs (declared once, and
//! printable with [`TrackView::explain`]), and how a batch of tracks is fetched, authorized and
//! assembled. Every query (one track, a batch, a page of likes) goes through [`TrackView::assemble`],
//! which makes one batched call per planned foundation method, whatever the number of tracks;
//! `field_mask::run_plan` drives the stages.

use authorization::Principal;
use field_mask::{
    Explain, FanoutSpec, IdMap, Input, Mask, Source, ViewSchema, run_plan, unique_keys,
};
use gateway_kit::{Audit, Cost, Deadline, requested_mask};
use protos::{
    consumer::v1 as view,
    foundation::{
        counts::v1::{TrackCounts, UserCounts},
        follows::v1::FollowState,
        likes::v1::Reaction,
        tracks::v1::Track as FoundationTrack,
    },
};

use crate::{GatewayError, rules, upstreams::Clients};

/// The foundation methods the view can need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Src {
    Tracks,
    Reactions,
    TrackCounts,
    Following,
    UserCounts,
}

impl Source for Src {
    fn method(&self) -> &'static str {
        match self {
            Self::Tracks => "tracks.BatchGetTracks",
            Self::Reactions => "likes.BatchGetReactions",
            Self::TrackCounts => "counts.BatchGetTrackCounts",
            Self::Following => "follows.BatchGetFollowing",
            Self::UserCounts => "counts.BatchGetUserCounts",
        }
    }

    fn input(&self) -> Input {
        match self {
            Self::Tracks | Self::Reactions | Self::TrackCounts => Input::TrackId,
            Self::Following | Self::UserCounts => Input::Owner,
        }
    }
}

/// What one planned call brought back.
#[derive(Debug)]
enum Fetched {
    Tracks(Vec<FoundationTrack>),
    Reactions(Vec<Reaction>),
    TrackCounts(Vec<TrackCounts>),
    Following(Vec<FollowState>),
    UserCounts(Vec<UserCounts>),
}

/// Who asks, and with what.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller<'a> {
    pub(crate) principal: &'a Principal,
    /// A private track's secret token, from a private link (single-track reads only).
    pub(crate) secret_token: Option<&'a str>,
    /// When every upstream call of the request must be done.
    pub(crate) deadline: Deadline,
}

/// The tracks of a query, in request order, and the mask paths left unfilled because an
/// upstream failed.
#[derive(Debug)]
pub(crate) struct Assembled {
    /// One entry per requested id: `None` for a track that is missing or hidden.
    pub(crate) tracks: Vec<Option<view::Track>>,
    pub(crate) degraded: Vec<String>,
}

/// The consumer's Track view, built once at start-up.
#[derive(Debug)]
pub struct TrackView {
    spec: FanoutSpec<Src>,
}

impl TrackView {
    pub fn new() -> Result<Self, String> {
        let pool = prost_reflect::DescriptorPool::decode(protos::descriptors::CONSUMER)
            .map_err(|error| format!("cannot load the consumer descriptors: {error}"))?;
        let track = pool
            .get_message_by_name("consumer.v1.Track")
            .ok_or("the consumer descriptors have no consumer.v1.Track")?;
        let schema = ViewSchema::new(track).map_err(|error| error.to_string())?;
        use Src::*;
        let spec = FanoutSpec::builder(schema)
            .authorization(&[Tracks])
            .owner_from(Tracks)
            .field("id", &[Tracks])
            .field("title", &[Tracks])
            .field("description", &[Tracks])
            .field("genre", &[Tracks])
            .field("duration", &[Tracks])
            .field("artwork_url", &[Tracks])
            .field("created_at", &[Tracks])
            .field("creator.id", &[Tracks])
            .field("creator.followers_count", &[UserCounts])
            .field("creator.followed_by_viewer", &[Following])
            .field("stats.likes_count", &[TrackCounts])
            .field("stats.reposts_count", &[TrackCounts])
            .field("viewer.liked", &[Reactions])
            .field("viewer.reposted", &[Reactions])
            .field("access.downloadable", &[Tracks])
            .build()
            .map_err(|error| error.to_string())?;
        Ok(Self { spec })
    }

    /// Parses a read mask; an invalid one is `INVALID_ARGUMENT` naming the path.
    pub fn mask(&self, read_mask: Option<prost_types::FieldMask>) -> Result<Mask, GatewayError> {
        self.spec
            .schema()
            .parse_field_mask(read_mask)
            .map_err(|error| GatewayError::InvalidMask(error.user_message()))
    }

    /// A request's read mask: its `read_mask` field, or the `x-read-mask` metadata
    /// (`gateway_kit::governance::requested_mask`); an invalid one is `INVALID_ARGUMENT` naming
    /// the path.
    pub(crate) fn requested(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        read_mask: Option<prost_types::FieldMask>,
    ) -> Result<Mask, GatewayError> {
        requested_mask(self.spec.schema(), metadata, read_mask).map_err(|error| match error.from {
            gateway_kit::governance::MaskSource::Field => GatewayError::InvalidMask(error.message),
            gateway_kit::governance::MaskSource::Header => {
                GatewayError::InvalidMask(error.to_string())
            }
        })
    }

    /// The view's schema.
    pub fn schema(&self) -> &ViewSchema {
        self.spec.schema()
    }

    /// The planned cost of reading `tracks` tracks with `mask`: the foundation calls
    /// [`TrackView::assemble`] makes, each carrying up to `tracks` keys (the viewer relations
    /// of an anonymous caller make no call).
    pub(crate) fn cost(&self, mask: &Mask, signed_in: bool, tracks: usize) -> Cost {
        let calls = self
            .spec
            .plan(mask)
            .sources()
            .filter(|source| signed_in || !matches!(source, Src::Reactions | Src::Following))
            .count();
        Cost {
            calls: calls as u64,
            keys: tracks as u64,
            extra: 0,
        }
    }

    /// The planned foundation calls for a mask.
    pub fn explain(&self, mask: &Mask) -> Explain {
        self.spec.explain(mask)
    }

    /// Fetches, authorizes and assembles the tracks `ids` for `caller`, trimmed to `mask`.
    pub(crate) async fn assemble(
        &self,
        clients: &Clients,
        audit: &Audit,
        ids: &[String],
        mask: &Mask,
        caller: Caller<'_>,
    ) -> Result<Assembled, GatewayError> {
        let plan = self.spec.plan(mask);
        let user = caller.principal.user();
        let unique = unique_keys(ids.iter().cloned());
        // Authorization fails closed: without the tracks there is no answer. Data fetched
        // beside them for tracks that turn out hidden is dropped below.
        let (mut by_id, results) = run_plan(
            &plan,
            &unique,
            |source, keys| fetch(clients, source, keys, caller),
            |granted| {
                let tracks = granted
                    .into_iter()
                    .find_map(|(_, fetched)| match fetched {
                        Fetched::Tracks(tracks) => Some(tracks),
                        _ => None,
                    })
                    .ok_or_else(|| {
                        GatewayError::Internal("the tracks call was not planned".into())
                    })?;
                let by_id = rules::authorize(tracks, caller.principal, caller.secret_token, audit);
                let owners = unique_keys(
                    unique
                        .iter()
                        .filter_map(|id| by_id.get(id))
                        .map(|track| track.owner_id.clone()),
                );
                Ok((by_id, owners))
            },
        )
        .await?;

        let mut failed: Vec<Src> = Vec::new();
        let mut reactions = IdMap::default();
        let mut track_counts = IdMap::default();
        let mut following = IdMap::default();
        let mut user_counts = IdMap::default();
        for (source, result) in results.into_inner() {
            match result {
                Ok(Fetched::Tracks(_)) => {}
                Ok(Fetched::Reactions(list)) => {
                    reactions = list.into_iter().map(|r| (r.track_id.clone(), r)).collect();
                }
                Ok(Fetched::TrackCounts(list)) => {
                    track_counts = list.into_iter().map(|c| (c.track_id.clone(), c)).collect();
                }
                Ok(Fetched::Following(list)) => {
                    following = list
                        .into_iter()
                        .map(|state| (state.followee_id.clone(), state.following))
                        .collect();
                }
                Ok(Fetched::UserCounts(list)) => {
                    user_counts = list.into_iter().map(|c| (c.user_id.clone(), c)).collect();
                }
                Err(error) => {
                    tracing::warn!(method = source.method(), %error, "degrading the response");
                    audit.degraded(source.method());
                    failed.push(source);
                }
            }
        }

        if user.is_none() {
            for (path, touched) in [
                ("viewer", mask.touches("viewer")),
                (
                    "creator.followed_by_viewer",
                    mask.covers("creator.followed_by_viewer"),
                ),
            ] {
                if touched && !by_id.is_empty() {
                    audit.field_withheld(path, None, "anonymous");
                }
            }
        }

        let data = Data {
            planned: |source| plan.contains(source) && !failed.contains(&source),
            signed_in: user.is_some(),
            reactions: &reactions,
            track_counts: &track_counts,
            following: &following,
            user_counts: &user_counts,
        };
        let mut assembled = Vec::with_capacity(ids.len());
        // Each id once (the usual batch): each record is moved into its view, not copied.
        let once = unique.len() == ids.len();
        for id in ids {
            let track = if once {
                by_id.remove(id)
            } else {
                by_id.get(id).cloned()
            };
            assembled.push(match track {
                Some(track) => Some(self.view_of_owned(&data, track, mask)?),
                None => None,
            });
        }
        Ok(Assembled {
            tracks: assembled,
            degraded: if failed.is_empty() {
                Vec::new()
            } else {
                self.spec.degraded_paths(mask, &failed)
            },
        })
    }
}

impl TrackView {
    /// One visible track's view, built from `data` and trimmed to `mask`: the last, pure step
    /// of [`TrackView::assemble`] (public so that the fuzz targets exercise it).
    pub fn view_of<P: Fn(Src) -> bool>(
        &self,
        data: &Data<'_, P>,
        track: &FoundationTrack,
        mask: &Mask,
    ) -> Result<view::Track, GatewayError> {
        self.view_of_owned(data, track.clone(), mask)
    }

    /// [`TrackView::view_of`] of a record the caller gives up.
    fn view_of_owned<P: Fn(Src) -> bool>(
        &self,
        data: &Data<'_, P>,
        track: FoundationTrack,
        mask: &Mask,
    ) -> Result<view::Track, GatewayError> {
        let mut view = data.build(track);
        self.spec
            .schema()
            .trim_prost(mask, &mut view)
            .map_err(|error| GatewayError::Internal(format!("cannot trim the view: {error}")))?;
        Ok(view)
    }
}

/// The one batched call of `source` for `keys`: track ids or the tracks' owners, as the
/// source's [`Input`] says. The viewer relations of an anonymous caller are empty, with no call.
async fn fetch(
    clients: &Clients,
    source: Src,
    keys: Vec<String>,
    caller: Caller<'_>,
) -> Result<Fetched, GatewayError> {
    let reads = &clients.reads;
    let deadline = caller.deadline;
    let user = caller.principal.user();
    // The viewer relations are keyed by the viewer too: shared only between reads of one user.
    let of_viewer = |user: &str, keys: Vec<String>| -> Vec<(String, String)> {
        keys.into_iter().map(|key| (user.to_owned(), key)).collect()
    };
    Ok(match source {
        Src::Tracks => Fetched::Tracks(reads.tracks.values(keys, deadline).await?),
        Src::Reactions => Fetched::Reactions(match user {
            None => Vec::new(),
            Some(user) => {
                reads
                    .reactions
                    .values(of_viewer(user, keys), deadline)
                    .await?
            }
        }),
        Src::TrackCounts => Fetched::TrackCounts(reads.track_counts.values(keys, deadline).await?),
        Src::Following => Fetched::Following(match user {
            None => Vec::new(),
            Some(user) => {
                reads
                    .following
                    .values(of_viewer(user, keys), deadline)
                    .await?
            }
        }),
        Src::UserCounts => Fetched::UserCounts(reads.user_counts.values(keys, deadline).await?),
    })
}

/// Everything fetched for a query, to build each track's full view before trimming.
pub struct Data<'a, P: Fn(Src) -> bool> {
    /// Whether a source's data is there: planned and not failed.
    pub planned: P,
    /// Whether the caller is a signed-in user (the viewer relations are theirs alone).
    pub signed_in: bool,
    pub reactions: &'a IdMap<String, Reaction>,
    pub track_counts: &'a IdMap<String, TrackCounts>,
    /// Whether the caller follows each owner.
    pub following: &'a IdMap<String, bool>,
    pub user_counts: &'a IdMap<String, UserCounts>,
}

impl<P: Fn(Src) -> bool> Data<'_, P> {
    fn build(&self, track: FoundationTrack) -> view::Track {
        let has = |source| (self.planned)(source);
        let counts = self.track_counts.get(&track.id);
        let owner_counts = self.user_counts.get(&track.owner_id);
        let reaction = self.reactions.get(&track.id);
        let followed = (has(Src::Following) && self.signed_in).then(|| {
            self.following
                .get(&track.owner_id)
                .copied()
                .unwrap_or(false)
        });
        view::Track {
            id: track.id,
            title: track.title,
            description: track.description,
            genre: track.genre,
            duration: track.duration,
            artwork_url: track.artwork_url,
            created_at: track.create_time,
            creator: Some(view::Creator {
                id: track.owner_id,
                followers_count: has(Src::UserCounts)
                    .then(|| owner_counts.map_or(0, |c| c.followers_count)),
                followed_by_viewer: followed,
            }),
            stats: Some(view::Stats {
                likes_count: has(Src::TrackCounts).then(|| counts.map_or(0, |c| c.likes_count)),
                reposts_count: has(Src::TrackCounts).then(|| counts.map_or(0, |c| c.reposts_count)),
            }),
            viewer: (self.signed_in).then(|| view::Viewer {
                liked: has(Src::Reactions).then(|| reaction.is_some_and(|r| r.liked)),
                reposted: has(Src::Reactions).then(|| reaction.is_some_and(|r| r.reposted)),
            }),
            access: Some(view::Access {
                downloadable: track.downloadable,
            }),
        }
    }
}
