//! The deterministic seed dataset. Every service generates the same data from the same sizes
//! and stores its own part, so the topology is useful at once and the counts service's seeded
//! aggregates agree with the likes, reposts and follows the other services seed.
//!
//! Policy cases are placed by track number so that demos and tests can find them:
//! - `n % 10 == 3`: private (the tracks service gives each a secret token from the OS CSPRNG
//!   when it seeds its database: a secret derived from the seed would be known to anyone who
//!   can read this file, so tests and tools learn it through the tracks or creator API);
//! - `n % 20 == 7`: geoblocked by an allow-list (`CA`, `US`);
//! - `n % 20 == 11`: geoblocked by a block-list (`DE`, `FR`);
//! - `n % 3 == 0`: downloadable;
//! - everything else: public, playable everywhere, not downloadable.
//!
//! Creators are the first fifth of the users; popularity (likes, reposts, followers) is skewed
//! towards low track and user numbers.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// 2026-01-01T00:00:00Z, the first seeded track's creation time.
const EPOCH_US: i64 = 1_767_225_600_000_000;
const TRACK_SPACING_US: i64 = 600_000_000;

const GENRES: [&str; 8] = [
    "ambient",
    "electronic",
    "hip-hop",
    "house",
    "jazz",
    "pop",
    "rock",
    "techno",
];
const WORDS: [&str; 16] = [
    "night", "river", "signal", "glass", "echo", "summer", "static", "orbit", "velvet", "north",
    "ember", "drift", "paper", "neon", "tide", "hollow",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedSettings {
    /// Seed an empty database at start-up.
    pub enabled: bool,
    /// Must be the same for every service of a topology.
    pub users: u32,
    /// Must be the same for every service of a topology.
    pub tracks: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedVisibility {
    Public,
    Private,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedGeoMode {
    None,
    AllowList,
    BlockList,
}

#[derive(Debug, Clone)]
pub struct SeedTrack {
    pub id: String,
    pub owner_id: String,
    pub title: String,
    pub description: String,
    pub genre: String,
    pub duration_ms: i64,
    pub artwork_url: String,
    pub create_time_us: i64,
    pub visibility: SeedVisibility,
    pub geo_mode: SeedGeoMode,
    pub territories: Vec<String>,
    pub downloadable: bool,
    pub audio: Vec<u8>,
}

/// A link from a user to a track or to another user, with its creation time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedLink {
    pub from: String,
    pub to: String,
    pub time_us: i64,
}

#[derive(Debug, Clone)]
pub struct Seed {
    pub users: Vec<String>,
    pub tracks: Vec<SeedTrack>,
    pub likes: Vec<SeedLink>,
    pub reposts: Vec<SeedLink>,
    pub follows: Vec<SeedLink>,
    /// Downloads per track id (downloads have no links, only counts).
    pub downloads: BTreeMap<String, u64>,
}

/// splitmix64: tiny, fast and stable forever, which a seed needs more than quality.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A number below `n`, skewed towards 0 (a power law).
    fn skewed(&mut self, n: u64) -> u64 {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((unit.powf(2.5) * n as f64) as u64).min(n.saturating_sub(1))
    }
}

pub fn user_id(n: u32) -> String {
    format!("usr_{n:04}")
}

pub fn track_id(n: u32) -> String {
    format!("trk_{n:05}")
}

impl Seed {
    pub fn generate(users: u32, tracks: u32) -> Self {
        let users = users.max(2);
        let tracks = tracks.max(1);
        let mut rng = Rng(0x5EED_0000_0000_0001);
        let creators = (users / 5).max(1);
        let user_ids: Vec<String> = (1..=users).map(user_id).collect();

        let mut seeded = Vec::with_capacity(tracks as usize);
        for n in 1..=tracks {
            let owner = 1 + rng.skewed(u64::from(creators)) as u32;
            let title = format!(
                "{} {}",
                WORDS[rng.below(16) as usize],
                WORDS[rng.below(16) as usize]
            );
            let private = n % 10 == 3;
            let (geo_mode, territories) = match n % 20 {
                7 => (SeedGeoMode::AllowList, vec!["CA".into(), "US".into()]),
                11 => (SeedGeoMode::BlockList, vec!["DE".into(), "FR".into()]),
                _ => (SeedGeoMode::None, Vec::new()),
            };
            let audio_len = 1024 + rng.below(3072) as usize;
            let audio = (0..audio_len).map(|_| rng.next() as u8).collect();
            seeded.push(SeedTrack {
                id: track_id(n),
                owner_id: user_id(owner),
                description: format!("track {n} by {}", user_id(owner)),
                title,
                genre: GENRES[rng.below(8) as usize].into(),
                duration_ms: 60_000 + rng.below(420_000) as i64,
                artwork_url: format!("https://img.example.com/artwork/{}.jpg", track_id(n)),
                create_time_us: EPOCH_US + i64::from(n) * TRACK_SPACING_US,
                visibility: if private {
                    SeedVisibility::Private
                } else {
                    SeedVisibility::Public
                },
                geo_mode,
                territories,
                downloadable: n % 3 == 0,
                audio,
            });
            if private {
                // The draw that made a private track's secret token before secret tokens left
                // the seed: kept, so that the rest of the dataset stays what it was.
                rng.next();
            }
        }

        let links = |per_user: u64, spread: u64, to_users: bool, rng: &mut Rng| {
            let mut out = Vec::new();
            for u in 1..=users {
                let wanted = rng.below(per_user * 2) + 1;
                let mut chosen = BTreeSet::new();
                for _ in 0..wanted * 3 {
                    if chosen.len() as u64 >= wanted {
                        break;
                    }
                    let target = if to_users {
                        1 + rng.skewed(u64::from(creators)) as u32
                    } else {
                        1 + rng.skewed(u64::from(tracks)) as u32
                    };
                    let own = if to_users {
                        target == u
                    } else {
                        seeded[target as usize - 1].owner_id == user_id(u)
                    };
                    if !own {
                        chosen.insert(target);
                    }
                }
                for target in chosen {
                    let (to, base) = if to_users {
                        (user_id(target), EPOCH_US)
                    } else {
                        (track_id(target), seeded[target as usize - 1].create_time_us)
                    };
                    out.push(SeedLink {
                        from: user_id(u),
                        to,
                        time_us: base + 1 + rng.below(spread) as i64,
                    });
                }
            }
            out
        };
        let likes = links(20, 30 * 86_400_000_000, false, &mut rng);
        let reposts = links(3, 30 * 86_400_000_000, false, &mut rng);
        let follows = links(10, 60 * 86_400_000_000, true, &mut rng);

        let downloads = seeded
            .iter()
            .filter(|track| track.downloadable)
            .map(|track| (track.id.clone(), rng.skewed(50)))
            .collect();

        Self {
            users: user_ids,
            tracks: seeded,
            likes,
            reposts,
            follows,
            downloads,
        }
    }

    /// Likes, reposts and downloads per track, as the counts service must hold them.
    pub fn track_counts(&self) -> BTreeMap<String, (u64, u64, u64)> {
        let mut counts: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
        for like in &self.likes {
            counts.entry(like.to.clone()).or_default().0 += 1;
        }
        for repost in &self.reposts {
            counts.entry(repost.to.clone()).or_default().1 += 1;
        }
        for (track, downloads) in &self.downloads {
            counts.entry(track.clone()).or_default().2 += downloads;
        }
        counts
    }

    /// Followers and followings per user, as the counts service must hold them.
    pub fn user_counts(&self) -> BTreeMap<String, (u64, u64)> {
        let mut counts: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for follow in &self.follows {
            counts.entry(follow.to.clone()).or_default().0 += 1;
            counts.entry(follow.from.clone()).or_default().1 += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_has_every_policy_case() {
        let a = Seed::generate(1000, 5000);
        let b = Seed::generate(1000, 5000);
        assert_eq!(a.likes, b.likes);
        assert_eq!(a.follows, b.follows);
        assert_eq!(a.tracks[41].audio, b.tracks[41].audio);
        assert_eq!(a.tracks.len(), 5000);
        assert_eq!(a.users.len(), 1000);
        assert!(a.likes.len() > 10_000, "{}", a.likes.len());
        assert!(a.follows.len() > 5_000, "{}", a.follows.len());
        let t = |n: usize| &a.tracks[n - 1];
        assert_eq!(t(3).visibility, SeedVisibility::Private);
        assert_eq!(t(1).visibility, SeedVisibility::Public);
        assert_eq!(t(7).geo_mode, SeedGeoMode::AllowList);
        assert_eq!(t(11).geo_mode, SeedGeoMode::BlockList);
        assert!(t(6).downloadable && !t(1).downloadable);
    }

    #[test]
    fn nobody_likes_or_reposts_their_own_track_or_follows_themselves() {
        let seed = Seed::generate(200, 500);
        let owner: BTreeMap<_, _> = seed.tracks.iter().map(|t| (&t.id, &t.owner_id)).collect();
        for link in seed.likes.iter().chain(&seed.reposts) {
            assert_ne!(owner[&link.to], &link.from);
        }
        assert!(seed.follows.iter().all(|f| f.from != f.to));
    }

    #[test]
    fn popularity_is_skewed() {
        let seed = Seed::generate(1000, 5000);
        let counts = seed.track_counts();
        let likes = |range: std::ops::RangeInclusive<u32>| -> u64 {
            range
                .map(|n| counts.get(&track_id(n)).map_or(0, |c| c.0))
                .sum()
        };
        assert!(likes(1..=500) > 3 * likes(4501..=5000));
    }
}
