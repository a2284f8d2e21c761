use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use test_support::base64url;

use super::*;

fn verifier() -> Verifier {
    Verifier::new(&AuthSettings::development()).unwrap()
}

fn hs256(claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(DEV_SECRET.as_bytes()),
    )
    .unwrap()
}

fn claims() -> serde_json::Value {
    json!({
        "sub": "usr_0001",
        "territory": "US",
        "iss": DEV_ISSUER,
        "aud": DEV_AUDIENCE,
        "exp": now_seconds() + 600,
    })
}

fn with(key: &str, value: serde_json::Value) -> serde_json::Value {
    let mut claims = claims();
    claims[key] = value;
    claims
}

fn without(key: &str) -> serde_json::Value {
    let mut claims = claims();
    claims.as_object_mut().unwrap().remove(key);
    claims
}

#[test]
fn a_valid_token_yields_its_principal() {
    let principal = verifier().verify(&hs256(&claims())).unwrap();
    assert_eq!(principal.user(), Some("usr_0001"));
    assert_eq!(principal.territory, "US");
    let anonymous = verifier().verify(&hs256(&without("sub"))).unwrap();
    assert_eq!(anonymous.user_id, None);
    // An audience array holding the configured audience, and an `nbf` already passed.
    let listed = hs256(&with("aud", json!(["another-api", DEV_AUDIENCE])));
    assert_eq!(verifier().verify(&listed).unwrap().user(), Some("usr_0001"));
    let started = hs256(&with("nbf", json!(now_seconds() - 10)));
    assert!(verifier().verify(&started).is_ok());
    let minted = mint_development_token(Some("usr_0002"), "DE", 60);
    assert_eq!(verifier().verify(&minted).unwrap().territory, "DE");
}

#[test]
fn every_bad_token_is_refused_for_its_reason() {
    let cases = [
        (
            hs256(&with("exp", json!(now_seconds() - 3600))),
            TokenError::Expired,
        ),
        (
            hs256(&with("iss", json!("someone-else"))),
            TokenError::WrongIssuer,
        ),
        (
            hs256(&with("aud", json!("another-api"))),
            TokenError::WrongAudience,
        ),
        (hs256(&without("exp")), TokenError::Malformed),
        (hs256(&without("iss")), TokenError::Malformed),
        (hs256(&without("aud")), TokenError::Malformed),
        (hs256(&without("territory")), TokenError::Malformed),
        (
            hs256(&with("territory", json!("usa"))),
            TokenError::BadTerritory,
        ),
        (
            hs256(&with("territory", json!("us"))),
            TokenError::BadTerritory,
        ),
        // Well formed but not assigned: a made-up code, and the common mistake for GB.
        (
            hs256(&with("territory", json!("XX"))),
            TokenError::BadTerritory,
        ),
        (
            hs256(&with("territory", json!("UK"))),
            TokenError::BadTerritory,
        ),
        (hs256(&with("sub", json!("a b"))), TokenError::BadSubject),
        (hs256(&with("sub", json!(""))), TokenError::BadSubject),
        (
            hs256(&with("nbf", json!(now_seconds() + 3600))),
            TokenError::NotYetValid,
        ),
        (
            hs256(&with("aud", json!(["another-api", "a-third"]))),
            TokenError::WrongAudience,
        ),
        ("not-a-token".to_owned(), TokenError::Malformed),
    ];
    for (token, expected) in cases {
        assert_eq!(
            verifier().verify(&token),
            Err(expected.clone()),
            "{expected:?}"
        );
    }
}

#[test]
fn a_wrong_secret_or_tampered_payload_fails_the_signature() {
    let other = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(b"another-secret-of-enough-length"),
    )
    .unwrap();
    assert_eq!(verifier().verify(&other), Err(TokenError::BadSignature));

    let token = hs256(&claims());
    let parts: Vec<&str> = token.split('.').collect();
    let forged = base64url(
        serde_json::to_vec(&with("sub", json!("usr_admin")))
            .unwrap()
            .as_slice(),
    );
    let tampered = format!("{}.{}.{}", parts[0], forged, parts[2]);
    assert_eq!(verifier().verify(&tampered), Err(TokenError::BadSignature));
}

#[test]
fn other_algorithms_and_alg_none_are_refused() {
    let hs384 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS384),
        &claims(),
        &EncodingKey::from_secret(DEV_SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(verifier().verify(&hs384), Err(TokenError::WrongAlgorithm));

    let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = base64url(&serde_json::to_vec(&claims()).unwrap());
    for unsigned in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}"),
    ] {
        assert!(verifier().verify(&unsigned).is_err(), "{unsigned}");
    }

    let ed = jsonwebtoken::encode(
        &Header::new(Algorithm::EdDSA),
        &claims(),
        &EncodingKey::from_ed_pem(include_bytes!("../../tests/keys/ed25519-private.pem")).unwrap(),
    )
    .unwrap();
    assert_eq!(verifier().verify(&ed), Err(TokenError::WrongAlgorithm));
}

fn key_settings(algorithm: TokenAlgorithm, file: &str) -> AuthSettings {
    AuthSettings {
        algorithm,
        public_key_file: format!("{}/tests/keys/{file}", env!("CARGO_MANIFEST_DIR")),
        ..AuthSettings::development()
    }
}

#[test]
fn public_key_algorithms_verify_their_own_tokens_only() {
    let ed_verifier =
        Verifier::new(&key_settings(TokenAlgorithm::EdDSA, "ed25519-public.pem")).unwrap();
    let es_verifier =
        Verifier::new(&key_settings(TokenAlgorithm::ES256, "es256-public.pem")).unwrap();
    let ed = jsonwebtoken::encode(
        &Header::new(Algorithm::EdDSA),
        &claims(),
        &EncodingKey::from_ed_pem(include_bytes!("../../tests/keys/ed25519-private.pem")).unwrap(),
    )
    .unwrap();
    let es = jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &claims(),
        &EncodingKey::from_ec_pem(include_bytes!("../../tests/keys/es256-private.pem")).unwrap(),
    )
    .unwrap();
    assert_eq!(ed_verifier.verify(&ed).unwrap().user(), Some("usr_0001"));
    assert_eq!(es_verifier.verify(&es).unwrap().user(), Some("usr_0001"));
    assert_eq!(ed_verifier.verify(&es), Err(TokenError::WrongAlgorithm));
    assert_eq!(es_verifier.verify(&ed), Err(TokenError::WrongAlgorithm));
    // An HS256 token "signed" with the public key as the secret is the classic confusion attack.
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(include_bytes!("../../tests/keys/ed25519-public.pem")),
    )
    .unwrap();
    assert_eq!(
        ed_verifier.verify(&confused),
        Err(TokenError::WrongAlgorithm)
    );
}

#[test]
fn bad_key_settings_fail_at_start_up_naming_the_key() {
    let missing = Verifier::new(&key_settings(TokenAlgorithm::EdDSA, "absent.pem")).unwrap_err();
    assert!(
        missing.to_string().starts_with("auth.public_key_file"),
        "{missing}"
    );
    let weak = Verifier::new(&AuthSettings {
        hs256_secret: "short".into(),
        ..AuthSettings::development()
    })
    .unwrap_err();
    assert!(weak.to_string().starts_with("auth.hs256_secret"), "{weak}");
}

#[test]
fn a_remembered_token_still_expires() {
    let verifier = verifier();
    let token = mint_development_token(Some("usr_0001"), "US", 60);
    let now = now_seconds();
    assert!(verifier.verify_at(&token, now).is_ok());
    assert!(verifier.verify_at(&token, now).is_ok(), "remembered");
    // Past its expiry and the leeway, the remembered token is refused like any other.
    let later = now + 60 + verifier.validation.leeway + 1;
    assert_eq!(verifier.verify_at(&token, later), Err(TokenError::Expired));
    assert_eq!(
        verifier.verify_at(&token, later),
        Err(TokenError::Expired),
        "and it stays refused"
    );
}

#[test]
fn only_a_byte_identical_token_is_remembered() {
    let verifier = verifier();
    let token = mint_development_token(Some("usr_0001"), "US", 60);
    assert!(verifier.verify(&token).is_ok());
    // The same claims under a changed signature: a character inside the signature, so the
    // base64 stays canonical (the last one carries padding bits that must be zero).
    let at = token.len() - 10;
    let changed = if &token[at..=at] == "A" { "B" } else { "A" };
    let forged = format!("{}{changed}{}", &token[..at], &token[at + 1..]);
    assert_eq!(verifier.verify(&forged), Err(TokenError::BadSignature));
    assert!(verifier.verify(&token).is_ok());
}

#[test]
fn the_remembered_tokens_are_bounded() {
    let verifier = verifier();
    for n in 0..VERIFIED_CAPACITY + 10 {
        let token = mint_development_token(Some(&format!("usr_{n}")), "US", 60);
        assert!(verifier.verify(&token).is_ok());
        let held = verifier.verified.lock().expect("not poisoned").len();
        assert!(held <= VERIFIED_CAPACITY, "{held}");
    }
}
