//! UpdateTrack (AIP-134 masks, read-after-write over every updatable path, output-only and
//! unknown paths, territories, visibility and the secret token) and DeleteTrack (the track,
//! its reactions and its counters go).

use std::time::Duration;

use protos::{
    creator::v1::{
        DeleteTrackRequest, Geoblocking, GetTrackRequest, Track, UpdateTrackRequest,
        geoblocking::Mode, track::Visibility,
    },
    foundation::{
        counts::v1::BatchGetTrackCountsRequest,
        likes::v1::{BatchGetReactionsRequest, ReactionRequest},
    },
};
use tonic::Code;

use crate::support::*;

fn update(id: &str, track: Track, paths: &[&str]) -> UpdateTrackRequest {
    UpdateTrackRequest {
        track: Some(Track {
            id: id.into(),
            ..track
        }),
        update_mask: mask(paths),
    }
}

async fn get_masked(client: &mut Client, id: &str, paths: &[&str]) -> Track {
    client
        .get_track(owner(GetTrackRequest {
            track_id: id.into(),
            read_mask: mask(paths),
        }))
        .await
        .unwrap()
        .into_inner()
}

/// Every updatable path, with a value different from the uploaded one, and what a read with
/// the same mask must return.
fn read_after_write_cases() -> Vec<(&'static str, Track, Track)> {
    let geo = |mode: Mode, territories: &[&str]| {
        Some(Geoblocking {
            mode: mode as i32,
            territories: territories.iter().map(|t| (*t).to_owned()).collect(),
        })
    };
    let duration = Some(prost_types::Duration {
        seconds: 242,
        nanos: 0,
    });
    vec![
        (
            "title",
            Track {
                title: "new title".into(),
                ..Track::default()
            },
            Track {
                title: "new title".into(),
                ..Track::default()
            },
        ),
        (
            "description",
            Track::default(),
            // Clearing is a change too: the mask says so, the empty value is written.
            Track::default(),
        ),
        (
            "genre",
            Track {
                genre: "techno".into(),
                ..Track::default()
            },
            Track {
                genre: "techno".into(),
                ..Track::default()
            },
        ),
        (
            "duration",
            Track {
                duration,
                ..Track::default()
            },
            Track {
                duration,
                ..Track::default()
            },
        ),
        (
            "artwork_url",
            Track {
                artwork_url: "https://img.example.com/b.png".into(),
                ..Track::default()
            },
            Track {
                artwork_url: "https://img.example.com/b.png".into(),
                ..Track::default()
            },
        ),
        (
            "visibility",
            Track {
                visibility: Visibility::Private as i32,
                ..Track::default()
            },
            Track {
                visibility: Visibility::Private as i32,
                ..Track::default()
            },
        ),
        (
            "geoblocking",
            Track {
                geoblocking: geo(Mode::BlockList, &["FR", "DE"]),
                ..Track::default()
            },
            Track {
                geoblocking: geo(Mode::BlockList, &["DE", "FR"]),
                ..Track::default()
            },
        ),
        (
            "geoblocking.mode",
            // The territories in the request are not masked, so they are not read.
            Track {
                geoblocking: geo(Mode::BlockList, &["XX"]),
                ..Track::default()
            },
            Track {
                geoblocking: geo(Mode::BlockList, &[]),
                ..Track::default()
            },
        ),
        (
            "geoblocking.territories",
            Track {
                geoblocking: geo(Mode::None, &["DE", "FR", "DE"]),
                ..Track::default()
            },
            Track {
                geoblocking: geo(Mode::Unspecified, &["DE", "FR"]),
                ..Track::default()
            },
        ),
        (
            "downloadable",
            Track {
                downloadable: false,
                ..Track::default()
            },
            Track {
                downloadable: false,
                ..Track::default()
            },
        ),
    ]
}

/// The view's top-level fields that no update changes by accident.
const TOP_LEVEL: &[&str] = &[
    "id",
    "title",
    "description",
    "genre",
    "duration",
    "artwork_url",
    "created_at",
    "visibility",
    "geoblocking",
    "downloadable",
    "audio",
];

#[tokio::test]
async fn read_after_write_holds_for_every_updatable_path() {
    let topology = Topology::start().await;
    let mut client = topology.client().await;
    for (path, written, expected) in read_after_write_cases() {
        // A fresh track each time, allow-listed so that either geoblocking part can change on
        // its own and still make a valid policy.
        let metadata = Track {
            geoblocking: Some(Geoblocking {
                mode: Mode::AllowList as i32,
                territories: vec!["CA".into(), "US".into()],
            }),
            ..new_track("original")
        };
        let track = upload_as(&mut client, OWNER, metadata, &audio(100, 3))
            .await
            .unwrap();
        let field = path.split('.').next().unwrap();
        let others: Vec<&str> = TOP_LEVEL.iter().copied().filter(|f| *f != field).collect();
        let before = get_masked(&mut client, &track.id, &others).await;

        let response = client
            .update_track(owner(update(&track.id, written, &[path])))
            .await
            .unwrap_or_else(|status| panic!("update of {path}: {status:?}"))
            .into_inner();
        assert_eq!(response.id, track.id);

        let read = get_masked(&mut client, &track.id, &[path]).await;
        assert_eq!(read, expected, "read with mask {path} after writing it");
        let after = get_masked(&mut client, &track.id, &others).await;
        assert_eq!(after, before, "only {path} changed");
    }
}

#[tokio::test]
async fn update_refuses_bad_masks_and_values_by_name_and_changes_nothing() {
    let topology = Topology::start().await;
    let mut client = topology.client().await;
    let track = uploaded(&mut client, "original").await;
    let id = track.id.as_str();
    let title = Track {
        title: "changed".into(),
        ..Track::default()
    };

    let cases: Vec<(UpdateTrackRequest, &str)> = vec![
        (
            update(id, title.clone(), &[]),
            "update_mask: is required: name the fields to change",
        ),
        (
            update(id, title.clone(), &["title", "stats.likes_count"]),
            "update_mask: \"stats.likes_count\" is output only",
        ),
        (
            update(id, title.clone(), &["id"]),
            "update_mask: \"id\" is output only",
        ),
        (
            update(id, title.clone(), &["created_at"]),
            "update_mask: \"created_at\" is output only",
        ),
        (
            update(id, title.clone(), &["secret_token"]),
            "update_mask: \"secret_token\" is output only",
        ),
        (
            update(id, title.clone(), &["audio"]),
            "update_mask: \"audio\" is output only",
        ),
        (
            update(id, title.clone(), &["title", "owner"]),
            "update_mask: field mask path \"owner\" names unknown field",
        ),
        (
            update(
                id,
                Track {
                    geoblocking: Some(Geoblocking {
                        mode: Mode::AllowList as i32,
                        territories: vec!["US".into(), "XX".into()],
                    }),
                    ..Track::default()
                },
                &["geoblocking"],
            ),
            "geoblocking.territories",
        ),
        (
            update(id, Track::default(), &["visibility"]),
            "visibility: must be PUBLIC or PRIVATE",
        ),
        (
            update(
                id,
                Track {
                    title: String::new(),
                    ..Track::default()
                },
                &["title"],
            ),
            "title:",
        ),
        (
            UpdateTrackRequest {
                track: None,
                update_mask: mask(&["title"]),
            },
            "track: is required",
        ),
        (update("", title, &["title"]), "track.id: is required"),
    ];
    for (request, expected) in cases {
        let status = client.update_track(owner(request)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().starts_with(expected),
            "{:?} does not start with {expected:?}",
            status.message()
        );
    }
    let after = get_masked(&mut client, id, &[]).await;
    assert_eq!(after.title, "original");
    assert_eq!(after.updated_at, track.updated_at, "nothing was written");
}

#[tokio::test]
async fn private_gets_a_secret_token_and_public_drops_it() {
    let topology = Topology::start().await;
    let mut client = topology.client().await;
    let track = uploaded(&mut client, "t").await;
    assert!(track.secret_token.is_empty());
    let set = |visibility: Visibility| {
        update(
            &track.id,
            Track {
                visibility: visibility as i32,
                ..Track::default()
            },
            &["visibility"],
        )
    };

    let private = client
        .update_track(owner(set(Visibility::Private)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(private.visibility, Visibility::Private as i32);
    assert!(
        !private.secret_token.is_empty(),
        "private tracks get a token"
    );
    let read = get_masked(&mut client, &track.id, &["secret_token"]).await;
    assert_eq!(read.secret_token, private.secret_token);

    let public = client
        .update_track(owner(set(Visibility::Public)))
        .await
        .unwrap()
        .into_inner();
    assert!(public.secret_token.is_empty(), "public drops the token");

    let private_again = client
        .update_track(owner(set(Visibility::Private)))
        .await
        .unwrap()
        .into_inner();
    assert!(!private_again.secret_token.is_empty());
    assert_ne!(
        private_again.secret_token, private.secret_token,
        "links shared while it was private before stop working"
    );
}

#[tokio::test]
async fn delete_removes_the_track_its_reactions_and_its_counters() {
    let topology = Topology::start().await;
    let mut client = topology.client().await;
    let track = uploaded(&mut client, "doomed").await;
    let kept = uploaded(&mut client, "kept").await;
    let mut likes = topology.likes_client().await;
    let counts = topology.counts_client().await;
    for id in [&track.id, &kept.id] {
        let reaction = ReactionRequest {
            user_id: "usr_0100".into(),
            track_id: id.clone(),
        };
        likes.like(reaction.clone()).await.unwrap();
        likes.repost(reaction).await.unwrap();
    }
    let ids = vec![track.id.clone(), kept.id.clone()];
    eventually(
        "the reactions reach counts",
        Duration::from_secs(10),
        || {
            let mut counts = counts.clone();
            let ids = ids.clone();
            async move {
                let response = counts
                    .batch_get_track_counts(BatchGetTrackCountsRequest { track_ids: ids })
                    .await
                    .map_err(|status| status.to_string())?
                    .into_inner();
                if response
                    .counts
                    .iter()
                    .all(|c| c.likes_count == 1 && c.reposts_count == 1)
                {
                    Ok(())
                } else {
                    Err(format!("{:?}", response.counts))
                }
            }
        },
    )
    .await;

    client
        .delete_track(owner(DeleteTrackRequest {
            track_id: track.id.clone(),
        }))
        .await
        .unwrap();

    // The track is gone at once, for every later call.
    let gone = client
        .get_track(owner(GetTrackRequest {
            track_id: track.id.clone(),
            read_mask: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let again = client
        .delete_track(owner(DeleteTrackRequest {
            track_id: track.id.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);

    // Its likes and reposts are removed; the other track keeps its own.
    let reactions = likes
        .batch_get_reactions(BatchGetReactionsRequest {
            user_id: "usr_0100".into(),
            track_ids: ids.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .reactions;
    assert!(
        !reactions[0].liked && !reactions[0].reposted,
        "{reactions:?}"
    );
    assert!(reactions[1].liked && reactions[1].reposted, "{reactions:?}");

    // Counts drops the deleted track's counters when TrackDeleted arrives, and ignores later
    // events about it: a like that raced the deletion does not bring them back.
    likes
        .like(ReactionRequest {
            user_id: "usr_0101".into(),
            track_id: track.id.clone(),
        })
        .await
        .unwrap();
    // Both relays have delivered (tracks its TrackDeleted, likes all five reactions, the late
    // like included) once likes reports five deliveries; in either order counts ends at zero.
    eventually(
        "counts drops the deleted track's counters",
        Duration::from_secs(10),
        || {
            let mut counts = counts.clone();
            let ids = ids.clone();
            let likes_metrics = topology.likes.as_ref().unwrap().metrics_addr;
            async move {
                let (_, body) = http_get(likes_metrics, "/metrics").await;
                let delivered = sample(&body, "outbox_delivered_events_total", &[]).unwrap_or(0.0);
                let response = counts
                    .batch_get_track_counts(BatchGetTrackCountsRequest { track_ids: ids })
                    .await
                    .map_err(|status| status.to_string())?
                    .into_inner();
                let (deleted, kept) = (&response.counts[0], &response.counts[1]);
                if delivered >= 5.0
                    && deleted.likes_count == 0
                    && deleted.reposts_count == 0
                    && kept.likes_count == 1
                {
                    Ok(())
                } else {
                    Err(format!("{delivered} delivered; {:?}", response.counts))
                }
            }
        },
    )
    .await;
}

#[tokio::test]
async fn keyed_commands_replay_their_first_result() {
    let topology = Topology::start().await;
    let mut client = topology.client().await;
    let track = upload_as(&mut client, OWNER, new_track("keyed"), &audio(64, 3))
        .await
        .unwrap();
    let keyed = |key: &str| {
        let mut request = owner(DeleteTrackRequest {
            track_id: track.id.clone(),
        });
        request
            .metadata_mut()
            .insert("idempotency-key", key.parse().unwrap());
        request
    };
    client.delete_track(keyed("delete-1")).await.unwrap();
    client
        .delete_track(keyed("delete-1"))
        .await
        .expect("the retry gets the first result, not NOT_FOUND");
    let fresh = client.delete_track(keyed("delete-2")).await.unwrap_err();
    assert_eq!(
        fresh.code(),
        Code::NotFound,
        "a new key runs the command again"
    );

    let update = |key: &str, title: &str| {
        let mut request = owner(UpdateTrackRequest {
            track: Some(Track {
                id: track.id.clone(),
                title: title.into(),
                ..Track::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["title".into()],
            }),
        });
        request
            .metadata_mut()
            .insert("idempotency-key", key.parse().unwrap());
        request
    };
    let reused = client
        .update_track(update("delete-1", "x"))
        .await
        .unwrap_err();
    assert_eq!(
        reused.code(),
        Code::InvalidArgument,
        "a key names one request"
    );
}
