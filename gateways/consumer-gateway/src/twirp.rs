//! The consumer gateway's unary RPCs over Twirp v7, on the gRPC port: `POST
//! /twirp/consumer.v1.ConsumerGateway/<Method>` with `application/protobuf` or
//! `application/json` (canonical protobuf JSON). Each call goes through the same
//! [`Authenticator`] and the same [`ConsumerApi`] methods as gRPC, so authorization and results
//! are identical; `DownloadTrack` streams and stays gRPC-only (Twirp answers `bad_route`). See
//! the `twirp-bridge` crate for why the bridge is hand-written.

use std::sync::Arc;

use authorization::Authenticator;
use prost_reflect::DescriptorPool;
use protos::consumer::v1::consumer_gateway_server::ConsumerGateway;
use tonic::service::Routes;
use twirp_bridge::TwirpService;

use crate::api::ConsumerApi;

/// Adds the Twirp routes to the gRPC `routes`, accepting request bodies up to `body_limit`
/// bytes (the gRPC message limit). The descriptor pool is decoded here, once, at start-up.
pub(crate) fn add_to(
    routes: Routes,
    api: Arc<ConsumerApi>,
    authenticator: Authenticator,
    body_limit: usize,
) -> Routes {
    let pool = DescriptorPool::decode(protos::descriptors::CONSUMER)
        .expect("the consumer descriptor set is generated at build time and decodes");
    let service = pool
        .get_service_by_name("consumer.v1.ConsumerGateway")
        .expect("the consumer descriptor set holds the service");
    let twirp = TwirpService::new(service, api, authenticator)
        .body_limit(body_limit)
        .unary("GetTrack", |api, request| async move {
            ConsumerGateway::get_track(&*api, request).await
        })
        .unary("BatchGetTracks", |api, request| async move {
            ConsumerGateway::batch_get_tracks(&*api, request).await
        })
        .unary("ListLikedTracks", |api, request| async move {
            ConsumerGateway::list_liked_tracks(&*api, request).await
        })
        .unary("LikeTrack", |api, request| async move {
            ConsumerGateway::like_track(&*api, request).await
        })
        .unary("UnlikeTrack", |api, request| async move {
            ConsumerGateway::unlike_track(&*api, request).await
        })
        .unary("RepostTrack", |api, request| async move {
            ConsumerGateway::repost_track(&*api, request).await
        })
        .unary("UnrepostTrack", |api, request| async move {
            ConsumerGateway::unrepost_track(&*api, request).await
        })
        .unary("FollowCreator", |api, request| async move {
            ConsumerGateway::follow_creator(&*api, request).await
        })
        .unary("UnfollowCreator", |api, request| async move {
            ConsumerGateway::unfollow_creator(&*api, request).await
        })
        .unary("ExplainReadMask", |api, request| async move {
            ConsumerGateway::explain_read_mask(&*api, request).await
        });
    Routes::from(routes.into_axum_router().merge(twirp.into_router()))
}
