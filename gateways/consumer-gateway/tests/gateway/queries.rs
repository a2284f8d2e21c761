//! Masks decide the fields and the foundation calls.

use std::collections::BTreeSet;

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, ReflectMessage, Value};
use protos::consumer::v1::{
    BatchGetTracksRequest, ExplainReadMaskRequest, GetTrackRequest, ListLikedTracksRequest, Track,
};
use tonic::Code;

use crate::fixture::{Topology, UPSTREAM_METHODS, as_user, mask};

/// Every leaf path of the contract.
const LEAVES: [&str; 15] = [
    "id",
    "title",
    "description",
    "genre",
    "duration",
    "artwork_url",
    "created_at",
    "creator.id",
    "creator.followers_count",
    "creator.followed_by_viewer",
    "stats.likes_count",
    "stats.reposts_count",
    "viewer.liked",
    "viewer.reposted",
    "access.downloadable",
];

/// The leaf paths a message carries (well-known types such as Duration count as leaves).
fn present(track: &Track) -> BTreeSet<String> {
    fn walk(message: &DynamicMessage, prefix: &str, out: &mut BTreeSet<String>) {
        for (field, value) in message.fields() {
            let path = format!("{prefix}{}", field.name());
            match value {
                Value::Message(inner) if !inner.descriptor().full_name().starts_with("google.") => {
                    walk(inner, &format!("{path}."), out);
                }
                _ => {
                    out.insert(path);
                }
            }
        }
    }
    let pool = DescriptorPool::decode(protos::descriptors::CONSUMER).unwrap();
    let descriptor = pool.get_message_by_name("consumer.v1.Track").unwrap();
    let dynamic = DynamicMessage::decode(descriptor, track.encode_to_vec().as_slice()).unwrap();
    let mut out = BTreeSet::new();
    walk(&dynamic, "", &mut out);
    out
}

/// A public, downloadable track whose every field is non-empty for a signed-in listener.
const FULL: &str = "trk_00006";

#[tokio::test]
async fn each_path_comes_back_exactly_when_the_mask_covers_it() {
    let t = Topology::start().await;
    let mut client = t.client.clone();
    let get = |paths: Option<Vec<&'static str>>| {
        let mut client = client.clone();
        async move {
            client
                .get_track(as_user(
                    GetTrackRequest {
                        track_id: FULL.into(),
                        read_mask: paths.and_then(|p| mask(&p)),
                        secret_token: None,
                    },
                    Some("usr_0059"),
                    "US",
                ))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let all: BTreeSet<String> = LEAVES.iter().map(|p| (*p).to_owned()).collect();
    assert_eq!(
        present(&get(None).await),
        all,
        "an unset mask is the whole view"
    );
    assert_eq!(
        present(&get(Some(vec!["*"])).await),
        all,
        "`*` is the whole view"
    );
    for leaf in LEAVES {
        assert_eq!(
            present(&get(Some(vec![leaf])).await),
            BTreeSet::from([leaf.to_owned()]),
            "mask {leaf}"
        );
    }
    let parents = present(&get(Some(vec!["creator", "viewer"])).await);
    let expected: BTreeSet<String> = LEAVES
        .iter()
        .filter(|p| p.starts_with("creator.") || p.starts_with("viewer."))
        .map(|p| (*p).to_owned())
        .collect();
    assert_eq!(parents, expected, "a message path selects all of it");

    for (bad, named) in [
        (vec!["titel"], "titel"),
        (vec!["creator.nope"], "creator.nope"),
        (vec!["title.length"], "title.length"),
        (vec!["stats.likes_count.x"], "stats.likes_count.x"),
        (vec!["id", "Title"], "Title"),
    ] {
        let status = client
            .get_track(as_user(
                GetTrackRequest {
                    track_id: FULL.into(),
                    read_mask: mask(&bad),
                    secret_token: None,
                },
                Some("usr_0059"),
                "US",
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}");
        assert!(
            status.message().contains(named),
            "{bad:?}: {}",
            status.message()
        );
    }
}

fn delta(before: &[(String, u64)], after: &[(String, u64)]) -> Vec<(String, u64)> {
    before
        .iter()
        .zip(after)
        .filter(|(b, a)| a.1 != b.1)
        .map(|(b, a)| (b.0.clone(), a.1 - b.1))
        .collect()
}

fn calls(methods: &[&str]) -> Vec<(String, u64)> {
    UPSTREAM_METHODS
        .iter()
        .map(|(service, method)| format!("{service}/{method}"))
        .filter(|name| methods.iter().any(|m| name.ends_with(&format!("/{m}"))))
        .map(|name| (name, 1))
        .collect()
}

#[tokio::test]
async fn a_mask_calls_exactly_the_foundation_methods_it_needs() {
    // Without the counts cache, which would answer the counters of later reads itself.
    let t = Topology::start_with(|s| s.fanout.counts_cache.ttl_ms = 0).await;
    let table: [(&[&str], &[&str]); 9] = [
        (&["title"], &["BatchGetTracks"]),
        (&["creator.id", "access"], &["BatchGetTracks"]),
        (
            &["stats.likes_count"],
            &["BatchGetTracks", "BatchGetTrackCounts"],
        ),
        (&["viewer"], &["BatchGetTracks", "BatchGetReactions"]),
        (
            &["viewer.liked", "stats"],
            &["BatchGetTracks", "BatchGetReactions", "BatchGetTrackCounts"],
        ),
        (
            &["creator.followers_count"],
            &["BatchGetTracks", "BatchGetUserCounts"],
        ),
        (
            &["creator.followed_by_viewer"],
            &["BatchGetTracks", "BatchGetFollowing"],
        ),
        (
            &["creator"],
            &["BatchGetTracks", "BatchGetFollowing", "BatchGetUserCounts"],
        ),
        (
            &["*"],
            &[
                "BatchGetTracks",
                "BatchGetReactions",
                "BatchGetTrackCounts",
                "BatchGetFollowing",
                "BatchGetUserCounts",
            ],
        ),
    ];
    for (paths, expected) in table {
        let before = t.upstream_snapshot().await;
        t.client
            .clone()
            .get_track(as_user(
                GetTrackRequest {
                    track_id: FULL.into(),
                    read_mask: mask(paths),
                    secret_token: None,
                },
                Some("usr_0059"),
                "US",
            ))
            .await
            .unwrap();
        let after = t.upstream_snapshot().await;
        assert_eq!(delta(&before, &after), calls(expected), "mask {paths:?}");
    }

    // Anonymous callers have no viewer relations to fetch.
    let before = t.upstream_snapshot().await;
    t.client
        .clone()
        .get_track(as_user(
            GetTrackRequest {
                track_id: FULL.into(),
                read_mask: mask(&["viewer", "creator.followed_by_viewer", "title"]),
                secret_token: None,
            },
            None,
            "US",
        ))
        .await
        .unwrap();
    let after = t.upstream_snapshot().await;
    assert_eq!(delta(&before, &after), calls(&["BatchGetTracks"]));

    // Explaining a mask makes no call at all.
    let before = t.upstream_snapshot().await;
    let explained = t
        .client
        .clone()
        .explain_read_mask(as_user(
            ExplainReadMaskRequest {
                read_mask: mask(&["creator.followers_count", "title"]),
                track_count: 0,
            },
            None,
            "US",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.upstream_snapshot().await, before);
    assert_eq!(explained.read_mask, "creator.followersCount,title");
    let methods: Vec<(&str, u32)> = explained
        .calls
        .iter()
        .map(|call| (call.method.as_str(), call.stage))
        .collect();
    assert_eq!(
        methods,
        [
            ("tracks.BatchGetTracks", 1),
            ("counts.BatchGetUserCounts", 2)
        ]
    );
    assert!(
        explained.text.contains("counts.BatchGetUserCounts"),
        "{}",
        explained.text
    );
}

#[tokio::test]
async fn a_batch_of_100_makes_one_call_per_method_and_keeps_request_order() {
    let t = Topology::start().await;
    let ids: Vec<String> = (1..=100)
        .rev()
        .map(foundation_kit::seed::track_id)
        .collect();
    let before = t.upstream_snapshot().await;
    let response = t
        .client
        .clone()
        .batch_get_tracks(as_user(
            BatchGetTracksRequest {
                track_ids: ids.clone(),
                read_mask: None,
            },
            Some("usr_0059"),
            "DE",
        ))
        .await
        .unwrap()
        .into_inner();
    let after = t.upstream_snapshot().await;
    assert_eq!(
        delta(&before, &after),
        calls(&[
            "BatchGetTracks",
            "BatchGetReactions",
            "BatchGetTrackCounts",
            "BatchGetFollowing",
            "BatchGetUserCounts"
        ])
    );
    // Private tracks (n % 10 == 3) and, from DE, allow-listed (n % 20 == 7) and block-listed
    // (n % 20 == 11) ones are hidden, unless the viewer owns them.
    let mut expected_missing = Vec::new();
    let mut expected_ids = Vec::new();
    for id in &ids {
        let n: u32 = id[4..].parse().unwrap();
        let owner = t.foundation_track(id).await.owner_id;
        let hidden = n % 10 == 3 || n % 20 == 7 || n % 20 == 11;
        if hidden && owner != "usr_0059" {
            expected_missing.push(id.clone());
        } else {
            expected_ids.push(id.clone());
        }
    }
    let got: Vec<String> = response.tracks.iter().map(|t| t.id.clone()).collect();
    assert_eq!(got, expected_ids, "visible tracks in request order");
    assert_eq!(response.missing_ids, expected_missing);
    assert!(
        response
            .tracks
            .iter()
            .all(|t| t.stats.is_some() && t.creator.is_some())
    );

    // An id asked for twice comes back twice, in its places, with the same view.
    let repeated = t
        .client
        .clone()
        .batch_get_tracks(as_user(
            BatchGetTracksRequest {
                track_ids: ["trk_00002", "trk_00001", "trk_00002"]
                    .map(String::from)
                    .to_vec(),
                read_mask: None,
            },
            Some("usr_0059"),
            "DE",
        ))
        .await
        .unwrap()
        .into_inner();
    let got: Vec<&str> = repeated.tracks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(got, ["trk_00002", "trk_00001", "trk_00002"]);
    assert_eq!(repeated.tracks[0], repeated.tracks[2]);
    assert!(repeated.tracks[0].stats.is_some() && repeated.tracks[0].creator.is_some());

    let too_many = t
        .client
        .clone()
        .batch_get_tracks(as_user(
            BatchGetTracksRequest {
                track_ids: vec!["trk_00001".into(); 101],
                read_mask: None,
            },
            None,
            "US",
        ))
        .await
        .unwrap_err();
    assert_eq!(too_many.code(), Code::InvalidArgument);
    assert!(too_many.message().starts_with("track_ids"));
}

#[tokio::test]
async fn liked_tracks_page_through_visible_tracks_only() {
    let t = Topology::start().await;
    // A listener with many likes, read by an anonymous caller in DE.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = t
            .client
            .clone()
            .list_liked_tracks(as_user(
                ListLikedTracksRequest {
                    user_id: "usr_0001".into(),
                    page_size: 5,
                    page_token: token,
                    read_mask: mask(&["id", "stats"]),
                },
                None,
                "DE",
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.tracks.len() <= 5);
        pages += 1;
        for track in &page.tracks {
            let n: u32 = track.id[4..].parse().unwrap();
            assert!(
                n % 10 != 3 && n % 20 != 7 && n % 20 != 11,
                "{} is hidden from an anonymous listener in DE",
                track.id
            );
            assert!(
                track.stats.is_some() && track.title.is_empty(),
                "trimmed to the mask"
            );
        }
        seen.extend(page.tracks.into_iter().map(|t| t.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(pages < 100, "paging never ended");
    }
    let unique: BTreeSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no track twice");
    assert!(!seen.is_empty());

    let bad = t
        .client
        .clone()
        .list_liked_tracks(as_user(
            ListLikedTracksRequest {
                user_id: "usr_0001".into(),
                page_size: 101,
                page_token: String::new(),
                read_mask: None,
            },
            None,
            "DE",
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().starts_with("page_size"));
}

#[tokio::test]
async fn liked_tracks_page_tokens_are_opaque_and_bound_to_the_caller_and_the_query() {
    let t = Topology::start().await;
    let page = |user_id: &'static str, token: String, caller: Option<&'static str>, territory| {
        let mut client = t.client.clone();
        async move {
            client
                .list_liked_tracks(as_user(
                    ListLikedTracksRequest {
                        user_id: user_id.into(),
                        page_size: 3,
                        page_token: token,
                        read_mask: mask(&["id"]),
                    },
                    caller,
                    territory,
                ))
                .await
        }
    };
    let first = page("usr_0001", String::new(), None, "DE")
        .await
        .unwrap()
        .into_inner();
    let token = first.next_page_token;
    assert!(
        !token.is_empty(),
        "usr_0001 has more than one page of likes"
    );
    // The likes service's token is the hex of "<time>|<track id>": none of it shows.
    const HEX_TRK: &str = "74726b5f";
    assert!(
        !token.contains(HEX_TRK) && !token.contains("trk_"),
        "{token}"
    );
    let second = page("usr_0001", token.clone(), None, "DE")
        .await
        .unwrap()
        .into_inner();
    assert!(
        second
            .tracks
            .iter()
            .all(|track| !first.tracks.contains(track)),
        "the token continues the list"
    );

    let refusals = [
        (
            "another caller",
            page("usr_0001", token.clone(), Some("usr_0002"), "DE").await,
        ),
        (
            "another territory",
            page("usr_0001", token.clone(), None, "US").await,
        ),
        (
            "another listed user",
            page("usr_0002", token.clone(), None, "DE").await,
        ),
        (
            "a changed token",
            page("usr_0001", flip_last(&token), None, "DE").await,
        ),
        (
            "the likes service's own token",
            page(
                "usr_0001",
                format!("{}7c{}", "31373030303030303030", "74726b5f3030303031"),
                None,
                "DE",
            )
            .await,
        ),
    ];
    for (what, outcome) in refusals {
        let status = outcome.expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(
            status.message().starts_with("page_token"),
            "{what}: {status:?}"
        );
    }
}

/// `token` with its last hex digit changed.
fn flip_last(token: &str) -> String {
    let (head, last) = token.split_at(token.len() - 1);
    format!("{head}{}", if last == "0" { "1" } else { "0" })
}
