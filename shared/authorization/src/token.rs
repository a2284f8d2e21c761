//! JWT verification. Every gateway call carries `authorization: Bearer <JWT>` minted by the BFF.
//! Claims: `sub` (the user id by the id rule of `service_runtime::ids`; absent for an anonymous
//! listener), `territory` (an assigned ISO 3166-1 alpha-2 code, `service_runtime::territories`;
//! required), `iss`, `aud` (one audience or an array of them) and `exp` (all required),
//! and `nbf` when present (a token not valid yet is refused). The algorithm, issuer and audience
//! are pinned by configuration: a token signed with any other algorithm (`none` included) is
//! refused before its signature is even looked at.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use service_runtime::{ids, territories};

use crate::keys::{Keyed, Keys};

/// The development defaults (the README's development token, and every `defaults.toml`).
/// Deployments must override the secret.
pub const DEV_SECRET: &str = "dev-only-secret-change-me";
pub const DEV_ISSUER: &str = "dev-bff";
pub const DEV_AUDIENCE: &str = "domain-gateways";
/// The claim that names the BFF client by default: OpenID Connect's authorized party.
pub const DEFAULT_CLIENT_CLAIM: &str = "azp";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenAlgorithm {
    /// A shared secret; the local development default.
    HS256,
    /// Ed25519 with a public key, for deployments.
    EdDSA,
    /// ECDSA P-256 with a public key, for deployments.
    ES256,
}

impl From<TokenAlgorithm> for Algorithm {
    fn from(algorithm: TokenAlgorithm) -> Self {
        match algorithm {
            TokenAlgorithm::HS256 => Algorithm::HS256,
            TokenAlgorithm::EdDSA => Algorithm::EdDSA,
            TokenAlgorithm::ES256 => Algorithm::ES256,
        }
    }
}

/// How tokens are verified; the `[auth]` section of a gateway's settings.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub algorithm: TokenAlgorithm,
    pub issuer: String,
    pub audience: String,
    /// The HS256 secret. The default is the documented development secret.
    pub hs256_secret: String,
    /// A PEM file with the EdDSA or ES256 public key.
    pub public_key_file: String,
    /// Seconds of clock skew tolerated on `exp`.
    pub leeway_seconds: u64,
    /// A JSON Web Key Set file to take the keys from instead of `hs256_secret` or
    /// `public_key_file`; each token's `kid` chooses its key.
    pub jwks_file: String,
    /// An `http://` or `https://` URL of a JSON Web Key Set, likewise; at most one of the two
    /// is set.
    pub jwks_url: String,
    /// The CA certificates, PEM, that an `https://` `jwks_url`'s certificate must chain to.
    pub jwks_ca_file: String,
    /// Seconds between reloads of the key set.
    pub jwks_refresh_seconds: u64,
    /// The least number of seconds between two fetches of the key set that tokens naming an
    /// unknown `kid` cause.
    pub jwks_min_refetch_seconds: u64,
    /// The claim that names the BFF client a token was issued to (OpenID Connect's `azp`, the
    /// authorized party); empty: tokens name no client.
    pub client_claim: String,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("hs256_secret", &"<redacted>")
            .field("public_key_file", &self.public_key_file)
            .field("leeway_seconds", &self.leeway_seconds)
            .field("jwks_file", &self.jwks_file)
            .field("jwks_url", &self.jwks_url)
            .field("jwks_ca_file", &self.jwks_ca_file)
            .field("jwks_refresh_seconds", &self.jwks_refresh_seconds)
            .field("jwks_min_refetch_seconds", &self.jwks_min_refetch_seconds)
            .field("client_claim", &self.client_claim)
            .finish()
    }
}

impl AuthSettings {
    /// The local development settings (HS256 with the development secret).
    pub fn development() -> Self {
        Self {
            algorithm: TokenAlgorithm::HS256,
            issuer: DEV_ISSUER.into(),
            audience: DEV_AUDIENCE.into(),
            hs256_secret: DEV_SECRET.into(),
            public_key_file: String::new(),
            leeway_seconds: 30,
            jwks_file: String::new(),
            jwks_url: String::new(),
            jwks_ca_file: String::new(),
            jwks_refresh_seconds: 300,
            jwks_min_refetch_seconds: 10,
            client_claim: DEFAULT_CLIENT_CLAIM.into(),
        }
    }

    /// Whether the keys come from a JSON Web Key Set.
    pub fn uses_jwks(&self) -> bool {
        !self.jwks_file.is_empty() || !self.jwks_url.is_empty()
    }
}

/// Who calls: a verified user, or an anonymous listener, in a territory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: Option<String>,
    /// ISO 3166-1 alpha-2, upper case.
    pub territory: String,
    /// The BFF client the token was issued to, from the claim `auth.client_claim` names, as
    /// the token has it (`authorization::client` decides what of it is used).
    pub client: Option<String>,
}

impl Principal {
    /// The user id, when the caller is not anonymous.
    pub fn user(&self) -> Option<&str> {
        self.user_id.as_deref()
    }
}

/// The claims of a gateway token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    pub territory: String,
    pub iss: String,
    /// One audience, or several (RFC 7519 §4.1.3, as identity providers issue them); the
    /// verifier accepts a token whose audiences include its configured one.
    #[serde(deserialize_with = "one_or_many")]
    pub aud: String,
    pub exp: u64,
    /// Every other claim (`azp`, `iat`, `jti`, …): the client claim is read from here.
    #[serde(flatten, default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// `aud` as a string, or an array of strings joined with spaces (jsonwebtoken checks the
/// configured audience against the raw claim; this only keeps an array from failing to parse).
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Audience {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Audience::deserialize(deserializer)? {
        Audience::One(audience) => audience,
        Audience::Many(audiences) => audiences.join(" "),
    })
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the request carries no bearer token")]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's issuer is not accepted")]
    WrongIssuer,
    #[error("the token's audience is not accepted")]
    WrongAudience,
    #[error("the token's algorithm is not accepted")]
    WrongAlgorithm,
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token's header names no key id (kid)")]
    NoKeyId,
    #[error("the token's key id (kid) names none of the identity provider's current keys")]
    UnknownKey,
    #[error("the token's territory claim is not an ISO 3166-1 alpha-2 code")]
    BadTerritory,
    #[error("the token's subject is not a valid user id")]
    BadSubject,
    #[error("the token is malformed")]
    Malformed,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("auth.public_key_file: cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("auth.public_key_file: {0}")]
    Invalid(jsonwebtoken::errors::Error),
    #[error("auth.hs256_secret: must be at least 16 bytes")]
    WeakSecret,
    #[error("{0}")]
    Setting(&'static str),
    #[error("{field}: {reason}")]
    Jwks { field: &'static str, reason: String },
    #[error("auth.jwks_file, auth.jwks_url: a key set is loaded by Verifier::start")]
    JwksNeedsStart,
}

/// Verifies tokens; built once at start-up.
#[derive(Clone)]
pub struct Verifier {
    pub(crate) keys: Arc<Keys>,
    validation: Validation,
    /// Tokens that verified, with their principal, expiry and the key epoch they were verified
    /// in: a BFF sends the same token on every call of a session, and checking a signature and
    /// parsing its JSON is most of what authenticating a call costs. Keyed by the exact token,
    /// so only a byte-identical token hits; the expiry is checked on every hit, and a hit counts
    /// only in the epoch of the keys in use (a change of the key set forgets every token, so
    /// none outlives the key that signed it).
    /// Clones share it.
    verified: Arc<Mutex<HashMap<String, Remembered>>>,
    /// `auth.client_claim`, when set.
    client_claim: Option<Arc<str>>,
}

#[derive(Debug, Clone)]
struct Remembered {
    principal: Principal,
    exp: u64,
    epoch: u64,
}

/// How many verified tokens are remembered; beyond that the expired ones are dropped, and if
/// none has expired, all of them (the next calls verify again).
const VERIFIED_CAPACITY: usize = 4096;

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier of the one configured key (`hs256_secret` or `public_key_file`); settings
    /// that name a key set need [`Verifier::start`].
    pub fn new(settings: &AuthSettings) -> Result<Self, KeyError> {
        Ok(Self::with_keys(
            settings,
            Arc::new(Keys::configured(settings)?),
        ))
    }

    /// A verifier of the keys `settings` name, loaded now: a key set from `jwks_file` or
    /// `jwks_url` (which must answer), reloaded from then on in a task of the current runtime for
    /// as long as the verifier or a clone lives; or the one configured key.
    pub async fn start(settings: &AuthSettings) -> Result<Self, KeyError> {
        Ok(Self::with_keys(settings, Keys::start(settings).await?))
    }

    fn with_keys(settings: &AuthSettings, keys: Arc<Keys>) -> Self {
        let mut validation = Validation::new(settings.algorithm.into());
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = settings.leeway_seconds;
        validation.validate_exp = true;
        // `nbf`, when present, is honoured (with the same leeway as `exp`).
        validation.validate_nbf = true;
        Self {
            keys,
            validation,
            verified: Arc::default(),
            client_claim: (!settings.client_claim.is_empty())
                .then(|| Arc::from(settings.client_claim.as_str())),
        }
    }

    /// Whether the keys come from a key set that a token's `kid` may cause to reload.
    pub fn reloads_keys(&self) -> bool {
        self.keys.reloadable()
    }

    /// Makes sure the key `token` names is loaded, if it can be: when the token is not
    /// remembered and its `kid` is not in the key set, reloads the set (at most once per
    /// `jwks_min_refetch_seconds`, sharing a reload in progress). Verify the token afterwards;
    /// this only waits.
    pub async fn prepare(&self, token: &str) {
        if !self.keys.reloadable() {
            return;
        }
        let epoch = self.keys.current().epoch;
        if self
            .lock_verified()
            .get(token)
            .is_some_and(|r| r.epoch == epoch)
        {
            return;
        }
        if let Ok(header) = jsonwebtoken::decode_header(token)
            && header.alg == self.validation.algorithms[0]
            && let Some(kid) = header.kid
        {
            self.keys.reload_for(&kid).await;
        }
    }

    fn lock_verified(&self) -> std::sync::MutexGuard<'_, HashMap<String, Remembered>> {
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Verifies a compact JWT and returns its principal.
    pub fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        self.verify_at(token, now_seconds())
    }

    /// [`Verifier::verify`] at the time `now` (seconds since the Unix epoch), which also
    /// decides whether a remembered token has expired.
    fn verify_at(&self, token: &str, now: u64) -> Result<Principal, TokenError> {
        let leeway = self.validation.leeway;
        let keys = self.keys.current();
        {
            let mut verified = self.lock_verified();
            match verified.get(token) {
                Some(remembered)
                    if remembered.epoch == keys.epoch
                        && now <= remembered.exp.saturating_add(leeway) =>
                {
                    return Ok(remembered.principal.clone());
                }
                Some(_) => {
                    verified.remove(token);
                }
                None => {}
            }
        }
        let (principal, exp) = self.verify_uncached(token, &keys.keys)?;
        if now > exp.saturating_add(leeway) {
            return Err(TokenError::Expired);
        }
        let mut verified = self.lock_verified();
        if verified.len() >= VERIFIED_CAPACITY {
            verified.retain(|_, remembered| {
                remembered.epoch == keys.epoch && now <= remembered.exp.saturating_add(leeway)
            });
            if verified.len() >= VERIFIED_CAPACITY {
                verified.clear();
            }
        }
        // Remembered in the epoch of the keys it was verified with: if the key set changed
        // meanwhile, the entry never hits.
        verified.insert(
            token.to_owned(),
            Remembered {
                principal: principal.clone(),
                exp,
                epoch: keys.epoch,
            },
        );
        Ok(principal)
    }

    /// Verifies the signature and every claim with `keys`; returns the principal and the
    /// expiry.
    fn verify_uncached(&self, token: &str, keys: &Keyed) -> Result<(Principal, u64), TokenError> {
        let key = match keys {
            Keyed::One(key) => key,
            Keyed::ByKid(keys) => {
                // The algorithm is checked before the key is looked up, so that a token of
                // another algorithm is refused for that whatever its kid.
                let header = jsonwebtoken::decode_header(token).map_err(decode_error)?;
                if header.alg != self.validation.algorithms[0] {
                    return Err(TokenError::WrongAlgorithm);
                }
                let kid = header.kid.ok_or(TokenError::NoKeyId)?;
                keys.get(&kid).ok_or(TokenError::UnknownKey)?
            }
        };
        let data =
            jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(decode_error)?;
        let mut claims = data.claims;
        // A client claim that is not a string names no client.
        let client =
            self.client_claim
                .as_deref()
                .and_then(|claim| match claims.other.remove(claim) {
                    Some(serde_json::Value::String(client)) => Some(client),
                    _ => None,
                });
        let territory = claims.territory;
        // An assigned code only: a made-up one (`XX`, `UK`) would match no allow list and,
        // worse, no block list.
        if !territories::is_assigned(&territory) {
            return Err(TokenError::BadTerritory);
        }
        if let Some(sub) = &claims.sub
            && ids::check(sub).is_err()
        {
            return Err(TokenError::BadSubject);
        }
        Ok((
            Principal {
                user_id: claims.sub,
                territory,
                client,
            },
            claims.exp,
        ))
    }
}

/// The token error of a jsonwebtoken error.
fn decode_error(error: jsonwebtoken::errors::Error) -> TokenError {
    match error.kind() {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenError::WrongAlgorithm,
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        _ => TokenError::Malformed,
    }
}

/// Seconds since the Unix epoch.
pub fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// Mints an HS256 token with the development issuer and audience, valid for `ttl_seconds`:
/// for local development, demos and tests. A deployment's BFF mints its own.
pub fn mint_development_token(user_id: Option<&str>, territory: &str, ttl_seconds: u64) -> String {
    mint_development_client_token(user_id, territory, ttl_seconds, None)
}

/// [`mint_development_token`] issued to the BFF client `client`, named in the `azp` claim.
pub fn mint_development_client_token(
    user_id: Option<&str>,
    territory: &str,
    ttl_seconds: u64,
    client: Option<&str>,
) -> String {
    let mut other = serde_json::Map::new();
    if let Some(client) = client {
        other.insert(DEFAULT_CLIENT_CLAIM.into(), client.into());
    }
    let claims = Claims {
        sub: user_id.map(str::to_owned),
        territory: territory.to_owned(),
        iss: DEV_ISSUER.into(),
        aud: DEV_AUDIENCE.into(),
        exp: now_seconds() + ttl_seconds,
        other,
    };
    mint(
        &claims,
        Algorithm::HS256,
        &EncodingKey::from_secret(DEV_SECRET.as_bytes()),
    )
}

/// Mints a token with any claims, algorithm and key (tests of the verifier use it).
pub fn mint(claims: &Claims, algorithm: Algorithm, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, key)
        .unwrap_or_else(|error| panic!("cannot mint a token: {error}"))
}

#[cfg(test)]
mod tests;
