//! `CreateTrack`'s upload protocol: after the metadata, which the API reads and checks, the
//! stream carries the audio in chunks and ends with a commit message that describes what was
//! sent.
//!
//! It lives apart from the gRPC edge because its order of writes is what makes an upload whole
//! or nothing, and that order deserves one place to read. The chunks are staged outside any
//! transaction as they arrive and hashed on the way; the track row that makes them reachable is
//! written last, and only once the commit matches the audio that arrived. Any failure removes
//! the staged chunks. Chunks left by a crash are swept at start-up and periodically, but only
//! those of uploads idle for longer than `uploads.stale_after_ms`: replicas share the database,
//! and each upload in progress touches its row with every chunk, while an upload that sends
//! nothing for `uploads.idle_timeout_ms` (less than the stale age) fails. The commit is needed
//! because tonic reports a cancelled call as a clean end of the stream, so how the stream ends
//! proves nothing.

use std::time::Duration;

use foundation_kit::{FoundationError, time};
use protos::foundation::tracks::v1::{
    CreateTrackRequest, UploadCommit, create_track_request::Part,
};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use crate::{
    UploadSettings,
    model::{Audio, Metadata, Track},
    store::TracksStore,
};

/// Receives the audio of an upload, staging its chunks, then commits the track. It runs as a
/// task of its own, so that a caller going away cannot cut it off between two statements: on
/// any error it removes what it staged, after its last write has finished.
pub(crate) async fn receive_and_commit(
    store: TracksStore,
    mut parts: Streaming<CreateTrackRequest>,
    owner_id: String,
    metadata: Metadata,
    max_bytes: u64,
    idle: Duration,
) -> Result<Track, Status> {
    let audio_id = format!("aud_{}", uuid::Uuid::now_v7().simple());
    store
        .begin_upload(&audio_id)
        .await
        .map_err(FoundationError::from)?;
    let received = receive(&store, &mut parts, &audio_id, max_bytes, idle).await;
    let outcome = match received {
        Ok((size, sha256)) => {
            let audio = Audio {
                id: audio_id.clone(),
                size: size as i64,
                sha256,
            };
            let track = Track::new(owner_id, metadata, audio);
            match store.create(&track).await {
                Ok(()) => return Ok(track),
                Err(error) => Err(Status::from(error)),
            }
        }
        Err(status) => Err(status),
    };
    if let Err(error) = store.discard_chunks(&audio_id).await {
        tracing::warn!(%error, %audio_id, "cannot discard the chunks of a failed upload");
    }
    outcome
}

/// Stages every audio chunk of the stream until the commit; returns the size and the SHA-256.
async fn receive(
    store: &TracksStore,
    parts: &mut Streaming<CreateTrackRequest>,
    audio_id: &str,
    max_bytes: u64,
    idle: Duration,
) -> Result<(u64, String), Status> {
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut seq = 0;
    loop {
        // tonic reports a cancelled call as a clean end of the stream, so only the commit
        // tells a finished upload from an abandoned one.
        let next = tokio::time::timeout(idle, parts.message()).await;
        let Some(message) = next.map_err(|_| FoundationError::Stalled {
            what: "the upload",
            idle_ms: idle.as_millis() as u64,
        })??
        else {
            return Err(FoundationError::invalid(
                "commit",
                "the upload ended without its commit message; nothing was stored",
            )
            .into());
        };
        let chunk = match message.part {
            Some(Part::AudioChunk(chunk)) => chunk,
            Some(Part::Commit(commit)) => {
                let sha256 = hex::encode(hasher.finalize());
                check_commit(&commit, size, &sha256)?;
                return Ok((size, sha256));
            }
            Some(Part::Metadata(_)) => {
                return Err(FoundationError::invalid(
                    "metadata",
                    "only the first message may carry metadata",
                )
                .into());
            }
            None => return Err(FoundationError::invalid("part", "is required").into()),
        };
        if chunk.is_empty() {
            continue;
        }
        size += chunk.len() as u64;
        if size > max_bytes {
            return Err(FoundationError::AudioTooLarge { limit: max_bytes }.into());
        }
        hasher.update(&chunk);
        store.stage_chunk(audio_id, seq, &chunk).await?;
        seq += 1;
    }
}

/// The commit must describe what arrived: some audio, of the declared size and, when declared,
/// of the declared SHA-256.
fn check_commit(commit: &UploadCommit, size: u64, sha256: &str) -> Result<(), FoundationError> {
    if size == 0 {
        return Err(FoundationError::invalid(
            "audio_chunk",
            "the upload carries no audio",
        ));
    }
    if commit.size_bytes != size {
        return Err(FoundationError::invalid(
            "commit.size_bytes",
            format!("is {} but {size} bytes arrived", commit.size_bytes),
        ));
    }
    if !commit.sha256.is_empty() && !commit.sha256.eq_ignore_ascii_case(sha256) {
        return Err(FoundationError::invalid(
            "commit.sha256",
            "does not match the audio that arrived",
        ));
    }
    Ok(())
}

/// Sweeps stale uploads every `uploads.sweep_interval_ms` until `stop` is cancelled.
pub(crate) async fn sweep_periodically(
    store: TracksStore,
    settings: UploadSettings,
    stop: CancellationToken,
) {
    // The first sweep ran at start-up.
    let period = Duration::from_millis(settings.sweep_interval_ms.max(1));
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => sweep(&store, &settings).await,
        }
    }
}

/// Removes the chunks of uploads idle for longer than `uploads.stale_after_ms`.
pub(crate) async fn sweep(store: &TracksStore, settings: &UploadSettings) {
    let stale_before =
        time::now_us().saturating_sub(settings.stale_after_ms.saturating_mul(1000) as i64);
    match store.sweep_stale_uploads(stale_before).await {
        Ok(0) => {}
        Ok(chunks) => tracing::info!(chunks, "removed the audio of uploads that never completed"),
        Err(error) => tracing::warn!(%error, "cannot sweep stale uploads"),
    }
}
