//! The consumer's visibility rules, built from the shared policy primitives: a track is
//! visible iff (public, or the viewer owns it, or the request carries its secret token) and its
//! geoblocking allows the viewer's territory; the owner always sees their own track. A
//! geoblocking policy with an unset or unknown mode hides the track (fails closed).
//!
//! [`authorize`] is the one authorization step of every query and every command.

use authorization::{
    Principal,
    policy::{self, Geoblocking, Hidden, TrackAccess},
};
use field_mask::IdMap;
use gateway_kit::Audit;
use protos::foundation::tracks::v1::{GeoblockingMode, Track, Visibility};

/// The tracks `principal` may see among `tracks`, presenting `secret_token` if any, by id;
/// each hidden one is audited with its reason and left out, so that it reads as missing.
pub(crate) fn authorize(
    tracks: Vec<Track>,
    principal: &Principal,
    secret_token: Option<&str>,
    audit: &Audit,
) -> IdMap<String, Track> {
    let mut visible_tracks = IdMap::with_capacity_and_hasher(tracks.len(), Default::default());
    for track in tracks {
        match visible(&track, principal, secret_token) {
            Ok(()) => {
                visible_tracks.insert(track.id.clone(), track);
            }
            Err(hidden) => audit.track_withheld(&track.id, principal.user(), hidden.as_str()),
        }
    }
    visible_tracks
}

/// Whether `principal` may see `track`, presenting `secret_token` if any.
pub fn visible(
    track: &Track,
    principal: &Principal,
    secret_token: Option<&str>,
) -> Result<(), Hidden> {
    let territories = track
        .geoblocking
        .as_ref()
        .map(|geo| geo.territories.as_slice())
        .unwrap_or_default();
    let mode = track
        .geoblocking
        .as_ref()
        .map_or(GeoblockingMode::None, |geo| geo.mode());
    // A track without a policy is playable everywhere; a policy whose mode is unset or unknown
    // (prost reads an unknown value as UNSPECIFIED) fails closed.
    let geoblocking = match mode {
        GeoblockingMode::AllowList => Geoblocking::AllowList(territories),
        GeoblockingMode::BlockList => Geoblocking::BlockList(territories),
        GeoblockingMode::None => Geoblocking::None,
        GeoblockingMode::Unspecified => Geoblocking::Unknown,
    };
    let access = TrackAccess {
        owner_id: &track.owner_id,
        public: track.visibility() == Visibility::Public,
        secret_token: &track.secret_token,
        geoblocking,
    };
    policy::visibility(
        &access,
        principal.user(),
        &principal.territory,
        secret_token,
    )
}

#[cfg(test)]
mod tests {
    use protos::foundation::tracks::v1::Geoblocking as Policy;

    use super::*;

    fn track(geoblocking: Option<Policy>) -> Track {
        Track {
            id: "trk_1".into(),
            owner_id: "usr_owner".into(),
            visibility: Visibility::Public as i32,
            geoblocking,
            ..Track::default()
        }
    }

    #[test]
    fn an_unset_or_unknown_geoblocking_mode_hides_the_track_from_everyone_but_its_owner() {
        let listener = Principal {
            user_id: Some("usr_listener".into()),
            territory: "US".into(),
            client: None,
        };
        let owner = Principal {
            user_id: Some("usr_owner".into()),
            territory: "US".into(),
            client: None,
        };
        assert_eq!(visible(&track(None), &listener, None), Ok(()), "no policy");
        let none = Policy {
            mode: GeoblockingMode::None as i32,
            territories: Vec::new(),
        };
        assert_eq!(visible(&track(Some(none)), &listener, None), Ok(()));
        for mode in [GeoblockingMode::Unspecified as i32, 42] {
            let policy = Policy {
                mode,
                territories: Vec::new(),
            };
            assert_eq!(
                visible(&track(Some(policy.clone())), &listener, None),
                Err(Hidden::Geoblocked),
                "mode {mode}"
            );
            assert_eq!(visible(&track(Some(policy)), &owner, None), Ok(()));
        }
    }
}
