//! The creator gateway's unary RPCs over Twirp v7, on the gRPC port: `POST
//! /twirp/creator.v1.CreatorGateway/<Method>` with `application/protobuf` or `application/json`
//! (canonical protobuf JSON). Each call goes through the same [`Authenticator`] and the same
//! [`CreatorApi`] methods as gRPC, so ownership checks and results are identical;
//! `UploadTrack` streams and stays gRPC-only (Twirp answers `bad_route`). See the
//! `twirp-bridge` crate for why the bridge is hand-written.

use std::sync::Arc;

use authorization::Authenticator;
use prost_reflect::DescriptorPool;
use protos::creator::v1::creator_gateway_server::CreatorGateway;
use tonic::service::Routes;
use twirp_bridge::TwirpService;

use crate::{SERVICE_NAME, api::CreatorApi};

/// Adds the Twirp routes to the gRPC `routes`, accepting request bodies up to `body_limit`
/// bytes (the gRPC message limit). The descriptor pool is decoded here, once, at start-up.
pub(crate) fn add_to(
    routes: Routes,
    api: Arc<CreatorApi>,
    authenticator: Authenticator,
    body_limit: usize,
) -> Routes {
    let pool = DescriptorPool::decode(protos::descriptors::CREATOR)
        .expect("the creator descriptor set is generated at build time and decodes");
    let service = pool
        .get_service_by_name(SERVICE_NAME)
        .expect("the creator descriptor set holds the service");
    let twirp = TwirpService::new(service, api, authenticator)
        .body_limit(body_limit)
        .unary("GetTrack", |api, request| async move {
            CreatorGateway::get_track(&*api, request).await
        })
        .unary("ListMyTracks", |api, request| async move {
            CreatorGateway::list_my_tracks(&*api, request).await
        })
        .unary("UpdateTrack", |api, request| async move {
            CreatorGateway::update_track(&*api, request).await
        })
        .unary("DeleteTrack", |api, request| async move {
            CreatorGateway::delete_track(&*api, request).await
        });
    Routes::from(routes.into_axum_router().merge(twirp.into_router()))
}
