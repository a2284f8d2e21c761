//! The tracks service through its gRPC interface, on SQLite and (when `TEST_DATABASE_URL` is
//! set) on PostgreSQL.

use std::time::{Duration, Instant};

use foundation_kit::{DatabaseSettings, db::testing};
use prost_types::FieldMask;
use protos::foundation::{
    counts::v1::{BatchGetTrackCountsRequest, counts_service_client::CountsServiceClient},
    tracks::v1::{
        BatchGetTracksRequest, CreateTrackRequest, DeleteTrackRequest, Geoblocking,
        GeoblockingMode, ListTracksByOwnerRequest, ReadAudioRequest, RecordDownloadRequest, Track,
        TrackMetadata, UpdateTrackRequest, UploadCommit, Visibility, create_track_request::Part,
        tracks_service_client::TracksServiceClient,
    },
};
use service_runtime::spawn::Running;
use sha2::{Digest, Sha256};
use sqlx::Row;
use tonic::{Code, transport::Channel};

type Client = TracksServiceClient<Channel>;

fn settings(database: DatabaseSettings, counts_url: &str) -> tracks::Settings {
    let mut settings = tracks::Settings::defaults();
    settings.database = database;
    settings.audio.max_bytes = 64 * 1024;
    settings.audio.chunk_bytes = 1000;
    settings.outbox.counts_url = counts_url.to_owned();
    settings.outbox.poll_interval_ms = 20;
    settings.outbox.max_backoff_ms = 200;
    settings
}

async fn start(settings: tracks::Settings) -> (Running, Client) {
    let running = Running::ephemeral("tracks", move |listeners, shutdown| {
        tracks::run(settings, listeners, shutdown)
    })
    .await
    .unwrap();
    let client = TracksServiceClient::connect(running.url()).await.unwrap();
    (running, client)
}

fn metadata(owner: &str, title: &str) -> TrackMetadata {
    TrackMetadata {
        owner_id: owner.into(),
        title: title.into(),
        description: "a description".into(),
        genre: "ambient".into(),
        duration: Some(prost_types::Duration {
            seconds: 185,
            nanos: 500_000_000,
        }),
        artwork_url: "https://img.example.com/a.jpg".into(),
        visibility: Visibility::Public as i32,
        geoblocking: None,
        downloadable: true,
    }
}

fn audio(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ salt)
        .collect()
}

fn upload_messages(metadata: TrackMetadata, audio: &[u8], chunk: usize) -> Vec<CreateTrackRequest> {
    let mut messages = vec![CreateTrackRequest {
        part: Some(Part::Metadata(metadata)),
    }];
    messages.extend(audio.chunks(chunk).map(|piece| CreateTrackRequest {
        part: Some(Part::AudioChunk(piece.to_vec().into())),
    }));
    messages.push(CreateTrackRequest {
        part: Some(Part::Commit(UploadCommit {
            size_bytes: audio.len() as u64,
            sha256: hex::encode(Sha256::digest(audio)),
        })),
    });
    messages
}

async fn upload(
    client: &mut Client,
    metadata: TrackMetadata,
    audio: &[u8],
) -> Result<Track, tonic::Status> {
    client
        .create_track(futures::stream::iter(upload_messages(
            metadata, audio, 4096,
        )))
        .await
        .map(tonic::Response::into_inner)
}

async fn download(client: &mut Client, track_id: &str) -> Result<Vec<u8>, tonic::Status> {
    let mut stream = client
        .read_audio(ReadAudioRequest {
            track_id: track_id.into(),
        })
        .await?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await? {
        assert!(
            chunk.data.len() <= 1000,
            "chunks are at most chunk_bytes long"
        );
        bytes.extend_from_slice(&chunk.data);
    }
    Ok(bytes)
}

async fn on_every_backend<F, Fut>(test: &str, scenario: F)
where
    F: Fn(DatabaseSettings) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    scenario(testing::sqlite()).await;
    // A file too: its reads by id run inline on the calling thread, not through sqlx.
    let dir = tempfile::tempdir().unwrap();
    scenario(testing::sqlite_file(dir.path())).await;
    if let Some(postgres) = testing::postgres(test).await {
        scenario(postgres).await;
    }
}

#[tokio::test]
async fn an_upload_round_trips_its_audio_and_summary() {
    on_every_backend(
        "an_upload_round_trips_its_audio_and_summary",
        |db| async move {
            let (_running, mut client) = start(settings(db, "http://127.0.0.1:1")).await;
            let bytes = audio(10_500, 7);
            let track = upload(&mut client, metadata("usr_0001", "first"), &bytes)
                .await
                .unwrap();
            assert!(track.id.starts_with("trk_"));
            let summary = track.audio.clone().unwrap();
            assert_eq!(summary.size_bytes, 10_500);
            assert_eq!(summary.sha256, hex::encode(Sha256::digest(&bytes)));
            assert_eq!(track.duration.unwrap().seconds, 185);
            assert_eq!(track.duration.unwrap().nanos, 500_000_000);
            assert!(
                track.secret_token.is_empty(),
                "public tracks have no secret token"
            );
            assert_eq!(download(&mut client, &track.id).await.unwrap(), bytes);

            let private = upload(
                &mut client,
                TrackMetadata {
                    visibility: Visibility::Private as i32,
                    ..metadata("usr_0001", "hidden")
                },
                &bytes,
            )
            .await
            .unwrap();
            // 128 bits from the OS CSPRNG, independent of the track id (both were UUIDv7 made
            // back to back, sharing their timestamp bits).
            let secret = private.secret_token.strip_prefix("sec_").unwrap();
            assert_eq!(secret.len(), 32, "{secret}");
            assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()));
            let id = private.id.strip_prefix("trk_").unwrap();
            assert_ne!(
                &secret[..8],
                &id[..8],
                "the token does not share the id's bits"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn seeded_secret_tokens_are_128_random_bits_unrelated_to_ids_or_the_seed() {
    // Two databases seeded from the same seed: everything else in them is the same.
    let mut tokens_by_database = Vec::new();
    for _ in 0..2 {
        let mut settings = settings(testing::sqlite(), "http://127.0.0.1:1");
        settings.seed.enabled = true;
        settings.seed.users = 50;
        settings.seed.tracks = 100;
        let (_running, mut client) = start(settings).await;
        let ids: Vec<String> = (1..=100).map(foundation_kit::seed::track_id).collect();
        let batch = client
            .batch_get_tracks(BatchGetTracksRequest { ids })
            .await
            .unwrap()
            .into_inner();
        let mut tokens = Vec::new();
        for track in batch.tracks {
            if track.visibility != Visibility::Private as i32 {
                assert!(track.secret_token.is_empty(), "{}", track.id);
                continue;
            }
            let secret = track.secret_token.strip_prefix("sec_").unwrap().to_owned();
            assert_eq!(secret.len(), 32, "128 bits: {secret}");
            assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()), "{secret}");
            tokens.push((track.id, secret));
        }
        assert_eq!(tokens.len(), 10);
        tokens_by_database.push(tokens);
    }
    let (first, second) = (&tokens_by_database[0], &tokens_by_database[1]);
    let mut all: Vec<&String> = first
        .iter()
        .chain(second)
        .map(|(_, secret)| secret)
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(
        all.len(),
        20,
        "no two tokens alike, within or across databases"
    );
    // Nothing a reader of the seed could compute: no shared prefix with the other database's
    // token of the same track (a derivation from the seed and the id would give the same).
    for ((id, a), (_, b)) in first.iter().zip(second) {
        assert_ne!(a[..8], b[..8], "{id}");
    }
}

#[tokio::test]
async fn bad_uploads_are_rejected_with_the_field_named() {
    on_every_backend(
        "bad_uploads_are_rejected_with_the_field_named",
        |db| async move {
            let (_running, mut client) = start(settings(db, "http://127.0.0.1:1")).await;
            let bytes = audio(100, 1);
            let cases: Vec<(TrackMetadata, &str)> = vec![
                (metadata("", "t"), "owner_id"),
                (metadata("usr 1", "t"), "owner_id"),
                (metadata("usr_0001", " "), "title"),
                (metadata("usr_0001", &"x".repeat(201)), "title"),
                (
                    TrackMetadata {
                        artwork_url: "ftp://x".into(),
                        ..metadata("usr_0001", "t")
                    },
                    "artwork_url",
                ),
                (
                    TrackMetadata {
                        geoblocking: Some(Geoblocking {
                            mode: GeoblockingMode::AllowList as i32,
                            territories: vec!["UK".into()],
                        }),
                        ..metadata("usr_0001", "t")
                    },
                    "geoblocking.territories",
                ),
                (
                    TrackMetadata {
                        geoblocking: Some(Geoblocking {
                            mode: GeoblockingMode::BlockList as i32,
                            territories: vec![],
                        }),
                        ..metadata("usr_0001", "t")
                    },
                    "geoblocking.territories",
                ),
                (
                    TrackMetadata {
                        visibility: 42,
                        ..metadata("usr_0001", "t")
                    },
                    "visibility",
                ),
            ];
            for (given, field) in cases {
                let status = upload(&mut client, given, &bytes).await.unwrap_err();
                assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
                assert!(
                    status.message().starts_with(field),
                    "{field}: {}",
                    status.message()
                );
            }

            let no_metadata = client
                .create_track(futures::stream::iter(vec![CreateTrackRequest {
                    part: Some(Part::AudioChunk(bytes.clone().into())),
                }]))
                .await
                .unwrap_err();
            assert_eq!(no_metadata.code(), Code::InvalidArgument);
            assert!(no_metadata.message().starts_with("metadata"));

            let no_audio = upload(&mut client, metadata("usr_0001", "t"), &[])
                .await
                .unwrap_err();
            assert_eq!(no_audio.code(), Code::InvalidArgument);

            let listed = client
                .list_tracks_by_owner(ListTracksByOwnerRequest {
                    owner_id: "usr_0001".into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert!(listed.tracks.is_empty(), "no rejected upload was stored");
        },
    )
    .await;
}

async fn chunk_rows(pool: &sqlx::AnyPool) -> i64 {
    sqlx::query("SELECT COUNT(*) AS n FROM audio_chunks")
        .fetch_one(pool)
        .await
        .unwrap()
        .try_get("n")
        .unwrap()
}

#[tokio::test]
async fn audio_over_the_cap_or_an_abandoned_upload_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = DatabaseSettings {
        url: format!("sqlite://{}", dir.path().join("tracks.db").display()),
        max_connections: 2,
    };
    let (running, mut client) = start(settings(db.clone(), "http://127.0.0.1:1")).await;
    let status = upload(
        &mut client,
        metadata("usr_0001", "big"),
        &audio(64 * 1024 + 1, 3),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange);
    // The service answered, so its database exists and is migrated.
    sqlx::any::install_default_drivers();
    let inspect = sqlx::AnyPool::connect(&db.url).await.unwrap();
    assert_eq!(
        chunk_rows(&inspect).await,
        0,
        "nothing of the rejected upload stays"
    );
    assert!(status.message().contains("65536"), "{}", status.message());

    // A client that sends some audio and then goes away: its runtime, and with it its
    // connection, is dropped in the middle of the stream.
    let url = running.url();
    let (die, dying) = tokio::sync::oneshot::channel::<()>();
    let abandoning = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let sender = runtime.block_on(async move {
            let mut client = TracksServiceClient::connect(url).await.unwrap();
            let (sender, receiver) = tokio::sync::mpsc::channel(4);
            for message in upload_messages(metadata("usr_0001", "gone"), &audio(9000, 5), 3000)
                .into_iter()
                .take(3)
            {
                sender.send(message).await.unwrap();
            }
            tokio::spawn(async move {
                client
                    .create_track(tokio_stream::wrappers::ReceiverStream::new(receiver))
                    .await
            });
            drop(dying.await);
            sender
        });
        // Dropping the runtime closes the connection; the stream never ends cleanly.
        drop(runtime);
        drop(sender);
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while chunk_rows(&inspect).await < 2 {
        assert!(Instant::now() < deadline, "the staged chunks never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    die.send(()).unwrap();
    abandoning.join().unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    while chunk_rows(&inspect).await > 0 {
        assert!(
            Instant::now() < deadline,
            "staged chunks of an abandoned upload remain"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A client that cancels its call on a live connection: the server sees a clean end of the
    // stream, without the commit.
    let (sender, receiver) = tokio::sync::mpsc::channel(8);
    for message in upload_messages(metadata("usr_0001", "cancelled"), &audio(9000, 6), 3000)
        .into_iter()
        .take(3)
    {
        sender.send(message).await.unwrap();
    }
    let mut cancelling = client.clone();
    let call = tokio::spawn(async move {
        cancelling
            .create_track(tokio_stream::wrappers::ReceiverStream::new(receiver))
            .await
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while chunk_rows(&inspect).await < 2 {
        assert!(Instant::now() < deadline, "the staged chunks never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    call.abort();
    drop(sender);
    let deadline = Instant::now() + Duration::from_secs(10);
    while chunk_rows(&inspect).await > 0 {
        assert!(
            Instant::now() < deadline,
            "staged chunks of a cancelled upload remain"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let listed = client
        .list_tracks_by_owner(ListTracksByOwnerRequest {
            owner_id: "usr_0001".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.tracks.is_empty(), "{:?}", listed.tracks);
}

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

#[tokio::test]
async fn updates_change_only_the_masked_fields() {
    on_every_backend("updates_change_only_the_masked_fields", |db| async move {
        let (_running, mut client) = start(settings(db, "http://127.0.0.1:1")).await;
        let original = upload(&mut client, metadata("usr_0001", "before"), &audio(10, 0))
            .await
            .unwrap();
        let id = original.id.clone();
        let update = |paths: &[&str], given: TrackMetadata| UpdateTrackRequest {
            track_id: id.clone(),
            metadata: Some(given),
            update_mask: mask(paths),
        };

        let changed = client
            .update_track(update(
                &["title"],
                TrackMetadata {
                    description: "ignored".into(),
                    ..metadata("usr_0001", "after")
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(changed.title, "after");
        assert_eq!(changed.description, original.description);
        assert_eq!(changed.create_time, original.create_time);

        let private = client
            .update_track(update(
                &["visibility"],
                TrackMetadata {
                    visibility: Visibility::Private as i32,
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(private.secret_token.starts_with("sec_"));
        assert_eq!(private.title, "after");

        let geo = client
            .update_track(update(
                &["geoblocking"],
                TrackMetadata {
                    geoblocking: Some(Geoblocking {
                        mode: GeoblockingMode::AllowList as i32,
                        territories: vec!["US".into(), "CA".into(), "US".into()],
                    }),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(geo.geoblocking.unwrap().territories, ["CA", "US"]);
        assert_eq!(
            geo.secret_token, private.secret_token,
            "the token survives other updates"
        );

        let public = client
            .update_track(update(
                &["visibility"],
                TrackMetadata {
                    visibility: Visibility::Public as i32,
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(
            public.secret_token.is_empty(),
            "going public drops the token"
        );

        for (paths, expected) in [
            (vec![], "update_mask"),
            (vec!["owner_id"], "update_mask"),
            (vec!["audio"], "update_mask"),
            (vec!["title.x"], "update_mask"),
            (vec!["visibility"], "visibility"),
            (vec!["geoblocking.territories"], "geoblocking.territories"),
        ] {
            let status = client
                .update_track(update(
                    &paths,
                    TrackMetadata {
                        geoblocking: Some(Geoblocking {
                            mode: GeoblockingMode::BlockList as i32,
                            territories: vec![],
                        }),
                        ..Default::default()
                    },
                ))
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{paths:?}");
            assert!(
                status.message().starts_with(expected),
                "{paths:?}: {}",
                status.message()
            );
        }
        let unchanged = client
            .batch_get_tracks(BatchGetTracksRequest {
                ids: vec![id.clone()],
            })
            .await
            .unwrap()
            .into_inner()
            .tracks
            .remove(0);
        assert_eq!(unchanged.title, "after", "rejected updates changed nothing");
        assert!(unchanged.secret_token.is_empty());

        let missing = client
            .update_track(UpdateTrackRequest {
                track_id: "trk_missing".into(),
                metadata: Some(metadata("usr_0001", "x")),
                update_mask: mask(&["title"]),
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
    })
    .await;
}

#[tokio::test]
async fn batches_keep_request_order_and_lists_page_newest_first() {
    on_every_backend(
        "batches_keep_request_order_and_lists_page_newest_first",
        |db| async move {
            let (_running, mut client) = start(settings(db, "http://127.0.0.1:1")).await;
            let mut ids = Vec::new();
            for n in 0..5 {
                let track = upload(
                    &mut client,
                    metadata("usr_0002", &format!("t{n}")),
                    &audio(10, n),
                )
                .await
                .unwrap();
                ids.push(track.id);
            }
            let batch = client
                .batch_get_tracks(BatchGetTracksRequest {
                    ids: vec![ids[3].clone(), "trk_nope".into(), ids[0].clone()],
                })
                .await
                .unwrap()
                .into_inner();
            let got: Vec<_> = batch.tracks.iter().map(|t| t.id.clone()).collect();
            assert_eq!(got, [ids[3].clone(), ids[0].clone()]);
            assert_eq!(batch.missing_ids, ["trk_nope"]);

            let too_many = client
                .batch_get_tracks(BatchGetTracksRequest {
                    ids: vec!["trk_1".into(); 101],
                })
                .await
                .unwrap_err();
            assert_eq!(too_many.code(), Code::InvalidArgument);
            assert!(too_many.message().starts_with("ids"));

            let mut seen = Vec::new();
            let mut token = String::new();
            loop {
                let page = client
                    .list_tracks_by_owner(ListTracksByOwnerRequest {
                        owner_id: "usr_0002".into(),
                        page_size: 2,
                        page_token: token,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert!(page.tracks.len() <= 2);
                seen.extend(page.tracks.into_iter().map(|t| t.id));
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            let newest_first: Vec<_> = ids.iter().rev().cloned().collect();
            assert_eq!(seen, newest_first);

            let bad_token = client
                .list_tracks_by_owner(ListTracksByOwnerRequest {
                    owner_id: "usr_0002".into(),
                    page_size: 2,
                    page_token: "nonsense".into(),
                })
                .await
                .unwrap_err();
            assert_eq!(bad_token.code(), Code::InvalidArgument);
            assert!(bad_token.message().starts_with("page_token"));
        },
    )
    .await;
}

#[tokio::test]
async fn downloads_and_deletions_reach_counts_through_the_outbox() {
    on_every_backend(
        "downloads_and_deletions_reach_counts_through_the_outbox",
        |db| async move {
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
            let mut counts = CountsServiceClient::connect(counts_service.url())
                .await
                .unwrap();
            let (_running, mut client) = start(settings(db, &counts_service.url())).await;
            let track = upload(&mut client, metadata("usr_0003", "dl"), &audio(2500, 9))
                .await
                .unwrap();
            for user in ["usr_0004", "usr_0005", "usr_0004"] {
                client
                    .record_download(RecordDownloadRequest {
                        track_id: track.id.clone(),
                        user_id: user.into(),
                    })
                    .await
                    .unwrap();
            }
            let unknown = client
                .record_download(RecordDownloadRequest {
                    track_id: "trk_unknown".into(),
                    user_id: "usr_0004".into(),
                })
                .await
                .unwrap_err();
            assert_eq!(unknown.code(), Code::NotFound);

            let downloads = |counts: &mut CountsServiceClient<Channel>| {
                let mut counts = counts.clone();
                let id = track.id.clone();
                async move {
                    counts
                        .batch_get_track_counts(BatchGetTrackCountsRequest {
                            track_ids: vec![id],
                        })
                        .await
                        .unwrap()
                        .into_inner()
                        .counts[0]
                        .downloads_count
                }
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            while downloads(&mut counts).await != 3 {
                assert!(Instant::now() < deadline, "downloads never reached counts");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }

            client
                .delete_track(DeleteTrackRequest {
                    track_id: track.id.clone(),
                })
                .await
                .unwrap();
            let gone = client
                .batch_get_tracks(BatchGetTracksRequest {
                    ids: vec![track.id.clone()],
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(gone.missing_ids, std::slice::from_ref(&track.id));
            assert_eq!(
                download(&mut client, &track.id).await.unwrap_err().code(),
                Code::NotFound
            );
            let again = client
                .delete_track(DeleteTrackRequest {
                    track_id: track.id.clone(),
                })
                .await
                .unwrap_err();
            assert_eq!(again.code(), Code::NotFound);
            let deadline = Instant::now() + Duration::from_secs(20);
            while downloads(&mut counts).await != 0 {
                assert!(
                    Instant::now() < deadline,
                    "the deletion never reached counts"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
    )
    .await;
}

#[tokio::test]
async fn the_seed_holds_every_policy_case() {
    let mut settings = settings(testing::sqlite(), "http://127.0.0.1:1");
    settings.seed.enabled = true;
    settings.seed.users = 100;
    settings.seed.tracks = 40;
    let (_running, mut client) = start(settings).await;
    let ids: Vec<String> = (1..=40).map(foundation_kit::seed::track_id).collect();
    let batch = client
        .batch_get_tracks(BatchGetTracksRequest { ids })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.tracks.len(), 40);
    let t = |n: usize| &batch.tracks[n - 1];
    assert_eq!(t(3).visibility, Visibility::Private as i32);
    assert!(!t(3).secret_token.is_empty());
    assert_eq!(
        t(7).geoblocking.as_ref().unwrap().mode,
        GeoblockingMode::AllowList as i32
    );
    assert_eq!(
        t(11).geoblocking.as_ref().unwrap().mode,
        GeoblockingMode::BlockList as i32
    );
    assert!(t(6).downloadable && !t(1).downloadable);
    let bytes = download(&mut client, &t(1).id).await.unwrap();
    assert_eq!(
        hex::encode(Sha256::digest(&bytes)),
        t(1).audio.as_ref().unwrap().sha256
    );
}

#[test]
fn the_binary_prints_its_settings_and_fails_fast_naming_a_bad_key() {
    let binary = env!("CARGO_BIN_EXE_tracks");
    let printed = std::process::Command::new(binary)
        .arg("--print-config")
        .env("TRACKS_AUDIO__MAX_BYTES", "1234")
        .output()
        .unwrap();
    assert!(printed.status.success());
    let text = String::from_utf8(printed.stdout).unwrap();
    assert!(text.contains("max_bytes = 1234"), "{text}");
    assert!(text.contains("grpc_addr = \"0.0.0.0:50061\""), "{text}");

    let typo = std::process::Command::new(binary)
        .arg("--print-config")
        .env("TRACKS_AUDIO__MAX_BYTE", "1234")
        .output()
        .unwrap();
    assert_eq!(typo.status.code(), Some(2));
    let error = String::from_utf8(typo.stderr).unwrap();
    assert!(error.contains("max_byte"), "{error}");

    let help = std::process::Command::new(binary)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(
        help.contains("--print-config") && help.contains("TRACKS_"),
        "{help}"
    );
}

#[tokio::test]
async fn the_health_subcommand_reports_a_serving_instance_and_fails_otherwise() {
    let (running, _client) = start(settings(testing::sqlite(), "http://127.0.0.1:1")).await;
    let binary = env!("CARGO_BIN_EXE_tracks");
    let addr = running.grpc_addr.to_string();
    let healthy = tokio::process::Command::new(binary)
        .args(["health", "--addr", &addr])
        .output()
        .await
        .unwrap();
    assert!(healthy.status.success(), "{healthy:?}");
    running.stop().await.unwrap();
    let gone = tokio::process::Command::new(binary)
        .args(["health", "--addr", &addr, "--timeout-ms", "500"])
        .output()
        .await
        .unwrap();
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).starts_with("unhealthy"));
}

/// A file database that two instances, and the test, can share.
fn shared_file(dir: &tempfile::TempDir) -> DatabaseSettings {
    DatabaseSettings {
        url: format!("sqlite://{}", dir.path().join("tracks.db").display()),
        max_connections: 2,
    }
}

/// Returns once the service answers: its database is migrated by then.
async fn answering(client: &Client) {
    client
        .clone()
        .batch_get_tracks(BatchGetTracksRequest {
            ids: vec!["trk_unknown".into()],
        })
        .await
        .unwrap();
}

/// An upload whose first `sent` messages (the metadata and some chunks) are on their way, and
/// the sender of the rest.
fn start_upload(
    client: &Client,
    messages: &mut impl Iterator<Item = CreateTrackRequest>,
    sent: usize,
) -> (
    tokio::sync::mpsc::Sender<CreateTrackRequest>,
    tokio::task::JoinHandle<Result<tonic::Response<Track>, tonic::Status>>,
) {
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    for message in messages.by_ref().take(sent) {
        sender.try_send(message).unwrap();
    }
    let mut uploading = client.clone();
    let call = tokio::spawn(async move {
        uploading
            .create_track(tokio_stream::wrappers::ReceiverStream::new(receiver))
            .await
    });
    (sender, call)
}

/// The prod overlay runs two replicas on one database: one starting (and sweeping) while the
/// other receives an upload must leave that upload whole.
#[tokio::test]
async fn a_replica_starting_mid_upload_leaves_that_upload_whole() {
    let dir = tempfile::tempdir().unwrap();
    replica_starts_mid_upload(shared_file(&dir)).await;
    if let Some(postgres) = testing::postgres("a_replica_starting_mid_upload").await {
        replica_starts_mid_upload(postgres).await;
    }
}

async fn replica_starts_mid_upload(db: DatabaseSettings) {
    let (_first, client) = start(settings(db.clone(), "http://127.0.0.1:1")).await;
    answering(&client).await;
    sqlx::any::install_default_drivers();
    let inspect = sqlx::AnyPool::connect(&db.url).await.unwrap();
    let bytes = audio(9000, 11);
    let mut messages = upload_messages(metadata("usr_0001", "shared"), &bytes, 3000).into_iter();
    let (sender, call) = start_upload(&client, &mut messages, 3);
    test_support::eventually("two staged chunks", Duration::from_secs(10), || async {
        chunk_rows(&inspect).await >= 2
    })
    .await;

    // The second replica sweeps at start-up, before it serves its first call.
    let (_second, mut other) = start(settings(db.clone(), "http://127.0.0.1:1")).await;
    answering(&other).await;
    for message in messages {
        sender.send(message).await.unwrap();
    }
    let track = call.await.unwrap().unwrap().into_inner();
    assert_eq!(
        download(&mut other, &track.id).await.unwrap(),
        bytes,
        "the upload lost none of its audio"
    );
}

/// Audio a crashed replica left behind is removed once stale, by the periodic sweep, while a
/// slow upload that outlives the stale age keeps its audio; an upload that stalls fails within
/// its idle bound and stores nothing.
#[tokio::test]
async fn stale_uploads_are_swept_while_live_ones_keep_their_audio() {
    let dir = tempfile::tempdir().unwrap();
    let db = shared_file(&dir);
    let mut settings = settings(db.clone(), "http://127.0.0.1:1");
    settings.uploads = tracks::UploadSettings {
        idle_timeout_ms: 300,
        stale_after_ms: 600,
        sweep_interval_ms: 50,
    };
    let (_running, client) = start(settings).await;
    answering(&client).await;
    sqlx::any::install_default_drivers();
    let inspect = sqlx::AnyPool::connect(&db.url).await.unwrap();
    let chunks_of = |audio_id: &'static str| {
        let pool = inspect.clone();
        async move {
            sqlx::query("SELECT COUNT(*) AS n FROM audio_chunks WHERE audio_id = $1")
                .bind(audio_id)
                .fetch_one(&pool)
                .await
                .unwrap()
                .try_get::<i64, _>("n")
                .unwrap()
        }
    };
    // What a replica that crashed mid-upload leaves: the upload's row and a staged chunk.
    sqlx::query("INSERT INTO staged_uploads (audio_id, touch_time_us) VALUES ($1, $2)")
        .bind("aud_crashed")
        .bind(foundation_kit::time::now_us())
        .execute(&inspect)
        .await
        .unwrap();
    sqlx::query("INSERT INTO audio_chunks (audio_id, seq, data) VALUES ($1, 0, $2)")
        .bind("aud_crashed")
        .bind(vec![1_u8; 100])
        .execute(&inspect)
        .await
        .unwrap();

    // A slow client: a chunk every 100 ms for longer than the stale age.
    let bytes = audio(12 * 500, 13);
    let mut messages = upload_messages(metadata("usr_0001", "slow"), &bytes, 500).into_iter();
    let (sender, call) = start_upload(&client, &mut messages, 1);
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    for message in messages {
        pace.tick().await;
        sender.send(message).await.unwrap();
    }
    let track = call.await.unwrap().unwrap().into_inner();
    assert_eq!(
        download(&mut client.clone(), &track.id).await.unwrap(),
        bytes
    );
    test_support::eventually(
        "the crashed upload's audio removed",
        Duration::from_secs(10),
        || async { chunks_of("aud_crashed").await == 0 },
    )
    .await;

    // A client that sends a chunk and then nothing.
    let mut messages =
        upload_messages(metadata("usr_0001", "stalled"), &audio(1000, 1), 500).into_iter();
    let (_sender, call) = start_upload(&client, &mut messages, 2);
    let stalled = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the stalled upload is cut off")
        .unwrap()
        .unwrap_err();
    assert_eq!(stalled.code(), Code::DeadlineExceeded, "{stalled:?}");
    assert!(
        stalled.message().contains("300 ms"),
        "{}",
        stalled.message()
    );
    assert_eq!(
        chunk_rows(&inspect).await,
        12,
        "only the slow upload's audio is left"
    );
}

/// A `ReadAudio` reader that stops reading is cut off at the idle bound: the stream lets go of
/// what it holds, and the reader, should it read again, gets what was already sent and then
/// `DEADLINE_EXCEEDED`.
#[tokio::test]
async fn a_reader_that_stops_reading_is_cut_off_at_the_idle_bound() {
    let mut settings = settings(testing::sqlite(), "http://127.0.0.1:1");
    settings.audio.max_bytes = 16 * 1024 * 1024;
    settings.audio.chunk_bytes = 64 * 1024;
    settings.downloads.idle_timeout_ms = 300;
    let (running, mut client) = start(settings).await;
    // More than the reader's flow-control window and the server's send buffer hold.
    let bytes = audio(8 * 1024 * 1024, 17);
    let track = client
        .create_track(futures::stream::iter(upload_messages(
            metadata("usr_0001", "long"),
            &bytes,
            64 * 1024,
        )))
        .await
        .unwrap()
        .into_inner();
    let mut reading = client
        .read_audio(ReadAudioRequest {
            track_id: track.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut received = reading.message().await.unwrap().unwrap().data.len();
    test_support::eventually("the reader cut off", Duration::from_secs(10), || async {
        let text = running.scrape().await.unwrap();
        service_runtime::metrics::sample(
            &text,
            "grpc_server_streams_cut_off_total",
            &[("grpc_method", "ReadAudio"), ("reason", "idle")],
        ) == 1.0
    })
    .await;
    let status = loop {
        match reading.message().await {
            Ok(Some(chunk)) => received += chunk.data.len(),
            Ok(None) => panic!("a cut-off stream must not end cleanly"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(received < bytes.len(), "{received} bytes arrived");
}
