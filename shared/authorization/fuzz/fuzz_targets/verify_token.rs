//! Arbitrary text and forged, confused and mutated tokens through `Verifier::verify`, for the
//! three pinned configurations a gateway can run with: HS256 with the development secret,
//! EdDSA and ES256 with the test public keys (`../tests/keys`).
//!
//! Checks: nothing panics; nothing unsigned (`alg: none`), signed with another key or
//! algorithm, or forged verifies; a genuinely signed token verifies with its own verifier only,
//! exactly when its claims are valid (a model written here), into the principal its claims
//! name; and a changed token never verifies into another principal.

#![no_main]

use std::sync::LazyLock;

use authorization::{
    AuthSettings, Principal, Verifier,
    token::{Claims, DEV_AUDIENCE, DEV_ISSUER, DEV_SECRET, TokenAlgorithm, mint, now_seconds},
};
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::{
    arbitrary::{Result, Unstructured},
    fuzz_target,
};

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/keys");
const ED_PRIVATE: &[u8] = include_bytes!("../../tests/keys/ed25519-private.pem");
const ES_PRIVATE: &[u8] = include_bytes!("../../tests/keys/es256-private.pem");
const ED_PUBLIC: &[u8] = include_bytes!("../../tests/keys/ed25519-public.pem");
const ES_PUBLIC: &[u8] = include_bytes!("../../tests/keys/es256-public.pem");

fn verifier(algorithm: TokenAlgorithm, key_file: &str) -> Verifier {
    let mut settings = AuthSettings::development();
    settings.algorithm = algorithm;
    if !key_file.is_empty() {
        settings.public_key_file = format!("{KEYS}/{key_file}");
    }
    Verifier::new(&settings).expect("the test keys load")
}

/// The three verifiers, in the order of [`ALGORITHMS`].
static VERIFIERS: LazyLock<[Verifier; 3]> = LazyLock::new(|| {
    [
        verifier(TokenAlgorithm::HS256, ""),
        verifier(TokenAlgorithm::EdDSA, "ed25519-public.pem"),
        verifier(TokenAlgorithm::ES256, "es256-public.pem"),
    ]
});
const ALGORITHMS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::EdDSA, Algorithm::ES256];

static SIGNING_KEYS: LazyLock<[EncodingKey; 3]> = LazyLock::new(|| {
    [
        EncodingKey::from_secret(DEV_SECRET.as_bytes()),
        EncodingKey::from_ed_pem(ED_PRIVATE).expect("the Ed25519 test key loads"),
        EncodingKey::from_ec_pem(ES_PRIVATE).expect("the P-256 test key loads"),
    ]
});

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Claims, valid or not, from the input.
fn claims(u: &mut Unstructured<'_>) -> Result<Claims> {
    let sub = match u.int_in_range(0..=3u8)? {
        0 => None,
        1 => Some("usr_0001".to_owned()),
        _ => Some(u.arbitrary::<String>()?),
    };
    let territory = match u.int_in_range(0..=2u8)? {
        0 => "US".to_owned(),
        _ => u.arbitrary::<String>()?,
    };
    let iss = if u.ratio(7, 8)? {
        DEV_ISSUER.to_owned()
    } else {
        u.arbitrary()?
    };
    let aud = if u.ratio(7, 8)? {
        DEV_AUDIENCE.to_owned()
    } else {
        u.arbitrary()?
    };
    // Far from now either way, so the clock never decides.
    let exp = if u.ratio(7, 8)? {
        now_seconds() + 3600
    } else {
        now_seconds().saturating_sub(3600)
    };
    Ok(Claims {
        sub,
        territory,
        iss,
        aud,
        exp,
        other: Default::default(),
    })
}

/// Whether a genuinely signed token with these claims must verify (DESIGN §4).
fn valid(claims: &Claims) -> bool {
    let territory =
        claims.territory.len() == 2 && claims.territory.bytes().all(|b| b.is_ascii_uppercase());
    let sub = claims.sub.as_ref().is_none_or(|sub| {
        (1..=64).contains(&sub.len())
            && sub
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    territory
        && sub
        && claims.iss == DEV_ISSUER
        && claims.aud == DEV_AUDIENCE
        && claims.exp > now_seconds()
}

fn refused_by_all(token: &str, what: &str) {
    for (verifier, algorithm) in VERIFIERS.iter().zip(ALGORITHMS) {
        let result = verifier.verify(token);
        assert!(
            result.is_err(),
            "{what} verified with {algorithm:?}: {token:?} -> {result:?}"
        );
    }
}

fn check_principal(principal: &Principal) {
    assert_eq!(principal.territory.len(), 2);
    assert!(principal.territory.bytes().all(|b| b.is_ascii_uppercase()));
    if let Some(user) = &principal.user_id {
        assert!((1..=64).contains(&user.len()));
        assert!(
            user.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        );
    }
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    match u.int_in_range(0..=3u8)? {
        // Any text at all.
        0 => {
            let text: &str = u.arbitrary()?;
            refused_by_all(text, "arbitrary text");
        }
        // A well-formed token with a made-up signature, or none, under any header.
        1 => {
            let claims = claims(u)?;
            let alg = match u.int_in_range(0..=7u8)? {
                0 => "none".to_owned(),
                1 => "HS256".to_owned(),
                2 => "EdDSA".to_owned(),
                3 => "ES256".to_owned(),
                4 => "RS256".to_owned(),
                5 => "HS512".to_owned(),
                6 => "NONE".to_owned(),
                _ => u.arbitrary()?,
            };
            let header = serde_json::json!({"alg": alg, "typ": "JWT"}).to_string();
            let payload = serde_json::to_string(&claims).expect("claims serialize");
            let signature: &[u8] = u.arbitrary()?;
            let token = format!(
                "{}.{}.{}",
                base64url(header.as_bytes()),
                base64url(payload.as_bytes()),
                base64url(signature)
            );
            refused_by_all(&token, "a forged signature");
            refused_by_all(
                &format!(
                    "{}.{}.",
                    base64url(header.as_bytes()),
                    base64url(payload.as_bytes())
                ),
                "an unsigned token",
            );
        }
        // Signed, but with a key or an algorithm the verifiers do not accept: HMAC over a
        // public key (algorithm confusion), or another secret.
        2 => {
            let claims = claims(u)?;
            let secret: Vec<u8> = match u.int_in_range(0..=2u8)? {
                0 => ED_PUBLIC.to_vec(),
                1 => ES_PUBLIC.to_vec(),
                _ => u.arbitrary()?,
            };
            if secret.is_empty() || secret == DEV_SECRET.as_bytes() {
                return Ok(());
            }
            let key = EncodingKey::from_secret(&secret);
            for algorithm in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
                refused_by_all(
                    &mint(&claims, algorithm, &key),
                    "a token signed with another secret",
                );
            }
        }
        // A genuinely signed token, then changed.
        _ => {
            let claims = claims(u)?;
            let signer = usize::from(u.int_in_range(0..=2u8)?);
            let token = mint(&claims, ALGORITHMS[signer], &SIGNING_KEYS[signer]);
            let mut expected = None;
            for (index, verifier) in VERIFIERS.iter().enumerate() {
                let result = verifier.verify(&token);
                if index != signer {
                    assert!(
                        result.is_err(),
                        "a {:?} token verified with {:?}",
                        ALGORITHMS[signer],
                        ALGORITHMS[index]
                    );
                    continue;
                }
                assert_eq!(result.is_ok(), valid(&claims), "{claims:?} -> {result:?}");
                if let Ok(principal) = &result {
                    check_principal(principal);
                    assert_eq!(principal.user_id, claims.sub);
                    assert_eq!(principal.territory, claims.territory);
                }
                expected = result.ok();
            }
            let mut changed = token.clone().into_bytes();
            for _ in 0..u.int_in_range(1..=4u8)? {
                if changed.is_empty() {
                    break;
                }
                let at = u.choose_index(changed.len())?;
                match u.int_in_range(0..=2u8)? {
                    0 => changed[at] = u.arbitrary()?,
                    1 => {
                        changed.remove(at);
                    }
                    _ => changed.insert(at, u.arbitrary()?),
                }
            }
            let Ok(changed) = String::from_utf8(changed) else {
                return Ok(());
            };
            if changed == token {
                return Ok(());
            }
            for verifier in VERIFIERS.iter() {
                if let Ok(principal) = verifier.verify(&changed) {
                    check_principal(&principal);
                    assert_eq!(
                        Some(&principal),
                        expected.as_ref(),
                        "a changed token verified into another principal: {changed:?}"
                    );
                }
            }
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
