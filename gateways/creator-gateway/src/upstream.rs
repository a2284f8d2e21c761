//! The foundation services this gateway calls, each a [`gateway_kit::Upstream`], and the kit's
//! caller that bounds, retries and classifies every call.

use std::time::Duration;

use gateway_kit::{Calls, Deadline, Upstream};
use protos::foundation::{
    counts::v1::counts_service_client::CountsServiceClient,
    likes::v1::likes_service_client::LikesServiceClient,
    tracks::v1::tracks_service_client::TracksServiceClient,
};
use service_runtime::{metrics::GrpcMetrics, upstream::UpstreamChannel};
use tokio::time::Instant;

use crate::Settings;

#[derive(Debug)]
pub(crate) struct Clients {
    pub(crate) tracks: Upstream<TracksServiceClient<UpstreamChannel>>,
    pub(crate) likes: Upstream<LikesServiceClient<UpstreamChannel>>,
    pub(crate) counts: Upstream<CountsServiceClient<UpstreamChannel>>,
    pub(crate) calls: Calls,
    upload_timeout: Duration,
}

impl Clients {
    pub(crate) fn new(settings: &Settings, metrics: &GrpcMetrics) -> Result<Self, String> {
        let u = &settings.upstreams;
        Ok(Self {
            tracks: Upstream::connect("tracks", &u.tracks, metrics, TracksServiceClient::new)?,
            likes: Upstream::connect("likes", &u.likes, metrics, LikesServiceClient::new)?,
            counts: Upstream::connect("counts", &u.counts, metrics, CountsServiceClient::new)?,
            calls: Calls::new(&settings.calls),
            upload_timeout: Duration::from_millis(settings.upload.timeout_ms),
        })
    }

    /// When an upload must end: the upload timeout takes the place of the tracks timeout,
    /// since an upload lasts as long as its file takes to arrive.
    pub(crate) fn upload_deadline(&self, deadline: Deadline) -> Instant {
        Instant::now() + deadline.budget(self.upload_timeout)
    }
}
