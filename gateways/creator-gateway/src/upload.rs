//! `UploadTrack`: the caller's stream is forwarded to `tracks.CreateTrack` chunk by chunk, as
//! it arrives, so an upload's memory is one chunk (plus the HTTP/2 windows), never the file.
//!
//! The tracks service stores an upload whole or not at all: it commits only on the commit
//! message that ends the stream, and discards everything when the stream fails or ends without
//! it. The caller's own stream must end with its commit too, which the gateway checks against
//! the bytes it forwarded and passes on. So the outbound stream must
//! carry a commit only when the caller's did. When the caller's stream breaks off, ends without
//! its commit, crosses the size cap, passes the deadline, or breaks the protocol (a second
//! metadata message, an empty message), the outbound stream reports the cause to the handler
//! and then sends one message without a part, which `CreateTrack` refuses at once, discarding
//! what it staged.
//!
//! Why the commit? tonic's server-side `Streaming` reports a cancelled call (RST_STREAM CANCEL)
//! as a clean end of the stream (tonic 0.14 `codec/decode.rs`), so neither the gateway nor
//! tracks can tell a finished upload from an abandoned one by how the stream ends. The handler
//! still runs the upstream call as a task of its own, so that a caller going away (hyper drops
//! the handler) ends the upload with the explicit refusal rather than a cancel.

use futures::{Stream, StreamExt, stream};
use protos::{
    creator::v1::{UploadTrackRequest, upload_track_request},
    foundation::tracks::v1::{
        CreateTrackRequest, TrackMetadata, UploadCommit, create_track_request,
    },
};
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout_at};
use tonic::{Status, Streaming};

use crate::GatewayError;

struct Forward {
    inbound: Streaming<UploadTrackRequest>,
    received: u64,
    /// Whether the caller's commit went out: the stream ends after it.
    committed: bool,
    max_bytes: u64,
    abort: Option<oneshot::Sender<GatewayError>>,
    deadline: Instant,
}

/// The messages of `CreateTrack`: the metadata, then the caller's chunks as they arrive.
/// The returned receiver gets the reason when the upload must not be stored.
pub(crate) fn outbound(
    metadata: TrackMetadata,
    inbound: Streaming<UploadTrackRequest>,
    max_bytes: u64,
    deadline: Instant,
) -> (
    impl Stream<Item = CreateTrackRequest> + Send + 'static,
    oneshot::Receiver<GatewayError>,
) {
    let (abort, aborted) = oneshot::channel();
    let first = CreateTrackRequest {
        part: Some(create_track_request::Part::Metadata(metadata)),
    };
    let state = Forward {
        inbound,
        received: 0,
        committed: false,
        max_bytes,
        abort: Some(abort),
        deadline,
    };
    let chunks = stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        match next_chunk(&mut state).await {
            Ok(Some(chunk)) => Some((chunk, Some(state))),
            Ok(None) => None,
            Err(error) => {
                if let Some(abort) = state.abort.take() {
                    // The handler may be gone (the caller left); the poison message still goes.
                    drop(abort.send(error));
                }
                // A message without a part: `CreateTrack` refuses it and stores nothing.
                Some((CreateTrackRequest { part: None }, None))
            }
        }
    });
    (stream::iter([first]).chain(chunks), aborted)
}

async fn next_chunk(state: &mut Forward) -> Result<Option<CreateTrackRequest>, GatewayError> {
    if state.committed {
        return Ok(None);
    }
    loop {
        let message = timeout_at(state.deadline, state.inbound.message())
            .await
            .map_err(|_| {
                GatewayError::UploadAborted(Status::deadline_exceeded(
                    "the upload did not finish in time",
                ))
            })?
            .map_err(GatewayError::UploadAborted)?;
        // A cancelled call also ends cleanly here; only the commit says the upload is whole.
        let Some(message) = message else {
            return Err(GatewayError::invalid(
                "commit",
                "the upload ended without its commit message; nothing was stored",
            ));
        };
        let chunk = match message.part {
            Some(upload_track_request::Part::AudioChunk(chunk)) => chunk,
            Some(upload_track_request::Part::Commit(commit)) => {
                if commit.size_bytes != state.received {
                    return Err(GatewayError::invalid(
                        "commit.size_bytes",
                        format!(
                            "is {} but {} bytes arrived",
                            commit.size_bytes, state.received
                        ),
                    ));
                }
                state.committed = true;
                // Tracks checks the SHA-256 against what it stored.
                return Ok(Some(CreateTrackRequest {
                    part: Some(create_track_request::Part::Commit(UploadCommit {
                        size_bytes: commit.size_bytes,
                        sha256: commit.sha256,
                    })),
                }));
            }
            Some(upload_track_request::Part::Metadata(_)) => {
                return Err(GatewayError::invalid(
                    "metadata",
                    "only the first message may carry metadata",
                ));
            }
            None => {
                return Err(GatewayError::invalid(
                    "part",
                    "every message must carry metadata, an audio chunk or the commit",
                ));
            }
        };
        if chunk.is_empty() {
            continue;
        }
        state.received = state.received.saturating_add(chunk.len() as u64);
        if state.received > state.max_bytes {
            return Err(GatewayError::AudioTooLarge {
                limit: state.max_bytes,
            });
        }
        return Ok(Some(CreateTrackRequest {
            part: Some(create_track_request::Part::AudioChunk(chunk)),
        }));
    }
}
