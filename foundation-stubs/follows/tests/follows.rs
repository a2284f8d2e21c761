//! The follows service through its gRPC interface, on SQLite and (when `TEST_DATABASE_URL` is
//! set) on PostgreSQL.

use std::time::{Duration, Instant};

use foundation_kit::{DatabaseSettings, db::testing};
use protos::foundation::{
    counts::v1::{BatchGetUserCountsRequest, counts_service_client::CountsServiceClient},
    follows::v1::{
        BatchGetFollowingRequest, FollowKey, FollowRequest, ListFollowingRequest,
        follows_service_client::FollowsServiceClient,
    },
};
use service_runtime::spawn::Running;
use tonic::Code;

fn follow(follower: &str, followee: &str) -> FollowRequest {
    FollowRequest {
        follower_id: follower.into(),
        followee_id: followee.into(),
    }
}

async fn scenario(db: DatabaseSettings) {
    let counts_settings = {
        let mut settings = counts::Settings::defaults();
        settings.database = testing::sqlite();
        settings
    };
    let counts_service = Running::ephemeral("counts", move |listeners, shutdown| {
        counts::run(counts_settings, listeners, shutdown)
    })
    .await
    .unwrap();
    let mut settings = follows::Settings::defaults();
    settings.database = db;
    settings.outbox.counts_url = counts_service.url();
    settings.outbox.poll_interval_ms = 20;
    let running = Running::ephemeral("follows", move |listeners, shutdown| {
        follows::run(settings, listeners, shutdown)
    })
    .await
    .unwrap();
    let mut client = FollowsServiceClient::connect(running.url()).await.unwrap();

    assert!(
        client
            .follow(follow("usr_1", "usr_9"))
            .await
            .unwrap()
            .into_inner()
            .changed
    );
    assert!(
        !client
            .follow(follow("usr_1", "usr_9"))
            .await
            .unwrap()
            .into_inner()
            .changed
    );
    for followee in ["usr_2", "usr_3", "usr_4"] {
        client.follow(follow("usr_1", followee)).await.unwrap();
    }
    client.follow(follow("usr_2", "usr_9")).await.unwrap();
    assert!(
        client
            .unfollow(follow("usr_1", "usr_3"))
            .await
            .unwrap()
            .into_inner()
            .changed
    );
    assert!(
        !client
            .unfollow(follow("usr_1", "usr_3"))
            .await
            .unwrap()
            .into_inner()
            .changed
    );

    let own = client.follow(follow("usr_1", "usr_1")).await.unwrap_err();
    assert_eq!(own.code(), Code::FailedPrecondition);
    let bad = client.follow(follow("usr_1", "")).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message().starts_with("followee_id"),
        "{}",
        bad.message()
    );

    let states = client
        .batch_get_following(BatchGetFollowingRequest {
            follower_id: "usr_1".into(),
            followee_ids: vec!["usr_3".into(), "usr_9".into(), "usr_2".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .states;
    let following: Vec<_> = states
        .iter()
        .map(|s| (s.followee_id.as_str(), s.following))
        .collect();
    assert_eq!(
        following,
        [("usr_3", false), ("usr_9", true), ("usr_2", true)]
    );
    let too_many = client
        .batch_get_following(BatchGetFollowingRequest {
            follower_id: "usr_1".into(),
            followee_ids: vec!["usr_2".into(); 101],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(too_many.code(), Code::InvalidArgument);

    // The keyed form: the links of several followers in one call, in request order, each
    // answered for its own follower.
    let key = |follower: &str, followee: &str| FollowKey {
        follower_id: follower.into(),
        followee_id: followee.into(),
    };
    let states = client
        .batch_get_following(BatchGetFollowingRequest {
            keys: vec![
                key("usr_1", "usr_9"),
                key("usr_9", "usr_1"),
                key("usr_1", "usr_3"),
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .states;
    let following: Vec<_> = states
        .iter()
        .map(|s| (s.follower_id.as_str(), s.followee_id.as_str(), s.following))
        .collect();
    assert_eq!(
        following,
        [
            ("usr_1", "usr_9", true),
            ("usr_9", "usr_1", false),
            ("usr_1", "usr_3", false)
        ]
    );
    let both = client
        .batch_get_following(BatchGetFollowingRequest {
            follower_id: "usr_1".into(),
            keys: vec![key("usr_1", "usr_9")],
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
        .batch_get_following(BatchGetFollowingRequest {
            keys: vec![key("usr_1", "")],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        bad.message().starts_with("keys: entry 0: followee_id"),
        "{}",
        bad.message()
    );
    let too_many = client
        .batch_get_following(BatchGetFollowingRequest {
            keys: vec![key("usr_1", "usr_2"); 101],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(too_many.code(), Code::InvalidArgument);

    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_following(ListFollowingRequest {
                follower_id: "usr_1".into(),
                page_size: 2,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        listed.extend(page.followees.into_iter().map(|f| f.user_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(listed, ["usr_4", "usr_2", "usr_9"], "newest first");

    let mut counts = CountsServiceClient::connect(counts_service.url())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = counts
            .batch_get_user_counts(BatchGetUserCountsRequest {
                user_ids: vec!["usr_9".into(), "usr_1".into(), "usr_3".into()],
            })
            .await
            .unwrap()
            .into_inner()
            .counts;
        let got: Vec<_> = got
            .iter()
            .map(|c| (c.followers_count, c.following_count))
            .collect();
        if got == [(2, 0), (0, 3), (0, 0)] {
            break;
        }
        assert!(Instant::now() < deadline, "counts never converged: {got:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn follows_are_idempotent_listed_newest_first_and_counted() {
    scenario(testing::sqlite()).await;
    let dir = tempfile::tempdir().unwrap();
    scenario(testing::sqlite_file(dir.path())).await;
    if let Some(postgres) =
        testing::postgres("follows_are_idempotent_listed_newest_first_and_counted").await
    {
        scenario(postgres).await;
    }
}
