//! The foundation services this gateway calls, each a [`gateway_kit::Upstream`], and the kit's
//! caller that bounds, retries and classifies every call.

use std::{sync::Arc, time::Duration};

use gateway_kit::{Calls, Deadline, Fanout, Read, Upstream, reads};
use protos::foundation::{
    counts::v1::{TrackCounts, counts_service_client::CountsServiceClient},
    likes::v1::likes_service_client::LikesServiceClient,
    tracks::v1::{Track, tracks_service_client::TracksServiceClient},
};
use service_runtime::{metrics::GrpcMetrics, upstream::UpstreamChannel};
use tokio::time::Instant;

use crate::Settings;

#[derive(Debug)]
pub(crate) struct Clients {
    pub(crate) tracks: Upstream<TracksServiceClient<UpstreamChannel>>,
    pub(crate) likes: Upstream<LikesServiceClient<UpstreamChannel>>,
    pub(crate) calls: Arc<Calls>,
    /// The view's foundation reads, shared between concurrent requests.
    pub(crate) read_tracks: Read<String, Track>,
    pub(crate) read_counts: Read<String, TrackCounts>,
    upload_timeout: Duration,
}

impl Clients {
    pub(crate) fn new(
        settings: &Settings,
        metrics: &GrpcMetrics,
        fanout: &Fanout,
    ) -> Result<Self, String> {
        let u = &settings.upstreams;
        let tracks = Upstream::connect("tracks", &u.tracks, metrics, TracksServiceClient::new)?;
        let counts = Upstream::connect("counts", &u.counts, metrics, CountsServiceClient::new)?;
        let calls = Arc::new(Calls::new(&settings.calls));
        Ok(Self {
            read_tracks: reads::tracks(fanout, &calls, &tracks),
            read_counts: reads::track_counts(fanout, &calls, &counts),
            tracks,
            likes: Upstream::connect("likes", &u.likes, metrics, LikesServiceClient::new)?,
            calls,
            upload_timeout: Duration::from_millis(settings.upload.timeout_ms),
        })
    }

    /// When an upload must end: the upload timeout takes the place of the tracks timeout,
    /// since an upload lasts as long as its file takes to arrive.
    pub(crate) fn upload_deadline(&self, deadline: Deadline) -> Instant {
        Instant::now() + deadline.budget(self.upload_timeout)
    }
}
