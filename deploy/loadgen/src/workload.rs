//! What the load is made of: viewers with their tokens, the track ids they may see (from the
//! deterministic seed dataset), read masks from a table, and one gRPC call per scenario.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use authorization::token::mint_development_client_token;
use foundation_kit::seed::{Seed, SeedGeoMode, SeedVisibility};
use protos::{
    consumer::v1::{
        BatchGetTracksRequest, GetTrackRequest, LikeTrackRequest, ListLikedTracksRequest,
        consumer_gateway_client::ConsumerGatewayClient,
    },
    creator::v1::{ListMyTracksRequest, creator_gateway_client::CreatorGatewayClient},
    foundation::{
        counts::v1::{
            BatchGetTrackCountsRequest, BatchGetUserCountsRequest,
            counts_service_client::CountsServiceClient,
        },
        follows::v1::{BatchGetFollowingRequest, follows_service_client::FollowsServiceClient},
        likes::v1::{BatchGetReactionsRequest, likes_service_client::LikesServiceClient},
        tracks::v1::{
            BatchGetTracksRequest as FoundationBatchGetTracks,
            tracks_service_client::TracksServiceClient,
        },
    },
};
use tonic::{
    Request,
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
};

use crate::{
    Endpoints,
    drive::{Call, call},
};

/// The read masks of the mixed scenario: what BFF screens typically ask for.
pub const MASK_TABLE: &[&str] = &[
    "title",
    "title,creator.id,artwork_url,duration",
    "title,artwork_url,stats.likes_count,viewer.liked",
    "id,title,genre,creator.followers_count,creator.followed_by_viewer",
    "title,description,stats,viewer,access",
    "*",
];

/// The BFF clients listeners call through, by user number, as the tokens' `azp` names them:
/// the gateways count field usage per client.
const LISTENER_CLIENTS: &[&str] = &["web-bff", "ios-bff", "android-bff"];
/// The BFF client creators call through.
const CREATOR_CLIENT: &str = "studio-web";

/// The territory of every viewer.
const TERRITORY: &str = "US";

/// Listeners that like enough tracks for a full page of 50 (prepared before the run).
const HEAVY_LIKERS: u32 = 20;
const HEAVY_LIKES: usize = 60;

/// How many connections each client spreads its calls over (as several BFF replicas would).
const CONNECTIONS: usize = 4;

#[derive(Debug, Clone)]
struct Viewer {
    id: String,
    authorization: MetadataValue<tonic::metadata::Ascii>,
}

impl Viewer {
    fn new(id: String, client: &str) -> anyhow::Result<Self> {
        let token = mint_development_client_token(Some(&id), TERRITORY, 24 * 3600, Some(client));
        Ok(Self {
            authorization: format!("Bearer {token}").parse()?,
            id,
        })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        request
    }
}

/// Clients, viewers and ids shared by every call.
#[derive(Debug)]
pub struct Workload {
    consumer: Vec<ConsumerGatewayClient<Channel>>,
    creator: Vec<CreatorGatewayClient<Channel>>,
    tracks: Vec<TracksServiceClient<Channel>>,
    likes: Vec<LikesServiceClient<Channel>>,
    follows: Vec<FollowsServiceClient<Channel>>,
    counts: Vec<CountsServiceClient<Channel>>,
    listeners: Vec<Viewer>,
    heavy_likers: Vec<Viewer>,
    creators: Vec<Viewer>,
    /// Tracks every listener may see, with their owners.
    visible: Vec<(String, String)>,
}

async fn channels(url: &str) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let channel = Endpoint::from_shared(url.to_owned())?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .connect()
            .await
            .with_context(|| format!("cannot connect to {url}"))?;
        channels.push(channel);
    }
    Ok(channels)
}

/// Picks the `n`th client of a pool.
fn pick<T: Clone>(pool: &[T], n: u64) -> T {
    pool[n as usize % pool.len()].clone()
}

fn status_code<T>(result: Result<T, tonic::Status>) -> Result<T, tonic::Code> {
    result.map_err(|status| {
        let code = status.code();
        // The first status of each code other than the expected shedding is printed whole, so
        // that a run says where an unexpected code came from.
        if code != tonic::Code::ResourceExhausted {
            static SEEN: std::sync::Mutex<Vec<tonic::Code>> = std::sync::Mutex::new(Vec::new());
            if let Ok(mut seen) = SEEN.lock()
                && !seen.contains(&code)
            {
                seen.push(code);
                eprintln!("loadgen: first {code:?}: {status:?}");
            }
        }
        code
    })
}

impl Workload {
    /// Connects to every service and prepares the viewers; the heavy likers' likes are made
    /// through the consumer gateway, so that ListLikedTracks can fill a page of 50.
    pub async fn prepare(
        endpoints: &Endpoints,
        seed_users: u32,
        seed_tracks: u32,
    ) -> anyhow::Result<Arc<Self>> {
        let seed = Seed::generate(seed_users, seed_tracks);
        let visible: Vec<(String, String)> = seed
            .tracks
            .iter()
            .filter(|track| track.visibility == SeedVisibility::Public)
            .filter(|track| match track.geo_mode {
                SeedGeoMode::None => true,
                SeedGeoMode::AllowList => track.territories.iter().any(|t| t == TERRITORY),
                SeedGeoMode::BlockList => !track.territories.iter().any(|t| t == TERRITORY),
            })
            .map(|track| (track.id.clone(), track.owner_id.clone()))
            .collect();
        anyhow::ensure!(
            visible.len() >= 100,
            "the seed has only {} visible tracks",
            visible.len()
        );
        // Creators are the first fifth of the users; listeners are the others.
        let creators_end = (seed_users / 5).max(1);
        let listener = |n: u32| {
            let client = LISTENER_CLIENTS[n as usize % LISTENER_CLIENTS.len()];
            Viewer::new(format!("usr_{n:04}"), client)
        };
        let creators = (1..=creators_end)
            .map(|n| Viewer::new(format!("usr_{n:04}"), CREATOR_CLIENT))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let listeners = (creators_end + 1..=seed_users - HEAVY_LIKERS)
            .map(listener)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let heavy_likers = (seed_users - HEAVY_LIKERS + 1..=seed_users)
            .map(listener)
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(!listeners.is_empty(), "the seed has too few users");

        let consumer: Vec<_> = channels(&endpoints.consumer)
            .await?
            .into_iter()
            .map(ConsumerGatewayClient::new)
            .collect();
        for liker in &heavy_likers {
            let mut client = consumer[0].clone();
            for (track, _) in visible.iter().take(HEAVY_LIKES) {
                client
                    .like_track(liker.request(LikeTrackRequest {
                        track_id: track.clone(),
                    }))
                    .await
                    .with_context(|| format!("{} cannot like {track}", liker.id))?;
            }
        }
        Ok(Arc::new(Self {
            consumer,
            creator: channels(&endpoints.creator)
                .await?
                .into_iter()
                .map(CreatorGatewayClient::new)
                .collect(),
            tracks: channels(&endpoints.tracks)
                .await?
                .into_iter()
                .map(TracksServiceClient::new)
                .collect(),
            likes: channels(&endpoints.likes)
                .await?
                .into_iter()
                .map(LikesServiceClient::new)
                .collect(),
            follows: channels(&endpoints.follows)
                .await?
                .into_iter()
                .map(FollowsServiceClient::new)
                .collect(),
            counts: channels(&endpoints.counts)
                .await?
                .into_iter()
                .map(CountsServiceClient::new)
                .collect(),
            listeners,
            heavy_likers,
            creators,
            visible,
        }))
    }

    fn listener(&self, n: u64) -> &Viewer {
        &self.listeners[(n as usize * 7919) % self.listeners.len()]
    }

    fn track(&self, n: u64) -> &(String, String) {
        &self.visible[(n as usize * 104_729) % self.visible.len()]
    }

    /// Consumer GetTrack with `mask` (`None`: the whole view).
    pub fn get_track(self: &Arc<Self>, mask: Option<&'static str>) -> Call {
        let workload = Arc::clone(self);
        call(move |n| {
            let mut client = pick(&workload.consumer, n);
            let request = workload.listener(n).request(GetTrackRequest {
                track_id: workload.track(n).0.clone(),
                read_mask: mask.map(field_mask),
                secret_token: None,
            });
            async move { status_code(client.get_track(request).await).map(drop) }
        })
    }

    /// Consumer GetTrack, the mask rotating through [`MASK_TABLE`].
    pub fn get_track_mixed(self: &Arc<Self>) -> Call {
        let workload = Arc::clone(self);
        call(move |n| {
            let mut client = pick(&workload.consumer, n);
            let request = workload.listener(n).request(GetTrackRequest {
                track_id: workload.track(n).0.clone(),
                read_mask: Some(field_mask(MASK_TABLE[n as usize % MASK_TABLE.len()])),
                secret_token: None,
            });
            async move { status_code(client.get_track(request).await).map(drop) }
        })
    }

    /// Consumer BatchGetTracks of `size` visible tracks with the whole view.
    pub fn batch_get(self: &Arc<Self>, size: usize) -> Call {
        let workload = Arc::clone(self);
        call(move |n| {
            let mut client = pick(&workload.consumer, n);
            let track_ids = (0..size as u64)
                .map(|i| workload.track(n * size as u64 + i).0.clone())
                .collect();
            let request = workload.listener(n).request(BatchGetTracksRequest {
                track_ids,
                read_mask: None,
            });
            async move {
                let response = status_code(client.batch_get_tracks(request).await)?;
                if response.get_ref().tracks.len() == size {
                    Ok(())
                } else {
                    // Every id is visible: a short answer is a failure of the run.
                    Err(tonic::Code::DataLoss)
                }
            }
        })
    }

    /// Consumer ListLikedTracks of a heavy liker, one page of `page_size`, whole view.
    pub fn list_liked(self: &Arc<Self>, page_size: i32) -> Call {
        let workload = Arc::clone(self);
        call(move |n| {
            let mut client = pick(&workload.consumer, n);
            let liker = &workload.heavy_likers[n as usize % workload.heavy_likers.len()];
            let request = liker.request(ListLikedTracksRequest {
                user_id: liker.id.clone(),
                page_size,
                page_token: String::new(),
                read_mask: None,
            });
            async move {
                let response = status_code(client.list_liked_tracks(request).await)?;
                if response.get_ref().tracks.len() == page_size as usize {
                    Ok(())
                } else {
                    Err(tonic::Code::DataLoss)
                }
            }
        })
    }

    /// Creator ListMyTracks of a creator, one page of `page_size`, whole view.
    pub fn list_my_tracks(self: &Arc<Self>, page_size: i32) -> Call {
        let workload = Arc::clone(self);
        call(move |n| {
            let mut client = pick(&workload.creator, n);
            let creator = &workload.creators[(n as usize * 31) % workload.creators.len()];
            let request = creator.request(ListMyTracksRequest {
                page_size,
                page_token: String::new(),
                read_mask: None,
            });
            async move { status_code(client.list_my_tracks(request).await).map(drop) }
        })
    }

    /// The tracks service's BatchGetTracks of one id, called directly: what a `title` read
    /// costs without the gateway.
    pub fn tracks_direct(self: &Arc<Self>) -> Call {
        let workload = Arc::clone(self);
        call(move |n| {
            let mut client = pick(&workload.tracks, n);
            let request = Request::new(FoundationBatchGetTracks {
                ids: vec![workload.track(n).0.clone()],
            });
            async move { status_code(client.batch_get_tracks(request).await).map(drop) }
        })
    }

    /// The foundation calls of a whole-view GetTrack made directly, in the gateway's two
    /// stages (tracks, reactions and track counts at once; then following and the owner's
    /// counts at once): the upstream critical path that the gateway's latency is set against.
    pub fn direct_full_view(self: &Arc<Self>) -> Call {
        let workload = Arc::clone(self);
        call(move |n| {
            let (track_id, _) = workload.track(n).clone();
            let viewer = workload.listener(n).id.clone();
            let (mut tracks, mut likes, mut follows, mut counts) = (
                pick(&workload.tracks, n),
                pick(&workload.likes, n),
                pick(&workload.follows, n),
                pick(&workload.counts, n),
            );
            async move {
                let mut user_counts = counts.clone();
                let (found, reactions, track_counts) = tokio::join!(
                    tracks.batch_get_tracks(FoundationBatchGetTracks {
                        ids: vec![track_id.clone()],
                    }),
                    likes.batch_get_reactions(BatchGetReactionsRequest {
                        user_id: viewer.clone(),
                        track_ids: vec![track_id.clone()],
                        ..Default::default()
                    }),
                    counts.batch_get_track_counts(BatchGetTrackCountsRequest {
                        track_ids: vec![track_id.clone()],
                    }),
                );
                let owner = status_code(found)?
                    .into_inner()
                    .tracks
                    .pop()
                    .ok_or(tonic::Code::NotFound)?
                    .owner_id;
                status_code(reactions)?;
                status_code(track_counts)?;
                let (following, owner_counts) = tokio::join!(
                    follows.batch_get_following(BatchGetFollowingRequest {
                        follower_id: viewer,
                        followee_ids: vec![owner.clone()],
                        ..Default::default()
                    }),
                    user_counts.batch_get_user_counts(BatchGetUserCountsRequest {
                        user_ids: vec![owner],
                    }),
                );
                status_code(following)?;
                status_code(owner_counts).map(drop)
            }
        })
    }
}

fn field_mask(paths: &str) -> prost_types::FieldMask {
    prost_types::FieldMask {
        paths: paths.split(',').map(str::to_owned).collect(),
    }
}
