//! Private, geoblocked (allow-list and block-list), owner, secret token and anonymous callers
//! against every query and command: nothing leaks, and every hidden track is the same
//! NOT_FOUND as a missing one.

use std::collections::BTreeSet;

use protos::consumer::v1::{
    BatchGetTracksRequest, DownloadTrackRequest, GetTrackRequest, LikeTrackRequest,
    ListLikedTracksRequest, RepostTrackRequest,
};
use tonic::Code;

use crate::fixture::{Topology, as_user, mask};

struct Case {
    track: &'static str,
    user: Option<String>,
    territory: &'static str,
    token: Option<String>,
    visible: bool,
    why: &'static str,
}

#[tokio::test]
async fn no_rpc_leaks_a_hidden_track_and_hidden_looks_missing() {
    let t = Topology::start().await;
    let private = t.foundation_track("trk_00003").await;
    let allow = t.foundation_track("trk_00007").await; // CA, US only
    let block = t.foundation_track("trk_00011").await; // not in DE, FR
    let stranger = "usr_0058".to_owned();
    assert!(
        [&private.owner_id, &allow.owner_id, &block.owner_id]
            .iter()
            .all(|owner| **owner != stranger)
    );
    let case =
        |track, user: Option<&String>, territory, token: Option<&String>, visible, why| Case {
            track,
            user: user.cloned(),
            territory,
            token: token.cloned(),
            visible,
            why,
        };
    let wrong = "sec_0000000000000000".to_owned();
    let cases = vec![
        case("trk_00003", None, "US", None, false, "private, anonymous"),
        case(
            "trk_00003",
            Some(&stranger),
            "US",
            None,
            false,
            "private, stranger",
        ),
        case(
            "trk_00003",
            Some(&stranger),
            "US",
            Some(&wrong),
            false,
            "private, wrong token",
        ),
        case(
            "trk_00003",
            Some(&stranger),
            "US",
            Some(&private.secret_token),
            true,
            "private, token",
        ),
        case(
            "trk_00003",
            None,
            "US",
            Some(&private.secret_token),
            true,
            "private, token, anonymous",
        ),
        case(
            "trk_00003",
            Some(&private.owner_id),
            "DE",
            None,
            true,
            "private, owner",
        ),
        case(
            "trk_00007",
            Some(&stranger),
            "US",
            None,
            true,
            "allow-list, inside",
        ),
        case(
            "trk_00007",
            Some(&stranger),
            "DE",
            None,
            false,
            "allow-list, outside",
        ),
        case(
            "trk_00007",
            None,
            "DE",
            None,
            false,
            "allow-list, outside, anonymous",
        ),
        case(
            "trk_00007",
            Some(&allow.owner_id),
            "DE",
            None,
            true,
            "allow-list, owner outside",
        ),
        case(
            "trk_00011",
            Some(&stranger),
            "US",
            None,
            true,
            "block-list, outside the list",
        ),
        case(
            "trk_00011",
            Some(&stranger),
            "FR",
            None,
            false,
            "block-list, blocked",
        ),
        case(
            "trk_00011",
            Some(&block.owner_id),
            "FR",
            None,
            true,
            "block-list, owner blocked",
        ),
        case("trk_99999", Some(&stranger), "US", None, false, "missing"),
        case("trk_00001", None, "DE", None, true, "public"),
    ];

    let mut not_found_messages = BTreeSet::new();
    let mut client = t.client.clone();
    for c in &cases {
        let user = c.user.as_deref();
        let why = c.why;

        let get = client
            .get_track(as_user(
                GetTrackRequest {
                    track_id: c.track.into(),
                    read_mask: None,
                    secret_token: c.token.clone(),
                },
                user,
                c.territory,
            ))
            .await;
        match (&get, c.visible) {
            (Ok(track), true) => assert_eq!(track.get_ref().id, c.track, "{why}"),
            (Err(status), false) => {
                assert_eq!(status.code(), Code::NotFound, "{why}");
                not_found_messages.insert(status.message().to_owned());
            }
            _ => panic!("GetTrack, {why}: {get:?}"),
        }

        // Batches never carry secret tokens: only public-and-allowed or own tracks come back.
        let batch_visible = c.visible
            && (c.token.is_none() || c.user.as_deref() == Some(private.owner_id.as_str()));
        let batch = client
            .batch_get_tracks(as_user(
                BatchGetTracksRequest {
                    track_ids: vec![c.track.into(), "trk_00001".into()],
                    read_mask: mask(&["id", "title"]),
                },
                user,
                c.territory,
            ))
            .await
            .unwrap()
            .into_inner();
        let ids: Vec<_> = batch.tracks.iter().map(|t| t.id.as_str()).collect();
        if batch_visible {
            assert_eq!(ids, [c.track, "trk_00001"], "{why}");
            assert!(batch.missing_ids.is_empty(), "{why}");
        } else {
            assert_eq!(ids, ["trk_00001"], "{why}");
            assert_eq!(batch.missing_ids, [c.track], "{why}");
        }

        if user.is_none() {
            let like = client
                .like_track(as_user(
                    LikeTrackRequest {
                        track_id: c.track.into(),
                    },
                    None,
                    c.territory,
                ))
                .await
                .unwrap_err();
            assert_eq!(like.code(), Code::Unauthenticated, "{why}");
            let download = client
                .download_track(as_user(
                    DownloadTrackRequest {
                        track_id: c.track.into(),
                        secret_token: c.token.clone(),
                    },
                    None,
                    c.territory,
                ))
                .await
                .unwrap_err();
            assert_eq!(download.code(), Code::Unauthenticated, "{why}");
            continue;
        }

        // Commands act on tracks visible without a token (commands carry none).
        let command_visible = batch_visible;
        let repost = client
            .repost_track(as_user(
                RepostTrackRequest {
                    track_id: c.track.into(),
                },
                user,
                c.territory,
            ))
            .await;
        let own = user == Some(t.foundation_track_owner(c.track).await.as_str());
        match (&repost, command_visible, own) {
            (Err(status), true, true) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{why}")
            }
            (Ok(_), true, false) => {}
            (Err(status), false, _) => {
                assert_eq!(status.code(), Code::NotFound, "{why}: {status:?}");
                not_found_messages.insert(status.message().to_owned());
            }
            _ => panic!("RepostTrack, {why}: {repost:?}"),
        }

        let download = client
            .download_track(as_user(
                DownloadTrackRequest {
                    track_id: c.track.into(),
                    secret_token: c.token.clone(),
                },
                user,
                c.territory,
            ))
            .await;
        match (&download, c.visible) {
            (Ok(_), true) => {}
            (Err(status), true) => {
                assert_eq!(
                    status.code(),
                    Code::PermissionDenied,
                    "{why}: not downloadable"
                );
            }
            (Err(status), false) => {
                assert_eq!(status.code(), Code::NotFound, "{why}");
                not_found_messages.insert(status.message().to_owned());
            }
            (Ok(_), false) => panic!("DownloadTrack leaked, {why}"),
        }
    }
    assert_eq!(
        not_found_messages,
        BTreeSet::from(["track not found".to_owned()]),
        "missing, private and geoblocked tracks are indistinguishable"
    );

    // Every withholding was audited, by reason.
    let metrics = t.gateway.scrape().await.unwrap();
    for (what, reason) in [
        ("track", "private"),
        ("track", "geoblocked"),
        ("command", "own_track"),
        ("command", "not_downloadable"),
    ] {
        let count = service_runtime::metrics::sample(
            &metrics,
            "gateway_authorization_withheld_total",
            &[("what", what), ("reason", reason)],
        );
        assert!(count >= 1.0, "no audit of {what} withheld for {reason}");
    }

    // A liked-tracks page shows only what the caller may see.
    for (user, territory) in [(None, "DE"), (Some("usr_0058"), "FR"), (None, "US")] {
        let page = client
            .list_liked_tracks(as_user(
                ListLikedTracksRequest {
                    user_id: "usr_0002".into(),
                    page_size: 100,
                    page_token: String::new(),
                    read_mask: mask(&["id"]),
                },
                user,
                territory,
            ))
            .await
            .unwrap()
            .into_inner();
        for track in page.tracks {
            let shown = client
                .get_track(as_user(
                    GetTrackRequest {
                        track_id: track.id.clone(),
                        read_mask: mask(&["id"]),
                        secret_token: None,
                    },
                    user,
                    territory,
                ))
                .await;
            assert!(
                shown.is_ok(),
                "{} listed but not visible to {user:?} in {territory}",
                track.id
            );
        }
    }
}
