//! Fault injection from configuration: an error rate of 1 answers every call of one method
//! with the configured code, an added latency delays it, and other methods are unaffected.

use std::time::{Duration, Instant};

use foundation_kit::db::testing;
use protos::foundation::likes::v1::{
    BatchGetReactionsRequest, ListLikedTracksRequest, ReactionRequest,
};
use service_runtime::faults::{FaultCode, MethodFault};
use tonic::Code;

use crate::support::{free_addr, likes_client, likes_settings, start_likes};

fn reaction() -> ReactionRequest {
    ReactionRequest {
        user_id: "usr_1".into(),
        track_id: "trk_1".into(),
    }
}

#[tokio::test]
async fn an_error_rate_of_one_fails_only_that_method() {
    let mut settings = likes_settings(testing::sqlite()).await;
    settings.faults.insert(
        "Like".into(),
        MethodFault {
            latency_ms: 0,
            error_rate: 1.0,
            code: FaultCode::Unavailable,
        },
    );
    let likes = start_likes(settings).await;
    let mut client = likes_client(&likes).await;

    for _ in 0..5 {
        let status = client.like(reaction()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "injected fault");
    }
    // The fault answered instead of the service: nothing was liked.
    let state = client
        .batch_get_reactions(BatchGetReactionsRequest {
            user_id: "usr_1".into(),
            track_ids: vec!["trk_1".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!state.reactions[0].liked);
    assert!(
        client
            .repost(reaction())
            .await
            .unwrap()
            .into_inner()
            .changed
    );
    assert!(
        !client
            .unlike(reaction())
            .await
            .unwrap()
            .into_inner()
            .changed
    );
    likes.stop().await.unwrap();
}

#[tokio::test]
async fn an_added_latency_delays_the_call() {
    let mut settings = likes_settings(testing::sqlite()).await;
    settings.faults.insert(
        "ListLikedTracks".into(),
        MethodFault {
            latency_ms: 150,
            error_rate: 0.0,
            code: FaultCode::Unavailable,
        },
    );
    let likes = start_likes(settings).await;
    let mut client = likes_client(&likes).await;
    client.like(reaction()).await.unwrap(); // the connection is up before timing

    let started = Instant::now();
    let page = client
        .list_liked_tracks(ListLikedTracksRequest {
            user_id: "usr_1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(page.likes.len(), 1, "the delayed call is still handled");
    likes.stop().await.unwrap();
}

/// Faults come from configuration: a file, or environment variables, whose keys are the
/// method names as they appear in the gRPC path.
#[tokio::test]
async fn faults_configured_in_a_file_or_the_environment_apply() {
    let file = std::env::temp_dir().join(format!("likes-faults-{}.toml", std::process::id()));
    std::fs::write(
        &file,
        "[faults.Unrepost]\nerror_rate = 1.0\ncode = \"resource_exhausted\"\n",
    )
    .unwrap();
    let counts_url = format!("http://{}", free_addr().await);
    let env = [
        ("LIKES_FAULTS__REPOST__ERROR_RATE", "1.0"),
        ("LIKES_FAULTS__REPOST__CODE", "aborted"),
        ("LIKES_OUTBOX__COUNTS_URL", counts_url.as_str()),
    ]
    .map(|(key, value)| (key.to_string(), value.to_string()));
    let loaded: Result<likes::Settings, _> =
        service_runtime::settings::load_settings_from(likes::SETTINGS, Some(&file), env);
    std::fs::remove_file(&file).unwrap();
    let settings = loaded.unwrap();
    let likes = start_likes(settings).await;
    let mut client = likes_client(&likes).await;

    let status = client.unrepost(reaction()).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::ResourceExhausted, "injected fault")
    );
    let status = client.repost(reaction()).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Aborted, "injected fault")
    );
    assert!(client.like(reaction()).await.unwrap().into_inner().changed);
    likes.stop().await.unwrap();
}
