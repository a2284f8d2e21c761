//! UploadTrack: the stream goes through chunk by chunk, is stored whole with its SHA-256, and
//! is stored not at all when it is too large, breaks the protocol, or its caller goes away.

use std::time::Duration;

use futures::{SinkExt, StreamExt, channel::mpsc, stream};
use protos::creator::v1::{
    Geoblocking, GetTrackRequest, ListMyTracksRequest, Track, UploadTrackRequest,
    geoblocking::Mode, upload_track_request::Part,
};
use sha2::{Digest, Sha256};
use tonic::Code;

use crate::support::*;

fn chunk(len: usize) -> UploadTrackRequest {
    UploadTrackRequest {
        part: Some(Part::AudioChunk(vec![7u8; len].into())),
    }
}

fn metadata_message(track: Track) -> UploadTrackRequest {
    UploadTrackRequest {
        part: Some(Part::Metadata(track)),
    }
}

async fn my_track_count(client: &mut Client, user: &str) -> usize {
    client
        .list_my_tracks(as_user(Some(user), ListMyTracksRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .tracks
        .len()
}

#[tokio::test]
async fn twenty_mebibytes_stream_through_and_are_stored_whole() {
    let topology = Topology::start().await;
    let mut client = topology.client().await;
    let bytes = audio(20 * 1024 * 1024, 5);
    let messages = upload_messages(new_track("big"), &bytes, 64 * 1024);
    let track = client
        .upload_track(owner(stream::iter(messages)))
        .await
        .unwrap()
        .into_inner();
    let summary = track.audio.clone().unwrap();
    assert_eq!(summary.size_bytes, 20 * 1024 * 1024);
    assert_eq!(summary.sha256, hex::encode(Sha256::digest(&bytes)));
    assert_eq!(track.title, "big");

    let read = client
        .get_track(owner(GetTrackRequest {
            track_id: track.id.clone(),
            read_mask: mask(&["audio"]),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.audio, track.audio);
}

#[tokio::test]
async fn the_metadata_reaches_tracks_before_the_audio_ends() {
    let topology = Topology::start().await;
    let mut client = topology.client().await;
    // The caller never ends its stream: only a gateway that forwards as it goes can answer.
    let endless = stream::iter([metadata_message(Track {
        title: String::new(),
        ..new_track("")
    })])
    .chain(stream::repeat_with(|| chunk(1024)));
    let status = tokio::time::timeout(Duration::from_secs(20), client.upload_track(owner(endless)))
        .await
        .expect("the gateway answers while the caller is still sending")
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with("title:"), "{status:?}");
    assert_eq!(my_track_count(&mut client, OWNER).await, 0);
}

#[tokio::test]
async fn an_upload_over_the_gateway_cap_fails_fast_and_stores_nothing() {
    let topology = Topology::start_with(Options {
        gateway_max_bytes: Some(100_000),
        ..Options::default()
    })
    .await;
    let mut client = topology.client().await;
    // An endless stream: the gateway must stop it at the cap, not wait for its end.
    let endless = stream::iter([metadata_message(new_track("too big"))])
        .chain(stream::repeat_with(|| chunk(8 * 1024)));
    let status = tokio::time::timeout(Duration::from_secs(20), client.upload_track(owner(endless)))
        .await
        .expect("the gateway stops an oversized upload at the cap")
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert_eq!(status.message(), "audio exceeds the limit of 100000 bytes");

    // Tracks saw the upload fail (so it discarded what it staged) and stored nothing.
    eventually(
        "tracks ends the upload with an error",
        Duration::from_secs(10),
        || async {
            match topology.creates_finished("InvalidArgument").await {
                1 => Ok(()),
                n => Err(format!("{n} failed creates")),
            }
        },
    )
    .await;
    assert_eq!(topology.creates_finished("OK").await, 0);
    assert_eq!(my_track_count(&mut client, OWNER).await, 0);

    // Just under the cap is fine.
    let fits = upload_as(&mut client, OWNER, new_track("fits"), &audio(100_000, 1)).await;
    assert_eq!(fits.unwrap().audio.unwrap().size_bytes, 100_000);
}

async fn staged_chunks(pool: &sqlx::AnyPool) -> i64 {
    use sqlx::Row;
    sqlx::query("SELECT COUNT(*) AS n FROM audio_chunks")
        .fetch_one(pool)
        .await
        .unwrap()
        .try_get("n")
        .unwrap()
}

#[tokio::test]
async fn a_caller_that_goes_away_mid_upload_stores_nothing() {
    // Tracks on a SQLite file, so that the test can watch the audio it stages.
    let dir = tempfile::tempdir().unwrap();
    let database = foundation_kit::DatabaseSettings {
        url: format!("sqlite://{}", dir.path().join("tracks.db").display()),
        max_connections: 2,
    };
    let topology = Topology::start_with(Options {
        tracks_database: Some(database.clone()),
        ..Options::default()
    })
    .await;
    let mut client = topology.client().await;
    // Tracks has answered, so its database exists and is migrated.
    assert_eq!(my_track_count(&mut client, OWNER).await, 0);
    sqlx::any::install_default_drivers();
    let inspect = sqlx::AnyPool::connect(&database.url).await.unwrap();

    // The caller reaches the gateway through a proxy, so that its connection can vanish.
    let (proxy, connection) = one_connection_proxy(topology.gateway.grpc_addr).await;
    let mut through_proxy =
        protos::creator::v1::creator_gateway_client::CreatorGatewayClient::connect(format!(
            "http://{proxy}"
        ))
        .await
        .unwrap();
    let (mut sender, receiver) = mpsc::channel::<UploadTrackRequest>(1);
    let call = tokio::spawn(async move { through_proxy.upload_track(owner(receiver)).await });
    sender
        .send(metadata_message(new_track("abandoned")))
        .await
        .unwrap();
    for _ in 0..16 {
        sender.send(chunk(64 * 1024)).await.unwrap();
    }
    // The audio reaches tracks while the caller's stream is still open: nothing waits for
    // the whole file.
    eventually("tracks stages audio", Duration::from_secs(10), || async {
        match staged_chunks(&inspect).await {
            n if n >= 2 => Ok(()),
            n => Err(format!("{n} chunks staged")),
        }
    })
    .await;

    // The caller's connection goes away in the middle of its stream.
    connection.abort();
    let outcome = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the caller's call ends with its connection")
        .unwrap();
    assert!(outcome.is_err(), "{outcome:?}");

    eventually(
        "tracks discards the staged audio",
        Duration::from_secs(10),
        || async {
            match staged_chunks(&inspect).await {
                0 => Ok(()),
                n => Err(format!("{n} chunks still staged")),
            }
        },
    )
    .await;
    assert_eq!(topology.creates_finished("OK").await, 0);
    assert_eq!(my_track_count(&mut client, OWNER).await, 0);
    drop(sender);
}

#[tokio::test]
async fn protocol_and_metadata_violations_are_refused_and_store_nothing() {
    let topology = Topology::start().await;
    let mut client = topology.client().await;
    let geo = Track {
        geoblocking: Some(Geoblocking {
            mode: Mode::AllowList as i32,
            territories: vec!["ZZ".into()],
        }),
        ..new_track("geo")
    };
    let cases: Vec<(Vec<UploadTrackRequest>, &str)> = vec![
        (
            vec![],
            "metadata: the first message must carry the metadata",
        ),
        (
            vec![chunk(10), metadata_message(new_track("late"))],
            "metadata: the first message must carry the metadata",
        ),
        (
            vec![
                metadata_message(new_track("twice")),
                chunk(10),
                metadata_message(new_track("twice")),
            ],
            "metadata: only the first message may carry metadata",
        ),
        (
            vec![
                metadata_message(new_track("hole")),
                chunk(10),
                UploadTrackRequest { part: None },
            ],
            "part: every message must carry metadata, an audio chunk or the commit",
        ),
        (
            vec![metadata_message(new_track("silent")), commit_message(&[])],
            "audio_chunk: the upload carries no audio",
        ),
        (
            vec![metadata_message(new_track("uncommitted")), chunk(10)],
            "commit: the upload ended without its commit message",
        ),
        (
            vec![
                metadata_message(new_track("short")),
                chunk(10),
                commit_message(&[7u8; 11]),
            ],
            "commit.size_bytes: is 11 but 10 bytes arrived",
        ),
        (
            vec![
                metadata_message(new_track("corrupt")),
                chunk(10),
                commit_message(&[8u8; 10]),
            ],
            "commit.sha256: does not match",
        ),
        (
            vec![metadata_message(geo), chunk(10), commit_message(&[7u8; 10])],
            "geoblocking.territories",
        ),
    ];
    for (messages, expected) in cases {
        let status = client
            .upload_track(owner(stream::iter(messages)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().starts_with(expected),
            "{:?} does not start with {expected:?}",
            status.message()
        );
    }
    assert_eq!(topology.creates_finished("OK").await, 0);
    assert_eq!(my_track_count(&mut client, OWNER).await, 0);
}

#[tokio::test]
async fn the_uploader_owns_the_track() {
    let topology = Topology::start().await;
    let mut client = topology.client().await;
    let track = upload_as(&mut client, OTHER, new_track("theirs"), &audio(10, 1))
        .await
        .unwrap();
    assert_eq!(my_track_count(&mut client, OTHER).await, 1);
    assert_eq!(my_track_count(&mut client, OWNER).await, 0);
    let status = client
        .get_track(owner(GetTrackRequest {
            track_id: track.id,
            read_mask: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn stalled_uploads_have_their_own_budget_and_end_at_the_idle_bound() {
    // Two calls at once in all, one upload at once, and bodies silent for 2 s end their call.
    let topology = Topology::start_with(Options {
        gateway_limits: Some((2, 1, 2000)),
        ..Options::default()
    })
    .await;
    let client = topology.client().await;
    // An upload that sends its metadata, then nothing.
    let stall = || {
        let mut client = client.clone();
        let stalled = futures::stream::iter([UploadTrackRequest {
            part: Some(Part::Metadata(new_track("stalled"))),
        }])
        .chain(futures::stream::pending());
        tokio::spawn(async move { client.upload_track(owner(stalled)).await })
    };
    // Another upload finds the one place for uploads taken. It ends at once, so that its answer
    // comes back at once: RESOURCE_EXHAUSTED while the stalled one holds the place, or,
    // admitted first, INVALID_ARGUMENT for its missing commit (and then the stalled one may
    // have been refused instead, and is started again).
    let mut first = stall();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let refused = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no second upload was refused while the first held the uploads' place"
        );
        if first.is_finished() {
            first = stall();
        }
        let short = futures::stream::iter([UploadTrackRequest {
            part: Some(Part::Metadata(new_track("second"))),
        }]);
        // Another user, whose rate limit these attempts spend.
        match client
            .clone()
            .upload_track(as_user(Some("usr_0003"), short))
            .await
        {
            Err(status)
                if status.code() == Code::ResourceExhausted
                    && status.message().contains("concurrency limit") =>
            {
                break status;
            }
            _ => tokio::task::yield_now().await,
        }
    };
    println!("a second upload beside a stalled one: {refused:?}");
    // Meanwhile the other calls are served: the upload holds none of their two places.
    for _ in 0..5 {
        let mut client = client.clone();
        client
            .list_my_tracks(as_user(Some(OTHER), ListMyTracksRequest::default()))
            .await
            .expect("a query beside a stalled upload");
    }
    // And the stalled upload ends at the idle bound.
    let ended = tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("the stalled upload ended")
        .unwrap()
        .expect_err("a stalled upload fails");
    assert_eq!(ended.code(), Code::DeadlineExceeded, "{ended:?}");
}
