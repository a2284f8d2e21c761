//! The gRPC edge: checks input, calls the store, maps errors in one place.

use foundation_kit::{FoundationError, ids};
use prometheus_client::{metrics::counter::Counter, registry::Registry};
use protos::foundation::counts::v1::{
    ApplyEventsRequest, ApplyEventsResponse, BatchGetTrackCountsRequest,
    BatchGetTrackCountsResponse, BatchGetUserCountsRequest, BatchGetUserCountsResponse,
    counts_service_server::CountsService, event,
};
use tonic::{Request, Response, Status};

use crate::{CountsStore, Limits};

#[derive(Debug)]
pub(crate) struct CountsApi {
    /// [`Limits::apply_events_clients`], parsed once.
    apply_events_clients: Vec<String>,
    store: CountsStore,
    limits: Limits,
    metrics: EventMetrics,
}

/// Events applied, and events received again after they were applied, by `ApplyEvents` and
/// the NATS consumer alike.
#[derive(Debug, Clone)]
pub(crate) struct EventMetrics {
    applied: Counter,
    duplicates: Counter,
}

impl EventMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            applied: Counter::default(),
            duplicates: Counter::default(),
        };
        registry.register(
            "counts_events_applied",
            "Events applied to the counters, each once",
            metrics.applied.clone(),
        );
        registry.register(
            "counts_events_duplicates",
            "Events received again after they were applied (sent twice), and ignored",
            metrics.duplicates.clone(),
        );
        metrics
    }

    pub(crate) fn count(&self, applied: crate::store::Applied) {
        self.applied.inc_by(u64::from(applied.applied));
        self.duplicates.inc_by(u64::from(applied.duplicates));
    }
}

impl CountsApi {
    pub(crate) fn new(store: CountsStore, limits: Limits, metrics: EventMetrics) -> Self {
        Self {
            apply_events_clients: limits.apply_events_clients(),
            store,
            limits,
            metrics,
        }
    }
}

pub(crate) fn check_event(
    event: &protos::foundation::counts::v1::Event,
) -> Result<(), FoundationError> {
    ids::check("events.id", &event.id)?;
    let pair = |a: &str, b: &str| -> Result<(), FoundationError> {
        ids::check("events.kind", a)?;
        ids::check("events.kind", b)
    };
    match &event.kind {
        None => Err(FoundationError::invalid("events.kind", "is required")),
        Some(
            event::Kind::TrackLiked(r)
            | event::Kind::TrackUnliked(r)
            | event::Kind::TrackReposted(r)
            | event::Kind::TrackUnreposted(r)
            | event::Kind::TrackDownloaded(r),
        ) => pair(&r.track_id, &r.user_id),
        Some(event::Kind::UserFollowed(f) | event::Kind::UserUnfollowed(f)) => {
            pair(&f.follower_id, &f.followee_id)
        }
        Some(event::Kind::TrackDeleted(d)) => ids::check("events.kind", &d.track_id),
    }
}

#[tonic::async_trait]
impl CountsService for CountsApi {
    async fn batch_get_track_counts(
        &self,
        request: Request<BatchGetTrackCountsRequest>,
    ) -> Result<Response<BatchGetTrackCountsResponse>, Status> {
        let ids = request.into_inner().track_ids;
        ids::check_batch("track_ids", &ids, self.limits.max_batch)?;
        let counts = self
            .store
            .track_counts(&ids)
            .await
            .map_err(FoundationError::from)?;
        Ok(Response::new(BatchGetTrackCountsResponse { counts }))
    }

    async fn batch_get_user_counts(
        &self,
        request: Request<BatchGetUserCountsRequest>,
    ) -> Result<Response<BatchGetUserCountsResponse>, Status> {
        let ids = request.into_inner().user_ids;
        ids::check_batch("user_ids", &ids, self.limits.max_batch)?;
        let counts = self
            .store
            .user_counts(&ids)
            .await
            .map_err(FoundationError::from)?;
        Ok(Response::new(BatchGetUserCountsResponse { counts }))
    }

    async fn apply_events(
        &self,
        request: Request<ApplyEventsRequest>,
    ) -> Result<Response<ApplyEventsResponse>, Status> {
        if !service_runtime::tls::client_named(&request, &self.apply_events_clients) {
            tracing::warn!("ApplyEvents refused: the caller's certificate names no allowed client");
            return Err(FoundationError::PermissionDenied(
                "only the writers' relays may apply events; this caller's certificate names none of them",
            )
            .into());
        }
        let events = request.into_inner().events;
        if events.len() > self.limits.max_events {
            return Err(FoundationError::invalid(
                "events",
                format!(
                    "holds more than the maximum of {} events",
                    self.limits.max_events
                ),
            )
            .into());
        }
        events.iter().try_for_each(check_event)?;
        let applied = self
            .store
            .apply(&events)
            .await
            .map_err(FoundationError::from)?;
        self.metrics.count(applied);
        Ok(Response::new(ApplyEventsResponse {
            applied: applied.applied,
            duplicates: applied.duplicates,
        }))
    }
}
