//! Workload identity: SPIFFE IDs and reading them from a certificate's URI SAN.
//!
//! An X.509-SVID carries exactly one URI SAN of the form
//! `spiffe://<trust-domain>/<path>`; Kubernetes workloads use
//! `spiffe://<td>/ns/<namespace>/sa/<service-account>`.

use std::fmt;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Why a SPIFFE ID or a certificate's identity was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The string is not a SPIFFE ID.
    #[error("\"{value}\" is not a SPIFFE ID: {reason} (expected spiffe://<trust-domain>/<path>)")]
    Malformed {
        /// The rejected value (truncated to 128 characters).
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The certificate could not be parsed.
    #[error("certificate is not valid X.509")]
    BadCertificate,
    /// The certificate has no `spiffe://` URI SAN.
    #[error("certificate has no spiffe:// URI SAN")]
    Missing,
    /// The certificate has more than one `spiffe://` URI SAN.
    #[error("certificate has {0} spiffe:// URI SANs (an SVID has exactly one)")]
    Multiple(usize),
}

/// A syntactically valid SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId(String);

impl SpiffeId {
    /// Parses and checks a SPIFFE ID per the SPIFFE ID specification.
    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        let bad = |reason| IdentityError::Malformed { value: s.chars().take(128).collect(), reason };
        if s.len() > 2048 {
            return Err(bad("longer than 2048 bytes"));
        }
        let rest = s.strip_prefix("spiffe://").ok_or_else(|| bad("scheme must be spiffe://"))?;
        let (td, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if td.is_empty() {
            return Err(bad("empty trust domain"));
        }
        if !td.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b)) {
            return Err(bad("trust domain may only hold a-z, 0-9, '-', '.', '_'"));
        }
        if path == "/" {
            return Err(bad("trailing '/'"));
        }
        if !path.is_empty() {
            for seg in path[1..].split('/') {
                if seg.is_empty() {
                    return Err(bad("empty path segment"));
                }
                if seg == "." || seg == ".." {
                    return Err(bad("'.' or '..' path segment"));
                }
                if !seg.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
                    return Err(bad("path may only hold a-z, A-Z, 0-9, '-', '.', '_'"));
                }
            }
        }
        Ok(Self(s.to_owned()))
    }

    /// The trust domain (`cluster.local` in `spiffe://cluster.local/ns/a/sa/b`).
    pub fn trust_domain(&self) -> &str {
        let rest = &self.0["spiffe://".len()..];
        rest.split('/').next().unwrap_or(rest)
    }

    /// The whole ID.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Reads the single SPIFFE ID from a DER certificate's URI SAN.
    pub fn from_cert_der(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|_| IdentityError::BadCertificate)?;
        let san = cert.subject_alternative_name().map_err(|_| IdentityError::BadCertificate)?;
        let mut found = Vec::new();
        if let Some(san) = san {
            for name in &san.value.general_names {
                if let GeneralName::URI(uri) = name {
                    if uri.starts_with("spiffe://") {
                        found.push(*uri);
                    }
                }
            }
        }
        match found.as_slice() {
            [] => Err(IdentityError::Missing),
            [one] => Self::parse(one),
            many => Err(IdentityError::Multiple(many.len())),
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_kubernetes_ids() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/ml/sa/model-server").expect("valid");
        assert_eq!(id.trust_domain(), "cluster.local");
        assert!(SpiffeId::parse("spiffe://example.org").is_ok());
    }

    #[test]
    fn refuses_malformed_ids_quoting_them() {
        for bad in [
            "https://cluster.local/ns/a",
            "spiffe://",
            "spiffe:///ns/a",
            "spiffe://Cluster.local/ns/a",
            "spiffe://td/ns//a",
            "spiffe://td/ns/../a",
            "spiffe://td/",
            "spiffe://td/ns/a b",
            "spiffe://td:8080/a",
        ] {
            let e = SpiffeId::parse(bad).expect_err(bad);
            assert!(e.to_string().contains(&format!("\"{bad}\"")), "{e}");
        }
    }

    #[test]
    fn reads_the_uri_san_of_a_certificate() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = vec![
            rcgen::SanType::DnsName("x.example".try_into().expect("dns")),
            rcgen::SanType::URI("spiffe://td/ns/a/sa/b".try_into().expect("uri")),
        ];
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let id = SpiffeId::from_cert_der(cert.der()).expect("id");
        assert_eq!(id.as_str(), "spiffe://td/ns/a/sa/b");

        let params = rcgen::CertificateParams::new(vec!["only.dns".to_owned()]).expect("params");
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(SpiffeId::from_cert_der(cert.der()), Err(IdentityError::Missing));
        assert_eq!(SpiffeId::from_cert_der(b"garbage"), Err(IdentityError::BadCertificate));
    }
}
