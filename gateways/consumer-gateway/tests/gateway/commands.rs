//! Commands: idempotent, visible through the view once counts catch up, and refused where the
//! contract says.

use std::time::Duration;

use protos::consumer::v1::{
    DownloadTrackRequest, FollowCreatorRequest, GetTrackRequest, LikeTrackRequest,
    RepostTrackRequest, Track, UnfollowCreatorRequest, UnlikeTrackRequest,
};
use sha2::{Digest, Sha256};
use tonic::Code;

use test_support::eventually;

use crate::fixture::{Topology, as_user, mask};

const LISTENER: &str = "usr_0057";
const TRACK: &str = "trk_00006";

async fn view(t: &Topology, user: &str) -> Track {
    t.client
        .clone()
        .get_track(as_user(
            GetTrackRequest {
                track_id: TRACK.into(),
                read_mask: mask(&["stats", "viewer", "creator"]),
                secret_token: None,
            },
            Some(user),
            "US",
        ))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn a_like_shows_in_the_view_once_and_an_unlike_reverses_it() {
    let t = Topology::start().await;
    let before = view(&t, LISTENER).await;
    let likes_before = before.stats.unwrap().likes_count.unwrap();
    assert_eq!(before.viewer.unwrap().liked, Some(false));

    let mut client = t.client.clone();
    let like = || {
        as_user(
            LikeTrackRequest {
                track_id: TRACK.into(),
            },
            Some(LISTENER),
            "US",
        )
    };
    assert!(
        client
            .like_track(like())
            .await
            .unwrap()
            .into_inner()
            .changed
    );
    assert!(
        !client
            .like_track(like())
            .await
            .unwrap()
            .into_inner()
            .changed,
        "idempotent"
    );
    eventually(
        "the like to be counted",
        Duration::from_secs(20),
        || async { view(&t, LISTENER).await.stats.unwrap().likes_count == Some(likes_before + 1) },
    )
    .await;
    let after = view(&t, LISTENER).await;
    assert_eq!(after.viewer.unwrap().liked, Some(true));
    assert_eq!(
        after.stats.unwrap().likes_count,
        Some(likes_before + 1),
        "liking twice counts once"
    );

    let unlike = as_user(
        UnlikeTrackRequest {
            track_id: TRACK.into(),
        },
        Some(LISTENER),
        "US",
    );
    assert!(
        client
            .unlike_track(unlike)
            .await
            .unwrap()
            .into_inner()
            .changed
    );
    eventually(
        "the unlike to be counted",
        Duration::from_secs(20),
        || async { view(&t, LISTENER).await.stats.unwrap().likes_count == Some(likes_before) },
    )
    .await;
    assert_eq!(view(&t, LISTENER).await.viewer.unwrap().liked, Some(false));
}

#[tokio::test]
async fn following_a_creator_shows_in_the_view_and_self_actions_are_refused() {
    let t = Topology::start().await;
    let owner = t.foundation_track_owner(TRACK).await;
    let before = view(&t, LISTENER).await.creator.unwrap();
    let followers = before.followers_count.unwrap();
    let mut client = t.client.clone();
    if before.followed_by_viewer == Some(true) {
        client
            .unfollow_creator(as_user(
                UnfollowCreatorRequest {
                    track_id: TRACK.into(),
                },
                Some(LISTENER),
                "US",
            ))
            .await
            .unwrap();
    }
    let base = if before.followed_by_viewer == Some(true) {
        followers - 1
    } else {
        followers
    };
    let follow = as_user(
        FollowCreatorRequest {
            track_id: TRACK.into(),
        },
        Some(LISTENER),
        "US",
    );
    assert!(
        client
            .follow_creator(follow)
            .await
            .unwrap()
            .into_inner()
            .changed
    );
    eventually(
        "the follow to be counted",
        Duration::from_secs(20),
        || async {
            let creator = view(&t, LISTENER).await.creator.unwrap();
            creator.followers_count == Some(base + 1) && creator.followed_by_viewer == Some(true)
        },
    )
    .await;

    let own_repost = client
        .repost_track(as_user(
            RepostTrackRequest {
                track_id: TRACK.into(),
            },
            Some(&owner),
            "US",
        ))
        .await
        .unwrap_err();
    assert_eq!(own_repost.code(), Code::FailedPrecondition);
    let self_follow = client
        .follow_creator(as_user(
            FollowCreatorRequest {
                track_id: TRACK.into(),
            },
            Some(&owner),
            "US",
        ))
        .await
        .unwrap_err();
    assert_eq!(self_follow.code(), Code::FailedPrecondition);
    let bad_id = client
        .like_track(as_user(
            LikeTrackRequest {
                track_id: "no such/id".into(),
            },
            Some(LISTENER),
            "US",
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_id.code(), Code::InvalidArgument);
    assert!(bad_id.message().starts_with("track_id"));
}

#[tokio::test]
async fn downloads_stream_the_uploaded_audio_or_are_refused() {
    let t = Topology::start().await;
    let foundation = t.foundation_track(TRACK).await;
    let mut stream = t
        .client
        .clone()
        .download_track(as_user(
            DownloadTrackRequest {
                track_id: TRACK.into(),
                secret_token: None,
            },
            Some(LISTENER),
            "US",
        ))
        .await
        .unwrap()
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        bytes.extend_from_slice(&chunk.chunk);
    }
    let audio = foundation.audio.unwrap();
    assert_eq!(bytes.len() as u64, audio.size_bytes);
    assert_eq!(hex::encode(Sha256::digest(&bytes)), audio.sha256);

    let refused = t
        .client
        .clone()
        .download_track(as_user(
            DownloadTrackRequest {
                track_id: "trk_00001".into(),
                secret_token: None,
            },
            Some(LISTENER),
            "US",
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn a_retried_command_with_its_idempotency_key_has_one_effect_and_the_first_result() {
    let t = Topology::start().await;
    let listener = "usr_idempotent";
    let before = view(&t, listener).await.stats.unwrap().likes_count.unwrap();
    let keyed = |track: &str, key: &str| {
        let mut request = as_user(
            LikeTrackRequest {
                track_id: track.into(),
            },
            Some(listener),
            "US",
        );
        request
            .metadata_mut()
            .insert("idempotency-key", key.parse().unwrap());
        request
    };
    let mut client = t.client.clone();
    let first = client
        .like_track(keyed(TRACK, "like-1"))
        .await
        .unwrap()
        .into_inner();
    let retry = client
        .like_track(keyed(TRACK, "like-1"))
        .await
        .unwrap()
        .into_inner();
    assert!(
        first.changed && retry.changed,
        "the retry gets the first result"
    );
    let fresh = client
        .like_track(keyed(TRACK, "like-2"))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !fresh.changed,
        "a new key runs the command, which changes nothing now"
    );
    let reused = client
        .like_track(keyed("trk_00001", "like-1"))
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::InvalidArgument);
    assert!(reused.message().starts_with("idempotency-key"));
    eventually(
        "the like to be counted",
        Duration::from_secs(20),
        || async { view(&t, listener).await.stats.unwrap().likes_count == Some(before + 1) },
    )
    .await;
}

#[tokio::test]
async fn replicas_sharing_a_valkey_store_run_a_keyed_command_once() {
    let Some(server) = test_support::KeyValueServer::start("the shared idempotency store").await
    else {
        return;
    };
    let url = server.url();
    let t = Topology::start_with(|s| s.idempotency.valkey_url = url.clone()).await;
    let (_replica, other) = t.replica(|s| s.idempotency.valkey_url = url.clone()).await;
    let listener = "usr_replicated";
    let before = view(&t, listener).await.stats.unwrap().likes_count.unwrap();
    let keyed = |key: &str| {
        let mut request = as_user(
            LikeTrackRequest {
                track_id: TRACK.into(),
            },
            Some(listener),
            "US",
        );
        request
            .metadata_mut()
            .insert("idempotency-key", key.parse().unwrap());
        request
    };
    // The same keyed like sent to both replicas at once: one runs it, the other replays its
    // result or, while it is in flight, is ABORTED.
    let (mut first, mut second) = (t.client.clone(), other.clone());
    let (a, b) = tokio::join!(
        first.like_track(keyed("both")),
        second.like_track(keyed("both"))
    );
    let mut ran = 0;
    for outcome in [a, b] {
        match outcome {
            Ok(response) => {
                assert!(
                    response.into_inner().changed,
                    "a replayed like says it changed"
                );
                ran += 1;
            }
            Err(status) => assert_eq!(status.code(), Code::Aborted, "{status:?}"),
        }
    }
    assert!(ran >= 1, "neither replica answered the like");
    // A retry at the other replica gets the first result: run again, the like would answer
    // that nothing changed.
    let retried = eventually("the retry replayed", Duration::from_secs(10), || {
        let mut other = other.clone();
        let request = keyed("both");
        async move { other.like_track(request).await.ok() }
    })
    .await;
    assert!(retried.into_inner().changed);
    eventually("the like counted once", Duration::from_secs(20), || async {
        view(&t, listener).await.stats.unwrap().likes_count == Some(before + 1)
    })
    .await;
}

#[tokio::test]
async fn one_callers_idempotency_keys_cannot_refuse_anyone_elses() {
    let t = Topology::start_with(|s| s.idempotency.max_keys_per_caller = 3).await;
    let keyed = |user: &str, track: &str, key: &str| {
        let mut request = as_user(
            LikeTrackRequest {
                track_id: track.into(),
            },
            Some(user),
            "US",
        );
        request
            .metadata_mut()
            .insert("idempotency-key", key.parse().unwrap());
        request
    };
    let mut client = t.client.clone();
    // Refusals that changed nothing hold no key: a caller cannot fill the store for free.
    for n in 0..10 {
        let refused = client
            .like_track(keyed("usr_greedy", "trk_99999", &format!("missing-{n}")))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    }
    for (n, track) in ["trk_00001", "trk_00002", "trk_00004"].iter().enumerate() {
        client
            .like_track(keyed("usr_greedy", track, &format!("like-{n}")))
            .await
            .unwrap_or_else(|status| panic!("like {n}: {status:?}"));
    }
    let over = client
        .like_track(keyed("usr_greedy", "trk_00005", "like-3"))
        .await
        .unwrap_err();
    assert_eq!(over.code(), Code::ResourceExhausted, "{over:?}");
    assert!(over.message().contains("idempotency keys"), "{over:?}");
    // The greedy caller's retries still replay, and everyone else's keyed commands run.
    client
        .like_track(keyed("usr_greedy", "trk_00001", "like-0"))
        .await
        .unwrap();
    for user in ["usr_0058", "usr_0059"] {
        client
            .like_track(keyed(user, "trk_00001", "like-0"))
            .await
            .unwrap_or_else(|status| panic!("{user}: {status:?}"));
    }
}

#[tokio::test]
async fn a_reaction_can_be_taken_back_after_its_track_was_hidden_or_deleted() {
    use protos::foundation::tracks::v1::{
        DeleteTrackRequest, TrackMetadata, UpdateTrackRequest, Visibility,
    };
    let t = Topology::start().await;
    let mut client = t.client.clone();
    // A listener the seed gave no reactions.
    let listener = "usr_reactor";
    let request = |track: &str| {
        (
            as_user(
                LikeTrackRequest {
                    track_id: track.into(),
                },
                Some(listener),
                "US",
            ),
            as_user(
                RepostTrackRequest {
                    track_id: track.into(),
                },
                Some(listener),
                "US",
            ),
        )
    };
    for track in ["trk_00001", "trk_00002"] {
        let (like, repost) = request(track);
        assert!(client.like_track(like).await.unwrap().into_inner().changed);
        if t.foundation_track_owner(track).await != listener {
            client.repost_track(repost).await.unwrap();
        }
    }
    // trk_00001 turns private; trk_00002 is deleted.
    t.tracks_client
        .clone()
        .update_track(UpdateTrackRequest {
            track_id: "trk_00001".into(),
            metadata: Some(TrackMetadata {
                visibility: Visibility::Private as i32,
                ..TrackMetadata::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["visibility".into()],
            }),
        })
        .await
        .unwrap();
    t.tracks_client
        .clone()
        .delete_track(DeleteTrackRequest {
            track_id: "trk_00002".into(),
        })
        .await
        .unwrap();
    let hidden = client.like_track(request("trk_00001").0).await.unwrap_err();
    assert_eq!(
        hidden.code(),
        Code::NotFound,
        "a new like needs a visible track"
    );

    for track in ["trk_00001", "trk_00002"] {
        let unlike = as_user(
            UnlikeTrackRequest {
                track_id: track.into(),
            },
            Some(listener),
            "US",
        );
        let taken_back = client.unlike_track(unlike).await;
        assert!(
            taken_back
                .unwrap_or_else(|s| panic!("{track}: {s:?}"))
                .into_inner()
                .changed,
            "{track}: the like was taken back"
        );
    }
    let unrepost = as_user(
        protos::consumer::v1::UnrepostTrackRequest {
            track_id: "trk_00001".into(),
        },
        Some(listener),
        "US",
    );
    client.unrepost_track(unrepost).await.unwrap();
    // Without a reaction, a hidden track and a missing one answer alike.
    for track in ["trk_00001", "trk_99999"] {
        let unlike = as_user(
            UnlikeTrackRequest {
                track_id: track.into(),
            },
            Some(listener),
            "US",
        );
        let outcome = client.unlike_track(unlike).await.unwrap().into_inner();
        assert!(!outcome.changed, "{track}");
    }
}
