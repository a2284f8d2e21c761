//! The foundation's batched reads the gateways make, each a [`Read`] of [`crate::fanout`]
//! over one foundation method, called through [`Calls::read`]: written once, so that both
//! gateways read the foundation the same way and a change to how a method is called (its
//! request, its retry, its deadline, its sharing between requests) is made in one place.

use std::sync::Arc;

use protos::foundation::{
    counts::v1::{
        BatchGetTrackCountsRequest, BatchGetUserCountsRequest, TrackCounts, UserCounts,
        counts_service_client::CountsServiceClient,
    },
    follows::v1::{
        BatchGetFollowingRequest, FollowKey, FollowState,
        follows_service_client::FollowsServiceClient,
    },
    likes::v1::{
        BatchGetReactionsRequest, Reaction, ReactionKey, likes_service_client::LikesServiceClient,
    },
    tracks::v1::{BatchGetTracksRequest, Track, tracks_service_client::TracksServiceClient},
};
use service_runtime::upstream::UpstreamChannel;
use tonic::Status;

use crate::{
    Calls, Deadline, Upstream, UpstreamError, UpstreamFailure,
    fanout::{Fanout, Loaded, Loader, Read},
    outbound,
};

/// A viewer and a track, or a viewer and a track's owner: the key of a viewer relation.
pub type Pair = (String, String);

/// `tracks.BatchGetTracks`: the records of the tracks that exist, by id.
pub fn tracks(
    fanout: &Fanout,
    calls: &Arc<Calls>,
    upstream: &Upstream<TracksServiceClient<UpstreamChannel>>,
) -> Read<String, Track> {
    by_id(
        fanout,
        calls,
        upstream,
        Method {
            name: "tracks.BatchGetTracks",
            call: |mut client, request| {
                Box::pin(async move { client.batch_get_tracks(request).await })
            },
            answers: |response| response.tracks,
        },
        false,
        |ids| BatchGetTracksRequest { ids },
        |track| &track.id,
    )
}

/// `counts.BatchGetTrackCounts`: the counters of tracks, by track id (cached).
pub fn track_counts(
    fanout: &Fanout,
    calls: &Arc<Calls>,
    upstream: &Upstream<CountsServiceClient<UpstreamChannel>>,
) -> Read<String, TrackCounts> {
    by_id(
        fanout,
        calls,
        upstream,
        Method {
            name: "counts.BatchGetTrackCounts",
            call: |mut client, request| {
                Box::pin(async move { client.batch_get_track_counts(request).await })
            },
            answers: |response| response.counts,
        },
        true,
        |track_ids| BatchGetTrackCountsRequest { track_ids },
        |counts| &counts.track_id,
    )
}

/// `counts.BatchGetUserCounts`: the counters of users, by user id (cached).
pub fn user_counts(
    fanout: &Fanout,
    calls: &Arc<Calls>,
    upstream: &Upstream<CountsServiceClient<UpstreamChannel>>,
) -> Read<String, UserCounts> {
    by_id(
        fanout,
        calls,
        upstream,
        Method {
            name: "counts.BatchGetUserCounts",
            call: |mut client, request| {
                Box::pin(async move { client.batch_get_user_counts(request).await })
            },
            answers: |response| response.counts,
        },
        true,
        |user_ids| BatchGetUserCountsRequest { user_ids },
        |counts| &counts.user_id,
    )
}

/// One foundation method: its name, how it is called, and the entries of its response.
struct Method<C, M, R, T> {
    /// Such as `tracks.BatchGetTracks`.
    name: &'static str,
    call: fn(C, tonic::Request<M>) -> CallFuture<R>,
    answers: fn(R) -> Vec<T>,
}

/// The read of `method`, keyed by id: `request` asks for the ids, and the foundation answers
/// the entries it has, each naming its `id`, in no particular order; `cached` for the
/// counters.
fn by_id<C, M, R, T>(
    fanout: &Fanout,
    calls: &Arc<Calls>,
    upstream: &Upstream<C>,
    method: Method<C, M, R, T>,
    cached: bool,
    request: fn(Vec<String>) -> M,
    id: fn(&T) -> &String,
) -> Read<String, T>
where
    C: Clone + Send + Sync + 'static,
    M: Send + 'static,
    R: Send + 'static,
    T: Clone + Send + Sync + 'static,
{
    let (calls, upstream_) = (calls.clone(), upstream.clone());
    let load: Loader<String, T> = Arc::new(move |ids: Arc<[String]>, deadline| {
        let (calls, upstream) = (calls.clone(), upstream_.clone());
        Box::pin(async move {
            let message = || request(ids.to_vec());
            let response = read(&calls, &upstream, deadline, message, method.call).await?;
            Ok((method.answers)(response)
                .into_iter()
                .map(|entry| (id(&entry).clone(), entry))
                .collect())
        })
    });
    fanout.read(method.name, upstream.name(), upstream.cap(), cached, load)
}

/// `likes.BatchGetReactions`: whether each viewer liked or reposted each track, keyed by
/// (viewer, track), in the forms of [`pairs`].
pub fn reactions(
    fanout: &Fanout,
    calls: &Arc<Calls>,
    upstream: &Upstream<LikesServiceClient<UpstreamChannel>>,
) -> Read<Pair, Reaction> {
    pairs(
        fanout,
        calls,
        upstream,
        Method {
            name: "likes.BatchGetReactions",
            call: |mut client, request| {
                Box::pin(async move { client.batch_get_reactions(request).await })
            },
            answers: |response| response.reactions,
        },
        PairForms {
            one: |user_id, track_ids| BatchGetReactionsRequest {
                user_id,
                track_ids,
                keys: Vec::new(),
            },
            key: |user_id, track_id| ReactionKey { user_id, track_id },
            keyed: |keys| BatchGetReactionsRequest {
                keys,
                ..Default::default()
            },
        },
    )
}

/// `follows.BatchGetFollowing`: whether each viewer follows each user, keyed by (viewer,
/// user), in the forms of [`pairs`].
pub fn following(
    fanout: &Fanout,
    calls: &Arc<Calls>,
    upstream: &Upstream<FollowsServiceClient<UpstreamChannel>>,
) -> Read<Pair, FollowState> {
    pairs(
        fanout,
        calls,
        upstream,
        Method {
            name: "follows.BatchGetFollowing",
            call: |mut client, request| {
                Box::pin(async move { client.batch_get_following(request).await })
            },
            answers: |response| response.states,
        },
        PairForms {
            one: |follower_id, followee_ids| BatchGetFollowingRequest {
                follower_id,
                followee_ids,
                keys: Vec::new(),
            },
            key: |follower_id, followee_id| FollowKey {
                follower_id,
                followee_id,
            },
            keyed: |keys| BatchGetFollowingRequest {
                keys,
                ..Default::default()
            },
        },
    )
}

/// The two forms of a request keyed by viewer pairs.
struct PairForms<M, K> {
    /// One viewer's keys: the viewer and the other side of each pair.
    one: fn(String, Vec<String>) -> M,
    /// Keys of several viewers, which only coalescing makes: each pair as the request's key
    /// message, and the request of those.
    key: fn(String, String) -> K,
    keyed: fn(Vec<K>) -> M,
}

/// The read of `method`, a viewer relation keyed by (viewer, other): keys of one viewer go in
/// the one-viewer form, keys of several in the keyed form, and the foundation answers one
/// entry per key, in request order. Never cached: a viewer relation is not.
fn pairs<C, M, K, R, T>(
    fanout: &Fanout,
    calls: &Arc<Calls>,
    upstream: &Upstream<C>,
    method: Method<C, M, R, T>,
    forms: PairForms<M, K>,
) -> Read<Pair, T>
where
    C: Clone + Send + Sync + 'static,
    M: Send + 'static,
    K: 'static,
    R: Send + 'static,
    T: Clone + Send + Sync + 'static,
{
    let (calls, upstream_) = (calls.clone(), upstream.clone());
    let load: Loader<Pair, T> = Arc::new(move |keys: Arc<[Pair]>, deadline| {
        let (calls, upstream) = (calls.clone(), upstream_.clone());
        Box::pin(async move {
            let message = || match one_viewer(&keys) {
                Some(viewer) => (forms.one)(
                    viewer.to_owned(),
                    keys.iter().map(|(_, other)| other.clone()).collect(),
                ),
                None => (forms.keyed)(
                    keys.iter()
                        .map(|(viewer, other)| (forms.key)(viewer.clone(), other.clone()))
                        .collect(),
                ),
            };
            let response = read(&calls, &upstream, deadline, message, method.call).await?;
            in_request_order(upstream.name(), &keys, (method.answers)(response))
        })
    });
    fanout.read(method.name, upstream.name(), upstream.cap(), false, load)
}

/// The viewer all `keys` share, if they share one.
fn one_viewer(keys: &[Pair]) -> Option<&str> {
    let (first, _) = keys.first()?;
    keys.iter()
        .all(|(viewer, _)| viewer == first)
        .then_some(first.as_str())
}

/// Pairs each key with its answer: the foundation answers one entry per key, in request order.
fn in_request_order<T>(service: &'static str, keys: &[Pair], answers: Vec<T>) -> Loaded<Pair, T> {
    if answers.len() != keys.len() {
        return Err(UpstreamError::new(
            service,
            UpstreamFailure::Status(Status::internal(format!(
                "answered {} entries for {} keys",
                answers.len(),
                keys.len()
            ))),
        ));
    }
    Ok(keys.iter().cloned().zip(answers).collect())
}

type CallFuture<T> =
    std::pin::Pin<Box<dyn Future<Output = Result<tonic::Response<T>, Status>> + Send>>;

/// One read through [`Calls::read`] of the request `message` builds (once per attempt: a
/// retry is rare, and a copy kept for it would cost every call), sent with the call's budget
/// as its timeout.
async fn read<C, M, T>(
    calls: &Calls,
    upstream: &Upstream<C>,
    deadline: Deadline,
    message: impl Fn() -> M,
    call: impl Fn(C, tonic::Request<M>) -> CallFuture<T>,
) -> Result<T, UpstreamError>
where
    C: Clone,
{
    calls
        .read(upstream, deadline, |client, budget| {
            call(client, outbound(message(), budget))
        })
        .await
}
