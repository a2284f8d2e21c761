//! The foundation services this gateway calls, each a [`gateway_kit::Upstream`], and the kit's
//! caller that bounds, retries and classifies every call.

use gateway_kit::{Calls, Upstream};
use protos::foundation::{
    counts::v1::counts_service_client::CountsServiceClient,
    follows::v1::follows_service_client::FollowsServiceClient,
    likes::v1::likes_service_client::LikesServiceClient,
    tracks::v1::tracks_service_client::TracksServiceClient,
};
use service_runtime::{metrics::GrpcMetrics, upstream::UpstreamChannel};

use crate::Settings;

#[derive(Debug)]
pub(crate) struct Clients {
    pub(crate) tracks: Upstream<TracksServiceClient<UpstreamChannel>>,
    pub(crate) likes: Upstream<LikesServiceClient<UpstreamChannel>>,
    pub(crate) follows: Upstream<FollowsServiceClient<UpstreamChannel>>,
    pub(crate) counts: Upstream<CountsServiceClient<UpstreamChannel>>,
    pub(crate) calls: Calls,
}

impl Clients {
    pub(crate) fn new(settings: &Settings, metrics: &GrpcMetrics) -> Result<Self, String> {
        let u = &settings.upstreams;
        Ok(Self {
            tracks: Upstream::connect("tracks", &u.tracks, metrics, TracksServiceClient::new)?,
            likes: Upstream::connect("likes", &u.likes, metrics, LikesServiceClient::new)?,
            follows: Upstream::connect("follows", &u.follows, metrics, FollowsServiceClient::new)?,
            counts: Upstream::connect("counts", &u.counts, metrics, CountsServiceClient::new)?,
            calls: Calls::new(&settings.calls),
        })
    }
}
