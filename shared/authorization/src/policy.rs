//! Access-policy primitives: pure functions, exhaustively tested, from which each gateway
//! builds its own rules.

/// A track's geoblocking policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Geoblocking<'a> {
    /// Playable everywhere.
    None,
    /// Playable only in these territories.
    AllowList(&'a [String]),
    /// Playable everywhere except these territories.
    BlockList(&'a [String]),
    /// A policy the reader cannot interpret (an unset or unknown mode): playable nowhere, so
    /// that a policy the gateway does not understand hides the track rather than exposing it.
    Unknown,
}

/// Whether the policy lets a listener in `territory` play the track.
pub fn geo_allows(policy: Geoblocking<'_>, territory: &str) -> bool {
    match policy {
        Geoblocking::None => true,
        Geoblocking::AllowList(list) => list.iter().any(|t| t == territory),
        Geoblocking::BlockList(list) => !list.iter().any(|t| t == territory),
        Geoblocking::Unknown => false,
    }
}

/// What the visibility rules need to know about a track.
#[derive(Debug, Clone, Copy)]
pub struct TrackAccess<'a> {
    pub owner_id: &'a str,
    pub public: bool,
    /// Empty when the track has none.
    pub secret_token: &'a str,
    pub geoblocking: Geoblocking<'a>,
}

/// Why a track is hidden from a viewer. Callers answer every reason alike (as not found); the
/// reason is for the audit log and metrics only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hidden {
    Private,
    Geoblocked,
}

impl Hidden {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Private => "private",
            Self::Geoblocked => "geoblocked",
        }
    }
}

/// Compares secrets in time that does not depend on their contents (`subtle`, whose
/// comparison the optimizer cannot turn into an early exit); only the length may show, and
/// every secret token has the same length. An unset secret never matches.
pub fn secrets_match(expected: &str, presented: &str) -> bool {
    use subtle::ConstantTimeEq;
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

/// A track is visible to a viewer iff (it is public, or the viewer owns it, or the request
/// carries its secret token) and its geoblocking allows the viewer's territory; the owner
/// always sees their own track.
pub fn visibility(
    track: &TrackAccess<'_>,
    viewer: Option<&str>,
    territory: &str,
    presented_token: Option<&str>,
) -> Result<(), Hidden> {
    if viewer.is_some_and(|viewer| viewer == track.owner_id) {
        return Ok(());
    }
    let unlocked = track.public
        || presented_token.is_some_and(|token| secrets_match(track.secret_token, token));
    if !unlocked {
        return Err(Hidden::Private);
    }
    if !geo_allows(track.geoblocking, territory) {
        return Err(Hidden::Geoblocked);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(codes: &[&str]) -> Vec<String> {
        codes.iter().map(|c| (*c).to_owned()).collect()
    }

    #[test]
    fn geoblocking_allows_exactly_what_its_list_says() {
        let us_ca = list(&["CA", "US"]);
        assert!(geo_allows(Geoblocking::None, "DE"));
        assert!(geo_allows(Geoblocking::AllowList(&us_ca), "US"));
        assert!(!geo_allows(Geoblocking::AllowList(&us_ca), "DE"));
        assert!(!geo_allows(Geoblocking::AllowList(&[]), "US"));
        assert!(
            !geo_allows(Geoblocking::Unknown, "US"),
            "an unknown policy fails closed"
        );
        assert!(!geo_allows(Geoblocking::BlockList(&us_ca), "CA"));
        assert!(geo_allows(Geoblocking::BlockList(&us_ca), "DE"));
        assert!(geo_allows(Geoblocking::BlockList(&[]), "DE"));
        assert!(
            !geo_allows(Geoblocking::AllowList(&us_ca), "us"),
            "codes are upper case"
        );
    }

    #[test]
    fn secrets_match_only_when_equal_and_set() {
        assert!(secrets_match("sec_abc", "sec_abc"));
        assert!(!secrets_match("sec_abc", "sec_abd"));
        assert!(!secrets_match("sec_abc", "sec_ab"));
        assert!(!secrets_match("", ""), "an unset secret never matches");
    }

    /// Every combination of visibility, ownership, token and geoblocking.
    #[test]
    fn visibility_matrix() {
        let allow = list(&["US"]);
        let block = list(&["US"]);
        let geos = [
            ("none", Geoblocking::None),
            ("allow US", Geoblocking::AllowList(&allow)),
            ("block US", Geoblocking::BlockList(&block)),
        ];
        for public in [true, false] {
            for (geo_name, geo) in geos {
                for viewer in [None, Some("usr_owner"), Some("usr_other")] {
                    for token in [None, Some("sec_right"), Some("sec_wrong")] {
                        for territory in ["US", "DE"] {
                            let track = TrackAccess {
                                owner_id: "usr_owner",
                                public,
                                secret_token: if public { "" } else { "sec_right" },
                                geoblocking: geo,
                            };
                            let owner = viewer == Some("usr_owner");
                            let unlocked = public || token == Some("sec_right");
                            let geo_ok = geo_allows(geo, territory);
                            let expected = if owner {
                                Ok(())
                            } else if !unlocked {
                                Err(Hidden::Private)
                            } else if !geo_ok {
                                Err(Hidden::Geoblocked)
                            } else {
                                Ok(())
                            };
                            assert_eq!(
                                visibility(&track, viewer, territory, token),
                                expected,
                                "public={public} geo={geo_name} viewer={viewer:?} token={token:?} territory={territory}"
                            );
                        }
                    }
                }
            }
        }
        // Spot checks that pin the rules themselves, independently of the loop's formula.
        let track = TrackAccess {
            owner_id: "usr_owner",
            public: false,
            secret_token: "sec_right",
            geoblocking: Geoblocking::BlockList(&block),
        };
        assert_eq!(visibility(&track, Some("usr_owner"), "US", None), Ok(()));
        assert_eq!(visibility(&track, None, "DE", Some("sec_right")), Ok(()));
        assert_eq!(
            visibility(&track, None, "US", Some("sec_right")),
            Err(Hidden::Geoblocked)
        );
        assert_eq!(visibility(&track, None, "DE", None), Err(Hidden::Private));
    }
}
