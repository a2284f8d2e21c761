//! The gRPC edge: checks input, reads the caller's identity and deadline, runs the query or
//! command, and maps errors in one place ([`GatewayError`] into `Status`).

use std::{pin::Pin, sync::Arc};

use authorization::{Principal, client::client, interceptor::principal};
use futures::{Stream, StreamExt};
use gateway_kit::{
    Audit, Cost, Cursors, Deadline, Governance, Scope, UpstreamError, check_id, outbound,
    signed_in, with_degraded,
};
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
        tracks::v1::{ReadAudioRequest, RecordDownloadRequest, Track as FoundationTrack},
    },
};
use service_runtime::{idempotency::IdempotencyStore, streams::StreamLimits};
use tonic::{Request, Response, Status};

use crate::{
    GatewayError, Limits, rules,
    upstreams::Clients,
    view::{Caller, TrackView},
};

#[derive(Debug)]
pub(crate) struct ConsumerApi {
    pub(crate) view: Arc<TrackView>,
    pub(crate) clients: Arc<Clients>,
    pub(crate) audit: Audit,
    pub(crate) limits: Limits,
    pub(crate) idempotency: Arc<IdempotencyStore>,
    pub(crate) cursors: Cursors,
    pub(crate) downloads: StreamLimits,
    pub(crate) governance: Governance,
}

/// The RPC page tokens of liked tracks are bound to.
const LIST_LIKED_TRACKS: &str = "consumer.v1.ConsumerGateway/ListLikedTracks";

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
    /// A track the caller may see, or `TrackNotFound` (the same for missing and hidden).
    async fn visible_track(
        &self,
        track_id: &str,
        principal: &Principal,
        secret_token: Option<&str>,
        deadline: Deadline,
    ) -> Result<FoundationTrack, GatewayError> {
        let ids = vec![track_id.to_owned()];
        let tracks = self.clients.reads.tracks.values(ids, deadline).await?;
        rules::authorize(tracks, principal, secret_token, &self.audit)
            .remove(track_id)
            .ok_or(GatewayError::TrackNotFound)
    }

    /// Runs a command once per idempotency key (see `service_runtime::idempotency`).
    async fn command(
        &self,
        request: Request<String>,
        command: Command,
    ) -> Result<Response<CommandResponse>, Status> {
        let principal = principal(&request)?;
        let deadline = self.clients.calls.deadline(request.metadata());
        let metadata = request.metadata().clone();
        let track_id = request.into_inner();
        let user = signed_in(&principal)
            .map_err(GatewayError::from)?
            .to_owned();
        check_id("track_id", &track_id).map_err(GatewayError::from)?;
        let response = self
            .idempotency
            .run(&metadata, &user, command.method(), &track_id, || {
                self.run_command(&principal, deadline, &track_id, user.clone(), command)
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn run_command(
        &self,
        principal: &Principal,
        deadline: Deadline,
        track_id: &str,
        user: String,
        command: Command,
    ) -> Result<CommandResponse, Status> {
        let clients = &self.clients;
        let reaction = ReactionRequest {
            user_id: user.clone(),
            track_id: track_id.to_owned(),
        };
        if matches!(command, Command::Unlike | Command::Unrepost) {
            // Taking back one's own reaction always works, whatever became of the track since
            // (made private, geoblocked, deleted while the like was on its way), so that no
            // reaction is stuck and keeps counting. It reads nothing of the track: the answer
            // says only whether the caller had reacted, which the caller knows, and a hidden
            // track answers as a missing one does.
            let changed = self.react(reaction, command, deadline).await?;
            return Ok(CommandResponse { changed });
        }
        let track = self
            .visible_track(track_id, principal, None, deadline)
            .await?;
        let own = track.owner_id == user;
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
                self.react(reaction, command, deadline).await?
            }
            Command::Follow | Command::Unfollow => {
                let follow = FollowRequest {
                    follower_id: user,
                    followee_id: track.owner_id,
                };
                clients
                    .calls
                    .command(
                        &clients.follows,
                        deadline,
                        |mut client, budget| async move {
                            let message = outbound(follow, budget);
                            if command == Command::Follow {
                                client.follow(message).await
                            } else {
                                client.unfollow(message).await
                            }
                        },
                    )
                    .await
                    .map_err(GatewayError::from)?
                    .changed
            }
        };
        Ok(CommandResponse { changed })
    }

    /// A like or repost, or taking one back, at the likes service: whether it changed anything.
    async fn react(
        &self,
        reaction: ReactionRequest,
        command: Command,
        deadline: Deadline,
    ) -> Result<bool, GatewayError> {
        let clients = &self.clients;
        Ok(clients
            .calls
            .command(&clients.likes, deadline, |mut client, budget| async move {
                let message = outbound(reaction, budget);
                match command {
                    Command::Like => client.like(message).await,
                    Command::Unlike => client.unlike(message).await,
                    Command::Repost => client.repost(message).await,
                    _ => client.unrepost(message).await,
                }
            })
            .await?
            .changed)
    }
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
        let client = client(&request);
        let deadline = self.clients.calls.deadline(request.metadata());
        let (metadata, _, message) = request.into_parts();
        check_id("track_id", &message.track_id).map_err(GatewayError::from)?;
        let mask = self.view.requested(&metadata, message.read_mask)?;
        let cost = self.view.cost(&mask, principal.user().is_some(), 1);
        let admitted = self.governance.admit("GetTrack", &client, &mask, cost)?;
        let caller = Caller {
            principal: &principal,
            secret_token: message.secret_token.as_deref(),
            deadline,
        };
        let ids = [message.track_id];
        let assembled = self
            .view
            .assemble(&self.clients, &self.audit, &ids, &mask, caller)
            .await?;
        let track = assembled
            .tracks
            .into_iter()
            .next()
            .flatten()
            .ok_or(GatewayError::TrackNotFound)?;
        admitted.served();
        Ok(with_degraded(track, &assembled.degraded))
    }

    async fn batch_get_tracks(
        &self,
        request: Request<BatchGetTracksRequest>,
    ) -> Result<Response<BatchGetTracksResponse>, Status> {
        let principal = principal(&request)?;
        let client = client(&request);
        let deadline = self.clients.calls.deadline(request.metadata());
        let (metadata, _, message) = request.into_parts();
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
            check_id("track_ids", id).map_err(GatewayError::from)?;
        }
        let mask = self.view.requested(&metadata, message.read_mask)?;
        let tracks = field_mask::unique_keys(message.track_ids.iter()).len();
        let cost = self.view.cost(&mask, principal.user().is_some(), tracks);
        let admitted = self
            .governance
            .admit("BatchGetTracks", &client, &mask, cost)?;
        if message.track_ids.is_empty() {
            admitted.served();
            return Ok(Response::new(BatchGetTracksResponse::default()));
        }
        let caller = Caller {
            principal: &principal,
            secret_token: None,
            deadline,
        };
        let assembled = self
            .view
            .assemble(
                &self.clients,
                &self.audit,
                &message.track_ids,
                &mask,
                caller,
            )
            .await?;
        let mut response = BatchGetTracksResponse::default();
        for (id, track) in message.track_ids.into_iter().zip(assembled.tracks) {
            match track {
                Some(track) => response.tracks.push(track),
                None => response.missing_ids.push(id),
            }
        }
        admitted.served();
        Ok(with_degraded(response, &assembled.degraded))
    }

    /// Fills a page with the caller-visible tracks among the user's likes, reading further
    /// pages of likes while some are hidden, at most `limits.max_list_rounds` of them; a page
    /// can therefore be shorter than `page_size` and still have a next page token. Only an
    /// empty `next_page_token` means the end. Each page of likes is read through
    /// [`TrackView::assemble`], the query path of every other read.
    async fn list_liked_tracks(
        &self,
        request: Request<ListLikedTracksRequest>,
    ) -> Result<Response<ListLikedTracksResponse>, Status> {
        let principal = principal(&request)?;
        let client = client(&request);
        let deadline = self.clients.calls.deadline(request.metadata());
        let (metadata, _, message) = request.into_parts();
        check_id("user_id", &message.user_id).map_err(GatewayError::from)?;
        let wanted = page_size(message.page_size)?;
        let mask = self.view.requested(&metadata, message.read_mask)?;
        // One call lists the page of likes; the tracks on it cost what a batch of them does.
        let cost = Cost {
            extra: 1,
            ..self.view.cost(&mask, principal.user().is_some(), wanted)
        };
        let clients = &self.clients;
        let caller = Caller {
            principal: &principal,
            secret_token: None,
            deadline,
        };

        // The token is this gateway's, sealed for this caller and listed user: the likes
        // service's own token names a like, whose track the caller may not see.
        let scope = Scope {
            rpc: LIST_LIKED_TRACKS,
            caller: principal.user().unwrap_or_default(),
            territory: &principal.territory,
            query: &[&message.user_id],
        };
        let mut token = self
            .cursors
            .open(&scope, &message.page_token)
            .map_err(|error| GatewayError::invalid("page_token", error.to_string()))?;
        let admitted = self
            .governance
            .admit("ListLikedTracks", &client, &mask, cost)?;
        let mut tracks: Vec<Track> = Vec::with_capacity(wanted);
        let mut degraded: Vec<String> = Vec::new();
        for _ in 0..self.limits.max_list_rounds.max(1) {
            let request = FoundationListLiked {
                user_id: message.user_id.clone(),
                page_size: (wanted - tracks.len()) as i32,
                page_token: token.clone(),
            };
            let likes = clients
                .calls
                .read(&clients.likes, deadline, |mut client, budget| {
                    let request = request.clone();
                    async move { client.list_liked_tracks(outbound(request, budget)).await }
                })
                .await
                .map_err(GatewayError::from)?;
            token = likes.next_page_token;
            let ids: Vec<String> = likes.likes.into_iter().map(|like| like.track_id).collect();
            if !ids.is_empty() {
                let assembled = self
                    .view
                    .assemble(clients, &self.audit, &ids, &mask, caller)
                    .await?;
                tracks.extend(assembled.tracks.into_iter().flatten());
                for path in assembled.degraded {
                    if !degraded.contains(&path) {
                        degraded.push(path);
                    }
                }
            }
            if tracks.len() >= wanted || token.is_empty() {
                break;
            }
        }
        degraded.sort();
        let response = ListLikedTracksResponse {
            tracks,
            next_page_token: self.cursors.seal(&scope, &token),
        };
        admitted.served();
        Ok(with_degraded(response, &degraded))
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
        let deadline = self.clients.calls.deadline(request.metadata());
        let message = request.into_inner();
        let user = signed_in(&principal)
            .map_err(GatewayError::from)?
            .to_owned();
        check_id("track_id", &message.track_id).map_err(GatewayError::from)?;
        let track = self
            .visible_track(
                &message.track_id,
                &principal,
                message.secret_token.as_deref(),
                deadline,
            )
            .await?;
        if !track.downloadable && track.owner_id != user {
            self.audit
                .command_refused(&track.id, Some(&user), "not_downloadable");
            return Err(GatewayError::PermissionDenied("this track is not downloadable").into());
        }
        // The audio streams for as long as the request's deadline and the stream bound allow,
        // not the per-call cap.
        let mut audio_request = Request::new(ReadAudioRequest {
            track_id: track.id.clone(),
        });
        let max = self.downloads.max_duration();
        audio_request.set_timeout(deadline.remaining().map_or(max, |left| left.min(max)));
        let stream_error = |status: Status| {
            Status::from(GatewayError::from(UpstreamError::from_status(
                "tracks", status,
            )))
        };
        let audio = self
            .clients
            .tracks
            .client()
            .read_audio(audio_request)
            .await
            .map_err(stream_error)?
            .into_inner();
        let chunks = audio.map(move |chunk| match chunk {
            Ok(chunk) => Ok(DownloadTrackResponse { chunk: chunk.data }),
            Err(status) => Err(stream_error(status)),
        });
        // A download counts once the client has taken the whole audio, and not before: a
        // cancelled download, or one cut off because its client stopped reading, counts for
        // nothing. Failing to record it fails the call, so that an OK download was counted.
        let clients = self.clients.clone();
        let record = RecordDownloadRequest {
            track_id: track.id,
            user_id: user,
        };
        let count = move || async move {
            clients
                .calls
                .command(&clients.tracks, deadline, |mut client, budget| async move {
                    client.record_download(outbound(record, budget)).await
                })
                .await
                .map(drop)
                .map_err(|error| Status::from(GatewayError::from(error)))
        };
        let stream = self.downloads.bound("DownloadTrack", chunks, count);
        Ok(Response::new(stream))
    }

    async fn explain_read_mask(
        &self,
        request: Request<ExplainReadMaskRequest>,
    ) -> Result<Response<ExplainReadMaskResponse>, Status> {
        let principal = principal(&request)?;
        let client = client(&request);
        let (metadata, _, message) = request.into_parts();
        let mask = self.view.requested(&metadata, message.read_mask)?;
        let tracks = message.track_count.max(1) as usize;
        let cost = self.view.cost(&mask, principal.user().is_some(), tracks);
        let verdict = self.governance.explain(&client, &mask, cost);
        let explain = self.view.explain(&mask);
        let mut text = explain.to_string();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!(
            "cost: {cost} for client {:?}, budget {}{}\n",
            client.name(),
            match verdict.budget {
                0 => "none".to_owned(),
                budget => budget.to_string(),
            },
            if verdict.mask_allowed {
                ""
            } else {
                "; the mask is not on the client's list of allowed masks"
            },
        ));
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
            text,
            cost: verdict.cost.total(),
            client: client.name().to_owned(),
            budget: verdict.budget,
            mask_allowed: verdict.mask_allowed,
        }))
    }
}
