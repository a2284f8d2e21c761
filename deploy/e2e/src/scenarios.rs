//! Scenarios that need only the public interfaces of a healthy topology.

use std::time::Duration;

use futures::stream;
use protos::{
    consumer::v1::{
        BatchGetTracksRequest, DownloadTrackRequest, GetTrackRequest, LikeTrackRequest,
        UnlikeTrackRequest,
    },
    creator::v1::{
        self as creator, DeleteTrackRequest, UpdateTrackRequest, UploadCommit, UploadTrackRequest,
        upload_track_request::Part,
    },
};
use sha2::{Digest, Sha256};
use tonic::Code;

use crate::{Endpoints, eventually, mask, signed, unique};

fn get(track_id: &str, paths: &[&str]) -> GetTrackRequest {
    GetTrackRequest {
        track_id: track_id.into(),
        read_mask: mask(paths),
        secret_token: None,
    }
}

/// Reads and visibility on the seed data.
pub async fn browse(e: &Endpoints) {
    let mut consumer = e.consumer().await;
    let track = consumer
        .get_track(signed(get("trk_00001", &["title"]), None, "US"))
        .await
        .expect("a public seeded track is visible")
        .into_inner();
    assert!(
        !track.title.is_empty() && track.id.is_empty(),
        "trimmed to the mask"
    );
    let private = consumer
        .get_track(signed(get("trk_00003", &["title"]), None, "US"))
        .await
        .unwrap_err();
    assert_eq!(private.code(), Code::NotFound);
    let batch = consumer
        .batch_get_tracks(signed(
            BatchGetTracksRequest {
                track_ids: vec!["trk_00001".into(), "trk_00003".into(), "trk_00007".into()],
                read_mask: mask(&["id"]),
            },
            None,
            "DE",
        ))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = batch.tracks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["trk_00001"]);
    assert_eq!(batch.missing_ids, ["trk_00003", "trk_00007"]);
}

/// The likes count a listener sees for `track_id`, and whether they like it, once the response
/// is not degraded.
pub async fn likes_count(e: &Endpoints, track_id: &str, user: &str) -> (u64, bool) {
    let consumer = e.consumer().await;
    eventually("an undegraded read", Duration::from_secs(30), || {
        let mut consumer = consumer.clone();
        async move {
            let request = get(track_id, &["stats.likes_count", "viewer.liked"]);
            let track = consumer
                .get_track(signed(request, Some(user), "US"))
                .await
                .ok()?
                .into_inner();
            Some((track.stats?.likes_count?, track.viewer?.liked?))
        }
    })
    .await
}

/// A like reaches the counts read side exactly once, and an unlike takes it back.
pub async fn like_converges(e: &Endpoints) {
    const TRACK: &str = "trk_00002";
    let user = unique("e2e_like");
    let mut consumer = e.consumer().await;
    let (before, liked) = likes_count(e, TRACK, &user).await;
    assert!(!liked);
    let like = || {
        signed(
            LikeTrackRequest {
                track_id: TRACK.into(),
            },
            Some(&user),
            "US",
        )
    };
    assert!(
        consumer
            .like_track(like())
            .await
            .unwrap()
            .into_inner()
            .changed
    );
    assert!(
        !consumer
            .like_track(like())
            .await
            .unwrap()
            .into_inner()
            .changed
    );
    eventually(
        "the like to be counted",
        Duration::from_secs(30),
        || async { (likes_count(e, TRACK, &user).await == (before + 1, true)).then_some(()) },
    )
    .await;
    let unlike = signed(
        UnlikeTrackRequest {
            track_id: TRACK.into(),
        },
        Some(&user),
        "US",
    );
    assert!(
        consumer
            .unlike_track(unlike)
            .await
            .unwrap()
            .into_inner()
            .changed
    );
    eventually(
        "the unlike to be counted",
        Duration::from_secs(30),
        || async { (likes_count(e, TRACK, &user).await == (before, false)).then_some(()) },
    )
    .await;
}

/// An upload through the creator gateway, committed.
pub async fn upload(e: &Endpoints, owner: &str, title: &str, audio: &[u8]) -> creator::Track {
    let metadata = creator::Track {
        title: title.into(),
        genre: "ambient".into(),
        visibility: creator::track::Visibility::Public as i32,
        downloadable: true,
        ..creator::Track::default()
    };
    let mut messages = vec![UploadTrackRequest {
        part: Some(Part::Metadata(metadata)),
    }];
    messages.extend(audio.chunks(16 * 1024).map(|chunk| UploadTrackRequest {
        part: Some(Part::AudioChunk(chunk.to_vec().into())),
    }));
    messages.push(UploadTrackRequest {
        part: Some(Part::Commit(UploadCommit {
            size_bytes: audio.len() as u64,
            sha256: hex::encode(Sha256::digest(audio)),
        })),
    });
    e.creator()
        .await
        .upload_track(signed(stream::iter(messages), Some(owner), "US"))
        .await
        .expect("the upload is stored")
        .into_inner()
}

/// A track's life across both gateways: what the creator changes applies to the very next
/// consumer request (no stale cache anywhere).
pub async fn creator_changes_reach_listeners_at_once(e: &Endpoints) {
    let owner = unique("e2e_owner");
    let listener = unique("e2e_listener");
    let audio: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let track = upload(e, &owner, "end to end", &audio).await;
    let id = track.id.clone();
    let consumer = e.consumer().await;
    let mut creator = e.creator().await;
    let seen = |territory: &'static str, token: Option<String>| {
        let mut consumer = consumer.clone();
        let id = id.clone();
        async move {
            consumer
                .get_track(signed(
                    GetTrackRequest {
                        track_id: id,
                        read_mask: mask(&["id"]),
                        secret_token: token,
                    },
                    None,
                    territory,
                ))
                .await
                .map(|_| ())
                .map_err(|status| status.code())
        }
    };
    assert_eq!(seen("US", None).await, Ok(()));

    let mut stream = consumer
        .clone()
        .download_track(signed(
            DownloadTrackRequest {
                track_id: id.clone(),
                secret_token: None,
            },
            Some(&listener),
            "US",
        ))
        .await
        .unwrap()
        .into_inner();
    let mut downloaded = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        downloaded.extend_from_slice(&chunk.chunk);
    }
    assert_eq!(downloaded, audio, "the download is the upload");

    let update = |track: creator::Track, paths: &[&str]| {
        signed(
            UpdateTrackRequest {
                track: Some(track),
                update_mask: mask(paths),
            },
            Some(&owner),
            "US",
        )
    };
    let private = creator
        .update_track(update(
            creator::Track {
                id: id.clone(),
                visibility: creator::track::Visibility::Private as i32,
                ..Default::default()
            },
            &["visibility"],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        seen("US", None).await,
        Err(Code::NotFound),
        "private at once"
    );
    assert_eq!(seen("US", Some(private.secret_token.clone())).await, Ok(()));

    creator
        .update_track(update(
            creator::Track {
                id: id.clone(),
                visibility: creator::track::Visibility::Public as i32,
                geoblocking: Some(creator::Geoblocking {
                    mode: creator::geoblocking::Mode::BlockList as i32,
                    territories: vec!["US".into()],
                }),
                ..Default::default()
            },
            &["visibility", "geoblocking"],
        ))
        .await
        .unwrap();
    assert_eq!(
        seen("US", None).await,
        Err(Code::NotFound),
        "geoblocked at once"
    );
    assert_eq!(seen("DE", None).await, Ok(()));

    creator
        .delete_track(signed(
            DeleteTrackRequest {
                track_id: id.clone(),
            },
            Some(&owner),
            "US",
        ))
        .await
        .unwrap();
    assert_eq!(
        seen("DE", None).await,
        Err(Code::NotFound),
        "deleted at once"
    );
    let gone = creator
        .get_track(signed(
            creator::GetTrackRequest {
                track_id: id,
                read_mask: None,
            },
            Some(&owner),
            "US",
        ))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
}

/// Twirp on the consumer gateway's port: a masked JSON GetTrack over plain HTTP/1.1, and a
/// hidden track answered with the same not-found as over gRPC.
pub async fn twirp_reads(e: &Endpoints) {
    use crate::twirp::{JSON, post};
    let token = authorization::token::mint_development_token(None, "US", 600);
    let shown = post(
        &e.consumer,
        "consumer.v1.ConsumerGateway/GetTrack",
        JSON,
        Some(&token),
        br#"{"trackId":"trk_00001","readMask":"title,stats.likesCount"}"#,
    )
    .await;
    assert_eq!(
        shown.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&shown.body)
    );
    let body = shown.json();
    assert!(body["title"].is_string(), "{body}");
    assert!(
        body["stats"]["likesCount"].is_string(),
        "64-bit counts are strings: {body}"
    );
    assert!(
        body.get("description").is_none(),
        "fields outside the mask are omitted: {body}"
    );
    let hidden = post(
        &e.consumer,
        "consumer.v1.ConsumerGateway/GetTrack",
        JSON,
        Some(&token),
        br#"{"trackId":"trk_00003"}"#,
    )
    .await;
    assert_eq!(hidden.status, 404);
    assert_eq!(hidden.json()["code"], "not_found");
    assert_eq!(hidden.json()["msg"], "track not found");
}

/// Field usage per BFF client: reads over gRPC and Twirp of a client its tokens name count once
/// per leaf path their masks select, in `gateway_field_reads_total{client,path}`; a read with
/// its mask in `x-read-mask` counts the same; a refused read counts nothing.
pub async fn field_usage_is_counted_per_client(e: &Endpoints, metrics: std::net::SocketAddr) {
    use crate::twirp::{JSON, post, post_with_headers};
    use service_runtime::metrics::sample;
    const CLIENT: &str = "e2e-bff";
    let reads = |text: &str, path: &str| {
        sample(
            text,
            "gateway_field_reads_total",
            &[("client", CLIENT), ("path", path)],
        )
    };
    let token = authorization::token::mint_development_client_token(None, "US", 600, Some(CLIENT));
    let before = test_support::http_get(metrics, "/metrics").await.1;
    let mut consumer = e.consumer().await;
    let mut request = tonic::Request::new(GetTrackRequest {
        track_id: "trk_00001".into(),
        read_mask: None,
        secret_token: None,
    });
    let metadata = request.metadata_mut();
    metadata.insert(
        "authorization",
        format!("Bearer {token}").parse().expect("a token is ASCII"),
    );
    metadata.insert(
        "x-read-mask",
        "title,stats.likesCount".parse().expect("ASCII"),
    );
    let track = consumer
        .get_track(request)
        .await
        .expect("a public track")
        .into_inner();
    assert!(
        !track.title.is_empty() && track.genre.is_empty(),
        "{track:?}"
    );
    let shown = post(
        &e.consumer,
        "consumer.v1.ConsumerGateway/GetTrack",
        JSON,
        Some(&token),
        br#"{"trackId":"trk_00001","readMask":"title,genre"}"#,
    )
    .await;
    assert_eq!(
        shown.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&shown.body)
    );
    // Twirp passes metadata on as headers: the mask may come from x-read-mask there too.
    let from_header = post_with_headers(
        &e.consumer,
        "consumer.v1.ConsumerGateway/GetTrack",
        JSON,
        Some(&token),
        &[("x-read-mask", "genre,stats.repostsCount")],
        br#"{"trackId":"trk_00001"}"#,
    )
    .await;
    assert_eq!(
        from_header.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&from_header.body)
    );
    let body = from_header.json();
    assert!(
        body.get("title").is_none() && body["stats"]["repostsCount"].is_string(),
        "{body}"
    );
    let hidden = post(
        &e.consumer,
        "consumer.v1.ConsumerGateway/GetTrack",
        JSON,
        Some(&token),
        br#"{"trackId":"trk_00003","readMask":"description"}"#,
    )
    .await;
    assert_eq!(hidden.status, 404);
    let after = test_support::http_get(metrics, "/metrics").await.1;
    for (path, served) in [
        ("title", 2.0),
        ("genre", 2.0),
        ("stats.likes_count", 1.0),
        ("stats.reposts_count", 1.0),
        ("description", 0.0),
    ] {
        assert_eq!(
            reads(&after, path) - reads(&before, path),
            served,
            "reads of {path} by {CLIENT}"
        );
    }
    assert!(after.contains("gateway_view_info{view=\"consumer.v1.Track\"} 1"));
}
