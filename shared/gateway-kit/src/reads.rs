//! The foundation's batched reads the gateways make, each one call for many keys through
//! [`Calls::read`]: written once, so that both gateways read the foundation the same way and a
//! change to how a method is called (its request, its retry, its deadline) is made in one place.

use protos::foundation::{
    counts::v1::{
        BatchGetTrackCountsRequest, BatchGetUserCountsRequest, TrackCounts, UserCounts,
        counts_service_client::CountsServiceClient,
    },
    follows::v1::{
        BatchGetFollowingRequest, FollowState, follows_service_client::FollowsServiceClient,
    },
    likes::v1::{BatchGetReactionsRequest, Reaction, likes_service_client::LikesServiceClient},
    tracks::v1::{BatchGetTracksRequest, Track, tracks_service_client::TracksServiceClient},
};
use service_runtime::upstream::UpstreamChannel;

use crate::{Calls, Deadline, Upstream, UpstreamError, outbound};

/// `tracks.BatchGetTracks`: the records of the tracks `ids` that exist.
pub async fn tracks(
    calls: &Calls,
    upstream: &Upstream<TracksServiceClient<UpstreamChannel>>,
    ids: Vec<String>,
    deadline: Deadline,
) -> Result<Vec<Track>, UpstreamError> {
    let message = BatchGetTracksRequest { ids };
    let response = calls
        .read(upstream, deadline, |mut client, budget| {
            let message = message.clone();
            async move { client.batch_get_tracks(outbound(message, budget)).await }
        })
        .await?;
    Ok(response.tracks)
}

/// `counts.BatchGetTrackCounts`: the counters of the tracks `track_ids`.
pub async fn track_counts(
    calls: &Calls,
    upstream: &Upstream<CountsServiceClient<UpstreamChannel>>,
    track_ids: Vec<String>,
    deadline: Deadline,
) -> Result<Vec<TrackCounts>, UpstreamError> {
    let message = BatchGetTrackCountsRequest { track_ids };
    let response = calls
        .read(upstream, deadline, |mut client, budget| {
            let message = message.clone();
            async move {
                client
                    .batch_get_track_counts(outbound(message, budget))
                    .await
            }
        })
        .await?;
    Ok(response.counts)
}

/// `counts.BatchGetUserCounts`: the counters of the users `user_ids`.
pub async fn user_counts(
    calls: &Calls,
    upstream: &Upstream<CountsServiceClient<UpstreamChannel>>,
    user_ids: Vec<String>,
    deadline: Deadline,
) -> Result<Vec<UserCounts>, UpstreamError> {
    let message = BatchGetUserCountsRequest { user_ids };
    let response = calls
        .read(upstream, deadline, |mut client, budget| {
            let message = message.clone();
            async move {
                client
                    .batch_get_user_counts(outbound(message, budget))
                    .await
            }
        })
        .await?;
    Ok(response.counts)
}

/// `likes.BatchGetReactions`: whether `user_id` liked or reposted each of `track_ids`.
pub async fn reactions(
    calls: &Calls,
    upstream: &Upstream<LikesServiceClient<UpstreamChannel>>,
    user_id: &str,
    track_ids: Vec<String>,
    deadline: Deadline,
) -> Result<Vec<Reaction>, UpstreamError> {
    let message = BatchGetReactionsRequest {
        user_id: user_id.to_owned(),
        track_ids,
    };
    let response = calls
        .read(upstream, deadline, |mut client, budget| {
            let message = message.clone();
            async move { client.batch_get_reactions(outbound(message, budget)).await }
        })
        .await?;
    Ok(response.reactions)
}

/// `follows.BatchGetFollowing`: whether `follower_id` follows each of `followee_ids`.
pub async fn following(
    calls: &Calls,
    upstream: &Upstream<FollowsServiceClient<UpstreamChannel>>,
    follower_id: &str,
    followee_ids: Vec<String>,
    deadline: Deadline,
) -> Result<Vec<FollowState>, UpstreamError> {
    let message = BatchGetFollowingRequest {
        follower_id: follower_id.to_owned(),
        followee_ids,
    };
    let response = calls
        .read(upstream, deadline, |mut client, budget| {
            let message = message.clone();
            async move { client.batch_get_following(outbound(message, budget)).await }
        })
        .await?;
    Ok(response.states)
}
