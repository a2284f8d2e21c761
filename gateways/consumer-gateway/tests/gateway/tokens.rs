//! Missing and bad tokens are UNAUTHENTICATED, before anything else happens.

use authorization::token::{Claims, DEV_AUDIENCE, DEV_ISSUER, DEV_SECRET, mint, now_seconds};
use jsonwebtoken::{Algorithm, EncodingKey};
use protos::consumer::v1::GetTrackRequest;
use tonic::{Code, Request, metadata::MetadataValue};

use crate::fixture::Topology;

fn claims() -> Claims {
    Claims {
        sub: Some("usr_0001".into()),
        territory: "US".into(),
        iss: DEV_ISSUER.into(),
        aud: DEV_AUDIENCE.into(),
        exp: now_seconds() + 300,
    }
}

fn hs(algorithm: Algorithm, claims: &Claims) -> String {
    mint(
        claims,
        algorithm,
        &EncodingKey::from_secret(DEV_SECRET.as_bytes()),
    )
}

fn b64(bytes: &[u8]) -> String {
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

#[tokio::test]
async fn missing_and_bad_tokens_are_unauthenticated() {
    let t = Topology::start().await;
    let payload = format!(
        r#"{{"sub":"usr_0001","territory":"US","iss":"{DEV_ISSUER}","aud":"{DEV_AUDIENCE}","exp":{}}}"#,
        now_seconds() + 300
    );
    let alg_none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(payload.as_bytes())
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
