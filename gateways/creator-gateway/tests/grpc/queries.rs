//! GetTrack and ListMyTracks: the owner's view, trimmed to the mask, with exactly the upstream
//! calls the mask needs; other users' tracks do not exist; bad input is refused by name.

use std::time::Duration;

use protos::{
    creator::v1::{
        DeleteTrackRequest, GetTrackRequest, ListMyTracksRequest, Stats, Track, UpdateTrackRequest,
        track::Visibility,
    },
    foundation::likes::v1::ReactionRequest,
};
use sha2::{Digest, Sha256};
use tonic::Code;

use crate::support::*;

fn get(track_id: &str, paths: &[&str]) -> GetTrackRequest {
    GetTrackRequest {
        track_id: track_id.into(),
        read_mask: if paths.is_empty() { None } else { mask(paths) },
    }
}

#[tokio::test]
async fn the_owner_gets_the_whole_view_and_a_mask_trims_it() {
    let topology = Topology::start().await;
    let mut client = topology.client().await;
    let bytes = audio(10_000, 1);
    let uploaded = upload_as(&mut client, OWNER, new_track("whole"), &bytes)
        .await
        .unwrap();

    let whole = client
        .get_track(owner(get(&uploaded.id, &[])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(whole.id, uploaded.id);
    assert_eq!(whole.title, "whole");
    assert_eq!(whole.genre, "ambient");
    assert_eq!(whole.duration.unwrap().seconds, 185);
    assert_eq!(whole.visibility, Visibility::Public as i32);
    assert!(whole.created_at.is_some() && whole.updated_at.is_some());
    assert!(whole.downloadable);
    let summary = whole.audio.clone().unwrap();
    assert_eq!(summary.size_bytes, 10_000);
    assert_eq!(summary.sha256, hex::encode(Sha256::digest(&bytes)));
    assert_eq!(
        whole.stats,
        Some(Stats {
            likes_count: Some(0),
            reposts_count: Some(0),
            downloads_count: Some(0),
        })
    );

    let trimmed = client
        .get_track(owner(get(&uploaded.id, &["title", "audio.size_bytes"])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        trimmed,
        Track {
            title: "whole".into(),
            audio: Some(protos::creator::v1::Audio {
                size_bytes: 10_000,
                sha256: String::new(),
            }),
            ..Track::default()
        }
    );
}

#[tokio::test]
async fn stats_show_the_likes_and_reposts_counted_by_counts() {
    let topology = Topology::start().await;
    let mut client = topology.client().await;
    let track = uploaded(&mut client, "liked").await;
    let mut likes = topology.likes_client().await;
    for user in ["usr_0100", "usr_0101"] {
        let reaction = ReactionRequest {
            user_id: user.into(),
            track_id: track.id.clone(),
        };
        likes.like(reaction.clone()).await.unwrap();
        if user == "usr_0100" {
            likes.repost(reaction).await.unwrap();
        }
    }
    let stats = eventually("likes reach counts", Duration::from_secs(10), || {
        let mut client = client.clone();
        let id = track.id.clone();
        async move {
            let track = client
                .get_track(owner(get(&id, &["stats"])))
                .await
                .map_err(|status| status.to_string())?
                .into_inner();
            let stats = track.stats.unwrap_or_default();
            if stats.likes_count == Some(2) && stats.reposts_count == Some(1) {
                Ok(stats)
            } else {
                Err(format!("{stats:?}"))
            }
        }
    })
    .await;
    assert_eq!(stats.downloads_count, Some(0));
}

/// The error of each call on a track the caller may not see.
async fn errors_for(client: &mut Client, user: &str, track_id: &str) -> Vec<(Code, String)> {
    let get = client
        .get_track(as_user(Some(user), get(track_id, &["title"])))
        .await
        .unwrap_err();
    let update = client
        .update_track(as_user(
            Some(user),
            UpdateTrackRequest {
                track: Some(Track {
                    id: track_id.into(),
                    title: "stolen".into(),
                    ..Track::default()
                }),
                update_mask: mask(&["title"]),
            },
        ))
        .await
        .unwrap_err();
    let delete = client
        .delete_track(as_user(
            Some(user),
            DeleteTrackRequest {
                track_id: track_id.into(),
            },
        ))
        .await
        .unwrap_err();
    [get, update, delete]
        .into_iter()
        .map(|status| (status.code(), status.message().to_owned()))
        .collect()
}

#[tokio::test]
async fn another_users_track_is_not_found_exactly_like_a_missing_one() {
    let topology = Topology::start().await;
    let mut client = topology.client().await;
    let mine = uploaded(&mut client, "mine").await;

    let foreign = errors_for(&mut client, OTHER, &mine.id).await;
    let expected = (Code::NotFound, format!("track {} not found", mine.id));
    assert_eq!(foreign, vec![expected.clone(); 3]);

    // A missing id gets the same answer, with its own id in it: nothing tells them apart.
    let missing_id = "trk_0000000000000000000000000000dead";
    let missing = errors_for(&mut client, OWNER, missing_id).await;
    assert_eq!(
        missing,
        vec![(Code::NotFound, format!("track {missing_id} not found")); 3]
    );

    // Only the refusals of someone else's track are audited, one per call.
    let (_, metrics) = http_get(topology.gateway.metrics_addr, "/metrics").await;
    let withheld = sample(
        &metrics,
        "gateway_authorization_withheld_total",
        &[("what", "track"), ("reason", "not_owner")],
    );
    assert_eq!(withheld, Some(3.0), "{metrics}");

    // Nothing the other user tried changed the track.
    let after = client
        .get_track(owner(get(&mine.id, &["title"])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.title, "mine");
    let listed = client
        .list_my_tracks(as_user(Some(OTHER), ListMyTracksRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.tracks.is_empty(), "others list none of my tracks");
}

#[tokio::test]
async fn anonymous_and_unauthenticated_callers_are_refused() {
    let topology = Topology::start().await;
    let mut client = topology.client().await;
    let track = uploaded(&mut client, "t").await;

    let anonymous = client
        .get_track(as_user(None, get(&track.id, &[])))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    assert!(
        anonymous.message().contains("signed-in user"),
        "{anonymous:?}"
    );
    let list = client
        .list_my_tracks(as_user(None, ListMyTracksRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(list.code(), Code::Unauthenticated);
    let upload = client
        .upload_track(as_user(
            None,
            futures::stream::iter(upload_messages(new_track("anon"), &audio(10, 0), 4)),
        ))
        .await
        .unwrap_err();
    assert_eq!(upload.code(), Code::Unauthenticated);
    let delete = client
        .delete_track(as_user(
            None,
            DeleteTrackRequest {
                track_id: track.id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(delete.code(), Code::Unauthenticated);

    let no_token = client.get_track(get(&track.id, &[])).await.unwrap_err();
    assert_eq!(no_token.code(), Code::Unauthenticated);
    let mut forged = tonic::Request::new(get(&track.id, &[]));
    forged
        .metadata_mut()
        .insert("authorization", "Bearer not.a.token".parse().unwrap());
    assert_eq!(
        client.get_track(forged).await.unwrap_err().code(),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field() {
    let topology = Topology::start().await;
    let mut client = topology.client().await;
    let track = uploaded(&mut client, "t").await;

    let cases: Vec<(GetTrackRequest, &str)> = vec![
        (get("", &[]), "track_id: is required"),
        (get("trk/../x", &[]), "track_id: must be"),
        (
            get(&track.id, &["title", "plays_count"]),
            "read_mask: field mask path \"plays_count\" names unknown field",
        ),
        (
            get(&track.id, &["title.length"]),
            "read_mask: field mask path \"title.length\" continues through",
        ),
    ];
    for (request, expected) in cases {
        let status = client.get_track(owner(request)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with(expected), "{status:?}");
    }
    for page_size in [-1, 101] {
        let status = client
            .list_my_tracks(owner(ListMyTracksRequest {
                page_size,
                ..ListMyTracksRequest::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("page_size:"), "{status:?}");
    }
    let bad_token = client
        .list_my_tracks(owner(ListMyTracksRequest {
            page_token: "garbage!".into(),
            ..ListMyTracksRequest::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(bad_token.code(), Code::InvalidArgument, "{bad_token:?}");
    assert!(
        bad_token.message().starts_with("page_token"),
        "{bad_token:?}"
    );
}

#[tokio::test]
async fn list_my_tracks_pages_my_tracks_newest_first() {
    let topology = Topology::start().await;
    let mut client = topology.client().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(uploaded(&mut client, &format!("track {n}")).await.id);
    }
    upload_as(&mut client, OTHER, new_track("not mine"), &audio(10, 2))
        .await
        .unwrap();
    ids.reverse();

    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_my_tracks(owner(ListMyTracksRequest {
                page_size: 2,
                page_token: page_token.clone(),
                read_mask: mask(&["id", "title"]),
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(page.tracks.len() <= 2);
        for track in &page.tracks {
            assert!(track.audio.is_none() && track.stats.is_none(), "trimmed");
            seen.push(track.id.clone());
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen, ids);
}

#[tokio::test]
async fn list_my_tracks_page_tokens_are_opaque_and_only_the_callers() {
    let topology = Topology::start().await;
    let mut client = topology.client().await;
    for n in 0..3 {
        uploaded(&mut client, &format!("paged {n}")).await;
    }
    let request = |page_token: String| ListMyTracksRequest {
        page_size: 1,
        page_token,
        read_mask: mask(&["id"]),
    };
    let first = client
        .list_my_tracks(owner(request(String::new())))
        .await
        .unwrap()
        .into_inner();
    let token = first.next_page_token;
    // The tracks service's token names the last track read; none of it shows.
    assert!(!token.is_empty());
    assert!(
        !token.contains("74726b5f") && !token.contains("trk_"),
        "{token}"
    );
    let second = client
        .list_my_tracks(owner(request(token.clone())))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(second.tracks, first.tracks, "the token continues the list");

    let foreign = client
        .list_my_tracks(as_user(Some(OTHER), request(token)))
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::InvalidArgument, "{foreign:?}");
    assert!(foreign.message().starts_with("page_token"), "{foreign:?}");
}

#[tokio::test]
async fn the_mask_decides_exactly_which_upstream_calls_are_made() {
    // Without the counts cache, which would answer the counters of later reads itself.
    let mut fanout = gateway_kit::FanoutSettings::default();
    fanout.counts_cache.ttl_ms = 0;
    let topology = Topology::start_with(Options {
        fanout: Some(fanout),
        ..Options::default()
    })
    .await;
    let mut client = topology.client().await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(uploaded(&mut client, &format!("track {n}")).await.id);
    }
    let before = topology.all_upstream_calls().await;
    let batch_get = format!("{TRACKS_SERVICE}/BatchGetTracks");
    let list = format!("{TRACKS_SERVICE}/ListTracksByOwner");
    let counts = format!("{COUNTS_SERVICE}/BatchGetTrackCounts");

    // For each request: the upstream calls it must make, and no others.
    let cases: Vec<(&str, Vec<&str>, Vec<&String>)> = vec![
        ("get", vec!["title"], vec![&batch_get]),
        ("get", vec!["id", "audio", "geoblocking"], vec![&batch_get]),
        ("get", vec!["stats.likes_count"], vec![&batch_get, &counts]),
        ("get", vec![], vec![&batch_get, &counts]),
        ("list", vec!["title"], vec![&list]),
        // One counts call for the whole page of three tracks.
        ("list", vec!["title", "stats"], vec![&list, &counts]),
    ];
    let mut totals = before;
    for (call, paths, expected) in cases {
        match call {
            "get" => {
                client.get_track(owner(get(&ids[0], &paths))).await.unwrap();
            }
            _ => {
                let page = client
                    .list_my_tracks(owner(ListMyTracksRequest {
                        read_mask: if paths.is_empty() { None } else { mask(&paths) },
                        ..ListMyTracksRequest::default()
                    }))
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(page.tracks.len(), 3);
                let with_stats = paths.contains(&"stats");
                assert!(
                    page.tracks.iter().all(|t| t.stats.is_some() == with_stats),
                    "stats only when asked"
                );
            }
        }
        let after = topology.all_upstream_calls().await;
        let made: Vec<String> = after
            .iter()
            .filter_map(|(method, count)| {
                let previous = totals
                    .iter()
                    .find(|(known, _)| known == method)
                    .map_or(0, |(_, count)| *count);
                (count > &previous).then(|| {
                    assert_eq!(
                        count - previous,
                        1,
                        "{method} called once for {call} {paths:?}"
                    );
                    method.clone()
                })
            })
            .collect();
        let mut expected: Vec<String> = expected.into_iter().cloned().collect();
        expected.sort();
        assert_eq!(made, expected, "{call} with mask {paths:?}");
        totals = after;
    }
}
