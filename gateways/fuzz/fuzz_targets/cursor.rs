//! Arbitrary bytes as a gateway's page token and the scope it is presented under
//! (`gateway_kit::Cursors`, the page tokens of ListLikedTracks and ListMyTracks).
//!
//! Input: `[split, scope bytes (split), token (the rest)]`. Checks: opening never panics; a
//! token that opens yields a non-empty inner token; a token sealed under the scope opens to what
//! was sealed, and under any other scope, or changed in any byte, it does not open.

#![no_main]

use std::sync::LazyLock;

use gateway_kit::{CursorSettings, Cursors, Scope};
use libfuzzer_sys::fuzz_target;

static CURSORS: LazyLock<Cursors> =
    LazyLock::new(|| Cursors::new(&CursorSettings::default()).expect("a random key"));

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let (scope_bytes, token) = rest.split_at((split as usize).min(rest.len()));
    let scope_text = String::from_utf8_lossy(scope_bytes);
    let mut parts = scope_text.splitn(3, '|');
    let caller = parts.next().unwrap_or_default();
    let territory = parts.next().unwrap_or_default();
    let user = parts.next().unwrap_or_default();
    let query = [user];
    let scope = Scope {
        rpc: "consumer.v1.ConsumerGateway/ListLikedTracks",
        caller,
        territory,
        query: &query,
    };
    let token = String::from_utf8_lossy(token);

    if let Ok(inner) = CURSORS.open(&scope, &token) {
        assert!(!inner.is_empty() || token.is_empty());
    }
    if token.is_empty() {
        return;
    }
    let sealed = CURSORS.seal(&scope, &token);
    assert_eq!(CURSORS.open(&scope, &sealed).as_deref(), Ok(token.as_ref()));
    let other_query = [caller];
    let other = Scope {
        caller: user,
        query: &other_query,
        ..scope
    };
    if caller != user {
        assert!(CURSORS.open(&other, &sealed).is_err());
    }
    let flip = split as usize % sealed.len();
    let mut changed = sealed.clone().into_bytes();
    changed[flip] = if changed[flip] == b'0' { b'1' } else { b'0' };
    if let Ok(changed) = String::from_utf8(changed)
        && changed != sealed
    {
        assert!(CURSORS.open(&scope, &changed).is_err());
    }
});
