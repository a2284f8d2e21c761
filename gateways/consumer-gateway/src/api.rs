//! The gRPC edge: checks input, reads the caller's identity and deadline, runs the query or
//! command, and maps errors in one place ([`GatewayError`] into `Status`).

use std::{pin::Pin, sync::Arc, time::Duration};

use authorization::{Principal, interceptor::principal};
use futures::{Stream, StreamExt};
use protos::{
    consumer::v1::{
        BatchGetTracksRequest, BatchGetTracksResponse, CommandResponse, DownloadTrackRequest,
        DownloadTrackResponse, ExplainReadMaskRequest, ExplainReadMaskResponse,
        FollowCreatorRequest, GetTrackRequest, LikeTrackRequest, ListLikedTracksRequest,
        ListLikedTracksResponse, PlannedCall, RepostTrackRequest, Track, UnfollowCreatorRequest,
        UnlikeTrackRequest, UnrepostTrackRequest, consumer_gateway_server::ConsumerGateway,
    },
    foundation::{
        follows::v1::FollowRequest,
        likes::v1::{ListLikedTracksRequest as FoundationListLiked, ReactionRequest},
        tracks::v1::{
            BatchGetTracksRequest as FoundationBatchGet, ReadAudioRequest, RecordDownloadRequest,
            Track as FoundationTrack,
        },
    },
};
use service_runtime::{idempotency::IdempotencyStore, upstream::inbound_timeout};
use tonic::{Request, Response, Status, metadata::MetadataValue};

use crate::{
    GatewayError, Limits,
    audit::Audit,
    error::check_id,
    rules,
    upstreams::{Clients, outbound, upstream_error},
    view::{Caller, TrackView},
};

/// The response metadata key that names the mask paths a degraded response lacks.
pub const DEGRADED_FIELDS: &str = "x-degraded-fields";

#[derive(Debug)]
pub(crate) struct ConsumerApi {
    view: Arc<TrackView>,
    clients: Arc<Clients>,
    audit: Audit,
    limits: Limits,
    idempotency: Arc<IdempotencyStore>,
}

/// What a command acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Like,
    Unlike,
    Repost,
    Unrepost,
    Follow,
    Unfollow,
}

impl Command {
    /// The gRPC method, which keys idempotent replays together with the request.
    fn method(self) -> &'static str {
        match self {
            Self::Like => "/consumer.v1.ConsumerGateway/LikeTrack",
            Self::Unlike => "/consumer.v1.ConsumerGateway/UnlikeTrack",
            Self::Repost => "/consumer.v1.ConsumerGateway/RepostTrack",
            Self::Unrepost => "/consumer.v1.ConsumerGateway/UnrepostTrack",
            Self::Follow => "/consumer.v1.ConsumerGateway/FollowCreator",
            Self::Unfollow => "/consumer.v1.ConsumerGateway/UnfollowCreator",
        }
    }
}

impl ConsumerApi {
    pub(crate) fn new(
        view: Arc<TrackView>,
        clients: Clients,
        audit: Audit,
        limits: Limits,
        idempotency: Arc<IdempotencyStore>,
    ) -> Self {
        Self {
            view,
            clients: Arc::new(clients),
            audit,
            limits,
            idempotency,
        }
    }

    /// A track the caller may see, or `TrackNotFound` (the same for missing and hidden).
    async fn visible_track(
        &self,
        track_id: &str,
        principal: &Principal,
        secret_token: Option<&str>,
        inbound: Option<Duration>,
    ) -> Result<FoundationTrack, GatewayError> {
        let response = self
            .clients
            .read(&self.clients.tracks, inbound, |mut client, budget| {
                let ids = vec![track_id.to_owned()];
                async move {
                    client
                        .batch_get_tracks(outbound(FoundationBatchGet { ids }, budget))
                        .await
                }
            })
            .await
            .map_err(|status| upstream_error("tracks", status))?;
        let track = response
            .tracks
            .into_iter()
            .next()
            .ok_or(GatewayError::TrackNotFound)?;
        if let Err(hidden) = rules::visible(&track, principal, secret_token) {
            self.audit
                .track_withheld(track_id, principal.user(), hidden.as_str());
            return Err(GatewayError::TrackNotFound);
        }
        Ok(track)
    }

    /// Runs a command once per idempotency key (see `service_runtime::idempotency`).
    async fn command(
        &self,
        request: Request<String>,
        command: Command,
    ) -> Result<Response<CommandResponse>, Status> {
        let principal = principal(&request)?;
        let inbound = inbound_timeout(request.metadata());
        let metadata = request.metadata().clone();
        let track_id = request.into_inner();
        let user = principal
            .user()
            .ok_or(GatewayError::Unauthenticated(
                "commands need a signed-in user",
            ))?
            .to_owned();
        check_id("track_id", &track_id)?;
        let response = self
            .idempotency
            .run(&metadata, &user, command.method(), &track_id, || {
                self.run_command(&principal, inbound, &track_id, user.clone(), command)
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn run_command(
        &self,
        principal: &Principal,
        inbound: Option<Duration>,
        track_id: &str,
        user: String,
        command: Command,
    ) -> Result<CommandResponse, Status> {
        let track = self
            .visible_track(track_id, principal, None, inbound)
            .await?;
        let own = track.owner_id == user;
        let clients = &self.clients;
        let reaction = ReactionRequest {
            user_id: user.clone(),
            track_id: track_id.to_owned(),
        };
        let changed = match command {
            Command::Repost if own => {
                self.audit
                    .command_refused(track_id, Some(&user), "own_track");
                return Err(
                    GatewayError::FailedPrecondition("you cannot repost your own track").into(),
                );
            }
            Command::Follow | Command::Unfollow if own => {
                self.audit
                    .command_refused(track_id, Some(&user), "own_account");
                return Err(GatewayError::FailedPrecondition("you cannot follow yourself").into());
            }
            Command::Like | Command::Unlike | Command::Repost | Command::Unrepost => {
                clients
                    .command(&clients.likes, inbound, |mut client, budget| async move {
                        let message = outbound(reaction, budget);
                        match command {
                            Command::Like => client.like(message).await,
                            Command::Unlike => client.unlike(message).await,
                            Command::Repost => client.repost(message).await,
                            _ => client.unrepost(message).await,
                        }
                    })
                    .await?
                    .changed
            }
            Command::Follow | Command::Unfollow => {
                let follow = FollowRequest {
                    follower_id: user,
                    followee_id: track.owner_id,
                };
                clients
                    .command(&clients.follows, inbound, |mut client, budget| async move {
                        let message = outbound(follow, budget);
                        if command == Command::Follow {
                            client.follow(message).await
                        } else {
                            client.unfollow(message).await
                        }
                    })
                    .await?
                    .changed
            }
        };
        Ok(CommandResponse { changed })
    }
}

fn with_degraded<T>(message: T, degraded: &[String]) -> Response<T> {
    let mut response = Response::new(message);
    if !degraded.is_empty()
        && let Ok(value) = MetadataValue::try_from(degraded.join(","))
    {
        response.metadata_mut().insert(DEGRADED_FIELDS, value);
    }
    response
}

fn page_size(requested: i32) -> Result<usize, GatewayError> {
    match requested {
        0 => Ok(20),
        1..=100 => Ok(requested as usize),
        _ => Err(GatewayError::invalid(
            "page_size",
            "must be between 0 and 100",
        )),
    }
}

type DownloadStream = Pin<Box<dyn Stream<Item = Result<DownloadTrackResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ConsumerGateway for ConsumerApi {
    async fn get_track(
        &self,
        request: Request<GetTrackRequest>,
    ) -> Result<Response<Track>, Status> {
        let principal = principal(&request)?;
        let inbound = inbound_timeout(request.metadata());
        let message = request.into_inner();
        check_id("track_id", &message.track_id)?;
        let mask = self.view.mask(message.read_mask)?;
        let caller = Caller {
            principal: &principal,
            secret_token: message.secret_token.as_deref(),
            inbound,
        };
        let ids = [message.track_id];
        let assembled = self
            .view
            .assemble(&self.clients, &self.audit, &ids, &mask, caller, None)
            .await?;
        let track = assembled
            .tracks
            .into_iter()
            .next()
            .flatten()
            .ok_or(GatewayError::TrackNotFound)?;
        Ok(with_degraded(track, &assembled.degraded))
    }

    async fn batch_get_tracks(
        &self,
        request: Request<BatchGetTracksRequest>,
    ) -> Result<Response<BatchGetTracksResponse>, Status> {
        let principal = principal(&request)?;
        let inbound = inbound_timeout(request.metadata());
        let message = request.into_inner();
        if message.track_ids.len() > self.limits.max_batch {
            return Err(GatewayError::invalid(
                "track_ids",
                format!(
                    "holds {} ids, more than the maximum of {}",
                    message.track_ids.len(),
                    self.limits.max_batch
                ),
            )
            .into());
        }
        for id in &message.track_ids {
            check_id("track_ids", id)?;
        }
        let mask = self.view.mask(message.read_mask)?;
        if message.track_ids.is_empty() {
            return Ok(Response::new(BatchGetTracksResponse::default()));
        }
        let caller = Caller {
            principal: &principal,
            secret_token: None,
            inbound,
        };
        let assembled = self
            .view
            .assemble(
                &self.clients,
                &self.audit,
                &message.track_ids,
                &mask,
                caller,
                None,
            )
            .await?;
        let mut response = BatchGetTracksResponse::default();
        for (id, track) in message.track_ids.into_iter().zip(assembled.tracks) {
            match track {
                Some(track) => response.tracks.push(track),
                None => response.missing_ids.push(id),
            }
        }
        Ok(with_degraded(response, &assembled.degraded))
    }

    /// Fills a page with the caller-visible tracks among the user's likes, reading further
    /// pages of likes while some are hidden, at most `limits.max_list_rounds` of them; a page
    /// can therefore be shorter than `page_size` and still have a next page token. Only an
    /// empty `next_page_token` means the end.
    async fn list_liked_tracks(
        &self,
        request: Request<ListLikedTracksRequest>,
    ) -> Result<Response<ListLikedTracksResponse>, Status> {
        let principal = principal(&request)?;
        let inbound = inbound_timeout(request.metadata());
        let message = request.into_inner();
        check_id("user_id", &message.user_id)?;
        let wanted = page_size(message.page_size)?;
        let mask = self.view.mask(message.read_mask)?;
        let clients = &self.clients;

        let mut visible: Vec<FoundationTrack> = Vec::with_capacity(wanted);
        let mut token = message.page_token;
        for _ in 0..self.limits.max_list_rounds.max(1) {
            let need = (wanted - visible.len()) as i32;
            let user_id = message.user_id.clone();
            let page_token = token.clone();
            let likes = clients
                .read(&clients.likes, inbound, |mut client, budget| {
                    let message = FoundationListLiked {
                        user_id: user_id.clone(),
                        page_size: need,
                        page_token: page_token.clone(),
                    };
                    async move { client.list_liked_tracks(outbound(message, budget)).await }
                })
                .await
                .map_err(|status| match status.code() {
                    tonic::Code::InvalidArgument => {
                        GatewayError::invalid("page_token", "is not a token this service issued")
                    }
                    _ => upstream_error("likes", status),
                })?;
            let ids: Vec<String> = likes.likes.into_iter().map(|like| like.track_id).collect();
            if !ids.is_empty() {
                let found = clients
                    .read(&clients.tracks, inbound, |mut client, budget| {
                        let ids = ids.clone();
                        async move {
                            client
                                .batch_get_tracks(outbound(FoundationBatchGet { ids }, budget))
                                .await
                        }
                    })
                    .await
                    .map_err(|status| upstream_error("tracks", status))?;
                let mut by_id: std::collections::HashMap<String, FoundationTrack> = found
                    .tracks
                    .into_iter()
                    .map(|track| (track.id.clone(), track))
                    .collect();
                for id in ids {
                    let Some(track) = by_id.remove(&id) else {
                        continue;
                    };
                    match rules::visible(&track, &principal, None) {
                        Ok(()) => visible.push(track),
                        Err(hidden) => {
                            self.audit
                                .track_withheld(&id, principal.user(), hidden.as_str())
                        }
                    }
                }
            }
            token = likes.next_page_token;
            if visible.len() >= wanted || token.is_empty() {
                break;
            }
        }

        let ids: Vec<String> = visible.iter().map(|track| track.id.clone()).collect();
        if ids.is_empty() {
            return Ok(Response::new(ListLikedTracksResponse {
                tracks: Vec::new(),
                next_page_token: token,
            }));
        }
        let caller = Caller {
            principal: &principal,
            secret_token: None,
            inbound,
        };
        let assembled = self
            .view
            .assemble(clients, &self.audit, &ids, &mask, caller, Some(visible))
            .await?;
        let response = ListLikedTracksResponse {
            tracks: assembled.tracks.into_iter().flatten().collect(),
            next_page_token: token,
        };
        Ok(with_degraded(response, &assembled.degraded))
    }

    async fn like_track(
        &self,
        request: Request<LikeTrackRequest>,
    ) -> Result<Response<CommandResponse>, Status> {
        self.command(request.map(|m| m.track_id), Command::Like)
            .await
    }

    async fn unlike_track(
        &self,
        request: Request<UnlikeTrackRequest>,
    ) -> Result<Response<CommandResponse>, Status> {
        self.command(request.map(|m| m.track_id), Command::Unlike)
            .await
    }

    async fn repost_track(
        &self,
        request: Request<RepostTrackRequest>,
    ) -> Result<Response<CommandResponse>, Status> {
        self.command(request.map(|m| m.track_id), Command::Repost)
            .await
    }

    async fn unrepost_track(
        &self,
        request: Request<UnrepostTrackRequest>,
    ) -> Result<Response<CommandResponse>, Status> {
        self.command(request.map(|m| m.track_id), Command::Unrepost)
            .await
    }

    async fn follow_creator(
        &self,
        request: Request<FollowCreatorRequest>,
    ) -> Result<Response<CommandResponse>, Status> {
        self.command(request.map(|m| m.track_id), Command::Follow)
            .await
    }

    async fn unfollow_creator(
        &self,
        request: Request<UnfollowCreatorRequest>,
    ) -> Result<Response<CommandResponse>, Status> {
        self.command(request.map(|m| m.track_id), Command::Unfollow)
            .await
    }

    type DownloadTrackStream = DownloadStream;

    async fn download_track(
        &self,
        request: Request<DownloadTrackRequest>,
    ) -> Result<Response<Self::DownloadTrackStream>, Status> {
        let principal = principal(&request)?;
        let inbound = inbound_timeout(request.metadata());
        let message = request.into_inner();
        let user = principal
            .user()
            .ok_or(GatewayError::Unauthenticated(
                "commands need a signed-in user",
            ))?
            .to_owned();
        check_id("track_id", &message.track_id)?;
        let track = self
            .visible_track(
                &message.track_id,
                &principal,
                message.secret_token.as_deref(),
                inbound,
            )
            .await?;
        if !track.downloadable && track.owner_id != user {
            self.audit
                .command_refused(&track.id, Some(&user), "not_downloadable");
            return Err(GatewayError::PermissionDenied("this track is not downloadable").into());
        }
        let clients = &self.clients;
        let record = RecordDownloadRequest {
            track_id: track.id.clone(),
            user_id: user,
        };
        clients
            .command(&clients.tracks, inbound, |mut client, budget| async move {
                client.record_download(outbound(record, budget)).await
            })
            .await?;
        // The audio streams for as long as the caller's own deadline allows, not the per-call cap.
        let mut audio_request = Request::new(ReadAudioRequest { track_id: track.id });
        if let Some(inbound) = inbound {
            audio_request.set_timeout(inbound);
        }
        let audio = clients
            .tracks
            .client
            .clone()
            .read_audio(audio_request)
            .await
            .map_err(|status| upstream_error("tracks", status))?
            .into_inner();
        let stream = audio.map(|chunk| match chunk {
            Ok(chunk) => Ok(DownloadTrackResponse { chunk: chunk.data }),
            Err(status) => Err(Status::from(upstream_error("tracks", status))),
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn explain_read_mask(
        &self,
        request: Request<ExplainReadMaskRequest>,
    ) -> Result<Response<ExplainReadMaskResponse>, Status> {
        let mask = self.view.mask(request.into_inner().read_mask)?;
        let explain = self.view.explain(&mask);
        Ok(Response::new(ExplainReadMaskResponse {
            read_mask: mask.to_json(),
            calls: explain
                .calls
                .iter()
                .map(|call| PlannedCall {
                    method: call.method.to_owned(),
                    input: match call.input {
                        field_mask::Input::TrackId => "track_id".into(),
                        field_mask::Input::Owner => "owner".into(),
                    },
                    stage: u32::from(call.stage.number()),
                    caused_by: call.causes.iter().map(ToString::to_string).collect(),
                })
                .collect(),
            text: explain.to_string(),
        }))
    }
}
