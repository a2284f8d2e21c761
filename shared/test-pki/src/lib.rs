//! Certificates for TLS tests, made with rcgen: a folder of PEM files ([`Pki`]) holding
//! certificate authorities ([`Ca`]) and the certificates they issue ([`Leaf`]), each valid for
//! `localhost` and `127.0.0.1`. Used by the tests of every crate that speaks TLS; never by a
//! service.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A folder of PEM files, removed when dropped.
pub struct Pki {
    dir: tempfile::TempDir,
}

/// A certificate authority and the file of its certificate.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate's PEM file.
    pub file: String,
}

/// The files of a certificate and its key.
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Pki {
    /// An empty folder.
    ///
    /// # Panics
    /// When no temporary folder can be made (tests only).
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temporary folder"),
        }
    }

    /// Writes `text` to the file `name` in the folder and returns its path.
    ///
    /// # Panics
    /// When the file cannot be written (tests only).
    pub fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("the PEM file is written");
        path.to_str().expect("a UTF-8 path").to_owned()
    }

    /// A new self-signed certificate authority named `name`, written to `name.pem`.
    ///
    /// # Panics
    /// When rcgen cannot make the certificate (tests only).
    pub fn ca(&self, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("a CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("a CA certificate");
        let file = self.write(&format!("{name}.pem"), &issuer.pem());
        Ca { issuer, file }
    }

    /// A certificate `ca` issues to `name`, valid for `localhost` and `127.0.0.1`, written to
    /// `name.pem` with its key in `name-key.pem`.
    ///
    /// # Panics
    /// When rcgen cannot make the certificate (tests only).
    pub fn leaf(&self, ca: &Ca, name: &str) -> Leaf {
        self.leaf_for(ca, name, &[])
    }

    /// As [`Pki::leaf`], also valid for the DNS names `also`.
    ///
    /// # Panics
    /// When rcgen cannot make the certificate (tests only).
    pub fn leaf_for(&self, ca: &Ca, name: &str, also: &[&str]) -> Leaf {
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        names.extend(also.iter().map(|name| (*name).to_owned()));
        let mut params = CertificateParams::new(names).expect("certificate parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &ca.issuer).expect("a certificate");
        Leaf {
            cert: self.write(&format!("{name}.pem"), &cert.pem()),
            key: self.write(&format!("{name}-key.pem"), &key.serialize_pem()),
        }
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}
