//! The certificate store: cert, key and trust bundle files turned into rustls
//! configurations, swapped atomically when the files change.
//!
//! Files are polled (content hash every `reload_interval`) rather than
//! watched with inotify: Kubernetes Secret and ConfigMap volumes replace a
//! `..data` symlink, which inotify on the file paths misses, and a hash of
//! three small files every two seconds costs nothing measurable. Open
//! connections keep the configuration they were accepted with; new ones get
//! the new one. A bad update keeps the last good set, is logged and counted.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::identity::SpiffeId;
use super::verifier::SpiffeServerVerifier;
use super::{ALPN_H2, ALPN_HTTP11, ALPN_OPAQUE_TCP};
use crate::config::IdentityFiles;

/// Why the certificate files could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A file holds no usable PEM item of the expected kind.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: String,
        /// What is missing or wrong.
        what: String,
    },
    /// The workload certificate does not carry a SPIFFE ID.
    #[error("{path}: {source}")]
    Identity {
        /// The certificate file.
        path: String,
        /// The cause.
        source: super::identity::IdentityError,
    },
    /// rustls refused the material (e.g. key does not match certificate).
    #[error("{0}")]
    Tls(String),
}

/// One consistent set of TLS material and the configurations built from it.
#[derive(Debug)]
pub struct Loaded {
    /// Server config for the inbound listener (client certificates required).
    pub server: Arc<ServerConfig>,
    /// Client config for HTTP between sidecars (ALPN h2, http/1.1).
    pub client_http: Arc<ClientConfig>,
    /// Client config for opaque TCP between sidecars (ALPN meshward/tcp).
    pub client_tcp: Arc<ClientConfig>,
    /// Our own identity.
    pub identity: SpiffeId,
    /// Start of our certificate's validity.
    pub not_before: SystemTime,
    /// End of our certificate's validity.
    pub not_after: SystemTime,
    /// SHA-256 over the three files, to detect changes.
    pub fingerprint: [u8; 32],
}

impl Loaded {
    /// True when our certificate is valid at `now`.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.not_before <= now && now < self.not_after
    }
}

/// The current TLS material, if any has loaded yet.
#[derive(Debug, Default)]
pub struct CertStore {
    current: ArcSwapOption<Loaded>,
}

impl CertStore {
    /// The current material; `None` until the files have loaded once.
    pub fn current(&self) -> Option<Arc<Loaded>> {
        self.current.load_full()
    }

    /// True when material is loaded and our certificate is currently valid.
    pub fn is_ready(&self) -> bool {
        self.current().is_some_and(|l| l.is_valid_at(SystemTime::now()))
    }

    /// Loads the files if they changed since the last successful load.
    /// Returns `Ok(true)` when a new set was swapped in.
    pub fn reload(&self, files: &IdentityFiles) -> Result<bool, LoadError> {
        let raw = RawFiles::read(files)?;
        if self.current().is_some_and(|c| c.fingerprint == raw.fingerprint) {
            return Ok(false);
        }
        let loaded = build(files, &raw)?;
        self.current.store(Some(Arc::new(loaded)));
        Ok(true)
    }
}

struct RawFiles {
    cert: Vec<u8>,
    key: Vec<u8>,
    bundle: Vec<u8>,
    fingerprint: [u8; 32],
}

impl RawFiles {
    fn read(files: &IdentityFiles) -> Result<Self, LoadError> {
        let read =
            |p: &Path| std::fs::read(p).map_err(|source| LoadError::Read { path: p.display().to_string(), source });
        let cert = read(&files.cert)?;
        let key = read(&files.key)?;
        let bundle = read(&files.trust_bundle)?;
        let mut h = Sha256::new();
        for part in [&cert, &key, &bundle] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        Ok(Self { cert, key, bundle, fingerprint: h.finalize().into() })
    }
}

fn pem_err(path: &Path, what: impl Into<String>) -> LoadError {
    LoadError::Pem { path: path.display().to_string(), what: what.into() }
}

fn certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(path, format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_err(path, "no CERTIFICATE found"));
    }
    Ok(certs)
}

fn build(files: &IdentityFiles, raw: &RawFiles) -> Result<Loaded, LoadError> {
    let chain = certs(&files.cert, &raw.cert)?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &raw.key[..])
        .map_err(|e| pem_err(&files.key, format!("invalid PEM: {e}")))?
        .ok_or_else(|| pem_err(&files.key, "no PRIVATE KEY found"))?;
    let mut roots = RootCertStore::empty();
    for ca in certs(&files.trust_bundle, &raw.bundle)? {
        roots.add(ca).map_err(|e| pem_err(&files.trust_bundle, format!("not a usable CA certificate: {e}")))?;
    }
    let roots = Arc::new(roots);

    let leaf = &chain[0];
    let identity = SpiffeId::from_cert_der(leaf)
        .map_err(|source| LoadError::Identity { path: files.cert.display().to_string(), source })?;
    let (_, parsed) =
        X509Certificate::from_der(leaf).map_err(|_| pem_err(&files.cert, "certificate is not valid X.509"))?;
    let to_system = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
        } else {
            SystemTime::UNIX_EPOCH
        }
    };
    let not_before = to_system(parsed.validity().not_before);
    let not_after = to_system(parsed.validity().not_after);

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions = &[&rustls::version::TLS13, &rustls::version::TLS12];
    let tls = |e: rustls::Error| LoadError::Tls(e.to_string());

    let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| LoadError::Tls(format!("trust bundle: {e}")))?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(tls)?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| LoadError::Tls(format!("{}: {e}", files.key.display())))?;
    server.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec(), ALPN_OPAQUE_TCP.to_vec()];

    let verifier = Arc::new(SpiffeServerVerifier::new(roots, provider.signature_verification_algorithms));
    let client = |alpn: Vec<Vec<u8>>| -> Result<Arc<ClientConfig>, LoadError> {
        let mut c = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(tls)?
            .dangerous()
            // Chain, validity and key usage are verified; only the DNS name
            // check is replaced by a SPIFFE ID check (see verifier.rs).
            .with_custom_certificate_verifier(verifier.clone())
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| LoadError::Tls(format!("{}: {e}", files.key.display())))?;
        c.alpn_protocols = alpn;
        Ok(Arc::new(c))
    };
    let client_http = client(vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()])?;
    let client_tcp = client(vec![ALPN_OPAQUE_TCP.to_vec()])?;

    Ok(Loaded {
        server: Arc::new(server),
        client_http,
        client_tcp,
        identity,
        not_before,
        not_after,
        fingerprint: raw.fingerprint,
    })
}
