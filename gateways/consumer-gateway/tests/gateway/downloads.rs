//! Downloads through gRPC: counted only once the client has taken the whole audio, and a
//! client that stops reading is cut off at the idle bound, uncounted.

use std::time::{Duration, Instant};

use protos::{
    consumer::v1::{DownloadTrackRequest, DownloadTrackResponse},
    foundation::{
        counts::v1::{BatchGetTrackCountsRequest, counts_service_client::CountsServiceClient},
        tracks::v1::{
            CreateTrackRequest, TrackMetadata, UploadCommit, Visibility, create_track_request::Part,
        },
    },
};
use service_runtime::metrics::sample;
use sha2::{Digest, Sha256};
use test_support::eventually;
use tonic::{Code, Streaming};

use crate::fixture::{Topology, as_user};

const LISTENER: &str = "usr_0057";
/// Larger than what the client's flow-control window and the server's send buffer hold, so
/// that a client that stops reading stops the stream.
const AUDIO_BYTES: usize = 8 * 1024 * 1024;

/// Uploads a public, downloadable track of `AUDIO_BYTES`; returns its id and audio.
async fn large_track(t: &Topology) -> (String, Vec<u8>) {
    let audio: Vec<u8> = (0..AUDIO_BYTES).map(|i| (i % 251) as u8).collect();
    let mut messages = vec![CreateTrackRequest {
        part: Some(Part::Metadata(TrackMetadata {
            owner_id: "usr_0001".into(),
            title: "long".into(),
            visibility: Visibility::Public as i32,
            downloadable: true,
            ..Default::default()
        })),
    }];
    messages.extend(audio.chunks(64 * 1024).map(|piece| CreateTrackRequest {
        part: Some(Part::AudioChunk(piece.to_vec().into())),
    }));
    messages.push(CreateTrackRequest {
        part: Some(Part::Commit(UploadCommit {
            size_bytes: audio.len() as u64,
            sha256: hex::encode(Sha256::digest(&audio)),
        })),
    });
    let track = t
        .tracks_client
        .clone()
        .create_track(futures::stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    (track.id, audio)
}

async fn download(t: &Topology, track_id: &str) -> Streaming<DownloadTrackResponse> {
    t.client
        .clone()
        .download_track(as_user(
            DownloadTrackRequest {
                track_id: track_id.into(),
                secret_token: None,
            },
            Some(LISTENER),
            "US",
        ))
        .await
        .unwrap()
        .into_inner()
}

/// How many `RecordDownload` calls tracks has handled.
async fn recorded(t: &Topology) -> f64 {
    let text = t.tracks.as_ref().unwrap().scrape().await.unwrap();
    sample(
        &text,
        "grpc_server_handled_total",
        &[("grpc_method", "RecordDownload")],
    )
}

#[tokio::test]
async fn a_download_counts_only_once_the_whole_audio_was_sent() {
    let idle = Duration::from_millis(500);
    let t = Topology::start_with(|s| s.downloads.idle_timeout_ms = idle.as_millis() as u64).await;
    let (track_id, audio) = large_track(&t).await;

    // Cancelled half-way: the client takes one chunk and goes away.
    let mut cancelled = download(&t, &track_id).await;
    assert!(!cancelled.message().await.unwrap().unwrap().chunk.is_empty());
    drop(cancelled);

    // A client that stops reading is cut off at the idle bound.
    let mut stalled = download(&t, &track_id).await;
    let mut received = stalled.message().await.unwrap().unwrap().chunk.len();
    let stopped = Instant::now();
    eventually(
        "the stalled download cut off",
        Duration::from_secs(10),
        || async {
            let text = t.gateway.scrape().await.unwrap();
            sample(
                &text,
                "grpc_server_streams_cut_off_total",
                &[("grpc_method", "DownloadTrack"), ("reason", "idle")],
            ) == 1.0
        },
    )
    .await;
    assert!(stopped.elapsed() >= idle, "not before the bound");
    // Reading again, the client gets what was already sent, then the cut-off.
    let status = loop {
        match stalled.message().await {
            Ok(Some(chunk)) => received += chunk.chunk.len(),
            Ok(None) => panic!("a cut-off download must not end cleanly"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(received < AUDIO_BYTES, "{received} bytes arrived");
    assert_eq!(recorded(&t).await, 0.0, "neither download was counted");

    // A download read to its end is counted, once.
    let mut complete = download(&t, &track_id).await;
    let mut bytes = Vec::with_capacity(AUDIO_BYTES);
    while let Some(chunk) = complete.message().await.unwrap() {
        bytes.extend_from_slice(&chunk.chunk);
    }
    assert!(bytes == audio, "the whole audio arrives");
    assert_eq!(recorded(&t).await, 1.0);
    let counts = CountsServiceClient::connect(t.counts.as_ref().unwrap().url())
        .await
        .unwrap();
    eventually("the download counted", Duration::from_secs(20), || {
        let (mut counts, id) = (counts.clone(), track_id.clone());
        async move {
            let counted = counts
                .batch_get_track_counts(BatchGetTrackCountsRequest {
                    track_ids: vec![id],
                })
                .await
                .unwrap()
                .into_inner()
                .counts[0]
                .downloads_count;
            (counted == 1).then_some(())
        }
    })
    .await;
}
