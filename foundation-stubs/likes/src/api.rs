//! The gRPC edge: checks input, calls the store, maps errors in one place.

use foundation_kit::{FoundationError, ids, page, time};
use protos::foundation::likes::v1::{
    BatchGetReactionsRequest, BatchGetReactionsResponse, DeleteTrackReactionsRequest,
    DeleteTrackReactionsResponse, LikedTrack, ListLikedTracksRequest, ListLikedTracksResponse,
    Reaction, ReactionRequest, ReactionResponse, likes_service_server::LikesService,
};
use tonic::{Request, Response, Status};

use crate::{LikesStore, Limits, store::ReactionKind};

#[derive(Debug)]
pub(crate) struct LikesApi {
    store: LikesStore,
    limits: Limits,
}

impl LikesApi {
    pub(crate) fn new(store: LikesStore, limits: Limits) -> Self {
        Self { store, limits }
    }

    async fn set(
        &self,
        request: Request<ReactionRequest>,
        kind: ReactionKind,
        on: bool,
    ) -> Result<Response<ReactionResponse>, Status> {
        let request = request.into_inner();
        ids::check("user_id", &request.user_id)?;
        ids::check("track_id", &request.track_id)?;
        let changed = self
            .store
            .set(&request.user_id, &request.track_id, kind, on)
            .await
            .map_err(FoundationError::from)?;
        Ok(Response::new(ReactionResponse { changed }))
    }
}

#[tonic::async_trait]
impl LikesService for LikesApi {
    async fn like(
        &self,
        request: Request<ReactionRequest>,
    ) -> Result<Response<ReactionResponse>, Status> {
        self.set(request, ReactionKind::Like, true).await
    }

    async fn unlike(
        &self,
        request: Request<ReactionRequest>,
    ) -> Result<Response<ReactionResponse>, Status> {
        self.set(request, ReactionKind::Like, false).await
    }

    async fn repost(
        &self,
        request: Request<ReactionRequest>,
    ) -> Result<Response<ReactionResponse>, Status> {
        self.set(request, ReactionKind::Repost, true).await
    }

    async fn unrepost(
        &self,
        request: Request<ReactionRequest>,
    ) -> Result<Response<ReactionResponse>, Status> {
        self.set(request, ReactionKind::Repost, false).await
    }

    async fn batch_get_reactions(
        &self,
        request: Request<BatchGetReactionsRequest>,
    ) -> Result<Response<BatchGetReactionsResponse>, Status> {
        let request = request.into_inner();
        if !request.keys.is_empty() {
            if !request.user_id.is_empty() || !request.track_ids.is_empty() {
                return Err(FoundationError::invalid(
                    "keys",
                    "cannot be set together with user_id and track_ids",
                )
                .into());
            }
            ids::check_pairs(
                "keys",
                ("user_id", "track_id"),
                request
                    .keys
                    .iter()
                    .map(|key| (key.user_id.as_str(), key.track_id.as_str())),
                self.limits.max_batch,
            )?;
            let pairs: Vec<(String, String)> = request
                .keys
                .into_iter()
                .map(|key| (key.user_id, key.track_id))
                .collect();
            let states = self
                .store
                .reactions_of_pairs(&pairs)
                .await
                .map_err(FoundationError::from)?;
            let reactions = pairs
                .into_iter()
                .zip(states)
                .map(|((user_id, track_id), (liked, reposted))| Reaction {
                    track_id,
                    liked,
                    reposted,
                    user_id,
                })
                .collect();
            return Ok(Response::new(BatchGetReactionsResponse { reactions }));
        }
        ids::check("user_id", &request.user_id)?;
        ids::check_batch("track_ids", &request.track_ids, self.limits.max_batch)?;
        let states = self
            .store
            .reactions(&request.user_id, &request.track_ids)
            .await
            .map_err(FoundationError::from)?;
        let reactions = request
            .track_ids
            .into_iter()
            .zip(states)
            .map(|(track_id, (liked, reposted))| Reaction {
                track_id,
                liked,
                reposted,
                user_id: request.user_id.clone(),
            })
            .collect();
        Ok(Response::new(BatchGetReactionsResponse { reactions }))
    }

    async fn list_liked_tracks(
        &self,
        request: Request<ListLikedTracksRequest>,
    ) -> Result<Response<ListLikedTracksResponse>, Status> {
        let request = request.into_inner();
        ids::check("user_id", &request.user_id)?;
        let size = page::page_size(request.page_size)?;
        let cursor = page::Cursor::decode(&request.page_token)?;
        let (likes, next) = self
            .store
            .liked(&request.user_id, &cursor, size)
            .await
            .map_err(FoundationError::from)?;
        Ok(Response::new(ListLikedTracksResponse {
            likes: likes
                .into_iter()
                .map(|(track_id, time_us)| LikedTrack {
                    track_id,
                    like_time: Some(time::timestamp(time_us)),
                })
                .collect(),
            next_page_token: next.map(|cursor| cursor.encode()).unwrap_or_default(),
        }))
    }

    async fn delete_track_reactions(
        &self,
        request: Request<DeleteTrackReactionsRequest>,
    ) -> Result<Response<DeleteTrackReactionsResponse>, Status> {
        let request = request.into_inner();
        ids::check("track_id", &request.track_id)?;
        let (likes_removed, reposts_removed) = self
            .store
            .delete_track(&request.track_id)
            .await
            .map_err(FoundationError::from)?;
        Ok(Response::new(DeleteTrackReactionsResponse {
            likes_removed,
            reposts_removed,
        }))
    }
}
