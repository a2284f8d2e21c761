//! `CreateTrack`'s upload protocol: after the metadata, which the API reads and checks, the
//! stream carries the audio in chunks and ends with a commit message that describes what was
//! sent.
//!
//! It lives apart from the gRPC edge because its order of writes is what makes an upload whole
//! or nothing, and that order deserves one place to read. The chunks are staged outside any
//! transaction as they arrive and hashed on the way; the track row that makes them reachable is
//! written last, and only once the commit matches the audio that arrived. Any failure removes
//! the staged chunks, and chunks left by a crash are swept at start-up. The commit is needed
//! because tonic reports a cancelled call as a clean end of the stream, so how the stream ends
//! proves nothing.

use foundation_kit::FoundationError;
use protos::foundation::tracks::v1::{
    CreateTrackRequest, UploadCommit, create_track_request::Part,
};
use sha2::{Digest, Sha256};
use tonic::{Status, Streaming};

use crate::{
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
) -> Result<Track, Status> {
    let audio_id = format!("aud_{}", uuid::Uuid::now_v7().simple());
    let received = receive(&store, &mut parts, &audio_id, max_bytes).await;
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
                Err(error) => Err(Status::from(FoundationError::from(error))),
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
) -> Result<(u64, String), Status> {
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut seq = 0;
    loop {
        // tonic reports a cancelled call as a clean end of the stream, so only the commit
        // tells a finished upload from an abandoned one.
        let Some(message) = parts.message().await? else {
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
        store
            .stage_chunk(audio_id, seq, &chunk)
            .await
            .map_err(FoundationError::from)?;
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
