//! The gRPC edge of the creator gateway: each handler reads the caller, checks the request,
//! runs the planned foundation calls and assembles the owner's view.

use std::{collections::HashMap, sync::Arc, time::Duration};

use authorization::interceptor;
use field_mask::{CallError, Mask, run_stage};
use protos::{
    creator::v1::{
        self as pb, DeleteTrackRequest, GetTrackRequest, ListMyTracksRequest, ListMyTracksResponse,
        UpdateTrackRequest, UploadTrackRequest, creator_gateway_server::CreatorGateway,
        upload_track_request,
    },
    foundation::{
        counts::v1::{BatchGetTrackCountsRequest, TrackCounts},
        likes::v1::DeleteTrackReactionsRequest,
        tracks::v1::{
            self as tracks_pb, BatchGetTracksRequest, DeleteTrackRequest as TracksDelete,
            ListTracksByOwnerRequest, UpdateTrackRequest as TracksUpdate,
        },
    },
};
use service_runtime::idempotency::{IDEMPOTENCY_KEY, IdempotencyStore};
use tonic::{Code, Request, Response, Status, Streaming, metadata::MetadataValue};
use tracing::Instrument;

use crate::{
    GatewayError, UploadSettings,
    audit::Audit,
    update, upload,
    upstream::{Clients, Service, UpstreamError, UpstreamFailure, timed},
    view::{self, CreatorView, Upstream},
};

/// The response metadata key that lists the mask paths left unset because an upstream failed.
pub(crate) const DEGRADED_FIELDS: &str = "x-degraded-fields";

const MAX_PAGE_SIZE: i32 = 100;
const MAX_ID_LEN: usize = 64;

#[derive(Debug)]
pub(crate) struct CreatorApi {
    view: CreatorView,
    clients: Clients,
    upload: UploadSettings,
    idempotency: Arc<IdempotencyStore>,
    audit: Audit,
}

/// What the caller may see of one track: the view trimmed to the mask, and the mask paths
/// that are missing because counts failed.
struct Assembled<T> {
    message: T,
    degraded: Vec<String>,
}

impl<T> Assembled<T> {
    fn into_response(self) -> Response<T> {
        let mut response = Response::new(self.message);
        if !self.degraded.is_empty()
            && let Ok(value) = MetadataValue::try_from(self.degraded.join(","))
        {
            response.metadata_mut().insert(DEGRADED_FIELDS, value);
        }
        response
    }
}

/// A result of the first fanout stage.
enum Fetched {
    Track(Option<tracks_pb::Track>),
    Counts(HashMap<String, TrackCounts>),
}

impl CreatorApi {
    pub(crate) fn new(
        view: CreatorView,
        clients: Clients,
        upload: UploadSettings,
        idempotency: Arc<IdempotencyStore>,
        audit: Audit,
    ) -> Self {
        Self {
            view,
            clients,
            upload,
            idempotency,
            audit,
        }
    }

    /// The caller's track `track_id` as a record, with its counters when `mask` wants them and
    /// counts answered. Another user's track is [`GatewayError::TrackNotFound`], like a
    /// missing one; its counters, fetched alongside, are dropped.
    async fn owned_track(
        &self,
        user: &str,
        track_id: &str,
        mask: &Mask,
        inbound: Option<Duration>,
    ) -> Result<(tracks_pb::Track, Option<TrackCounts>, Vec<String>), GatewayError> {
        let tracks_deadline = self.clients.deadline(Service::Tracks, inbound);
        let counts_deadline = self.clients.deadline(Service::Counts, inbound);
        let plan = self.view.spec().plan(mask);
        let mut results = run_stage(
            &plan,
            field_mask::Stage::First,
            tracks_deadline.max(counts_deadline),
            |source| async move {
                match source {
                    Upstream::Tracks => self
                        .batch_get_track(track_id, tracks_deadline)
                        .await
                        .map(Fetched::Track),
                    Upstream::Counts => self
                        .counts(vec![track_id.to_owned()], counts_deadline)
                        .await
                        .map(Fetched::Counts),
                }
            },
        )
        .await;
        let track = match results.take(Upstream::Tracks) {
            Some(Ok(Fetched::Track(track))) => track,
            Some(Ok(Fetched::Counts(_))) | None => unreachable!("tracks is always planned"),
            Some(Err(error)) => return Err(stage_error(Service::Tracks, error).into()),
        };
        let track = match track {
            Some(track) if track.owner_id == user => track,
            Some(_) => {
                self.audit.not_owner(track_id, user);
                return Err(GatewayError::TrackNotFound(track_id.to_owned()));
            }
            None => return Err(GatewayError::TrackNotFound(track_id.to_owned())),
        };
        let (counts, degraded) = match results.take(Upstream::Counts) {
            None => (None, Vec::new()),
            Some(Ok(Fetched::Counts(mut counts))) => (counts.remove(track_id), Vec::new()),
            Some(Ok(Fetched::Track(_))) => unreachable!("counts gives counts"),
            Some(Err(error)) => {
                let error = stage_error(Service::Counts, error);
                tracing::warn!(%error, track_id, "counts failed; stats are degraded");
                (None, self.view.degraded_by_counts(mask))
            }
        };
        Ok((track, counts, degraded))
    }

    async fn batch_get_track(
        &self,
        track_id: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Option<tracks_pb::Track>, UpstreamError> {
        let response = self
            .clients
            .read(Service::Tracks, deadline, |left| {
                let mut client = self.clients.tracks.clone();
                let request = BatchGetTracksRequest {
                    ids: vec![track_id.to_owned()],
                };
                async move { client.batch_get_tracks(timed(request, left)).await }
            })
            .await?;
        Ok(response
            .tracks
            .into_iter()
            .find(|track| track.id == track_id))
    }

    /// One counts call for all of `track_ids`.
    async fn counts(
        &self,
        track_ids: Vec<String>,
        deadline: tokio::time::Instant,
    ) -> Result<HashMap<String, TrackCounts>, UpstreamError> {
        field_mask::call_batched(track_ids, |track_ids| async move {
            let response = self
                .clients
                .read(Service::Counts, deadline, |left| {
                    let mut client = self.clients.counts.clone();
                    let request = BatchGetTrackCountsRequest {
                        track_ids: track_ids.clone(),
                    };
                    async move { client.batch_get_track_counts(timed(request, left)).await }
                })
                .await?;
            Ok(response
                .counts
                .into_iter()
                .map(|counts| (counts.track_id.clone(), counts)))
        })
        .await
    }

    fn trimmed(&self, mask: &Mask, mut track: pb::Track) -> Result<pb::Track, GatewayError> {
        self.view.schema().trim_prost(mask, &mut track)?;
        Ok(track)
    }

    async fn get_track(
        &self,
        user: &str,
        request: GetTrackRequest,
        inbound: Option<Duration>,
    ) -> Result<Assembled<pb::Track>, GatewayError> {
        check_id("track_id", &request.track_id)?;
        let mask = read_mask(&self.view, request.read_mask)?;
        let (track, counts, degraded) = self
            .owned_track(user, &request.track_id, &mask, inbound)
            .await?;
        let message = self.trimmed(&mask, view::to_view(track, counts.as_ref()))?;
        Ok(Assembled { message, degraded })
    }

    async fn list_my_tracks(
        &self,
        user: &str,
        request: ListMyTracksRequest,
        inbound: Option<Duration>,
    ) -> Result<Assembled<ListMyTracksResponse>, GatewayError> {
        if !(0..=MAX_PAGE_SIZE).contains(&request.page_size) {
            return Err(GatewayError::invalid(
                "page_size",
                format!("must be between 0 and {MAX_PAGE_SIZE}"),
            ));
        }
        let mask = read_mask(&self.view, request.read_mask)?;
        let deadline = self.clients.deadline(Service::Tracks, inbound);
        let page = self
            .clients
            .read(Service::Tracks, deadline, |left| {
                let mut client = self.clients.tracks.clone();
                let request = ListTracksByOwnerRequest {
                    owner_id: user.to_owned(),
                    page_size: request.page_size,
                    page_token: request.page_token.clone(),
                };
                async move { client.list_tracks_by_owner(timed(request, left)).await }
            })
            .await?;
        let (counts, degraded) = if self.view.needs_counts(&mask) {
            let deadline = self.clients.deadline(Service::Counts, inbound);
            let ids = page.tracks.iter().map(|track| track.id.clone());
            match self.counts(ids.collect(), deadline).await {
                Ok(counts) => (Some(counts), Vec::new()),
                Err(error) => {
                    tracing::warn!(%error, "counts failed; stats of the page are degraded");
                    (None, self.view.degraded_by_counts(&mask))
                }
            }
        } else {
            (None, Vec::new())
        };
        let tracks = page
            .tracks
            .into_iter()
            .map(|track| {
                let track_counts = counts.as_ref().and_then(|counts| counts.get(&track.id));
                self.trimmed(&mask, view::to_view(track, track_counts))
            })
            .collect::<Result<_, _>>()?;
        Ok(Assembled {
            message: ListMyTracksResponse {
                tracks,
                next_page_token: page.next_page_token,
            },
            degraded,
        })
    }

    async fn upload_track(
        &self,
        user: &str,
        mut inbound: Streaming<UploadTrackRequest>,
        timeout: Option<Duration>,
    ) -> Result<pb::Track, GatewayError> {
        let deadline = self.clients.upload_deadline(timeout);
        let first = tokio::time::timeout_at(deadline, inbound.message())
            .await
            .map_err(|_| {
                GatewayError::UploadAborted(Status::deadline_exceeded("no metadata in time"))
            })?
            .map_err(GatewayError::UploadAborted)?;
        let Some(upload_track_request::Part::Metadata(given)) = first.and_then(|m| m.part) else {
            return Err(GatewayError::invalid(
                "metadata",
                "the first message must carry the metadata",
            ));
        };
        // The owner is the caller, never a field of the request.
        let metadata = view::to_metadata(&given, user.to_owned());
        let (outbound, mut aborted) =
            upload::outbound(metadata, inbound, self.upload.max_bytes, deadline);
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let mut client = self.clients.tracks.clone();
        // A task of its own, so that a caller going away cannot cancel the call (see
        // `upload`): the outbound stream ends it with the poison message instead. The task
        // carries the server span, so the upstream call's client span stays in the caller's trace.
        let call = tokio::spawn(
            async move { client.create_track(timed(outbound, left)).await }
                .instrument(tracing::Span::current()),
        );
        let created = call.await.map_err(|error| {
            tracing::error!(%error, "upload task failed");
            UpstreamError::new(
                "tracks",
                UpstreamFailure::Status(Status::internal("upload task failed")),
            )
        })?;
        // Our own reason wins: the upstream only saw the cancellation that followed it.
        if let Ok(error) = aborted.try_recv() {
            return Err(error);
        }
        let track = match created {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == Code::Cancelled => {
                return Err(UpstreamError::new("tracks", UpstreamFailure::Timeout).into());
            }
            Err(status) => {
                return Err(UpstreamError::new("tracks", UpstreamFailure::Status(status)).into());
            }
        };
        tracing::info!(track_id = %track.id, size = track.audio.as_ref().map(|a| a.size_bytes), "track uploaded");
        // A new track has no counters yet; the response says so with zeros.
        Ok(view::to_view(track, Some(&TrackCounts::default())))
    }

    async fn update_track(
        &self,
        user: &str,
        request: UpdateTrackRequest,
        inbound: Option<Duration>,
    ) -> Result<Assembled<pb::Track>, GatewayError> {
        let given = request
            .track
            .ok_or_else(|| GatewayError::invalid("track", "is required"))?;
        check_id("track.id", &given.id)?;
        let paths = update::tracks_paths(self.view.schema(), request.update_mask)?;
        // Ownership first; the counters for the response come alongside.
        let everything = Mask::all();
        let (_, counts, degraded) = self
            .owned_track(user, &given.id, &everything, inbound)
            .await?;
        let deadline = self.clients.deadline(Service::Tracks, inbound);
        let metadata = view::to_metadata(&given, String::new());
        let updated = self
            .clients
            .command(Service::Tracks, deadline, |left| {
                let mut client = self.clients.tracks.clone();
                let request = TracksUpdate {
                    track_id: given.id.clone(),
                    metadata: Some(metadata.clone()),
                    update_mask: Some(prost_types::FieldMask {
                        paths: paths.clone(),
                    }),
                };
                async move { client.update_track(timed(request, left)).await }
            })
            .await
            .map_err(|error| not_found_as(error, &given.id))?;
        tracing::info!(track_id = %given.id, paths = %paths.join(","), "track updated");
        Ok(Assembled {
            message: view::to_view(updated, counts.as_ref()),
            degraded,
        })
    }

    async fn delete_track(
        &self,
        user: &str,
        request: DeleteTrackRequest,
        inbound: Option<Duration>,
    ) -> Result<(), GatewayError> {
        check_id("track_id", &request.track_id)?;
        let track_id = request.track_id;
        self.owned_track(user, &track_id, self.view.ownership_only(), inbound)
            .await?;
        let deadline = self.clients.deadline(Service::Tracks, inbound);
        self.clients
            .command(Service::Tracks, deadline, |left| {
                let mut client = self.clients.tracks.clone();
                let request = TracksDelete {
                    track_id: track_id.clone(),
                };
                async move { client.delete_track(timed(request, left)).await }
            })
            .await
            .map_err(|error| not_found_as(error, &track_id))?;
        tracing::info!(%track_id, "track deleted");
        // The track is gone for good: from here on the call succeeds. Reactions left behind by
        // a failure are invisible (no track to show them on, and counts ignores events about a
        // deleted track), so the failure is logged rather than reported.
        let deadline = self.clients.deadline(Service::Likes, inbound);
        let removed = self
            .clients
            .command(Service::Likes, deadline, |left| {
                let mut client = self.clients.likes.clone();
                let request = DeleteTrackReactionsRequest {
                    track_id: track_id.clone(),
                };
                async move { client.delete_track_reactions(timed(request, left)).await }
            })
            .await;
        match removed {
            Ok(removed) => tracing::info!(
                %track_id,
                likes = removed.likes_removed,
                reposts = removed.reposts_removed,
                "reactions of a deleted track removed"
            ),
            Err(error) => {
                tracing::warn!(%track_id, %error, "cannot remove the reactions of a deleted track");
            }
        }
        Ok(())
    }
}

/// A tracks error about the track itself (deleted meanwhile) as the gateway's not-found.
fn not_found_as(error: UpstreamError, track_id: &str) -> GatewayError {
    if error.code() == Some(Code::NotFound) {
        GatewayError::TrackNotFound(track_id.to_owned())
    } else {
        error.into()
    }
}

fn stage_error(service: Service, error: CallError<UpstreamError>) -> UpstreamError {
    match error {
        CallError::Failed(error) => error,
        CallError::DeadlineExceeded | CallError::Abandoned => {
            UpstreamError::new(service.name(), UpstreamFailure::Timeout)
        }
    }
}

fn read_mask(
    view: &CreatorView,
    mask: Option<prost_types::FieldMask>,
) -> Result<Mask, GatewayError> {
    view.parse(mask)
        .map_err(|error| GatewayError::invalid("read_mask", error.user_message()))
}

/// Checks an id at the edge, with the foundation services' rules: 1 to 64 ASCII letters,
/// digits, `_` or `-`.
fn check_id(field: &'static str, id: &str) -> Result<(), GatewayError> {
    if id.is_empty() {
        return Err(GatewayError::invalid(field, "is required"));
    }
    if id.len() > MAX_ID_LEN
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(GatewayError::invalid(
            field,
            format!("must be 1 to {MAX_ID_LEN} ASCII letters, digits, '_' or '-'"),
        ));
    }
    Ok(())
}

/// The calling user, from the verified token.
fn user<T>(request: &Request<T>) -> Result<String, Status> {
    interceptor::principal(request)?
        .user_id
        .ok_or_else(|| GatewayError::Anonymous.into())
}

fn inbound_timeout<T>(request: &Request<T>) -> Option<Duration> {
    service_runtime::upstream::inbound_timeout(request.metadata())
}

#[tonic::async_trait]
impl CreatorGateway for CreatorApi {
    async fn get_track(
        &self,
        request: Request<GetTrackRequest>,
    ) -> Result<Response<pb::Track>, Status> {
        let user = user(&request)?;
        let inbound = inbound_timeout(&request);
        let assembled = self.get_track(&user, request.into_inner(), inbound).await?;
        Ok(assembled.into_response())
    }

    async fn list_my_tracks(
        &self,
        request: Request<ListMyTracksRequest>,
    ) -> Result<Response<ListMyTracksResponse>, Status> {
        let user = user(&request)?;
        let inbound = inbound_timeout(&request);
        let assembled = self
            .list_my_tracks(&user, request.into_inner(), inbound)
            .await?;
        Ok(assembled.into_response())
    }

    async fn upload_track(
        &self,
        request: Request<Streaming<UploadTrackRequest>>,
    ) -> Result<Response<pb::Track>, Status> {
        let user = user(&request)?;
        let inbound = inbound_timeout(&request);
        let track = self
            .upload_track(&user, request.into_inner(), inbound)
            .await?;
        Ok(Response::new(track))
    }

    async fn update_track(
        &self,
        request: Request<UpdateTrackRequest>,
    ) -> Result<Response<pb::Track>, Status> {
        let user = user(&request)?;
        let inbound = inbound_timeout(&request);
        if request.metadata().get(IDEMPOTENCY_KEY).is_none() {
            let assembled = self
                .update_track(&user, request.into_inner(), inbound)
                .await?;
            return Ok(assembled.into_response());
        }
        // A keyed update replays its first result (without the degraded-fields header).
        let metadata = request.metadata().clone();
        let message = request.into_inner();
        let track = self
            .idempotency
            .run(
                &metadata,
                &user,
                "/creator.v1.CreatorGateway/UpdateTrack",
                &message,
                || async {
                    Ok::<_, Status>(
                        self.update_track(&user, message.clone(), inbound)
                            .await?
                            .message,
                    )
                },
            )
            .await?;
        Ok(Response::new(track))
    }

    async fn delete_track(
        &self,
        request: Request<DeleteTrackRequest>,
    ) -> Result<Response<()>, Status> {
        let user = user(&request)?;
        let inbound = inbound_timeout(&request);
        let metadata = request.metadata().clone();
        let message = request.into_inner();
        self.idempotency
            .run(
                &metadata,
                &user,
                "/creator.v1.CreatorGateway/DeleteTrack",
                &message,
                || async {
                    self.delete_track(&user, message.clone(), inbound).await?;
                    Ok::<_, Status>(())
                },
            )
            .await?;
        Ok(Response::new(()))
    }
}
