//! Missing and bad tokens are UNAUTHENTICATED, before anything else happens; keys from a
//! served key set rotate without a restart.

use std::time::Duration;

use authorization::token::{Claims, DEV_AUDIENCE, DEV_ISSUER, DEV_SECRET, mint, now_seconds};
use jsonwebtoken::{Algorithm, EncodingKey};
use protos::consumer::v1::GetTrackRequest;
use test_support::{ServedBody, base64url, eventually};
use tonic::{Code, Request, metadata::MetadataValue};

use crate::fixture::Topology;

fn claims() -> Claims {
    Claims {
        sub: Some("usr_0001".into()),
        territory: "US".into(),
        iss: DEV_ISSUER.into(),
        aud: DEV_AUDIENCE.into(),
        exp: now_seconds() + 300,
        other: Default::default(),
    }
}

fn hs(algorithm: Algorithm, claims: &Claims) -> String {
    mint(
        claims,
        algorithm,
        &EncodingKey::from_secret(DEV_SECRET.as_bytes()),
    )
}

#[tokio::test]
async fn missing_and_bad_tokens_are_unauthenticated() {
    let t = Topology::start().await;
    let payload = format!(
        r#"{{"sub":"usr_0001","territory":"US","iss":"{DEV_ISSUER}","aud":"{DEV_AUDIENCE}","exp":{}}}"#,
        now_seconds() + 300
    );
    let alg_none = format!(
        "{}.{}.",
        base64url(br#"{"alg":"none","typ":"JWT"}"#),
        base64url(payload.as_bytes())
    );
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        (
            "not bearer",
            Some(format!("Basic {}", hs(Algorithm::HS256, &claims()))),
        ),
        ("garbage", Some("Bearer abc.def.ghi".into())),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                hs(
                    Algorithm::HS256,
                    &Claims {
                        exp: now_seconds() - 600,
                        ..claims()
                    }
                )
            )),
        ),
        (
            "wrong issuer",
            Some(format!(
                "Bearer {}",
                hs(
                    Algorithm::HS256,
                    &Claims {
                        iss: "evil".into(),
                        ..claims()
                    }
                )
            )),
        ),
        (
            "wrong audience",
            Some(format!(
                "Bearer {}",
                hs(
                    Algorithm::HS256,
                    &Claims {
                        aud: "other".into(),
                        ..claims()
                    }
                )
            )),
        ),
        (
            "wrong algorithm",
            Some(format!("Bearer {}", hs(Algorithm::HS512, &claims()))),
        ),
        ("alg none", Some(format!("Bearer {alg_none}"))),
        (
            "wrong secret",
            Some(format!(
                "Bearer {}",
                mint(
                    &claims(),
                    Algorithm::HS256,
                    &EncodingKey::from_secret(b"not-the-configured-secret")
                )
            )),
        ),
        (
            "no territory",
            Some(format!(
                "Bearer {}",
                hs(
                    Algorithm::HS256,
                    &Claims {
                        territory: "usa".into(),
                        ..claims()
                    }
                )
            )),
        ),
        (
            "unassigned territory",
            Some(format!(
                "Bearer {}",
                hs(
                    Algorithm::HS256,
                    &Claims {
                        territory: "XX".into(),
                        ..claims()
                    }
                )
            )),
        ),
        (
            "UK for GB",
            Some(format!(
                "Bearer {}",
                hs(
                    Algorithm::HS256,
                    &Claims {
                        territory: "UK".into(),
                        ..claims()
                    }
                )
            )),
        ),
    ];
    for (case, header) in cases {
        let mut request = Request::new(GetTrackRequest {
            track_id: "trk_00001".into(),
            read_mask: None,
            secret_token: None,
        });
        if let Some(header) = header {
            request
                .metadata_mut()
                .insert("authorization", MetadataValue::try_from(header).unwrap());
        }
        let status = t.client.clone().get_track(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
    }
    // A good token passes.
    let mut request = Request::new(GetTrackRequest {
        track_id: "trk_00001".into(),
        read_mask: None,
        secret_token: None,
    });
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {}", hs(Algorithm::HS256, &claims()))).unwrap(),
    );
    t.client.clone().get_track(request).await.unwrap();
}

/// The HS256 secret of the identity provider's key `kid` in these tests.
fn secret_of(kid: &str) -> Vec<u8> {
    format!("the-identity-providers-key-{kid}").into_bytes()
}

/// A JSON Web Key Set of HS256 keys.
fn jwks(kids: &[&str]) -> String {
    let keys: Vec<String> = kids
        .iter()
        .map(|kid| {
            format!(
                r#"{{"kty":"oct","kid":"{kid}","alg":"HS256","use":"sig","k":"{}"}}"#,
                base64url(&secret_of(kid))
            )
        })
        .collect();
    format!(r#"{{"keys":[{}]}}"#, keys.join(","))
}

/// A token that the key `kid` signed.
fn signed_by(kid: &str) -> String {
    let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(
        &header,
        &claims(),
        &EncodingKey::from_secret(&secret_of(kid)),
    )
    .unwrap()
}

/// A GetTrack call with a token that the key `kid` signed.
async fn get_track_signed_by(t: &Topology, kid: &str) -> Result<(), tonic::Status> {
    get_track_with(t, &signed_by(kid)).await
}

/// A GetTrack call with `token`.
async fn get_track_with(t: &Topology, token: &str) -> Result<(), tonic::Status> {
    let mut request = Request::new(GetTrackRequest {
        track_id: "trk_00001".into(),
        read_mask: None,
        secret_token: None,
    });
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    t.client.clone().get_track(request).await.map(drop)
}

#[tokio::test]
async fn a_rotated_key_set_is_picked_up_by_kid_without_a_restart() {
    let served = ServedBody::start(jwks(&["2026-01"])).await;
    let url = served.url("/.well-known/jwks.json");
    let t = Topology::start_with(|s| {
        s.auth.jwks_url = url;
        s.auth.jwks_min_refetch_seconds = 1;
    })
    .await;
    let old = signed_by("2026-01");
    get_track_with(&t, &old).await.unwrap();
    get_track_with(&t, &old).await.unwrap();
    // The identity provider rotates: a new key signs, the old one is withdrawn. The first
    // token of the new key makes the gateway reload its keys (once the rate limit allows,
    // a second after start-up), with no restart.
    served.set(jwks(&["2026-02"]));
    eventually("the new key verifies", Duration::from_secs(10), || async {
        get_track_signed_by(&t, "2026-02")
            .await
            .map_err(|status| format!("{status:?}"))
    })
    .await;
    // The withdrawn key's token verified and was remembered; it is refused all the same.
    let status = get_track_with(&t, &old).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("key id (kid)"), "{status:?}");
}

#[tokio::test]
async fn tokens_with_made_up_kids_do_not_flood_the_identity_provider() {
    let served = ServedBody::start(jwks(&["2026-01"])).await;
    let url = served.url("/.well-known/jwks.json");
    let t = Topology::start_with(|s| {
        s.auth.jwks_url = url;
        s.auth.jwks_min_refetch_seconds = 3600;
    })
    .await;
    assert_eq!(served.requests(), 1, "the start-up fetch");
    let calls = (0..100).map(|n| {
        let t = &t;
        async move { get_track_signed_by(t, &format!("made-up-{n}")).await }
    });
    for result in futures::future::join_all(calls).await {
        let status = result.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert_eq!(
            status.message(),
            "the token's key id (kid) names none of the identity provider's current keys"
        );
    }
    assert_eq!(served.requests(), 1, "not one refetch within the interval");
    get_track_signed_by(&t, "2026-01").await.unwrap();
}
