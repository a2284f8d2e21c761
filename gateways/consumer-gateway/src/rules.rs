//! The consumer's visibility rules, built from the shared policy primitives: a track is
//! visible iff (public, or the viewer owns it, or the request carries its secret token) and its
//! geoblocking allows the viewer's territory; the owner always sees their own track.

use authorization::{
    Principal,
    policy::{self, Geoblocking, Hidden, TrackAccess},
};
use protos::foundation::tracks::v1::{GeoblockingMode, Track, Visibility};

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
    let geoblocking = match mode {
        GeoblockingMode::AllowList => Geoblocking::AllowList(territories),
        GeoblockingMode::BlockList => Geoblocking::BlockList(territories),
        GeoblockingMode::None | GeoblockingMode::Unspecified => Geoblocking::None,
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
