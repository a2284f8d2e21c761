use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use test_support::{ServedBody, base64url, eventually};

use crate::token::{
    AuthSettings, Claims, DEV_AUDIENCE, DEV_ISSUER, KeyError, TokenAlgorithm, TokenError, Verifier,
    now_seconds,
};

/// The Ed25519 and P-256 public keys of `tests/keys`, as JWK coordinates.
const ED25519_X: &str = "nJC_B0aTxzPsk-XZtnX6-npG_C_-fNxZsVsts1Bwehg";
const P256_X: &str = "ff1uEUcbYuAnLwfpHTri8ka6dabUpAX4NOCdhfrb9gk";
const P256_Y: &str = "bxg1jiXyO_sQPU7EGVJsOj6O5Vd1Asde3gDpVY4EUjI";

/// The HS256 secret of the key `kid` in these tests.
fn secret(kid: &str) -> Vec<u8> {
    format!("the-secret-of-key-{kid}").into_bytes()
}

fn oct(kid: &str) -> serde_json::Value {
    json!({"kty": "oct", "kid": kid, "alg": "HS256", "use": "sig", "k": base64url(&secret(kid))})
}

fn jwks(keys: &[serde_json::Value]) -> String {
    json!({ "keys": keys }).to_string()
}

fn claims() -> Claims {
    Claims {
        sub: Some("usr_0001".into()),
        territory: "US".into(),
        iss: DEV_ISSUER.into(),
        aud: DEV_AUDIENCE.into(),
        exp: now_seconds() + 600,
        other: Default::default(),
    }
}

fn signed_by(kid: Option<&str>, algorithm: Algorithm, key: &EncodingKey) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims(), key).unwrap()
}

fn hs256(kid: &str) -> String {
    signed_by(
        Some(kid),
        Algorithm::HS256,
        &EncodingKey::from_secret(&secret(kid)),
    )
}

fn from_url(url: &str, min_refetch_seconds: u64) -> AuthSettings {
    AuthSettings {
        jwks_url: url.into(),
        jwks_min_refetch_seconds: min_refetch_seconds,
        ..AuthSettings::development()
    }
}

#[tokio::test]
async fn keys_are_chosen_by_kid_and_the_pinned_algorithm_decides_which_keys_count() {
    let served = ServedBody::start(jwks(&[
        oct("a"),
        oct("b"),
        // Not for HS256: another alg, an encryption key, a short secret, another type.
        json!({"kty": "oct", "kid": "hs512", "alg": "HS512", "k": base64url(&secret("hs512"))}),
        json!({"kty": "oct", "kid": "enc", "use": "enc", "k": base64url(&secret("enc"))}),
        json!({"kty": "oct", "kid": "short", "k": base64url(b"short")}),
        json!({"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": ED25519_X}),
        json!({"kty": "RSA", "kid": "rsa", "n": "AQAB", "e": "AQAB"}),
        json!({"kty": "unheard-of", "kid": "future"}),
    ]))
    .await;
    let verifier = Verifier::start(&from_url(&served.url("/jwks.json"), 3600))
        .await
        .unwrap();
    assert_eq!(
        verifier.verify(&hs256("a")).unwrap().user(),
        Some("usr_0001")
    );
    assert_eq!(
        verifier.verify(&hs256("b")).unwrap().user(),
        Some("usr_0001")
    );
    for kid in ["hs512", "enc", "short", "ed", "rsa", "future", "c"] {
        assert_eq!(
            verifier.verify(&hs256(kid)),
            Err(TokenError::UnknownKey),
            "{kid}"
        );
    }
    // Key a's secret under key b's kid, no kid at all, and another algorithm.
    let crossed = signed_by(
        Some("b"),
        Algorithm::HS256,
        &EncodingKey::from_secret(&secret("a")),
    );
    assert_eq!(verifier.verify(&crossed), Err(TokenError::BadSignature));
    let unnamed = signed_by(
        None,
        Algorithm::HS256,
        &EncodingKey::from_secret(&secret("a")),
    );
    assert_eq!(verifier.verify(&unnamed), Err(TokenError::NoKeyId));
    let hs384 = signed_by(
        Some("a"),
        Algorithm::HS384,
        &EncodingKey::from_secret(&secret("a")),
    );
    assert_eq!(verifier.verify(&hs384), Err(TokenError::WrongAlgorithm));
}

#[tokio::test]
async fn public_key_jwks_verify_their_algorithm_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(
        &path,
        jwks(&[
            json!({"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": ED25519_X}),
            json!({"kty": "EC", "kid": "es", "crv": "P-256", "x": P256_X, "y": P256_Y}),
        ]),
    )
    .unwrap();
    let settings = |algorithm| AuthSettings {
        algorithm,
        jwks_file: path.to_string_lossy().into_owned(),
        ..AuthSettings::development()
    };
    let ed_key =
        EncodingKey::from_ed_pem(include_bytes!("../../tests/keys/ed25519-private.pem")).unwrap();
    let es_key =
        EncodingKey::from_ec_pem(include_bytes!("../../tests/keys/es256-private.pem")).unwrap();
    let ed = Verifier::start(&settings(TokenAlgorithm::EdDSA))
        .await
        .unwrap();
    let es = Verifier::start(&settings(TokenAlgorithm::ES256))
        .await
        .unwrap();
    assert!(
        ed.verify(&signed_by(Some("ed"), Algorithm::EdDSA, &ed_key))
            .is_ok()
    );
    assert!(
        es.verify(&signed_by(Some("es"), Algorithm::ES256, &es_key))
            .is_ok()
    );
    // The EC key is not an EdDSA key even if a token names it, and the other way round.
    assert_eq!(
        ed.verify(&signed_by(Some("es"), Algorithm::EdDSA, &ed_key)),
        Err(TokenError::UnknownKey)
    );
    assert_eq!(
        es.verify(&signed_by(Some("ed"), Algorithm::ES256, &es_key)),
        Err(TokenError::UnknownKey)
    );
    assert_eq!(
        ed.verify(&signed_by(Some("es"), Algorithm::ES256, &es_key)),
        Err(TokenError::WrongAlgorithm)
    );
}

#[tokio::test]
async fn an_unknown_kid_reloads_the_set_and_a_rotated_out_key_is_forgotten_with_its_tokens() {
    let served = ServedBody::start(jwks(&[oct("old")])).await;
    let verifier = Verifier::start(&from_url(&served.url("/jwks.json"), 1))
        .await
        .unwrap();
    let old = hs256("old");
    assert!(verifier.verify(&old).is_ok());
    assert!(verifier.verify(&old).is_ok(), "remembered");
    served.set(jwks(&[oct("new")]));
    let new = hs256("new");
    // The first reload may come at most a second after the start-up fetch.
    eventually("the new key is loaded", Duration::from_secs(10), || {
        let verifier = verifier.clone();
        let new = new.clone();
        async move {
            verifier.prepare(&new).await;
            verifier.verify(&new).map_err(|error| error.to_string())
        }
    })
    .await;
    // The old key left the set: its token is refused, although it verified and was remembered.
    assert_eq!(verifier.verify(&old), Err(TokenError::UnknownKey));
}

#[tokio::test]
async fn tokens_with_made_up_kids_reload_the_set_once_per_interval_at_most() {
    let served = ServedBody::start(jwks(&[oct("a")])).await;
    let verifier = Verifier::start(&from_url(&served.url("/jwks.json"), 3600))
        .await
        .unwrap();
    assert_eq!(served.requests(), 1, "the start-up fetch");
    let mut waits = Vec::new();
    for n in 0..200 {
        let verifier = verifier.clone();
        waits.push(tokio::spawn(async move {
            let token = hs256(&format!("made-up-{n}"));
            verifier.prepare(&token).await;
            verifier.verify(&token)
        }));
    }
    for wait in waits {
        assert_eq!(wait.await.unwrap(), Err(TokenError::UnknownKey));
    }
    assert_eq!(served.requests(), 1, "no refetch within the interval");
    assert!(verifier.verify(&hs256("a")).is_ok());
}

#[tokio::test]
async fn a_key_set_reloads_on_its_interval_and_keeps_its_keys_when_a_reload_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(&[oct("a")])).unwrap();
    let verifier = Verifier::start(&AuthSettings {
        jwks_file: path.to_string_lossy().into_owned(),
        jwks_refresh_seconds: 1,
        jwks_min_refetch_seconds: 3600,
        ..AuthSettings::development()
    })
    .await
    .unwrap();
    // No unknown kid is ever asked for: the interval alone picks up the change.
    std::fs::write(&path, jwks(&[oct("a"), oct("b")])).unwrap();
    eventually("the interval reload", Duration::from_secs(10), || {
        let verifier = verifier.clone();
        async move { verifier.verify(&hs256("b")).is_ok() }
    })
    .await;
    // A broken file keeps the keys in use.
    std::fs::write(&path, "{ not json").unwrap();
    let written = std::time::Instant::now();
    let epoch = verifier.keys.current().epoch;
    eventually(
        "a reload of the broken file",
        Duration::from_secs(10),
        || {
            let verifier = verifier.clone();
            // A reload holds the lock from its start (when it sets the time) to its end.
            async move { *verifier.keys.fetched.lock().await > written }
        },
    )
    .await;
    assert_eq!(verifier.keys.current().epoch, epoch);
    assert!(verifier.verify(&hs256("a")).is_ok());
    assert!(verifier.verify(&hs256("b")).is_ok());
}

#[tokio::test]
async fn bad_key_set_settings_fail_at_start_up_naming_the_setting() {
    let served = ServedBody::start(jwks(&[
        json!({"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": ED25519_X}),
    ]))
    .await;
    let message = |settings: AuthSettings| async move {
        Verifier::start(&settings).await.unwrap_err().to_string()
    };
    let none_fits = message(from_url(&served.url("/"), 10)).await;
    assert!(
        none_fits.starts_with("auth.jwks_url: no key with a kid fits the algorithm HS256"),
        "{none_fits}"
    );
    let no_ca = message(from_url("https://idp.example.com/jwks.json", 10)).await;
    assert!(
        no_ca.starts_with("auth.jwks_ca_file is required"),
        "{no_ca}"
    );
    let ftp = message(from_url("ftp://idp.example.com/jwks.json", 10)).await;
    assert!(ftp.starts_with("auth.jwks_url:"), "{ftp}");
    let both = message(AuthSettings {
        jwks_file: "/keys.json".into(),
        ..from_url(&served.url("/"), 10)
    })
    .await;
    assert!(
        both.starts_with("auth.jwks_file and auth.jwks_url"),
        "{both}"
    );
    let missing = message(AuthSettings {
        jwks_file: "/no/such/jwks.json".into(),
        ..AuthSettings::development()
    })
    .await;
    assert!(
        missing.starts_with("auth.jwks_file: cannot read"),
        "{missing}"
    );
    let unlimited = message(from_url(&served.url("/"), 0)).await;
    assert!(
        unlimited.starts_with("auth.jwks_min_refetch_seconds"),
        "{unlimited}"
    );
    assert!(matches!(
        Verifier::new(&from_url(&served.url("/"), 10)),
        Err(KeyError::JwksNeedsStart)
    ));
}

/// Serves `body` over HTTPS on loopback with the certificate `leaf`, once per connection.
async fn served_over_tls(body: String, leaf: &test_pki::Leaf) -> std::net::SocketAddr {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let chain = CertificateDer::pem_file_iter(&leaf.cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&leaf.key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(mut stream) = acceptor.accept(stream).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buffer = [0u8; 1024];
                while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => head.extend_from_slice(&buffer[..read]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_https_key_set_is_fetched_from_a_server_its_ca_vouches_for_only() {
    let pki = test_pki::Pki::new();
    let ca = pki.ca("identity-ca");
    let other = pki.ca("another-ca");
    let leaf = pki.leaf(&ca, "identity-provider");
    let addr = served_over_tls(jwks(&[oct("a")]), &leaf).await;
    let settings = |ca_file: &str| AuthSettings {
        jwks_ca_file: ca_file.into(),
        ..from_url(&format!("https://localhost:{}/jwks.json", addr.port()), 10)
    };
    let verifier = Verifier::start(&settings(&ca.file)).await.unwrap();
    assert!(verifier.verify(&hs256("a")).is_ok());
    // A server that another CA vouches for is not the identity provider.
    let untrusted = Verifier::start(&settings(&other.file))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        untrusted.starts_with("auth.jwks_url:") && untrusted.contains("TLS"),
        "{untrusted}"
    );
    let plain = Verifier::start(&AuthSettings {
        jwks_ca_file: ca.file.clone(),
        ..from_url("http://localhost:1/jwks.json", 10)
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(plain.starts_with("auth.jwks_ca_file is set"), "{plain}");
}
