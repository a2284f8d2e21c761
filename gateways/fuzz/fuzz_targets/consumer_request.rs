//! Arbitrary bytes as the consumer gateway's query requests (`GetTrackRequest`,
//! `BatchGetTracksRequest`, `ListLikedTracksRequest`): the request decoded, its read mask
//! parsed against `consumer.v1.Track` by `TrackView::mask`, and the view of a fuzz-derived
//! foundation track authorized by `consumer_gateway::visible` and built and trimmed by
//! `TrackView::view_of`, the functions the gateway's query path uses.
//!
//! Input: `[kind, flags, failed, len_lo, len_hi, request (len bytes), track (the rest)]`; the
//! track is a `foundation.tracks.v1.Track` in protobuf, or a fixed one when the rest does not
//! decode. Checks: nothing panics; a bad mask is `INVALID_ARGUMENT`; visibility agrees with a
//! model written here; a trimmed view holds only masked fields and every masked one; an
//! anonymous caller never gets the viewer's relations; data of a failed source is never filled.

#![no_main]

mod common;

use std::sync::LazyLock;

use authorization::Principal;
use consumer_gateway::{Data, Src, TrackView};
use field_mask::{IdMap, Mask};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use prost_reflect::MessageDescriptor;
use protos::{
    consumer::v1 as consumer,
    foundation::{
        counts::v1::{TrackCounts, UserCounts},
        likes::v1::Reaction,
        tracks::v1 as tracks,
    },
};

static VIEW: LazyLock<TrackView> =
    LazyLock::new(|| TrackView::new().expect("the consumer view builds"));
static DESCRIPTOR: LazyLock<MessageDescriptor> =
    LazyLock::new(|| common::descriptor(protos::descriptors::CONSUMER, "consumer.v1.Track"));

/// The track used when the input's tail is not one.
fn fixed_track() -> tracks::Track {
    tracks::Track {
        id: "trk_00001".into(),
        owner_id: "usr_0001".into(),
        title: "Fixed".into(),
        description: "A fixed track".into(),
        genre: "ambient".into(),
        duration: Some(prost_types::Duration {
            seconds: 180,
            nanos: 0,
        }),
        artwork_url: "https://example.test/a.png".into(),
        create_time: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        }),
        update_time: None,
        visibility: tracks::Visibility::Private as i32,
        secret_token: "sec_0123456789abcdef".into(),
        geoblocking: Some(tracks::Geoblocking {
            mode: tracks::GeoblockingMode::AllowList as i32,
            territories: vec!["US".into(), "CA".into()],
        }),
        downloadable: true,
        audio: None,
    }
}

/// The visibility rule of DESIGN §4, independently of the gateway's.
fn model_visible(
    track: &tracks::Track,
    user: Option<&str>,
    territory: &str,
    token: Option<&str>,
) -> bool {
    if user.is_some_and(|user| user == track.owner_id) {
        return true;
    }
    let public = track.visibility == tracks::Visibility::Public as i32;
    let unlocked = public
        || token.is_some_and(|token| !track.secret_token.is_empty() && token == track.secret_token);
    // No policy: playable everywhere. A policy with an unset or unknown mode: nowhere.
    let allowed = match &track.geoblocking {
        None => true,
        Some(geo) => {
            let listed = geo.territories.iter().any(|t| t == territory);
            if geo.mode == tracks::GeoblockingMode::AllowList as i32 {
                listed
            } else if geo.mode == tracks::GeoblockingMode::BlockList as i32 {
                !listed
            } else {
                geo.mode == tracks::GeoblockingMode::None as i32
            }
        }
    };
    unlocked && allowed
}

/// The requested paths, or `None` for the whole view (unset, empty, or with `*`).
fn requested(mask: &Option<prost_types::FieldMask>) -> Option<Vec<String>> {
    let paths = &mask.as_ref()?.paths;
    (!paths.is_empty() && !paths.iter().any(|p| p == "*")).then(|| paths.clone())
}

const SOURCES: [Src; 5] = [
    Src::Tracks,
    Src::Reactions,
    Src::TrackCounts,
    Src::Following,
    Src::UserCounts,
];

fuzz_target!(|data: &[u8]| {
    let [kind, flags, failed, len_lo, len_hi, rest @ ..] = data else {
        return;
    };
    let len = usize::from(u16::from_le_bytes([*len_lo, *len_hi])).min(rest.len());
    let (request, track_bytes) = rest.split_at(len);

    let (read_mask, secret_token) = match kind % 3 {
        0 => match consumer::GetTrackRequest::decode(request) {
            Ok(r) => (r.read_mask, r.secret_token),
            Err(_) => return,
        },
        1 => match consumer::BatchGetTracksRequest::decode(request) {
            Ok(r) => (r.read_mask, None),
            Err(_) => return,
        },
        _ => match consumer::ListLikedTracksRequest::decode(request) {
            Ok(r) => (r.read_mask, None),
            Err(_) => return,
        },
    };
    let raw = requested(&read_mask);
    let mask: Mask = match VIEW.mask(read_mask) {
        Ok(mask) => mask,
        Err(error) => {
            let status = tonic::Status::from(error);
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
            assert!(!status.message().is_empty());
            return;
        }
    };
    if raw.is_none() {
        assert!(
            mask.is_all(),
            "an unset, empty or `*` mask is the whole view"
        );
    }

    let track = tracks::Track::decode(track_bytes).unwrap_or_else(|_| fixed_track());
    let signed_in = flags & 1 != 0;
    let user = match (signed_in, flags & 2 != 0 && !track.owner_id.is_empty()) {
        (false, _) => None,
        (true, true) => Some(track.owner_id.clone()),
        (true, false) => Some("usr_fuzz".to_owned()),
    };
    let territory = match (flags >> 2) % 4 {
        0 => "US".to_owned(),
        1 => "DE".to_owned(),
        2 => "FR".to_owned(),
        _ => track
            .geoblocking
            .as_ref()
            .and_then(|geo| geo.territories.first().cloned())
            .unwrap_or_else(|| "GB".to_owned()),
    };
    // Present the track's own token, the request's, or none.
    let token = match (flags >> 4) % 3 {
        0 => None,
        1 => Some(track.secret_token.clone()),
        _ => secret_token,
    };
    let principal = Principal {
        user_id: user.clone(),
        territory: territory.clone(),
        client: None,
    };
    let visible = consumer_gateway::visible(&track, &principal, token.as_deref()).is_ok();
    assert_eq!(
        visible,
        model_visible(&track, user.as_deref(), &territory, token.as_deref()),
        "visibility of {track:?} for {principal:?} with {token:?}"
    );
    if !visible {
        return;
    }

    let available = |source: Src| {
        let bit = SOURCES.iter().position(|s| *s == source).unwrap_or(0);
        failed & (1 << bit) == 0
    };
    let reactions = IdMap::from_iter([(
        track.id.clone(),
        Reaction {
            track_id: track.id.clone(),
            liked: flags & 0x40 != 0,
            reposted: flags & 0x80 != 0,
        },
    )]);
    let track_counts = IdMap::from_iter([(
        track.id.clone(),
        TrackCounts {
            track_id: track.id.clone(),
            likes_count: u64::from(*len_lo),
            reposts_count: u64::from(*len_hi),
            ..Default::default()
        },
    )]);
    let following = IdMap::from_iter([(track.owner_id.clone(), failed & 0x80 != 0)]);
    let user_counts = IdMap::from_iter([(
        track.owner_id.clone(),
        UserCounts {
            user_id: track.owner_id.clone(),
            followers_count: u64::from(*kind),
            ..Default::default()
        },
    )]);
    let data = Data {
        planned: available,
        signed_in: user.is_some(),
        reactions: &reactions,
        track_counts: &track_counts,
        following: &following,
        user_counts: &user_counts,
    };
    let whole = VIEW
        .view_of(&data, &track, &Mask::all())
        .expect("the whole view builds");
    let trimmed = VIEW
        .view_of(&data, &track, &mask)
        .expect("a valid mask trims the view");
    common::check_trimmed(&DESCRIPTOR, raw.as_deref(), &whole, &trimmed);

    // The viewer's relations are the signed-in caller's alone.
    if user.is_none() {
        assert!(
            whole.viewer.is_none(),
            "an anonymous caller got viewer fields"
        );
        assert!(
            whole
                .creator
                .as_ref()
                .and_then(|c| c.followed_by_viewer)
                .is_none(),
            "an anonymous caller got creator.followed_by_viewer"
        );
    }
    // A source whose data is not there fills nothing.
    let creator = whole.creator.clone().unwrap_or_default();
    let stats = whole.stats.unwrap_or_default();
    let viewer = whole.viewer.unwrap_or_default();
    if !available(Src::Reactions) {
        assert!(viewer.liked.is_none() && viewer.reposted.is_none());
    }
    if !available(Src::TrackCounts) {
        assert!(stats.likes_count.is_none() && stats.reposts_count.is_none());
    }
    if !available(Src::Following) {
        assert!(creator.followed_by_viewer.is_none());
    }
    if !available(Src::UserCounts) {
        assert!(creator.followers_count.is_none());
    }
    assert_eq!(whole.id, track.id);
    assert_eq!(creator.id, track.owner_id);
});
