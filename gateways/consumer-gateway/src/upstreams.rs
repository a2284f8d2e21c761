//! The foundation services this gateway calls, each a [`gateway_kit::Upstream`], the kit's
//! caller that bounds, retries and classifies every call, and the coalesced reads of the view
//! ([`gateway_kit::reads`]).

use std::sync::Arc;

use gateway_kit::{Calls, Fanout, Read, Upstream, reads};
use protos::foundation::{
    counts::v1::{TrackCounts, UserCounts, counts_service_client::CountsServiceClient},
    follows::v1::{FollowState, follows_service_client::FollowsServiceClient},
    likes::v1::{Reaction, likes_service_client::LikesServiceClient},
    tracks::v1::{Track, tracks_service_client::TracksServiceClient},
};
use service_runtime::{metrics::GrpcMetrics, upstream::UpstreamChannel};

use crate::Settings;

#[derive(Debug)]
pub(crate) struct Clients {
    pub(crate) tracks: Upstream<TracksServiceClient<UpstreamChannel>>,
    pub(crate) likes: Upstream<LikesServiceClient<UpstreamChannel>>,
    pub(crate) follows: Upstream<FollowsServiceClient<UpstreamChannel>>,
    pub(crate) calls: Arc<Calls>,
    pub(crate) reads: Reads,
}

/// The foundation reads of the view, shared between concurrent requests.
#[derive(Debug)]
pub(crate) struct Reads {
    pub(crate) tracks: Read<String, Track>,
    pub(crate) reactions: Read<reads::Pair, Reaction>,
    pub(crate) track_counts: Read<String, TrackCounts>,
    pub(crate) following: Read<reads::Pair, FollowState>,
    pub(crate) user_counts: Read<String, UserCounts>,
}

impl Clients {
    pub(crate) fn new(
        settings: &Settings,
        metrics: &GrpcMetrics,
        fanout: &Fanout,
    ) -> Result<Self, String> {
        let u = &settings.upstreams;
        let tracks = Upstream::connect("tracks", &u.tracks, metrics, TracksServiceClient::new)?;
        let likes = Upstream::connect("likes", &u.likes, metrics, LikesServiceClient::new)?;
        let follows = Upstream::connect("follows", &u.follows, metrics, FollowsServiceClient::new)?;
        let counts = Upstream::connect("counts", &u.counts, metrics, CountsServiceClient::new)?;
        let calls = Arc::new(Calls::new(&settings.calls));
        let reads = Reads {
            tracks: reads::tracks(fanout, &calls, &tracks),
            reactions: reads::reactions(fanout, &calls, &likes),
            track_counts: reads::track_counts(fanout, &calls, &counts),
            following: reads::following(fanout, &calls, &follows),
            user_counts: reads::user_counts(fanout, &calls, &counts),
        };
        Ok(Self {
            tracks,
            likes,
            follows,
            calls,
            reads,
        })
    }
}
