//! The seed dataset through gRPC: the counts service's seeded aggregates agree with the likes
//! and reposts the likes service seeds, and seeding is deterministic.

use std::collections::{BTreeMap, BTreeSet};

use foundation_kit::{DatabaseSettings, db::testing, seed};
use protos::foundation::{
    counts::v1::BatchGetTrackCountsRequest,
    likes::v1::{BatchGetReactionsRequest, ListLikedTracksRequest, ListLikedTracksResponse},
};

use crate::support::{
    counts_client, counts_settings, likes_client, likes_settings, postgres_pair, start_counts,
    start_likes,
};

const USERS: u32 = 200;
const TRACKS: u32 = 500;

async fn seeded_likes(database: DatabaseSettings) -> likes::Settings {
    let mut settings = likes_settings(database).await;
    settings.seed.enabled = true;
    settings.seed.users = USERS;
    settings.seed.tracks = TRACKS;
    settings
}

#[tokio::test]
async fn seeded_counts_agree_with_seeded_links() {
    seeded_counts_agree_on(testing::sqlite(), testing::sqlite()).await;
    if let Some((likes_db, counts_db)) = postgres_pair("seeded_counts_agree").await {
        seeded_counts_agree_on(likes_db, counts_db).await;
    }
}

async fn seeded_counts_agree_on(likes_db: DatabaseSettings, counts_db: DatabaseSettings) {
    let likes = start_likes(seeded_likes(likes_db).await).await;
    let mut counts_settings = counts_settings(counts_db);
    counts_settings.seed.enabled = true;
    counts_settings.seed.users = USERS;
    counts_settings.seed.tracks = TRACKS;
    let counts = start_counts(counts_settings).await;
    let mut likes_api = likes_client(&likes).await;
    let mut counts_api = counts_client(&counts).await;

    let users: Vec<String> = (1..=USERS).map(seed::user_id).collect();
    let tracks: Vec<String> = (1..=TRACKS).map(seed::track_id).collect();
    // Per track: (likes, reposts), from the links the likes service holds.
    let mut from_links: BTreeMap<String, (u64, u64)> =
        tracks.iter().map(|id| (id.clone(), (0, 0))).collect();
    for user in &users {
        // Every page of the user's likes.
        let mut listed = BTreeSet::new();
        let mut token = String::new();
        loop {
            let ListLikedTracksResponse {
                likes,
                next_page_token,
            } = likes_api
                .list_liked_tracks(ListLikedTracksRequest {
                    user_id: user.clone(),
                    page_size: 7,
                    page_token: token,
                })
                .await
                .unwrap()
                .into_inner();
            for like in likes {
                assert!(
                    listed.insert(like.track_id.clone()),
                    "{user} lists {} twice",
                    like.track_id
                );
                from_links
                    .get_mut(&like.track_id)
                    .expect("a seeded track")
                    .0 += 1;
            }
            if next_page_token.is_empty() {
                break;
            }
            token = next_page_token;
        }
        // The batch read of every track agrees with the list, and gives the reposts.
        let mut liked = BTreeSet::new();
        for chunk in tracks.chunks(100) {
            let reactions = likes_api
                .batch_get_reactions(BatchGetReactionsRequest {
                    user_id: user.clone(),
                    track_ids: chunk.to_vec(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .reactions;
            for reaction in reactions {
                if reaction.liked {
                    liked.insert(reaction.track_id.clone());
                }
                if reaction.reposted {
                    from_links.get_mut(&reaction.track_id).unwrap().1 += 1;
                }
            }
        }
        assert_eq!(liked, listed, "{user}: batch reads and the list disagree");
    }

    let mut from_counts = BTreeMap::new();
    for chunk in tracks.chunks(100) {
        let response = counts_api
            .batch_get_track_counts(BatchGetTrackCountsRequest {
                track_ids: chunk.to_vec(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.counts.len(), chunk.len());
        for counts in response.counts {
            from_counts.insert(counts.track_id, (counts.likes_count, counts.reposts_count));
        }
    }
    let total_likes: u64 = from_links.values().map(|c| c.0).sum();
    let total_reposts: u64 = from_links.values().map(|c| c.1).sum();
    assert!(
        total_likes > 1000 && total_reposts > 100,
        "{total_likes} likes, {total_reposts} reposts"
    );
    assert_eq!(from_counts, from_links);

    likes.stop().await.unwrap();
    counts.stop().await.unwrap();
}

#[tokio::test]
async fn seeding_is_deterministic() {
    seeding_is_deterministic_on(testing::sqlite(), testing::sqlite()).await;
    if let Some((first, second)) = postgres_pair("seeding_is_deterministic").await {
        seeding_is_deterministic_on(first, second).await;
    }
}

async fn seeding_is_deterministic_on(first: DatabaseSettings, second: DatabaseSettings) {
    let mut pages = Vec::new();
    for database in [first, second] {
        let likes = start_likes(seeded_likes(database).await).await;
        let mut client = likes_client(&likes).await;
        let mut these = Vec::new();
        for user in [1, 2, 57, 199] {
            let page = client
                .list_liked_tracks(ListLikedTracksRequest {
                    user_id: seed::user_id(user),
                    page_size: 20,
                    page_token: String::new(),
                })
                .await
                .unwrap()
                .into_inner();
            assert!(!page.likes.is_empty(), "every seeded user likes something");
            these.push(page);
        }
        pages.push(these);
        likes.stop().await.unwrap();
    }
    assert_eq!(pages[0], pages[1]);
}
