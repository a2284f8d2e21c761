//! The consumer's Track view: which foundation data each field needs (declared once, and
//! printable with [`TrackView::explain`]), and how a batch of tracks is fetched, authorized and
//! assembled. Every query (one track, a batch, a page of likes) goes through [`TrackView::assemble`],
//! which makes one batched call per planned foundation method, whatever the number of tracks.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use authorization::Principal;
use field_mask::{
    CallError, Explain, FanoutSpec, Input, Mask, Source, Stage, StageResults, ViewSchema,
    run_calls, run_stage, unique_keys,
};
use protos::{
    consumer::v1 as view,
    foundation::{
        counts::v1::{
            BatchGetTrackCountsRequest, BatchGetUserCountsRequest, TrackCounts, UserCounts,
        },
        follows::v1::{BatchGetFollowingRequest, FollowState},
        likes::v1::{BatchGetReactionsRequest, Reaction},
        tracks::v1::{BatchGetTracksRequest, Track as FoundationTrack},
    },
};

use crate::{
    GatewayError,
    audit::Audit,
    rules,
    upstreams::{Clients, outbound, upstream_error},
};

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
    /// The caller's `grpc-timeout`.
    pub(crate) inbound: Option<Duration>,
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

    /// The planned foundation calls for a mask.
    pub fn explain(&self, mask: &Mask) -> Explain {
        self.spec.explain(mask)
    }

    /// Fetches, authorizes and assembles the tracks `ids` for `caller`, trimmed to `mask`.
    /// `prefetched` tracks (already fetched to fill a page) are not fetched again.
    pub(crate) async fn assemble(
        &self,
        clients: &Clients,
        audit: &Audit,
        ids: &[String],
        mask: &Mask,
        caller: Caller<'_>,
        prefetched: Option<Vec<FoundationTrack>>,
    ) -> Result<Assembled, GatewayError> {
        let plan = self.spec.plan(mask);
        let user = caller.principal.user();
        let started = Instant::now();
        let stage_deadline = |upstreams: &[Duration]| {
            let longest = upstreams.iter().copied().max().unwrap_or_default();
            tokio::time::Instant::from_std(started + longest)
        };

        // Stage one is the tracks (authorization needs them) and everything keyed by track id.
        // The tracks are fetched on their own so that stage two, keyed by the visible tracks'
        // owners, starts as soon as they answer, while the rest of stage one is still running.
        // Data for tracks that turn out hidden is dropped below.
        let unique = unique_keys(ids.iter().cloned());
        let first_deadline = stage_deadline(&[
            clients.budget(&clients.tracks, caller.inbound),
            clients.budget(&clients.likes, caller.inbound),
            clients.budget(&clients.counts, caller.inbound),
        ]);
        let second_deadline = stage_deadline(&[
            clients.budget(&clients.follows, caller.inbound),
            clients.budget(&clients.counts, caller.inbound),
        ]);
        let authorized = async {
            let tracks = match prefetched {
                Some(tracks) => tracks,
                None => {
                    let mut fetched = run_calls(&plan, [Src::Tracks], first_deadline, |source| {
                        fetch(clients, source, &unique, caller)
                    })
                    .await;
                    // Authorization fails closed: without the tracks there is no answer.
                    match fetched.take(Src::Tracks) {
                        Some(Ok(Fetched::Tracks(tracks))) => tracks,
                        Some(Err(error)) => return Err(call_error("tracks", error)),
                        _ => {
                            return Err(GatewayError::Upstream {
                                service: "tracks",
                                status: tonic::Status::internal("the tracks call was not planned"),
                            });
                        }
                    }
                }
            };
            let mut by_id: HashMap<String, FoundationTrack> = tracks
                .into_iter()
                .map(|track| (track.id.clone(), track))
                .collect();
            for id in &unique {
                if let Some(track) = by_id.get(id)
                    && let Err(hidden) =
                        rules::visible(track, caller.principal, caller.secret_token)
                {
                    audit.track_withheld(id, user, hidden.as_str());
                    by_id.remove(id);
                }
            }

            // Stage two: what is keyed by the visible tracks' owners.
            let owners = unique_keys(
                unique
                    .iter()
                    .filter_map(|id| by_id.get(id))
                    .map(|track| track.owner_id.clone()),
            );
            let second = if !owners.is_empty() && plan.stage(Stage::Second).next().is_some() {
                Some(
                    run_stage(&plan, Stage::Second, second_deadline, |source| {
                        fetch(clients, source, &owners, caller)
                    })
                    .await,
                )
            } else {
                None
            };
            Ok((by_id, second))
        };
        let rest_of_first = async {
            let sources = plan
                .stage(Stage::First)
                .filter(|source| *source != Src::Tracks);
            Ok(run_calls(&plan, sources, first_deadline, |source| {
                fetch(clients, source, &unique, caller)
            })
            .await)
        };
        // A failed tracks call drops the calls still running.
        let ((by_id, second), first) = tokio::try_join!(authorized, rest_of_first)?;

        let mut failed: Vec<Src> = Vec::new();
        let mut reactions = HashMap::new();
        let mut track_counts = HashMap::new();
        let mut following = HashMap::new();
        let mut user_counts = HashMap::new();
        let results = first
            .into_inner()
            .into_iter()
            .chain(second.into_iter().flat_map(StageResults::into_inner));
        for (source, result) in results {
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
        for id in ids {
            let track = match by_id.get(id) {
                Some(track) => Some(self.view_of(&data, track, mask)?),
                None => None,
            };
            assembled.push(track);
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
        let mut view = data.build(track);
        self.spec
            .schema()
            .trim_prost(mask, &mut view)
            .map_err(|error| GatewayError::Upstream {
                service: "gateway",
                status: tonic::Status::internal(error.to_string()),
            })?;
        Ok(view)
    }
}

/// The one batched call of `source` for `keys`: track ids or the tracks' owners, as the
/// source's [`Input`] says.
async fn fetch(
    clients: &Clients,
    source: Src,
    keys: &[String],
    caller: Caller<'_>,
) -> Result<Fetched, tonic::Status> {
    let user = caller.principal.user();
    match source {
        Src::Tracks => clients
            .read(&clients.tracks, caller.inbound, |mut client, budget| {
                let message = BatchGetTracksRequest { ids: keys.to_vec() };
                async move { client.batch_get_tracks(outbound(message, budget)).await }
            })
            .await
            .map(|response| Fetched::Tracks(response.tracks)),
        Src::Reactions => match user {
            None => Ok(Fetched::Reactions(Vec::new())),
            Some(user) => clients
                .read(&clients.likes, caller.inbound, |mut client, budget| {
                    let message = BatchGetReactionsRequest {
                        user_id: user.to_owned(),
                        track_ids: keys.to_vec(),
                    };
                    async move { client.batch_get_reactions(outbound(message, budget)).await }
                })
                .await
                .map(|response| Fetched::Reactions(response.reactions)),
        },
        Src::TrackCounts => clients
            .read(&clients.counts, caller.inbound, |mut client, budget| {
                let message = BatchGetTrackCountsRequest {
                    track_ids: keys.to_vec(),
                };
                async move {
                    client
                        .batch_get_track_counts(outbound(message, budget))
                        .await
                }
            })
            .await
            .map(|response| Fetched::TrackCounts(response.counts)),
        Src::Following => match user {
            None => Ok(Fetched::Following(Vec::new())),
            Some(user) => clients
                .read(&clients.follows, caller.inbound, |mut client, budget| {
                    let message = BatchGetFollowingRequest {
                        follower_id: user.to_owned(),
                        followee_ids: keys.to_vec(),
                    };
                    async move { client.batch_get_following(outbound(message, budget)).await }
                })
                .await
                .map(|response| Fetched::Following(response.states)),
        },
        Src::UserCounts => clients
            .read(&clients.counts, caller.inbound, |mut client, budget| {
                let message = BatchGetUserCountsRequest {
                    user_ids: keys.to_vec(),
                };
                async move {
                    client
                        .batch_get_user_counts(outbound(message, budget))
                        .await
                }
            })
            .await
            .map(|response| Fetched::UserCounts(response.counts)),
    }
}

fn call_error(service: &'static str, error: CallError<tonic::Status>) -> GatewayError {
    match error {
        CallError::Failed(status) => upstream_error(service, status),
        CallError::DeadlineExceeded | CallError::Abandoned => {
            GatewayError::UpstreamDeadline { service }
        }
    }
}

/// Everything fetched for a query, to build each track's full view before trimming.
pub struct Data<'a, P: Fn(Src) -> bool> {
    /// Whether a source's data is there: planned and not failed.
    pub planned: P,
    /// Whether the caller is a signed-in user (the viewer relations are theirs alone).
    pub signed_in: bool,
    pub reactions: &'a HashMap<String, Reaction>,
    pub track_counts: &'a HashMap<String, TrackCounts>,
    /// Whether the caller follows each owner.
    pub following: &'a HashMap<String, bool>,
    pub user_counts: &'a HashMap<String, UserCounts>,
}

impl<P: Fn(Src) -> bool> Data<'_, P> {
    fn build(&self, track: &FoundationTrack) -> view::Track {
        let has = |source| (self.planned)(source);
        let counts = self.track_counts.get(&track.id);
        let owner_counts = self.user_counts.get(&track.owner_id);
        let reaction = self.reactions.get(&track.id);
        view::Track {
            id: track.id.clone(),
            title: track.title.clone(),
            description: track.description.clone(),
            genre: track.genre.clone(),
            duration: track.duration,
            artwork_url: track.artwork_url.clone(),
            created_at: track.create_time,
            creator: Some(view::Creator {
                id: track.owner_id.clone(),
                followers_count: has(Src::UserCounts)
                    .then(|| owner_counts.map_or(0, |c| c.followers_count)),
                followed_by_viewer: (has(Src::Following) && self.signed_in).then(|| {
                    self.following
                        .get(&track.owner_id)
                        .copied()
                        .unwrap_or(false)
                }),
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
