//! The likes API through gRPC: idempotent commands, batch reads in request order, paging of a
//! user's likes, and the statuses of bad input.

use std::collections::HashSet;

use foundation_kit::{DatabaseSettings, db::testing};
use protos::foundation::likes::v1::{
    BatchGetReactionsRequest, DeleteTrackReactionsRequest, ListLikedTracksRequest, Reaction,
    ReactionKey, ReactionRequest, likes_service_client::LikesServiceClient,
};
use tonic::{Code, transport::Channel};

use crate::support::{likes_client, likes_settings, start_likes};

fn reaction(user_id: &str, track_id: &str) -> ReactionRequest {
    ReactionRequest {
        user_id: user_id.into(),
        track_id: track_id.into(),
    }
}

/// One user's reactions to `track_ids`, each checked to name that user.
async fn reactions(
    client: &mut LikesServiceClient<Channel>,
    user_id: &str,
    track_ids: &[&str],
) -> Vec<Reaction> {
    let reactions = client
        .batch_get_reactions(BatchGetReactionsRequest {
            user_id: user_id.into(),
            track_ids: track_ids.iter().map(|id| id.to_string()).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .reactions;
    assert!(
        reactions.iter().all(|reaction| reaction.user_id == user_id),
        "every reaction names its user: {reactions:?}"
    );
    reactions
        .into_iter()
        .map(|reaction| Reaction {
            user_id: String::new(),
            ..reaction
        })
        .collect()
}

fn state(track_id: &str, liked: bool, reposted: bool) -> Reaction {
    Reaction {
        track_id: track_id.into(),
        liked,
        reposted,
        user_id: String::new(),
    }
}

fn key(user_id: &str, track_id: &str) -> ReactionKey {
    ReactionKey {
        user_id: user_id.into(),
        track_id: track_id.into(),
    }
}

#[tokio::test]
async fn the_keyed_form_reads_the_reactions_of_several_users_in_one_call() {
    the_keyed_form_reads_several_users_on(testing::sqlite()).await;
    let dir = tempfile::tempdir().unwrap();
    the_keyed_form_reads_several_users_on(testing::sqlite_file(dir.path())).await;
    if let Some(database) = testing::postgres("keyed_reactions").await {
        the_keyed_form_reads_several_users_on(database).await;
    }
}

async fn the_keyed_form_reads_several_users_on(database: DatabaseSettings) {
    let likes = start_likes(likes_settings(database).await).await;
    let mut client = likes_client(&likes).await;
    client.like(reaction("usr_a", "trk_1")).await.unwrap();
    client.repost(reaction("usr_b", "trk_1")).await.unwrap();
    client.like(reaction("usr_b", "trk_2")).await.unwrap();

    // Request order, duplicates, and each pair answered for its own user only.
    let keys = vec![
        key("usr_b", "trk_1"),
        key("usr_a", "trk_1"),
        key("usr_a", "trk_2"),
        key("usr_b", "trk_2"),
        key("usr_a", "trk_1"),
        key("usr_c", "trk_1"),
    ];
    let answered = client
        .batch_get_reactions(BatchGetReactionsRequest {
            keys,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .reactions;
    let got: Vec<_> = answered
        .iter()
        .map(|r| (r.user_id.as_str(), r.track_id.as_str(), r.liked, r.reposted))
        .collect();
    assert_eq!(
        got,
        [
            ("usr_b", "trk_1", false, true),
            ("usr_a", "trk_1", true, false),
            ("usr_a", "trk_2", false, false),
            ("usr_b", "trk_2", true, false),
            ("usr_a", "trk_1", true, false),
            ("usr_c", "trk_1", false, false),
        ]
    );

    // Both forms at once, a bad id and too many keys are refused, naming what is wrong.
    let both = client
        .batch_get_reactions(BatchGetReactionsRequest {
            user_id: "usr_a".into(),
            keys: vec![key("usr_a", "trk_1")],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(both.code(), Code::InvalidArgument);
    assert!(
        both.message().starts_with("keys: cannot be set together"),
        "{}",
        both.message()
    );
    let bad = client
        .batch_get_reactions(BatchGetReactionsRequest {
            keys: vec![key("usr_a", "trk_1"), key("usr a", "trk_1")],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message().starts_with("keys: entry 1: user_id"),
        "{}",
        bad.message()
    );
    let too_many = client
        .batch_get_reactions(BatchGetReactionsRequest {
            keys: vec![key("usr_a", "trk_1"); 101],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(too_many.code(), Code::InvalidArgument);
    assert!(
        too_many.message().contains("more than the maximum of 100"),
        "{}",
        too_many.message()
    );
}

#[tokio::test]
async fn commands_are_idempotent_and_batch_reads_follow_request_order() {
    commands_are_idempotent_on(testing::sqlite()).await;
    if let Some(database) = testing::postgres("commands_are_idempotent").await {
        commands_are_idempotent_on(database).await;
    }
}

async fn commands_are_idempotent_on(database: DatabaseSettings) {
    let likes = start_likes(likes_settings(database).await).await;
    let mut client = likes_client(&likes).await;
    let (user, t1, t2, t3) = ("usr_a", "trk_1", "trk_2", "trk_3");

    // Each command changes the state once; repeating it changes nothing.
    assert!(
        client
            .like(reaction(user, t1))
            .await
            .unwrap()
            .into_inner()
            .changed
    );
    assert!(
        !client
            .like(reaction(user, t1))
            .await
            .unwrap()
            .into_inner()
            .changed
    );
    assert!(
        client
            .repost(reaction(user, t2))
            .await
            .unwrap()
            .into_inner()
            .changed
    );
    assert!(
        !client
            .repost(reaction(user, t2))
            .await
            .unwrap()
            .into_inner()
            .changed
    );
    assert!(
        client
            .repost(reaction(user, t1))
            .await
            .unwrap()
            .into_inner()
            .changed
    );
    // Undoing what is not there changes nothing either.
    assert!(
        !client
            .unlike(reaction(user, t3))
            .await
            .unwrap()
            .into_inner()
            .changed
    );
    assert!(
        !client
            .unrepost(reaction(user, t3))
            .await
            .unwrap()
            .into_inner()
            .changed
    );

    // Request order, duplicates and unknown tracks included.
    assert_eq!(
        reactions(&mut client, user, &[t3, t2, t1, t2]).await,
        vec![
            state(t3, false, false),
            state(t2, false, true),
            state(t1, true, true),
            state(t2, false, true),
        ]
    );
    // Another user's reactions are their own.
    assert_eq!(
        reactions(&mut client, "usr_b", &[t1, t2]).await,
        vec![state(t1, false, false), state(t2, false, false)]
    );
    assert!(reactions(&mut client, user, &[]).await.is_empty());

    assert!(
        client
            .unlike(reaction(user, t1))
            .await
            .unwrap()
            .into_inner()
            .changed
    );
    assert!(
        !client
            .unlike(reaction(user, t1))
            .await
            .unwrap()
            .into_inner()
            .changed
    );
    assert!(
        client
            .unrepost(reaction(user, t2))
            .await
            .unwrap()
            .into_inner()
            .changed
    );
    assert!(
        !client
            .unrepost(reaction(user, t2))
            .await
            .unwrap()
            .into_inner()
            .changed
    );
    assert_eq!(
        reactions(&mut client, user, &[t1, t2]).await,
        vec![state(t1, false, true), state(t2, false, false)]
    );

    // Deleting a track's reactions removes every user's, and reports what it removed.
    client.like(reaction("usr_b", t1)).await.unwrap();
    let removed = client
        .delete_track_reactions(DeleteTrackReactionsRequest {
            track_id: t1.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((removed.likes_removed, removed.reposts_removed), (1, 1));
    assert_eq!(
        reactions(&mut client, user, &[t1]).await,
        vec![state(t1, false, false)]
    );
    assert_eq!(
        reactions(&mut client, "usr_b", &[t1]).await,
        vec![state(t1, false, false)]
    );

    likes.stop().await.unwrap();
}

#[tokio::test]
async fn liked_tracks_page_newest_first() {
    liked_tracks_page_newest_first_on(testing::sqlite()).await;
    if let Some(database) = testing::postgres("liked_tracks_page_newest_first").await {
        liked_tracks_page_newest_first_on(database).await;
    }
}

async fn liked_tracks_page_newest_first_on(database: DatabaseSettings) {
    let likes = start_likes(likes_settings(database).await).await;
    let mut client = likes_client(&likes).await;
    let user = "usr_pager";
    // Ids ascend in like order, so even likes within one microsecond keep the expected order.
    let tracks: Vec<String> = (0..25).map(|n| format!("trk_p{n:02}")).collect();
    for track in &tracks {
        client.like(reaction(user, track)).await.unwrap();
    }
    // Noise that must not show up: reposts, another user's likes, a like taken back.
    client.repost(reaction(user, "trk_reposted")).await.unwrap();
    client
        .like(reaction("usr_other", "trk_other"))
        .await
        .unwrap();
    client.like(reaction(user, "trk_taken_back")).await.unwrap();
    client
        .unlike(reaction(user, "trk_taken_back"))
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut times = Vec::new();
    let mut page_lengths = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_liked_tracks(ListLikedTracksRequest {
                user_id: user.into(),
                page_size: 10,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        page_lengths.push(page.likes.len());
        for like in page.likes {
            let time = like.like_time.expect("every like has a time");
            times.push((time.seconds, time.nanos));
            seen.push(like.track_id);
        }
        if page.next_page_token.is_empty() {
            break;
        }
        assert_ne!(page.next_page_token, token, "the token must advance");
        token = page.next_page_token;
        assert!(page_lengths.len() < 10, "paging does not end");
    }
    assert_eq!(page_lengths, vec![10, 10, 5]);
    let newest_first: Vec<String> = tracks.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        seen.len(),
        "duplicates"
    );
    assert!(
        times.windows(2).all(|pair| pair[0] >= pair[1]),
        "not newest first: {times:?}"
    );

    // A page size of 0 means the default of 20; a user without likes has one empty page.
    let default_page = client
        .list_liked_tracks(ListLikedTracksRequest {
            user_id: user.into(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(default_page.likes.len(), 20);
    assert!(!default_page.next_page_token.is_empty());
    let nobody = client
        .list_liked_tracks(ListLikedTracksRequest {
            user_id: "usr_nobody".into(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(nobody.likes.is_empty() && nobody.next_page_token.is_empty());

    // A track liked after the first page was read does not disturb the following pages.
    let first = client
        .list_liked_tracks(ListLikedTracksRequest {
            user_id: user.into(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    client.like(reaction(user, "trk_z_late")).await.unwrap();
    let second = client
        .list_liked_tracks(ListLikedTracksRequest {
            user_id: user.into(),
            page_size: 10,
            page_token: first.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    let second: Vec<String> = second.likes.into_iter().map(|like| like.track_id).collect();
    assert_eq!(second, newest_first[10..20].to_vec());

    likes.stop().await.unwrap();
}

/// Asserts INVALID_ARGUMENT with a message that starts with the field's name.
fn assert_invalid<T: std::fmt::Debug>(outcome: Result<T, tonic::Status>, field: &str) {
    let status = outcome.expect_err("bad input must be rejected");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with(&format!("{field}: ")),
        "the message must name {field}: {:?}",
        status.message()
    );
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field() {
    // Validation happens before storage, but the scenario still runs where the service does.
    bad_input_on(testing::sqlite()).await;
    if let Some(database) = testing::postgres("bad_input_is_invalid_argument").await {
        bad_input_on(database).await;
    }
}

async fn bad_input_on(database: DatabaseSettings) {
    let mut settings = likes_settings(database).await;
    settings.limits.max_batch = 100;
    let likes = start_likes(settings).await;
    let mut client = likes_client(&likes).await;

    let malformed = ["", "a b", "x/y", "é", "nul\0", &"a".repeat(65)];
    for bad in malformed {
        assert_invalid(client.like(reaction(bad, "trk_1")).await, "user_id");
        assert_invalid(client.unlike(reaction("usr_1", bad)).await, "track_id");
        assert_invalid(client.repost(reaction(bad, "trk_1")).await, "user_id");
        assert_invalid(client.unrepost(reaction("usr_1", bad)).await, "track_id");
        assert_invalid(
            client
                .batch_get_reactions(BatchGetReactionsRequest {
                    user_id: bad.into(),
                    track_ids: vec!["trk_1".into()],
                    ..Default::default()
                })
                .await,
            "user_id",
        );
        assert_invalid(
            client
                .batch_get_reactions(BatchGetReactionsRequest {
                    user_id: "usr_1".into(),
                    track_ids: vec!["trk_1".into(), bad.into()],
                    ..Default::default()
                })
                .await,
            "track_ids",
        );
        assert_invalid(
            client
                .list_liked_tracks(ListLikedTracksRequest {
                    user_id: bad.into(),
                    ..Default::default()
                })
                .await,
            "user_id",
        );
        assert_invalid(
            client
                .delete_track_reactions(DeleteTrackReactionsRequest {
                    track_id: bad.into(),
                })
                .await,
            "track_id",
        );
    }

    // The batch limit: 100 ids pass, 101 do not.
    let ids = |n: usize| (0..n).map(|i| format!("trk_{i}")).collect::<Vec<_>>();
    let full = client
        .batch_get_reactions(BatchGetReactionsRequest {
            user_id: "usr_1".into(),
            track_ids: ids(100),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(full.reactions.len(), 100);
    assert_invalid(
        client
            .batch_get_reactions(BatchGetReactionsRequest {
                user_id: "usr_1".into(),
                track_ids: ids(101),
                ..Default::default()
            })
            .await,
        "track_ids",
    );

    // Page sizes and tokens.
    let list = |page_size: i32, page_token: &str| ListLikedTracksRequest {
        user_id: "usr_1".into(),
        page_size,
        page_token: page_token.into(),
    };
    client.list_liked_tracks(list(100, "")).await.unwrap();
    assert_invalid(client.list_liked_tracks(list(101, "")).await, "page_size");
    assert_invalid(client.list_liked_tracks(list(-1, "")).await, "page_size");
    let garbage_tokens = [
        "garbage",
        "zz",
        "00",
        "7c",                           // "|"
        "317c61206221",                 // "1|a b!"
        "6e6f742d612d6e756d6265727c78", // "not-a-number|x"
        &"f".repeat(10_000),
    ];
    for token in garbage_tokens {
        assert_invalid(
            client.list_liked_tracks(list(10, token)).await,
            "page_token",
        );
    }

    // Nothing above took the service down.
    assert!(
        client
            .like(reaction("usr_1", "trk_1"))
            .await
            .unwrap()
            .into_inner()
            .changed
    );
    likes.stop().await.unwrap();
}
