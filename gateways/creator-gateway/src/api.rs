//! The gRPC edge of the creator gateway: each handler reads the caller, checks the request,
//! runs the planned foundation calls and assembles the owner's view.

use std::sync::Arc;

use authorization::{
    client::{Client, client},
    interceptor,
};
use field_mask::Mask;
use gateway_kit::{
    Audit, Cursors, Deadline, Governance, Scope, UpstreamError, check_id, outbound, requested_mask,
    signed_in, with_degraded,
};
use protos::{
    creator::v1::{
        self as pb, DeleteTrackRequest, GetTrackRequest, ListMyTracksRequest, ListMyTracksResponse,
        UpdateTrackRequest, UploadTrackRequest, creator_gateway_server::CreatorGateway,
        upload_track_request,
    },
    foundation::{
        counts::v1::TrackCounts,
        likes::v1::DeleteTrackReactionsRequest,
        tracks::v1::{
            DeleteTrackRequest as TracksDelete, ListTracksByOwnerRequest,
            UpdateTrackRequest as TracksUpdate,
        },
    },
};
use service_runtime::idempotency::{IDEMPOTENCY_KEY, IdempotencyStore};
use tonic::{Code, Request, Response, Status, Streaming, metadata::MetadataMap};
use tracing::Instrument;

use crate::{
    GatewayError, UploadSettings, update, upload,
    upstream::Clients,
    view::{self, CreatorView},
};

const MAX_PAGE_SIZE: i32 = 100;
/// The page size of a request that sets none, as the tracks service applies it.
const DEFAULT_PAGE_SIZE: usize = 20;

#[derive(Debug)]
pub(crate) struct CreatorApi {
    view: CreatorView,
    clients: Clients,
    upload: UploadSettings,
    idempotency: Arc<IdempotencyStore>,
    audit: Audit,
    cursors: Cursors,
    governance: Governance,
}

/// The RPC page tokens of the caller's tracks are bound to.
const LIST_MY_TRACKS: &str = "creator.v1.CreatorGateway/ListMyTracks";

/// What the caller may see: the view trimmed to the mask, and the mask paths that are missing
/// because counts failed.
struct Assembled<T> {
    message: T,
    degraded: Vec<String>,
}

impl<T> Assembled<T> {
    fn into_response(self) -> Response<T> {
        with_degraded(self.message, &self.degraded)
    }
}

impl CreatorApi {
    pub(crate) fn new(
        view: CreatorView,
        clients: Clients,
        upload: UploadSettings,
        idempotency: Arc<IdempotencyStore>,
        audit: Audit,
        cursors: Cursors,
        governance: Governance,
    ) -> Self {
        Self {
            view,
            clients,
            upload,
            idempotency,
            audit,
            cursors,
            governance,
        }
    }

    async fn owned_track(
        &self,
        user: &str,
        track_id: &str,
        mask: &Mask,
        deadline: Deadline,
    ) -> Result<view::Owned, GatewayError> {
        self.view
            .owned_track(&self.clients, &self.audit, user, track_id, mask, deadline)
            .await
    }

    fn trimmed(&self, mask: &Mask, mut track: pb::Track) -> Result<pb::Track, GatewayError> {
        self.view
            .schema()
            .trim_prost(mask, &mut track)
            .map_err(|error| GatewayError::Internal(format!("cannot trim the view: {error}")))?;
        Ok(track)
    }

    async fn get_track(
        &self,
        user: &str,
        read: Read<'_>,
        request: GetTrackRequest,
        deadline: Deadline,
    ) -> Result<Assembled<pb::Track>, Status> {
        check_id("track_id", &request.track_id).map_err(GatewayError::from)?;
        let mask = read_mask(&self.view, read.metadata, request.read_mask)?;
        let admitted =
            self.governance
                .admit("GetTrack", read.client, &mask, self.view.cost(&mask, 1))?;
        let owned = self
            .owned_track(user, &request.track_id, &mask, deadline)
            .await?;
        let message = self.trimmed(&mask, view::to_view(owned.track, owned.counts.as_ref()))?;
        admitted.served();
        Ok(Assembled {
            message,
            degraded: owned.degraded,
        })
    }

    async fn list_my_tracks(
        &self,
        user: &str,
        read: Read<'_>,
        request: ListMyTracksRequest,
        deadline: Deadline,
    ) -> Result<Assembled<ListMyTracksResponse>, Status> {
        if !(0..=MAX_PAGE_SIZE).contains(&request.page_size) {
            return Err(GatewayError::invalid(
                "page_size",
                format!("must be between 0 and {MAX_PAGE_SIZE}"),
            )
            .into());
        }
        let mask = read_mask(&self.view, read.metadata, request.read_mask)?;
        // The token is this gateway's, sealed for this caller.
        let scope = Scope {
            rpc: LIST_MY_TRACKS,
            caller: user,
            territory: "",
            query: &[],
        };
        let page_token = self
            .cursors
            .open(&scope, &request.page_token)
            .map_err(|error| GatewayError::invalid("page_token", error.to_string()))?;
        let size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            size => size as usize,
        };
        let admitted = self.governance.admit(
            "ListMyTracks",
            read.client,
            &mask,
            self.view.page_cost(&mask, size),
        )?;
        let message = ListTracksByOwnerRequest {
            owner_id: user.to_owned(),
            page_size: request.page_size,
            page_token,
        };
        let page = self
            .clients
            .calls
            .read(&self.clients.tracks, deadline, |mut client, budget| {
                let message = message.clone();
                async move { client.list_tracks_by_owner(outbound(message, budget)).await }
            })
            .await
            .map_err(GatewayError::from)?;
        // Counts gets what the tracks call left of the request's deadline.
        let (counts, degraded) = if self.view.needs_counts(&mask) {
            let ids = page.tracks.iter().map(|track| track.id.clone());
            match view::counts(&self.clients, ids.collect(), deadline).await {
                Ok(counts) => (Some(counts), Vec::new()),
                Err(error) => {
                    tracing::warn!(%error, "counts failed; stats of the page are degraded");
                    self.audit.degraded(view::COUNTS_METHOD);
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
            .collect::<Result<_, GatewayError>>()?;
        admitted.served();
        Ok(Assembled {
            message: ListMyTracksResponse {
                tracks,
                next_page_token: self.cursors.seal(&scope, &page.next_page_token),
            },
            degraded,
        })
    }

    async fn upload_track(
        &self,
        user: &str,
        mut inbound: Streaming<UploadTrackRequest>,
        deadline: Deadline,
    ) -> Result<pb::Track, GatewayError> {
        let deadline = self.clients.upload_deadline(deadline);
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
        let mut client = self.clients.tracks.client();
        // A task of its own, so that a caller going away cannot cancel the call (see
        // `upload`): the outbound stream ends it with the poison message instead. The task
        // carries the server span, so the upstream call's client span stays in the caller's trace.
        let call = tokio::spawn(
            async move {
                client
                    .create_track(gateway_kit::outbound(outbound, left))
                    .await
            }
            .instrument(tracing::Span::current()),
        );
        let created = call
            .await
            .map_err(|error| GatewayError::Internal(format!("the upload task failed: {error}")))?;
        // Our own reason wins: the upstream only saw the cancellation that followed it.
        if let Ok(error) = aborted.try_recv() {
            return Err(error);
        }
        let track = created
            .map_err(|status| UpstreamError::from_status("tracks", status))?
            .into_inner();
        tracing::info!(track_id = %track.id, size = track.audio.as_ref().map(|a| a.size_bytes), "track uploaded");
        // A new track has no counters yet; the response says so with zeros.
        Ok(view::to_view(track, Some(&TrackCounts::default())))
    }

    async fn update_track(
        &self,
        user: &str,
        request: UpdateTrackRequest,
        deadline: Deadline,
    ) -> Result<Assembled<pb::Track>, GatewayError> {
        let given = request
            .track
            .ok_or_else(|| GatewayError::invalid("track", "is required"))?;
        check_id("track.id", &given.id)?;
        let paths = update::tracks_paths(self.view.schema(), request.update_mask)?;
        // Ownership first; the counters for the response come alongside.
        let everything = Mask::all();
        let owned = self
            .owned_track(user, &given.id, &everything, deadline)
            .await?;
        let request = TracksUpdate {
            track_id: given.id.clone(),
            metadata: Some(view::to_metadata(&given, String::new())),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.clone(),
            }),
        };
        let updated =
            self.clients
                .calls
                .command(
                    &self.clients.tracks,
                    deadline,
                    |mut client, budget| async move {
                        client.update_track(outbound(request, budget)).await
                    },
                )
                .await
                .map_err(|error| not_found_as(error, &given.id))?;
        tracing::info!(track_id = %given.id, paths = %paths.join(","), "track updated");
        Ok(Assembled {
            message: view::to_view(updated, owned.counts.as_ref()),
            degraded: owned.degraded,
        })
    }

    async fn delete_track(
        &self,
        user: &str,
        request: DeleteTrackRequest,
        deadline: Deadline,
    ) -> Result<(), GatewayError> {
        check_id("track_id", &request.track_id)?;
        let track_id = request.track_id;
        self.owned_track(user, &track_id, self.view.ownership_only(), deadline)
            .await?;
        let request = TracksDelete {
            track_id: track_id.clone(),
        };
        self.clients
            .calls
            .command(&self.clients.tracks, deadline, |mut client, budget| async move {
                client.delete_track(outbound(request, budget)).await
            })
            .await
            .map_err(|error| not_found_as(error, &track_id))?;
        tracing::info!(%track_id, "track deleted");
        // The track is gone for good: from here on the call succeeds. Reactions left behind by
        // a failure are invisible (no track to show them on, and counts ignores events about a
        // deleted track), so the failure is logged rather than reported.
        let request = DeleteTrackReactionsRequest {
            track_id: track_id.clone(),
        };
        let removed = self
            .clients
            .calls
            .command(
                &self.clients.likes,
                deadline,
                |mut client, budget| async move {
                    client
                        .delete_track_reactions(outbound(request, budget))
                        .await
                },
            )
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

/// A read's request metadata and BFF client.
#[derive(Debug, Clone, Copy)]
struct Read<'a> {
    metadata: &'a MetadataMap,
    client: &'a Client,
}

/// A read's mask: the `read_mask` field, or the `x-read-mask` metadata.
fn read_mask(
    view: &CreatorView,
    metadata: &MetadataMap,
    mask: Option<prost_types::FieldMask>,
) -> Result<Mask, GatewayError> {
    requested_mask(view.schema(), metadata, mask)
        .map_err(|error| GatewayError::invalid(error.field(), error.message))
}

/// The calling user, from the verified token.
fn user<T>(request: &Request<T>) -> Result<String, Status> {
    let principal = interceptor::principal(request)?;
    Ok(signed_in(&principal)
        .map_err(GatewayError::from)?
        .to_owned())
}

#[tonic::async_trait]
impl CreatorGateway for CreatorApi {
    async fn get_track(
        &self,
        request: Request<GetTrackRequest>,
    ) -> Result<Response<pb::Track>, Status> {
        let user = user(&request)?;
        let client = client(&request);
        let deadline = self.clients.calls.deadline(request.metadata());
        let (metadata, _, message) = request.into_parts();
        let read = Read {
            metadata: &metadata,
            client: &client,
        };
        let assembled = self.get_track(&user, read, message, deadline).await?;
        Ok(assembled.into_response())
    }

    async fn list_my_tracks(
        &self,
        request: Request<ListMyTracksRequest>,
    ) -> Result<Response<ListMyTracksResponse>, Status> {
        let user = user(&request)?;
        let client = client(&request);
        let deadline = self.clients.calls.deadline(request.metadata());
        let (metadata, _, message) = request.into_parts();
        let read = Read {
            metadata: &metadata,
            client: &client,
        };
        let assembled = self.list_my_tracks(&user, read, message, deadline).await?;
        Ok(assembled.into_response())
    }

    async fn upload_track(
        &self,
        request: Request<Streaming<UploadTrackRequest>>,
    ) -> Result<Response<pb::Track>, Status> {
        let user = user(&request)?;
        let deadline = self.clients.calls.deadline(request.metadata());
        let track = self
            .upload_track(&user, request.into_inner(), deadline)
            .await?;
        Ok(Response::new(track))
    }

    async fn update_track(
        &self,
        request: Request<UpdateTrackRequest>,
    ) -> Result<Response<pb::Track>, Status> {
        let user = user(&request)?;
        let deadline = self.clients.calls.deadline(request.metadata());
        if request.metadata().get(IDEMPOTENCY_KEY).is_none() {
            let assembled = self
                .update_track(&user, request.into_inner(), deadline)
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
                        self.update_track(&user, message.clone(), deadline)
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
        let deadline = self.clients.calls.deadline(request.metadata());
        let metadata = request.metadata().clone();
        let message = request.into_inner();
        self.idempotency
            .run(
                &metadata,
                &user,
                "/creator.v1.CreatorGateway/DeleteTrack",
                &message,
                || async {
                    self.delete_track(&user, message.clone(), deadline).await?;
                    Ok::<_, Status>(())
                },
            )
            .await?;
        Ok(Response::new(()))
    }
}
