//! What the load is made of: viewers with their tokens, the track ids they may see (from the
//! deterministic seed dataset), read masks from a table, and one gRPC call per scenario.
//!
//! The realistic workload ([`Workload::realistic_get_track`]) is what a gateway in front of
//! many listeners sees: every seed user signed in, spread over several territories, asking
//! for tracks whose popularity follows a Zipf law (a few hits, a long tail), so that concurrent
//! requests often share a track, a creator or a viewer, as they do in production.

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
use serde::Serialize;
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

/// The territory of every viewer of the fixed scenarios.
const TERRITORY: &str = "US";

/// The territories of the realistic workload's viewers, user `n` in `TERRITORIES[n % 6]`: the
/// seed's geoblocked tracks name CA and US (allow lists) and DE and FR (block lists), so each
/// territory sees its own catalogue.
pub const TERRITORIES: &[&str] = &["US", "CA", "GB", "DE", "FR", "JP"];

/// The exponent of the realistic workload's track popularity: the `k`th most popular track is
/// asked for in proportion to `1 / k^ZIPF_EXPONENT`.
pub const ZIPF_EXPONENT: f64 = 1.0;

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
        Self::in_territory(id, client, TERRITORY)
    }

    fn in_territory(id: String, client: &str, territory: &str) -> anyhow::Result<Self> {
        let token = mint_development_client_token(Some(&id), territory, 24 * 3600, Some(client));
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

/// Ranks drawn from a Zipf distribution over `0..n`: rank `k` with probability proportional to
/// `1 / (k + 1)^s`, by inverting the cumulative distribution (a binary search in a table of
/// `n` floats, built once).
#[derive(Debug, Clone)]
pub struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    /// The distribution over `n` ranks (at least one) with exponent `s`.
    pub fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let mut cumulative: Vec<f64> = (1..=n.max(1))
            .map(|k| {
                total += (k as f64).powf(-s);
                total
            })
            .collect();
        for value in &mut cumulative {
            *value /= total;
        }
        Self { cumulative }
    }

    /// How many ranks there are.
    pub fn len(&self) -> usize {
        self.cumulative.len()
    }

    /// Never: a distribution has at least one rank.
    pub fn is_empty(&self) -> bool {
        self.cumulative.is_empty()
    }

    /// The rank for `unit`, a number in `[0, 1)`.
    pub fn rank(&self, unit: f64) -> usize {
        self.cumulative
            .partition_point(|&c| c <= unit)
            .min(self.cumulative.len() - 1)
    }

    /// A rank drawn with `rng`.
    pub fn sample(&self, rng: &mut fastrand::Rng) -> usize {
        self.rank(rng.f64())
    }
}

/// The realistic workload's viewers and catalogues.
#[derive(Debug)]
struct Population {
    /// Every seed user, with the index of their territory in [`TERRITORIES`].
    viewers: Vec<(Viewer, usize)>,
    /// Per territory, the public tracks visible there, most popular first: one popularity
    /// order over all public tracks (a fixed shuffle), less what the territory may not see.
    catalogues: Vec<Vec<String>>,
    /// Per territory, the popularity of its catalogue.
    popularity: Vec<Zipf>,
}

fn visible_in(track: &foundation_kit::seed::SeedTrack, territory: &str) -> bool {
    track.visibility == SeedVisibility::Public
        && match track.geo_mode {
            SeedGeoMode::None => true,
            SeedGeoMode::AllowList => track.territories.iter().any(|t| t == territory),
            SeedGeoMode::BlockList => !track.territories.iter().any(|t| t == territory),
        }
}

impl Population {
    fn new(seed: &Seed) -> anyhow::Result<Self> {
        let viewers = seed
            .users
            .iter()
            .enumerate()
            .map(|(n, id)| {
                let territory = n % TERRITORIES.len();
                let client = LISTENER_CLIENTS[n % LISTENER_CLIENTS.len()];
                Ok((
                    Viewer::in_territory(id.clone(), client, TERRITORIES[territory])?,
                    territory,
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut order: Vec<usize> = (0..seed.tracks.len()).collect();
        fastrand::Rng::with_seed(0x2F1F).shuffle(&mut order);
        let catalogues: Vec<Vec<String>> = TERRITORIES
            .iter()
            .map(|territory| {
                order
                    .iter()
                    .map(|&i| &seed.tracks[i])
                    .filter(|track| visible_in(track, territory))
                    .map(|track| track.id.clone())
                    .collect()
            })
            .collect();
        anyhow::ensure!(
            catalogues.iter().all(|catalogue| !catalogue.is_empty()) && !viewers.is_empty(),
            "the seed has too few users or tracks for the realistic workload"
        );
        let popularity = catalogues
            .iter()
            .map(|catalogue| Zipf::new(catalogue.len(), ZIPF_EXPONENT))
            .collect();
        Ok(Self {
            viewers,
            catalogues,
            popularity,
        })
    }

    /// Request `n`'s viewer, track and mask: a viewer drawn uniformly, a track by popularity
    /// among those the viewer's territory sees, a mask uniformly from [`MASK_TABLE`] (the same
    /// draws for the same `n`, so every phase asks for the same sequence).
    fn draw(&self, n: u64) -> (&Viewer, &str, &'static str) {
        let mut rng = fastrand::Rng::with_seed(n ^ 0x5EED_0F2E_A1A1);
        let (viewer, territory) = &self.viewers[rng.usize(..self.viewers.len())];
        let track = &self.catalogues[*territory][self.popularity[*territory].sample(&mut rng)];
        (viewer, track, MASK_TABLE[rng.usize(..MASK_TABLE.len())])
    }
}

/// What the realistic workload reads of each track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RealisticView {
    /// The whole view (no mask).
    Whole,
    /// A mask drawn uniformly from [`MASK_TABLE`].
    Masks,
}

impl RealisticView {
    /// The word in phase names.
    pub fn name(self) -> &'static str {
        match self {
            RealisticView::Whole => "full",
            RealisticView::Masks => "masks",
        }
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
    /// The realistic workload's viewers and catalogues.
    population: Population,
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
            .filter(|track| visible_in(track, TERRITORY))
            .map(|track| (track.id.clone(), track.owner_id.clone()))
            .collect();
        anyhow::ensure!(
            visible.len() >= 100,
            "the seed has only {} visible tracks",
            visible.len()
        );
        let population = Population::new(&seed)?;
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
            population,
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

    /// Consumer GetTrack of the realistic workload: any seed user in their territory, a track
    /// by popularity, `view` read.
    pub fn realistic_get_track(self: &Arc<Self>, view: RealisticView) -> Call {
        let workload = Arc::clone(self);
        call(move |n| {
            let mut client = pick(&workload.consumer, n);
            let (viewer, track, mask) = workload.population.draw(n);
            let request = viewer.request(GetTrackRequest {
                track_id: track.to_owned(),
                read_mask: match view {
                    RealisticView::Whole => None,
                    RealisticView::Masks => Some(field_mask(mask)),
                },
                secret_token: None,
            });
            async move { status_code(client.get_track(request).await).map(drop) }
        })
    }

    /// The tracks service's BatchGetTracks of one id, as [`Workload::tracks_direct`] makes
    /// it, sent to `url` instead (a proxy in front of tracks).
    pub async fn tracks_through(self: &Arc<Self>, url: &str) -> anyhow::Result<Call> {
        let clients: Vec<_> = channels(url)
            .await?
            .into_iter()
            .map(TracksServiceClient::new)
            .collect();
        let workload = Arc::clone(self);
        Ok(call(move |n| {
            let mut client = pick(&clients, n);
            let request = Request::new(FoundationBatchGetTracks {
                ids: vec![workload.track(n).0.clone()],
            });
            async move { status_code(client.batch_get_tracks(request).await).map(drop) }
        }))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_ranks_follow_one_over_k() {
        let zipf = Zipf::new(1000, 1.0);
        let mut rng = fastrand::Rng::with_seed(7);
        let mut counts = vec![0u32; zipf.len()];
        let draws = 200_000;
        for _ in 0..draws {
            counts[zipf.sample(&mut rng)] += 1;
        }
        // H(1000) = 7.485: the first rank takes 13.4 %, the second half of that, the tenth a
        // tenth of it.
        let share = |k: usize| f64::from(counts[k]) / f64::from(draws);
        assert!((share(0) - 0.1336).abs() < 0.005, "{}", share(0));
        assert!((share(1) / share(0) - 0.5).abs() < 0.05);
        assert!((share(9) / share(0) - 0.1).abs() < 0.02);
        assert!(counts[999] > 0 && counts[999] < counts[99]);
        assert_eq!(zipf.rank(0.0), 0);
        assert_eq!(zipf.rank(0.999_999_999), 999);
        assert_eq!(Zipf::new(0, 1.0).rank(0.5), 0);
    }

    #[test]
    fn the_realistic_population_sees_only_its_territorys_tracks() {
        let seed = Seed::generate(100, 400);
        let population = Population::new(&seed).expect("enough tracks");
        assert_eq!(population.viewers.len(), 100);
        let by_id: std::collections::HashMap<_, _> = seed
            .tracks
            .iter()
            .map(|track| (track.id.as_str(), track))
            .collect();
        let mut viewers = std::collections::HashSet::new();
        let mut tracks = std::collections::HashSet::new();
        for n in 0..5000 {
            let (viewer, track, mask) = population.draw(n);
            let territory = population
                .viewers
                .iter()
                .find(|(v, _)| v.id == viewer.id)
                .map(|(_, t)| TERRITORIES[*t])
                .expect("a known viewer");
            assert!(
                visible_in(by_id[track], territory),
                "{track} in {territory}"
            );
            assert!(MASK_TABLE.contains(&mask));
            viewers.insert(viewer.id.clone());
            tracks.insert(track.to_owned());
        }
        assert_eq!(viewers.len(), 100, "every user signs in");
        assert!(tracks.len() > 100, "a long tail: {}", tracks.len());
        // DE blocks some tracks that US sees, and US sees allow-listed ones that GB does not.
        let catalogue =
            |t: &str| &population.catalogues[TERRITORIES.iter().position(|x| *x == t).unwrap()];
        assert_ne!(catalogue("US").len(), catalogue("DE").len());
        assert_ne!(catalogue("US").len(), catalogue("GB").len());
        assert_eq!(population.draw(42).1, population.draw(42).1);
    }
}
