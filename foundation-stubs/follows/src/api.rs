//! The gRPC edge: checks input, calls the store, maps errors in one place.

use foundation_kit::{FoundationError, ids, page, time};
use protos::foundation::follows::v1::{
    BatchGetFollowingRequest, BatchGetFollowingResponse, FollowRequest, FollowResponse,
    FollowState, Followee, ListFollowingRequest, ListFollowingResponse,
    follows_service_server::FollowsService,
};
use tonic::{Request, Response, Status};

use crate::{FollowsStore, Limits};

#[derive(Debug)]
pub(crate) struct FollowsApi {
    store: FollowsStore,
    limits: Limits,
}

impl FollowsApi {
    pub(crate) fn new(store: FollowsStore, limits: Limits) -> Self {
        Self { store, limits }
    }

    async fn set(
        &self,
        request: Request<FollowRequest>,
        on: bool,
    ) -> Result<Response<FollowResponse>, Status> {
        let request = request.into_inner();
        ids::check("follower_id", &request.follower_id)?;
        ids::check("followee_id", &request.followee_id)?;
        if request.follower_id == request.followee_id {
            return Err(FoundationError::FailedPrecondition(
                "a user cannot follow themselves".into(),
            )
            .into());
        }
        let changed = self
            .store
            .set(&request.follower_id, &request.followee_id, on)
            .await
            .map_err(FoundationError::from)?;
        Ok(Response::new(FollowResponse { changed }))
    }
}

#[tonic::async_trait]
impl FollowsService for FollowsApi {
    async fn follow(
        &self,
        request: Request<FollowRequest>,
    ) -> Result<Response<FollowResponse>, Status> {
        self.set(request, true).await
    }

    async fn unfollow(
        &self,
        request: Request<FollowRequest>,
    ) -> Result<Response<FollowResponse>, Status> {
        self.set(request, false).await
    }

    async fn batch_get_following(
        &self,
        request: Request<BatchGetFollowingRequest>,
    ) -> Result<Response<BatchGetFollowingResponse>, Status> {
        let request = request.into_inner();
        if !request.keys.is_empty() {
            if !request.follower_id.is_empty() || !request.followee_ids.is_empty() {
                return Err(FoundationError::invalid(
                    "keys",
                    "cannot be set together with follower_id and followee_ids",
                )
                .into());
            }
            ids::check_pairs(
                "keys",
                ("follower_id", "followee_id"),
                request
                    .keys
                    .iter()
                    .map(|key| (key.follower_id.as_str(), key.followee_id.as_str())),
                self.limits.max_batch,
            )?;
            let pairs: Vec<(String, String)> = request
                .keys
                .into_iter()
                .map(|key| (key.follower_id, key.followee_id))
                .collect();
            let following = self
                .store
                .following_of_pairs(&pairs)
                .await
                .map_err(FoundationError::from)?;
            let states = pairs
                .into_iter()
                .zip(following)
                .map(|((follower_id, followee_id), following)| FollowState {
                    followee_id,
                    following,
                    follower_id,
                })
                .collect();
            return Ok(Response::new(BatchGetFollowingResponse { states }));
        }
        ids::check("follower_id", &request.follower_id)?;
        ids::check_batch("followee_ids", &request.followee_ids, self.limits.max_batch)?;
        let following = self
            .store
            .following(&request.follower_id, &request.followee_ids)
            .await
            .map_err(FoundationError::from)?;
        let states = request
            .followee_ids
            .into_iter()
            .zip(following)
            .map(|(followee_id, following)| FollowState {
                followee_id,
                following,
                follower_id: request.follower_id.clone(),
            })
            .collect();
        Ok(Response::new(BatchGetFollowingResponse { states }))
    }

    async fn list_following(
        &self,
        request: Request<ListFollowingRequest>,
    ) -> Result<Response<ListFollowingResponse>, Status> {
        let request = request.into_inner();
        ids::check("follower_id", &request.follower_id)?;
        let size = page::page_size(request.page_size)?;
        let cursor = page::Cursor::decode(&request.page_token)?;
        let (followees, next) = self
            .store
            .followees(&request.follower_id, &cursor, size)
            .await
            .map_err(FoundationError::from)?;
        Ok(Response::new(ListFollowingResponse {
            followees: followees
                .into_iter()
                .map(|(user_id, time_us)| Followee {
                    user_id,
                    follow_time: Some(time::timestamp(time_us)),
                })
                .collect(),
            next_page_token: next.map(|cursor| cursor.encode()).unwrap_or_default(),
        }))
    }
}
