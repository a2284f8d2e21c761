//! Arbitrary bytes as the creator gateway's requests: `UpdateTrackRequest`, whose update mask
//! goes through `update::tracks_paths` (the AIP-134 check the gateway runs), and
//! `GetTrackRequest` / `ListMyTracksRequest`, whose read mask is parsed by
//! `CreatorView::parse` and applied to the owner's view of a fuzz-derived track
//! (`view::to_view`, then the view schema's trim, as the gateway does).
//!
//! Input: `[kind, len_lo, len_hi, request (len bytes), track (the rest)]`. Checks: nothing
//! panics; an update mask is accepted only when it is not empty and names no output-only and
//! no unknown path, and maps only to writable tracks paths; a trimmed view holds only masked
//! fields and every masked one.

#![no_main]

mod common;

use std::sync::LazyLock;

use creator_gateway::{update, view};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use prost_reflect::MessageDescriptor;
use protos::{
    creator::v1 as creator,
    foundation::{counts::v1::TrackCounts, tracks::v1 as tracks},
};

static VIEW: LazyLock<view::CreatorView> =
    LazyLock::new(|| view::CreatorView::load().expect("the creator view builds"));
static DESCRIPTOR: LazyLock<MessageDescriptor> =
    LazyLock::new(|| common::descriptor(protos::descriptors::CREATOR, "creator.v1.Track"));

/// The view's output-only fields (README, "The creator gateway").
const OUTPUT_ONLY: [&str; 6] = [
    "id",
    "created_at",
    "updated_at",
    "stats",
    "secret_token",
    "audio",
];
/// The tracks service's `TrackMetadata` paths an update may name.
const WRITABLE: [&str; 10] = [
    "title",
    "description",
    "genre",
    "duration",
    "artwork_url",
    "visibility",
    "geoblocking",
    "geoblocking.mode",
    "geoblocking.territories",
    "downloadable",
];

fn within(path: &str, field: &str) -> bool {
    path.strip_prefix(field)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

fn check_update(request: creator::UpdateTrackRequest) {
    let given = request
        .update_mask
        .as_ref()
        .map(|mask| mask.paths.clone())
        .unwrap_or_default();
    let result = update::tracks_paths(VIEW.schema(), request.update_mask);
    let output_only = given
        .iter()
        .find(|path| OUTPUT_ONLY.iter().any(|field| within(path, field)));
    let unknown = given
        .iter()
        .find(|path| *path != "*" && VIEW.schema().parse_paths([path.as_str()]).is_err());
    match result {
        Ok(paths) => {
            assert!(!given.is_empty(), "an empty update mask was accepted");
            assert!(
                output_only.is_none(),
                "output-only {output_only:?} accepted in {given:?}"
            );
            assert!(
                unknown.is_none(),
                "unknown {unknown:?} accepted in {given:?}"
            );
            assert!(!paths.is_empty());
            for path in &paths {
                assert!(WRITABLE.contains(&path.as_str()), "{path} is not writable");
            }
        }
        Err(error) => {
            let status = tonic::Status::from(error);
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
            assert!(status.message().starts_with("update_mask: "), "{status:?}");
        }
    }
}

fn check_read(read_mask: Option<prost_types::FieldMask>, track: tracks::Track, counts: bool) {
    let raw = read_mask.as_ref().and_then(|mask| {
        (!mask.paths.is_empty() && !mask.paths.iter().any(|p| p == "*")).then(|| mask.paths.clone())
    });
    let Ok(mask) = VIEW.parse(read_mask) else {
        return;
    };
    let counts = counts.then(|| TrackCounts {
        track_id: track.id.clone(),
        likes_count: 3,
        reposts_count: 2,
        downloads_count: 1,
    });
    let whole = view::to_view(track, counts.as_ref());
    let mut trimmed = whole.clone();
    VIEW.schema()
        .trim_prost(&mask, &mut trimmed)
        .expect("a valid mask trims the view");
    common::check_trimmed(&DESCRIPTOR, raw.as_deref(), &whole, &trimmed);
}

fuzz_target!(|data: &[u8]| {
    let [kind, len_lo, len_hi, rest @ ..] = data else {
        return;
    };
    let len = usize::from(u16::from_le_bytes([*len_lo, *len_hi])).min(rest.len());
    let (request, track_bytes) = rest.split_at(len);
    let track = tracks::Track::decode(track_bytes).unwrap_or_default();
    match kind % 3 {
        0 => {
            if let Ok(request) = creator::UpdateTrackRequest::decode(request) {
                check_update(request);
            }
        }
        1 => {
            if let Ok(request) = creator::GetTrackRequest::decode(request) {
                check_read(request.read_mask, track, kind & 0x80 != 0);
            }
        }
        _ => {
            if let Ok(request) = creator::ListMyTracksRequest::decode(request) {
                check_read(request.read_mask, track, kind & 0x80 != 0);
            }
        }
    }
});
