//! The keys tokens are verified with: the one configured key (`hs256_secret`, or the PEM file in
//! `public_key_file`), or the keys of a JSON Web Key Set from `jwks_file` or `jwks_url`, chosen
//! by the `kid` in each token's header, so that an identity provider can rotate its keys without
//! a restart of the gateways. A URL is fetched with hyper's HTTP/1.1 client connection, over
//! rustls on the ring provider for `https://`, trusting only the CAs of `jwks_ca_file`.
//!
//! A key set is reloaded every `jwks_refresh_seconds`, and sooner when a token names a `kid` the
//! set does not hold; those early reloads happen at most once per `jwks_min_refetch_seconds`,
//! so a flood of tokens with made-up kids costs the identity provider one request per interval.
//! A reload that fails, or that finds no usable key, keeps the keys in use and logs a warning.
//!
//! The algorithm stays pinned by configuration: a JWK is used only if its type (and curve) fits
//! the configured algorithm, its `alg`, when present, is that algorithm, and its `use`, when
//! present, is `sig`. Every change of the usable keys starts a new *epoch*; the verifier
//! remembers a token together with the epoch it was verified in and trusts the memo only within
//! that epoch, so a token signed with a key that was rotated out is refused from the first call
//! after the reload that removed the key.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock, Weak},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use jsonwebtoken::{
    DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse},
};

use crate::token::{AuthSettings, KeyError, TokenAlgorithm};

/// How long one reload of a key set may take (connect, request and body) before it fails.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);

/// The largest key set document accepted.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// The shortest HS256 secret accepted, from settings or a JWK.
pub(crate) const MIN_SECRET_BYTES: usize = 16;

/// The usable keys at one moment.
pub(crate) struct KeySet {
    /// Starts at 0 and grows by one with every change of the usable keys.
    pub(crate) epoch: u64,
    pub(crate) keys: Keyed,
    /// The usable JWKs by kid, to tell a reload that changed nothing from a rotation.
    jwks: BTreeMap<String, Jwk>,
}

pub(crate) enum Keyed {
    /// The one configured key; the token's `kid` plays no part.
    One(DecodingKey),
    /// The keys of a JWKS by kid.
    ByKid(BTreeMap<String, DecodingKey>),
}

/// Where the keys come from.
#[derive(Debug, Clone)]
enum Source {
    Configured,
    File(String),
    Url(http::Uri, Option<Tls>),
}

/// How an `https://` key set URL is reached.
#[derive(Clone)]
struct Tls {
    config: Arc<rustls::ClientConfig>,
    server: rustls::pki_types::ServerName<'static>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// The keys a verifier uses, shared by its clones and by the task that reloads them.
pub(crate) struct Keys {
    algorithm: TokenAlgorithm,
    source: Source,
    current: RwLock<Arc<KeySet>>,
    /// When the key set was last fetched (whatever the outcome); the lock also makes one reload
    /// at a time, so callers that wait for a reload share it.
    fetched: tokio::sync::Mutex<Instant>,
    min_refetch: Duration,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("algorithm", &self.algorithm)
            .field("source", &self.source)
            .field("epoch", &self.current().epoch)
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// The configured key alone (no JWKS): nothing to load later.
    pub(crate) fn configured(settings: &AuthSettings) -> Result<Self, KeyError> {
        if settings.uses_jwks() {
            return Err(KeyError::JwksNeedsStart);
        }
        let key = configured_key(settings)?;
        Ok(Self::with(
            settings,
            Source::Configured,
            Keyed::One(key),
            BTreeMap::new(),
        ))
    }

    /// The keys `settings` name, loaded now (a JWKS from its file or URL), and for a JWKS the
    /// task that reloads them every `jwks_refresh_seconds` for as long as the keys are in use.
    pub(crate) async fn start(settings: &AuthSettings) -> Result<Arc<Self>, KeyError> {
        if !settings.uses_jwks() {
            return Ok(Arc::new(Self::configured(settings)?));
        }
        let source = jwks_source(settings)?;
        if settings.jwks_refresh_seconds == 0 {
            return Err(KeyError::Setting(
                "auth.jwks_refresh_seconds: must be at least 1",
            ));
        }
        if settings.jwks_min_refetch_seconds == 0 {
            return Err(KeyError::Setting(
                "auth.jwks_min_refetch_seconds: must be at least 1",
            ));
        }
        let field = source.field();
        let document = source
            .fetch()
            .await
            .map_err(|reason| KeyError::Jwks { field, reason })?;
        let jwks = usable(settings.algorithm, &document)
            .map_err(|reason| KeyError::Jwks { field, reason })?;
        let keys = Arc::new(Self::with(settings, source, decode(&jwks), jwks));
        tokio::spawn(reload_every(
            Arc::downgrade(&keys),
            Duration::from_secs(settings.jwks_refresh_seconds),
        ));
        Ok(keys)
    }

    fn with(
        settings: &AuthSettings,
        source: Source,
        keys: Keyed,
        jwks: BTreeMap<String, Jwk>,
    ) -> Self {
        Self {
            algorithm: settings.algorithm,
            source,
            current: RwLock::new(Arc::new(KeySet {
                epoch: 0,
                keys,
                jwks,
            })),
            fetched: tokio::sync::Mutex::new(Instant::now()),
            min_refetch: Duration::from_secs(settings.jwks_min_refetch_seconds),
        }
    }

    /// The keys in use now.
    pub(crate) fn current(&self) -> Arc<KeySet> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether keys come from a JWKS (and a token's kid may call for a reload).
    pub(crate) fn reloadable(&self) -> bool {
        !matches!(self.source, Source::Configured)
    }

    /// Reloads the key set if `kid` is not in it and the last fetch is at least
    /// `jwks_min_refetch_seconds` old; waits for a reload another caller started. Returns at
    /// once when the kid is known or the rate limit says no.
    pub(crate) async fn reload_for(&self, kid: &str) {
        if !self.reloadable() || self.current().knows(kid) {
            return;
        }
        let mut fetched = self.fetched.lock().await;
        if self.current().knows(kid) || fetched.elapsed() < self.min_refetch {
            return;
        }
        tracing::info!(kid, "reloading the key set for an unknown key id");
        self.reload(&mut fetched).await;
    }

    /// Fetches the key set and, if its usable keys changed, puts them in use in a new epoch.
    async fn reload(&self, fetched: &mut Instant) {
        *fetched = Instant::now();
        let field = self.source.field();
        let jwks = match self.source.fetch().await {
            Ok(document) => usable(self.algorithm, &document),
            Err(reason) => Err(reason),
        };
        let jwks = match jwks {
            Ok(jwks) => jwks,
            Err(reason) => {
                tracing::warn!(field, %reason, "cannot reload the key set; the keys in use stay");
                return;
            }
        };
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.jwks == jwks {
            return;
        }
        let epoch = current.epoch + 1;
        tracing::info!(
            field,
            epoch,
            kids = ?jwks.keys().collect::<Vec<_>>(),
            "the key set changed"
        );
        *current = Arc::new(KeySet {
            epoch,
            keys: decode(&jwks),
            jwks,
        });
    }
}

impl KeySet {
    fn knows(&self, kid: &str) -> bool {
        match &self.keys {
            Keyed::One(_) => true,
            Keyed::ByKid(keys) => keys.contains_key(kid),
        }
    }
}

/// Reloads the keys every `interval` until they are no longer in use.
async fn reload_every(keys: Weak<Keys>, interval: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(keys) = keys.upgrade() else {
            return;
        };
        let mut fetched = keys.fetched.lock().await;
        keys.reload(&mut fetched).await;
    }
}

/// The key of `hs256_secret` or `public_key_file`.
fn configured_key(settings: &AuthSettings) -> Result<DecodingKey, KeyError> {
    Ok(match settings.algorithm {
        TokenAlgorithm::HS256 => {
            if settings.hs256_secret.len() < MIN_SECRET_BYTES {
                return Err(KeyError::WeakSecret);
            }
            DecodingKey::from_secret(settings.hs256_secret.as_bytes())
        }
        TokenAlgorithm::EdDSA | TokenAlgorithm::ES256 => {
            let pem =
                std::fs::read(&settings.public_key_file).map_err(|source| KeyError::Read {
                    path: settings.public_key_file.clone(),
                    source,
                })?;
            if settings.algorithm == TokenAlgorithm::EdDSA {
                DecodingKey::from_ed_pem(&pem)
            } else {
                DecodingKey::from_ec_pem(&pem)
            }
            .map_err(KeyError::Invalid)?
        }
    })
}

fn jwks_source(settings: &AuthSettings) -> Result<Source, KeyError> {
    match (settings.jwks_file.is_empty(), settings.jwks_url.is_empty()) {
        (false, false) => Err(KeyError::Setting(
            "auth.jwks_file and auth.jwks_url: set one of them, not both",
        )),
        (false, true) => Ok(Source::File(settings.jwks_file.clone())),
        (true, false) => {
            let url = |reason: String| KeyError::Jwks {
                field: "auth.jwks_url",
                reason,
            };
            let uri: http::Uri = settings
                .jwks_url
                .parse()
                .map_err(|error| url(format!("{:?} is not a URL: {error}", settings.jwks_url)))?;
            let Some(host) = uri.host() else {
                return Err(url(format!("{:?} names no host", settings.jwks_url)));
            };
            let ca_file = &settings.jwks_ca_file;
            let tls = match uri.scheme_str() {
                Some("http") if ca_file.is_empty() => None,
                Some("http") => {
                    return Err(KeyError::Setting(
                        "auth.jwks_ca_file is set but auth.jwks_url is not https://",
                    ));
                }
                Some("https") if ca_file.is_empty() => {
                    return Err(KeyError::Setting(
                        "auth.jwks_ca_file is required for an https:// auth.jwks_url",
                    ));
                }
                Some("https") => {
                    let config = service_runtime::tls::https_client("auth.jwks_ca_file", ca_file)
                        .map_err(|reason| KeyError::Jwks {
                        field: "auth.jwks_ca_file",
                        reason,
                    })?;
                    let server =
                        rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']))
                            .map_err(|error| url(format!("{host:?}: {error}")))?
                            .to_owned();
                    Some(Tls { config, server })
                }
                _ => {
                    return Err(url(format!(
                        "{:?}: only http:// and https:// URLs are supported",
                        settings.jwks_url
                    )));
                }
            };
            Ok(Source::Url(uri, tls))
        }
        (true, true) => unreachable!("uses_jwks was checked"),
    }
}

impl Source {
    /// The setting that names the source, for messages.
    fn field(&self) -> &'static str {
        match self {
            Source::Configured => "auth.public_key_file",
            Source::File(_) => "auth.jwks_file",
            Source::Url(..) => "auth.jwks_url",
        }
    }

    /// The key set document.
    async fn fetch(&self) -> Result<Bytes, String> {
        match self {
            Source::Configured => Err("no key set is configured".into()),
            Source::File(path) => {
                let path = path.clone();
                let read = tokio::task::spawn_blocking(move || {
                    std::fs::read(&path).map_err(|error| format!("cannot read {path:?}: {error}"))
                });
                match read.await {
                    Ok(result) => result.map(Bytes::from),
                    Err(error) => Err(format!("the read did not finish: {error}")),
                }
            }
            Source::Url(uri, tls) => tokio::time::timeout(FETCH_TIMEOUT, get(uri, tls.as_ref()))
                .await
                .unwrap_or_else(|_| Err(format!("no answer from {uri} within {FETCH_TIMEOUT:?}"))),
        }
    }
}

/// `GET uri` over HTTP/1.1 with hyper's client connection, over TLS for `https://`, one
/// connection per fetch (a fetch is rare); only `200 OK` with a body of at most
/// [`MAX_JWKS_BYTES`] is a key set.
async fn get(uri: &http::Uri, tls: Option<&Tls>) -> Result<Bytes, String> {
    let host = uri.host().unwrap_or_default();
    let port = uri
        .port_u16()
        .unwrap_or(if tls.is_some() { 443 } else { 80 });
    let stream = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|error| format!("cannot connect to {uri}: {error}"))?;
    match tls {
        None => exchange(uri, stream).await,
        Some(tls) => {
            let stream = tokio_rustls::TlsConnector::from(tls.config.clone())
                .connect(tls.server.clone(), stream)
                .await
                .map_err(|error| format!("{uri}: TLS: {error}"))?;
            exchange(uri, stream).await
        }
    }
}

/// The GET of [`get`] on a connected stream.
async fn exchange<I>(uri: &http::Uri, io: I) -> Result<Bytes, String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let host = uri.host().unwrap_or_default();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|error| format!("{uri}: {error}"))?;
    let connection = tokio::spawn(connection);
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or(host);
    let request = http::Request::get(
        uri.path_and_query()
            .map(|path| path.as_str())
            .unwrap_or("/"),
    )
    .header(http::header::HOST, authority)
    .header(http::header::ACCEPT, "application/json")
    .body(Empty::<Bytes>::new())
    .map_err(|error| format!("{uri}: {error}"))?;
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| format!("{uri}: {error}"))?;
        if response.status() != http::StatusCode::OK {
            return Err(format!("{uri} answered {}", response.status()));
        }
        Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map(|body| body.to_bytes())
            .map_err(|error| format!("{uri}: the body: {error}"))
    }
    .await;
    connection.abort();
    result
}

/// The JWKs of `document` that fit `algorithm`, by kid; an error if none does. Keys of other
/// types, algorithms or uses, keys without a kid, and keys that do not parse are left out; of
/// two keys with one kid, the first is used.
fn usable(algorithm: TokenAlgorithm, document: &[u8]) -> Result<BTreeMap<String, Jwk>, String> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document = serde_json::from_slice(document)
        .map_err(|error| format!("not a JSON Web Key Set: {error}"))?;
    let mut usable = BTreeMap::new();
    for key in document.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(key) else {
            continue;
        };
        let Some(kid) = jwk.common.key_id.clone().filter(|kid| !kid.is_empty()) else {
            continue;
        };
        if fits(algorithm, &jwk) && !usable.contains_key(&kid) {
            usable.insert(kid, jwk);
        }
    }
    if usable.is_empty() {
        return Err(format!(
            "no key with a kid fits the algorithm {algorithm:?}"
        ));
    }
    Ok(usable)
}

/// Whether `jwk` may verify tokens of the pinned `algorithm`.
fn fits(algorithm: TokenAlgorithm, jwk: &Jwk) -> bool {
    let common = &jwk.common;
    let (alg, shape) = match algorithm {
        TokenAlgorithm::HS256 => (
            KeyAlgorithm::HS256,
            matches!(&jwk.algorithm, AlgorithmParameters::OctetKey(_)),
        ),
        TokenAlgorithm::EdDSA => (
            KeyAlgorithm::EdDSA,
            matches!(&jwk.algorithm, AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519),
        ),
        TokenAlgorithm::ES256 => (
            KeyAlgorithm::ES256,
            matches!(&jwk.algorithm, AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256),
        ),
    };
    let alg_fits = common.key_algorithm.is_none_or(|given| given == alg);
    let use_fits = common
        .public_key_use
        .as_ref()
        .is_none_or(|given| *given == PublicKeyUse::Signature);
    let ops_fit = common
        .key_operations
        .as_ref()
        .is_none_or(|ops| ops.contains(&KeyOperations::Verify));
    let strong = match DecodingKey::from_jwk(jwk) {
        Ok(key) if algorithm == TokenAlgorithm::HS256 => key
            .try_get_hmac_secret()
            .is_ok_and(|secret| secret.len() >= MIN_SECRET_BYTES),
        Ok(_) => true,
        Err(_) => false,
    };
    shape && alg_fits && use_fits && ops_fit && strong
}

fn decode(jwks: &BTreeMap<String, Jwk>) -> Keyed {
    Keyed::ByKid(
        jwks.iter()
            .filter_map(|(kid, jwk)| Some((kid.clone(), DecodingKey::from_jwk(jwk).ok()?)))
            .collect(),
    )
}

#[cfg(test)]
mod tests;
