//! Which BFF client makes a call: its name and version, for the gateways' field usage, allowed
//! masks and fanout budgets (`gateway_kit::governance`).
//!
//! The name comes from the token's client claim (`auth.client_claim`, `azp` by default) and,
//! only when `clients.trust_headers` says the network lets nobody but the BFFs reach the
//! gateway, from `x-client-name` metadata (as Apollo's `apollographql-client-name`); the token
//! wins when both name one. The version comes from `x-client-version` under the same trust. A
//! call that names no client is the client `unknown`, served as any other unless
//! `clients.required` refuses it.
//!
//! Names become metric labels, so the set is bounded: with `clients.known` set, only those
//! names (and the clients the allow lists and budgets name) are told apart and every other
//! name is `unknown`; without it, the first `clients.max_names` distinct names are, and later
//! ones are `other`. Names are 1 to 64 characters of `A-Z a-z 0-9 . _ - : / @`.

use std::{
    collections::HashSet,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
};

use serde::{Deserialize, Serialize};
use tonic::{Status, metadata::MetadataMap};

use crate::Principal;

/// The metadata key a trusted caller names its client in.
pub const CLIENT_NAME: &str = "x-client-name";
/// The metadata key a trusted caller names its client's version in.
pub const CLIENT_VERSION: &str = "x-client-version";
/// The client of a call that names none, or a name outside `clients.known`.
pub const UNKNOWN: &str = "unknown";
/// Every name beyond the first `clients.max_names`.
pub const OTHER: &str = "other";

const MAX_NAME_LEN: usize = 64;
const MAX_VERSION_LEN: usize = 32;

/// `[clients]`: where a call's client name comes from and which names are told apart.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    /// Read `x-client-name` and `x-client-version` metadata. Only where nothing but the BFFs
    /// reaches the gateway (mutual TLS, a private network): any caller can set them.
    pub trust_headers: bool,
    /// Refuse calls that name no client told apart (`unknown`) with UNAUTHENTICATED.
    pub required: bool,
    /// The client names told apart; empty: the first `max_names` names seen.
    pub known: Vec<String>,
    /// With `known` empty, how many distinct names are told apart before the rest are `other`.
    pub max_names: usize,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            trust_headers: false,
            required: false,
            known: Vec::new(),
            max_names: 100,
        }
    }
}

/// The client of one call, as the authenticator identified it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Client {
    name: Arc<str>,
    version: Option<Arc<str>>,
}

impl Client {
    /// The client of a call that names none.
    pub fn unknown() -> Self {
        Self {
            name: Arc::from(UNKNOWN),
            version: None,
        }
    }

    /// A client by name, with no version (tests and tools).
    pub fn named(name: &str) -> Self {
        Self {
            name: Arc::from(name),
            version: None,
        }
    }

    /// The name, bounded as the module says: `unknown`, `other` or a name told apart.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name as a shareable string.
    pub fn shared_name(&self) -> Arc<str> {
        self.name.clone()
    }

    /// The version the caller named, if trusted and given.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// Whether the call named a client that is told apart.
    pub fn is_identified(&self) -> bool {
        self.name() != UNKNOWN
    }
}

/// The client of a request, as the authenticator put it in the extensions; `unknown` when no
/// authenticator with clients ran.
pub fn client<T>(request: &tonic::Request<T>) -> Client {
    request
        .extensions()
        .get::<Client>()
        .cloned()
        .unwrap_or_else(Client::unknown)
}

/// Names clients; built once per gateway, shared by gRPC and Twirp.
#[derive(Debug)]
pub struct ClientNames {
    settings: ClientSettings,
    /// Names always told apart: `known`, and the names allow lists and budgets configure.
    reserved: HashSet<Arc<str>>,
    /// With `known` empty, the names told apart so far.
    seen: RwLock<HashSet<Arc<str>>>,
    /// Whether the cap was reported.
    capped: AtomicBool,
}

impl ClientNames {
    /// `configured` are the client names other settings (allow lists, budgets) name: they are
    /// always told apart. A name that breaks the name rule fails start-up.
    pub fn new(settings: &ClientSettings, configured: &[String]) -> Result<Self, String> {
        let mut reserved = HashSet::new();
        for (field, name) in settings
            .known
            .iter()
            .map(|name| ("clients.known", name))
            .chain(configured.iter().map(|name| ("a client setting", name)))
        {
            if !valid_name(name) {
                return Err(format!(
                    "{field}: {name:?} is not a client name (1 to {MAX_NAME_LEN} of A-Z a-z 0-9 . _ - : / @)"
                ));
            }
            reserved.insert(Arc::from(name.as_str()));
        }
        Ok(Self {
            settings: settings.clone(),
            reserved,
            seen: RwLock::new(HashSet::new()),
            capped: AtomicBool::new(false),
        })
    }

    /// The client of a call by `principal` with `metadata`: INVALID_ARGUMENT for a trusted
    /// header that breaks the name or version rule, UNAUTHENTICATED for an unknown client when
    /// clients are required.
    pub fn identify(
        &self,
        metadata: &MetadataMap,
        principal: &Principal,
    ) -> Result<Client, Status> {
        let header = |key: &'static str, max: usize| -> Result<Option<&str>, Status> {
            if !self.settings.trust_headers {
                return Ok(None);
            }
            match metadata.get(key) {
                None => Ok(None),
                Some(value) => match value.to_str() {
                    Ok(text) if valid(text, max) => Ok(Some(text)),
                    _ => Err(Status::invalid_argument(format!(
                        "{key}: must be 1 to {max} of A-Z a-z 0-9 . _ - : / @"
                    ))),
                },
            }
        };
        let from_header = header(CLIENT_NAME, MAX_NAME_LEN)?;
        let version = header(CLIENT_VERSION, MAX_VERSION_LEN)?.map(Arc::from);
        // A token's claim the identity provider wrote, and the caller cannot fix: one that
        // breaks the rule names no client.
        let claimed = principal.client.as_deref().filter(|name| valid_name(name));
        let name = match claimed.or(from_header) {
            Some(name) => self.bounded(name),
            None => Arc::from(UNKNOWN),
        };
        let client = Client { name, version };
        if self.settings.required && !client.is_identified() {
            return Err(Status::unauthenticated(
                "this gateway serves identified BFF clients only: the call names no known client \
                 (a token issued to the client, or x-client-name where trusted)",
            ));
        }
        Ok(client)
    }

    /// `name` if it is told apart, else `unknown` or `other`.
    fn bounded(&self, name: &str) -> Arc<str> {
        if let Some(reserved) = self.reserved.get(name) {
            return reserved.clone();
        }
        if !self.settings.known.is_empty() {
            return Arc::from(UNKNOWN);
        }
        if let Some(seen) = self
            .seen
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return seen.clone();
        }
        let mut seen = self.seen.write().unwrap_or_else(|e| e.into_inner());
        if let Some(seen) = seen.get(name) {
            return seen.clone();
        }
        if seen.len() >= self.settings.max_names {
            if !self.capped.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    max_names = self.settings.max_names,
                    "clients.max_names reached: further client names count as `other`"
                );
            }
            return Arc::from(OTHER);
        }
        let name: Arc<str> = Arc::from(name);
        seen.insert(name.clone());
        name
    }
}

fn valid_name(name: &str) -> bool {
    valid(name, MAX_NAME_LEN) && name != OTHER
}

fn valid(text: &str, max: usize) -> bool {
    !text.is_empty()
        && text.len() <= max
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:/@".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(client: Option<&str>) -> Principal {
        Principal {
            user_id: None,
            territory: "US".into(),
            client: client.map(str::to_owned),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        for (key, value) in pairs {
            metadata.insert(*key, value.parse().unwrap());
        }
        metadata
    }

    #[test]
    fn the_token_names_the_client_and_headers_count_only_when_trusted() {
        let untrusted = ClientNames::new(&ClientSettings::default(), &[]).unwrap();
        let sent = headers(&[(CLIENT_NAME, "ios-bff"), (CLIENT_VERSION, "7.1.0")]);
        let client = untrusted
            .identify(&sent, &principal(Some("web-bff")))
            .unwrap();
        assert_eq!((client.name(), client.version()), ("web-bff", None));
        let client = untrusted.identify(&sent, &principal(None)).unwrap();
        assert_eq!(client.name(), UNKNOWN);

        let settings = ClientSettings {
            trust_headers: true,
            ..ClientSettings::default()
        };
        let trusted = ClientNames::new(&settings, &[]).unwrap();
        let client = trusted.identify(&sent, &principal(None)).unwrap();
        assert_eq!(
            (client.name(), client.version()),
            ("ios-bff", Some("7.1.0"))
        );
        // The token wins over the header.
        let client = trusted
            .identify(&sent, &principal(Some("web-bff")))
            .unwrap();
        assert_eq!(client.name(), "web-bff");
        let bad = headers(&[(CLIENT_NAME, "web bff\"")]);
        let status = trusted.identify(&bad, &principal(None)).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().starts_with("x-client-name:"));
    }

    #[test]
    fn names_are_bounded_by_the_known_list_or_the_cap() {
        let known = ClientSettings {
            known: vec!["web-bff".into()],
            ..ClientSettings::default()
        };
        let names = ClientNames::new(&known, &["ios-bff".into()]).unwrap();
        let named = |names: &ClientNames, name: &str| {
            names
                .identify(&MetadataMap::new(), &principal(Some(name)))
                .unwrap()
                .name()
                .to_owned()
        };
        assert_eq!(named(&names, "web-bff"), "web-bff");
        assert_eq!(named(&names, "ios-bff"), "ios-bff");
        assert_eq!(named(&names, "made-up"), UNKNOWN);

        let capped = ClientSettings {
            max_names: 2,
            ..ClientSettings::default()
        };
        let names = ClientNames::new(&capped, &[]).unwrap();
        assert_eq!(named(&names, "a"), "a");
        assert_eq!(named(&names, "b"), "b");
        assert_eq!(named(&names, "c"), OTHER);
        assert_eq!(named(&names, "d"), OTHER);
        assert_eq!(named(&names, "a"), "a");
        // A claim that breaks the rule names no client; `other` is no one's name.
        assert_eq!(named(&names, "has space"), UNKNOWN);
        assert!(ClientNames::new(&capped, &["other".into()]).is_err());
    }

    #[test]
    fn required_clients_refuse_unknown_callers() {
        let settings = ClientSettings {
            required: true,
            known: vec!["web-bff".into()],
            ..ClientSettings::default()
        };
        let names = ClientNames::new(&settings, &[]).unwrap();
        let metadata = MetadataMap::new();
        assert!(
            names
                .identify(&metadata, &principal(Some("web-bff")))
                .is_ok()
        );
        for caller in [None, Some("made-up")] {
            let status = names.identify(&metadata, &principal(caller)).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
        }
    }
}
