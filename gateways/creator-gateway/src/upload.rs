//! `UploadTrack`: the caller's stream is forwarded to `tracks.CreateTrack` chunk by chunk, as
//! it arrives, so an upload's memory is one chunk (plus the HTTP/2 windows), never the file.
//!
//! The tracks service stores an upload whole or not at all: it commits only when the stream
//! ends cleanly, and discards everything when the stream fails. So the outbound stream must
//! never end cleanly unless the caller's did. When the caller's stream breaks off, crosses the
//! size cap, passes the deadline, or breaks the protocol (a second metadata message, an empty
//! message), the outbound stream reports the cause to the handler and then sends one message
//! without a part, which `CreateTrack` refuses, discarding what it staged, before it ends.
//!
//! Why not simply cancel the upstream call? A cancelled call reaches tracks as RST_STREAM
//! (CANCEL), and tonic's server-side `Streaming` reports a CANCEL reset as a clean end of the
//! stream (tonic 0.14 `codec/decode.rs`): tracks would commit a truncated upload. For the same
//! reason the handler runs the upstream call as a task of its own: if the caller goes away,
//! hyper drops the handler, and a dropped call would be cancelled that way.

use futures::{Stream, StreamExt, stream};
use protos::{
    creator::v1::{UploadTrackRequest, upload_track_request},
    foundation::tracks::v1::{CreateTrackRequest, TrackMetadata, create_track_request},
};
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout_at};
use tonic::{Status, Streaming};

use crate::GatewayError;

struct Forward {
    inbound: Streaming<UploadTrackRequest>,
    received: u64,
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
    loop {
        let message = timeout_at(state.deadline, state.inbound.message())
            .await
            .map_err(|_| {
                GatewayError::UploadAborted(Status::deadline_exceeded(
                    "the upload did not finish in time",
                ))
            })?
            .map_err(GatewayError::UploadAborted)?;
        let Some(message) = message else {
            return Ok(None);
        };
        let chunk = match message.part {
            Some(upload_track_request::Part::AudioChunk(chunk)) => chunk,
            Some(upload_track_request::Part::Metadata(_)) => {
                return Err(GatewayError::invalid(
                    "metadata",
                    "only the first message may carry metadata",
                ));
            }
            None => {
                return Err(GatewayError::invalid(
                    "part",
                    "every message must carry metadata or an audio chunk",
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
