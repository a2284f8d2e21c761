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
    let (calls, upstream_) = (calls.clone(), upstream.clone());
    let load: Loader<String, Track> = Arc::new(move |ids: Arc<[String]>, deadline| {
        let (calls, upstream) = (calls.clone(), upstream_.clone());
        Box::pin(async move {
            let message = || BatchGetTracksRequest { ids: ids.to_vec() };
            let response = read(
                &calls,
                &upstream,
                deadline,
                message,
                |mut client, request| {
                    Box::pin(async move { client.batch_get_tracks(request).await })
                },
            )
            .await?;
            Ok(response
                .tracks
                .into_iter()
                .map(|track| (track.id.clone(), track))
                .collect())
        })
    });
    fanout.read(
        "tracks.BatchGetTracks",
        upstream.name(),
        upstream.cap(),
        false,
        load,
    )
}

/// `counts.BatchGetTrackCounts`: the counters of tracks, by track id (cached).
pub fn track_counts(
    fanout: &Fanout,
    calls: &Arc<Calls>,
    upstream: &Upstream<CountsServiceClient<UpstreamChannel>>,
) -> Read<String, TrackCounts> {
    let (calls, upstream_) = (calls.clone(), upstream.clone());
    let load: Loader<String, TrackCounts> = Arc::new(move |track_ids: Arc<[String]>, deadline| {
        let (calls, upstream) = (calls.clone(), upstream_.clone());
        Box::pin(async move {
            let message = || BatchGetTrackCountsRequest {
                track_ids: track_ids.to_vec(),
            };
            let response = read(
                &calls,
                &upstream,
                deadline,
                message,
                |mut client, request| {
                    Box::pin(async move { client.batch_get_track_counts(request).await })
                },
            )
            .await?;
            Ok(response
                .counts
                .into_iter()
                .map(|counts| (counts.track_id.clone(), counts))
                .collect())
        })
    });
    fanout.read(
        "counts.BatchGetTrackCounts",
        upstream.name(),
        upstream.cap(),
        true,
        load,
    )
}

/// `counts.BatchGetUserCounts`: the counters of users, by user id (cached).
pub fn user_counts(
    fanout: &Fanout,
    calls: &Arc<Calls>,
    upstream: &Upstream<CountsServiceClient<UpstreamChannel>>,
) -> Read<String, UserCounts> {
    let (calls, upstream_) = (calls.clone(), upstream.clone());
    let load: Loader<String, UserCounts> = Arc::new(move |user_ids: Arc<[String]>, deadline| {
        let (calls, upstream) = (calls.clone(), upstream_.clone());
        Box::pin(async move {
            let message = || BatchGetUserCountsRequest {
                user_ids: user_ids.to_vec(),
            };
            let response = read(
                &calls,
                &upstream,
                deadline,
                message,
                |mut client, request| {
                    Box::pin(async move { client.batch_get_user_counts(request).await })
                },
            )
            .await?;
            Ok(response
                .counts
                .into_iter()
                .map(|counts| (counts.user_id.clone(), counts))
                .collect())
        })
    });
    fanout.read(
        "counts.BatchGetUserCounts",
        upstream.name(),
        upstream.cap(),
        true,
        load,
    )
}

/// `likes.BatchGetReactions`: whether each viewer liked or reposted each track, keyed by
/// (viewer, track). Keys of one viewer go in the one-user form; keys of several viewers, which
/// only coalescing makes, in the keyed form.
pub fn reactions(
    fanout: &Fanout,
    calls: &Arc<Calls>,
    upstream: &Upstream<LikesServiceClient<UpstreamChannel>>,
) -> Read<Pair, Reaction> {
    let (calls, upstream_) = (calls.clone(), upstream.clone());
    let load: Loader<Pair, Reaction> = Arc::new(move |keys: Arc<[Pair]>, deadline| {
        let (calls, upstream) = (calls.clone(), upstream_.clone());
        Box::pin(async move {
            let message = || match one_viewer(&keys) {
                Some(user_id) => BatchGetReactionsRequest {
                    user_id: user_id.to_owned(),
                    track_ids: keys.iter().map(|(_, track)| track.clone()).collect(),
                    keys: Vec::new(),
                },
                None => BatchGetReactionsRequest {
                    keys: keys
                        .iter()
                        .map(|(user_id, track_id)| ReactionKey {
                            user_id: user_id.clone(),
                            track_id: track_id.clone(),
                        })
                        .collect(),
                    ..Default::default()
                },
            };
            let response = read(
                &calls,
                &upstream,
                deadline,
                message,
                |mut client, request| {
                    Box::pin(async move { client.batch_get_reactions(request).await })
                },
            )
            .await?;
            in_request_order(upstream.name(), &keys, response.reactions)
        })
    });
    fanout.read(
        "likes.BatchGetReactions",
        upstream.name(),
        upstream.cap(),
        false,
        load,
    )
}

/// `follows.BatchGetFollowing`: whether each viewer follows each user, keyed by (viewer,
/// user), in the one-follower form or the keyed form as [`reactions`].
pub fn following(
    fanout: &Fanout,
    calls: &Arc<Calls>,
    upstream: &Upstream<FollowsServiceClient<UpstreamChannel>>,
) -> Read<Pair, FollowState> {
    let (calls, upstream_) = (calls.clone(), upstream.clone());
    let load: Loader<Pair, FollowState> = Arc::new(move |keys: Arc<[Pair]>, deadline| {
        let (calls, upstream) = (calls.clone(), upstream_.clone());
        Box::pin(async move {
            let message = || match one_viewer(&keys) {
                Some(follower_id) => BatchGetFollowingRequest {
                    follower_id: follower_id.to_owned(),
                    followee_ids: keys.iter().map(|(_, followee)| followee.clone()).collect(),
                    keys: Vec::new(),
                },
                None => BatchGetFollowingRequest {
                    keys: keys
                        .iter()
                        .map(|(follower_id, followee_id)| FollowKey {
                            follower_id: follower_id.clone(),
                            followee_id: followee_id.clone(),
                        })
                        .collect(),
                    ..Default::default()
                },
            };
            let response = read(
                &calls,
                &upstream,
                deadline,
                message,
                |mut client, request| {
                    Box::pin(async move { client.batch_get_following(request).await })
                },
            )
            .await?;
            in_request_order(upstream.name(), &keys, response.states)
        })
    });
    fanout.read(
        "follows.BatchGetFollowing",
        upstream.name(),
        upstream.cap(),
        false,
        load,
    )
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
