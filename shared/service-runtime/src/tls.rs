//! Optional TLS and mutual TLS, configured by PEM file paths: the server side of every gRPC
//! listener (`[server.tls]`) and the client side of every upstream channel
//! (`[upstreams.<name>.tls]`). Both run on rustls with the `ring` provider (the server side
//! through tonic, the client side through [`crate::upstream::Transport`]);
//! [`https_client`] is the same client side for plain HTTPS (a gateway's key set URL).
//!
//! Every file is read and checked when the settings are turned into a configuration, so a bad
//! path, bad PEM or a key that does not fit its certificate fails at start-up with the settings
//! key named, instead of at the first handshake.

use std::sync::Arc;

use rustls::{
    RootCertStore,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};
use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `[server.tls]`: TLS on the gRPC port (and so on the Twirp routes that share it). The metrics
/// port stays plaintext.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerTlsSettings {
    /// The server's certificate chain, PEM, leaf first. Empty: plaintext (h2c).
    pub cert_file: String,
    /// The certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// The CA certificates, PEM, that issue client certificates. Set: mutual TLS, and every
    /// client must present a certificate one of them issued.
    pub client_ca_file: String,
}

impl ServerTlsSettings {
    pub fn enabled(&self) -> bool {
        !self.cert_file.is_empty()
    }

    /// Whether clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.enabled() && !self.client_ca_file.is_empty()
    }

    /// The tonic configuration, or `None` for plaintext; `field` (`server.tls`) prefixes the
    /// settings keys named in errors.
    pub fn config(&self, field: &str) -> Result<Option<ServerTlsConfig>, String> {
        if !self.enabled() {
            for (key, value) in [
                ("key_file", &self.key_file),
                ("client_ca_file", &self.client_ca_file),
            ] {
                if !value.is_empty() {
                    return Err(format!(
                        "{field}.{key} is set but {field}.cert_file is empty (TLS is off)"
                    ));
                }
            }
            return Ok(None);
        }
        let (cert_pem, chain) = certificates(&format!("{field}.cert_file"), &self.cert_file)?;
        let key_field = format!("{field}.key_file");
        if self.key_file.is_empty() {
            return Err(format!(
                "{key_field} is empty, but {field}.cert_file is set"
            ));
        }
        let (key_pem, key) = private_key(&key_field, &self.key_file)?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("{field}: {error}"))?;
        let mut config = ServerTlsConfig::new()
            .identity(Identity::from_pem(cert_pem, key_pem))
            .timeout(HANDSHAKE_TIMEOUT);
        if self.client_ca_file.is_empty() {
            builder
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .map_err(|error| format!("{key_field}: does not fit {field}.cert_file: {error}"))?;
        } else {
            let ca_field = format!("{field}.client_ca_file");
            let (ca_pem, roots) = trust_anchors(&ca_field, &self.client_ca_file)?;
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|error| format!("{ca_field}: {error}"))?;
            builder
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain, key)
                .map_err(|error| format!("{key_field}: does not fit {field}.cert_file: {error}"))?;
            config = config.client_ca_root(Certificate::from_pem(ca_pem));
        }
        Ok(Some(config))
    }
}

/// `[upstreams.<name>.tls]`: how a client verifies an `https://` server and, for mutual TLS,
/// which certificate it presents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientTlsSettings {
    /// The CA certificates, PEM, that the server's certificate must chain to. Required for
    /// `https://`.
    pub ca_file: String,
    /// The client certificate chain, PEM, for servers that require one (mutual TLS).
    pub cert_file: String,
    /// The client certificate's private key, PEM.
    pub key_file: String,
    /// The name the server's certificate must carry; empty: the host of the URL.
    pub domain: String,
}

impl ClientTlsSettings {
    /// Whether any key is set.
    pub fn is_set(&self) -> bool {
        *self != Self::default()
    }

    /// The TLS of an upstream channel to `url`: `Some` for `https://`, `None` for a plain url,
    /// which must then have no TLS settings (they would be ignored). `url_key` and `tls_key`
    /// name the settings in errors.
    pub fn upstream(
        &self,
        url: &http::Uri,
        url_key: &str,
        tls_key: &str,
    ) -> Result<Option<crate::upstream::Tls>, String> {
        if url.scheme_str() != Some("https") {
            if self.is_set() {
                return Err(format!("{tls_key} is set but {url_key} is not https://"));
            }
            return Ok(None);
        }
        let mut config = self.config(tls_key)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        let host = url.host().unwrap_or_default();
        let name = if self.domain.is_empty() {
            // `[::1]` is checked as the address `::1`.
            host.trim_start_matches('[').trim_end_matches(']')
        } else {
            &self.domain
        };
        let name = ServerName::try_from(name.to_owned()).map_err(|error| {
            if self.domain.is_empty() {
                format!("{url_key}: {host:?} is no name to verify a certificate for: {error}")
            } else {
                format!("{tls_key}.domain: {:?}: {error}", self.domain)
            }
        })?;
        Ok(Some(crate::upstream::Tls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            name,
        }))
    }

    /// The rustls configuration; `field` (`upstreams.tracks.tls`) prefixes the settings keys
    /// named in errors.
    fn config(&self, field: &str) -> Result<rustls::ClientConfig, String> {
        let ca_field = format!("{field}.ca_file");
        if self.ca_file.is_empty() {
            return Err(format!("{ca_field} is required for an https:// url"));
        }
        let (_, roots) = trust_anchors(&ca_field, &self.ca_file)?;
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("{field}: {error}"))?
            .with_root_certificates(roots);
        let config = match (self.cert_file.is_empty(), self.key_file.is_empty()) {
            (true, true) => builder.with_no_client_auth(),
            (false, false) => {
                let (_, chain) = certificates(&format!("{field}.cert_file"), &self.cert_file)?;
                let key_field = format!("{field}.key_file");
                let (_, key) = private_key(&key_field, &self.key_file)?;
                builder.with_client_auth_cert(chain, key).map_err(|error| {
                    format!("{key_field}: does not fit {field}.cert_file: {error}")
                })?
            }
            (true, false) => {
                return Err(format!(
                    "{field}.key_file is set but {field}.cert_file is empty"
                ));
            }
            (false, true) => {
                return Err(format!(
                    "{field}.cert_file is set but {field}.key_file is empty"
                ));
            }
        };
        if !self.domain.is_empty() {
            ServerName::try_from(self.domain.as_str())
                .map_err(|error| format!("{field}.domain: {:?}: {error}", self.domain))?;
        }
        Ok(config)
    }
}

/// A rustls client configuration for HTTPS that trusts the CA certificates in `ca_file` only,
/// on the same provider and protocol versions as the gRPC channels; `field` names the setting
/// in errors.
pub fn https_client(field: &str, ca_file: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    let (_, roots) = trust_anchors(field, ca_file)?;
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("{field}: {error}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(field: &str, path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|error| format!("{field}: cannot read {path:?}: {error}"))
}

/// The PEM text of `path` and the certificates in it (at least one).
fn certificates(
    field: &str,
    path: &str,
) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>), String> {
    let pem = read(field, path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{field}: {path:?} is not valid PEM: {error}"))?;
    if certificates.is_empty() {
        return Err(format!("{field}: {path:?} holds no PEM certificate"));
    }
    Ok((pem, certificates))
}

/// The PEM text of `path` and the private key in it.
fn private_key(field: &str, path: &str) -> Result<(Vec<u8>, PrivateKeyDer<'static>), String> {
    let pem = read(field, path)?;
    let key = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|error| format!("{field}: {path:?} holds no PEM private key: {error}"))?;
    Ok((pem, key))
}

/// The PEM text of `path` and its certificates as trust anchors, each of which must parse.
fn trust_anchors(field: &str, path: &str) -> Result<(Vec<u8>, Arc<RootCertStore>), String> {
    let (pem, certificates) = self::certificates(field, path)?;
    let mut roots = RootCertStore::empty();
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|error| format!("{field}: {path:?}: {error}"))?;
    }
    Ok((pem, Arc::new(roots)))
}

/// How the `health` subcommand reaches its own server when `server` is on: it trusts `ca_file`,
/// by default the certificates of the server's own `cert_file` and `client_ca_file` (enough for
/// a self-signed certificate, a chain file that holds its issuer, or one CA for servers and
/// clients); under mutual TLS it presents `identity` (certificate and key files), by default
/// the server's own certificate and key; and it expects `domain` in the server's certificate.
pub fn loopback_client(
    server: &ServerTlsSettings,
    ca_file: Option<&str>,
    identity: Option<(&str, &str)>,
    domain: &str,
) -> Result<ClientTlsConfig, String> {
    let mut trusted = Vec::new();
    match ca_file {
        Some(path) => trusted.extend(certificates("--ca-file", path)?.0),
        None => {
            trusted.extend(certificates("server.tls.cert_file", &server.cert_file)?.0);
            if server.mutual() {
                trusted.push(b'\n');
                trusted
                    .extend(certificates("server.tls.client_ca_file", &server.client_ca_file)?.0);
            }
        }
    }
    ServerName::try_from(domain).map_err(|error| format!("--domain: {domain:?}: {error}"))?;
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(trusted))
        .domain_name(domain)
        .timeout(HANDSHAKE_TIMEOUT);
    let identity = match identity {
        Some((cert, key)) => Some((
            certificates("--cert-file", cert)?.0,
            private_key("--key-file", key)?.0,
        )),
        None if server.mutual() => Some((
            certificates("server.tls.cert_file", &server.cert_file)?.0,
            private_key("server.tls.key_file", &server.key_file)?.0,
        )),
        None => None,
    };
    if let Some((cert, key)) = identity {
        config = config.identity(Identity::from_pem(cert, key));
    }
    Ok(config)
}

/// Whether the caller of `request` presented a client certificate (verified by the server's
/// `client_ca_file`) that names one of `names` among its DNS subject alternative names, so that
/// a method can admit only some of the callers the CA vouches for. True when `names` is empty;
/// false for a caller without a certificate otherwise.
pub fn client_named<T>(request: &tonic::Request<T>, names: &[String]) -> bool {
    use rustls::pki_types::ServerName;
    if names.is_empty() {
        return true;
    }
    let Some(certificates) = request.peer_certs() else {
        return false;
    };
    let Some(leaf) = certificates.first() else {
        return false;
    };
    let Ok(parsed) = rustls::server::ParsedCertificate::try_from(leaf) else {
        return false;
    };
    names.iter().any(|name| {
        ServerName::try_from(name.as_str())
            .is_ok_and(|name| rustls::client::verify_server_name(&parsed, &name).is_ok())
    })
}
