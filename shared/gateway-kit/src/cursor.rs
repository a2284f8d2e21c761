//! The page tokens a gateway hands out. A foundation's page token names the last row it read
//! (for likes, the time and the track id of a like), and that row may be one the caller may not
//! see: a private, geoblocked or deleted track. So a gateway never passes a foundation's token
//! through. It seals it instead: ChaCha20-Poly1305 under the gateway's `[cursors] key`, with
//! the RPC, the caller and the query as associated data. The caller learns nothing from the
//! token, cannot change it, and cannot use it for another caller, another query or another
//! RPC: each of those is `INVALID_ARGUMENT`, like a token that was never issued.
//!
//! A token is `v1.` followed by the hex of a random 96-bit nonce and the ciphertext with its
//! tag. An empty token stays empty both ways: the first page in, the end
//! out.

use std::fmt;

use ring::{
    aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    rand::{SecureRandom, SystemRandom},
};
use serde::{Deserialize, Serialize};

const VERSION: &str = "v1.";
/// Longer tokens are refused before any work: a foundation's token is far shorter.
const MAX_TOKEN_LEN: usize = 1024;

/// `[cursors]`: the key page tokens are sealed with.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CursorSettings {
    /// 32 bytes as 64 hex digits. Empty: a random key drawn at start-up, so tokens do not
    /// survive a restart and one replica cannot read another's; replicas behind one balancer
    /// must share a configured key.
    pub key: String,
}

impl fmt::Debug for CursorSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = if self.key.is_empty() {
            "<random>"
        } else {
            "<redacted>"
        };
        f.debug_struct("CursorSettings").field("key", &key).finish()
    }
}

/// The settings' key is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cursors.key: must be 64 hex digits (32 bytes)")]
pub struct BadCursorKey;

/// A page token that this gateway did not issue for this caller, query and RPC, or that was
/// changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("is not a token this service issued for this request")]
pub struct ForeignCursor;

/// What a page token is bound to: the RPC, the caller (a user id, or the territory of an
/// anonymous caller) and the query's own fields (the listed user, say). A token opens only
/// under the scope it was sealed under.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub rpc: &'a str,
    pub caller: &'a str,
    pub territory: &'a str,
    pub query: &'a [&'a str],
}

impl Scope<'_> {
    /// Each part with its length first, so that no two scopes encode alike.
    fn associated_data(&self) -> Vec<u8> {
        let mut data = Vec::with_capacity(64);
        for part in [self.rpc, self.caller, self.territory]
            .iter()
            .chain(self.query)
        {
            data.extend_from_slice(&(part.len() as u32).to_be_bytes());
            data.extend_from_slice(part.as_bytes());
        }
        data
    }
}

/// Seals and opens page tokens under one key.
pub struct Cursors {
    key: LessSafeKey,
    random: SystemRandom,
}

impl fmt::Debug for Cursors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cursors")
    }
}

impl Cursors {
    /// The sealer of `settings`' key, or of a random one when it is empty.
    pub fn new(settings: &CursorSettings) -> Result<Self, BadCursorKey> {
        let random = SystemRandom::new();
        let mut bytes = [0u8; 32];
        if settings.key.is_empty() {
            random.fill(&mut bytes).map_err(|_| BadCursorKey)?;
        } else {
            hex::decode_to_slice(settings.key.trim(), &mut bytes).map_err(|_| BadCursorKey)?;
        }
        let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes).map_err(|_| BadCursorKey)?;
        Ok(Self {
            key: LessSafeKey::new(key),
            random,
        })
    }

    /// The gateway's token for a foundation's `inner` token, under `scope`.
    pub fn seal(&self, scope: &Scope<'_>, inner: &str) -> String {
        if inner.is_empty() {
            return String::new();
        }
        let mut nonce = [0u8; NONCE_LEN];
        // The OS generator does not fail once it has answered at start-up (`new`); should it,
        // the token is dropped and the caller sees the end of the list rather than a token
        // sealed under a reused nonce.
        if self.random.fill(&mut nonce).is_err() {
            tracing::error!("the OS random generator failed; a page token was not issued");
            return String::new();
        }
        let mut sealed = inner.as_bytes().to_vec();
        if self
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(scope.associated_data()),
                &mut sealed,
            )
            .is_err()
        {
            tracing::error!("a page token could not be sealed");
            return String::new();
        }
        let mut token = nonce.to_vec();
        token.append(&mut sealed);
        format!("{VERSION}{}", hex::encode(token))
    }

    /// The foundation's token inside `token`, when this gateway sealed it under `scope`.
    pub fn open(&self, scope: &Scope<'_>, token: &str) -> Result<String, ForeignCursor> {
        if token.is_empty() {
            return Ok(String::new());
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(ForeignCursor);
        }
        let body = token.strip_prefix(VERSION).ok_or(ForeignCursor)?;
        let mut bytes = hex::decode(body).map_err(|_| ForeignCursor)?;
        if bytes.len() < NONCE_LEN {
            return Err(ForeignCursor);
        }
        let mut sealed = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| ForeignCursor)?;
        let inner = self
            .key
            .open_in_place(nonce, Aad::from(scope.associated_data()), &mut sealed)
            .map_err(|_| ForeignCursor)?;
        let inner = std::str::from_utf8(inner).map_err(|_| ForeignCursor)?;
        if inner.is_empty() {
            return Err(ForeignCursor);
        }
        Ok(inner.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCOPE: Scope<'static> = Scope {
        rpc: "consumer.v1.ConsumerGateway/ListLikedTracks",
        caller: "usr_0001",
        territory: "US",
        query: &["usr_0002"],
    };

    fn cursors() -> Cursors {
        Cursors::new(&CursorSettings::default()).unwrap()
    }

    #[test]
    fn a_token_opens_under_its_own_scope_and_reveals_nothing() {
        let cursors = cursors();
        let inner = "313732303030303030307c74726b5f686964";
        let token = cursors.seal(&SCOPE, inner);
        assert!(token.starts_with("v1."));
        assert!(!token.contains(inner));
        assert_eq!(cursors.open(&SCOPE, &token).unwrap(), inner);
        // Two seals of one token differ: a token says nothing about another.
        assert_ne!(cursors.seal(&SCOPE, inner), token);
    }

    #[test]
    fn a_token_for_another_scope_key_or_changed_is_foreign() {
        let cursors = cursors();
        let token = cursors.seal(&SCOPE, "abc");
        for scope in [
            Scope {
                caller: "usr_0003",
                ..SCOPE
            },
            Scope {
                territory: "DE",
                ..SCOPE
            },
            Scope {
                query: &["usr_0003"],
                ..SCOPE
            },
            Scope {
                rpc: "creator.v1.CreatorGateway/ListMyTracks",
                ..SCOPE
            },
            // Parts are length-prefixed: moving a boundary changes the scope.
            Scope {
                caller: "usr_0001U",
                territory: "S",
                ..SCOPE
            },
        ] {
            assert_eq!(
                cursors.open(&scope, &token),
                Err(ForeignCursor),
                "{scope:?}"
            );
        }
        assert_eq!(
            Cursors::new(&CursorSettings::default())
                .unwrap()
                .open(&SCOPE, &token),
            Err(ForeignCursor)
        );
        let mut bytes = token.clone().into_bytes();
        let last = bytes.len() - 1;
        bytes[last] = if bytes[last] == b'a' { b'b' } else { b'a' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(cursors.open(&SCOPE, &tampered), Err(ForeignCursor));
        for junk in [
            "abc",
            "v1.",
            "v1.zz",
            "v1.00",
            "v2.0000",
            &"v1.aa".repeat(400),
        ] {
            assert_eq!(cursors.open(&SCOPE, junk), Err(ForeignCursor), "{junk}");
        }
    }

    #[test]
    fn empty_stays_empty_and_configured_keys_are_shared() {
        let settings = CursorSettings {
            key: "11".repeat(32),
        };
        let (a, b) = (
            Cursors::new(&settings).unwrap(),
            Cursors::new(&settings).unwrap(),
        );
        assert_eq!(a.seal(&SCOPE, ""), "");
        assert_eq!(a.open(&SCOPE, "").unwrap(), "");
        assert_eq!(b.open(&SCOPE, &a.seal(&SCOPE, "abc")).unwrap(), "abc");
        for key in ["11", "zz".repeat(32).as_str()] {
            let settings = CursorSettings { key: key.into() };
            assert_eq!(Cursors::new(&settings).unwrap_err(), BadCursorKey);
        }
    }
}
