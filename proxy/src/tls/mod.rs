//! TLS and workload identity: SPIFFE IDs, the certificate store that reloads
//! files without dropping connections, and the verifiers.

pub mod identity;
pub mod store;
mod verifier;

pub use identity::SpiffeId;
pub use store::{CertStore, Loaded};

/// ALPN protocol id for opaque TCP carried inside mTLS between sidecars.
pub const ALPN_OPAQUE_TCP: &[u8] = b"meshward/tcp";
/// ALPN for HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN for HTTP/1.1.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// A short, stable label for why a TLS handshake failed (a metric label).
pub fn handshake_failure_reason(err: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    if err.kind() == std::io::ErrorKind::TimedOut {
        return "timeout";
    }
    let Some(tls) = err.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
        return match err.kind() {
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => "peer_closed",
            _ => "io",
        };
    };
    match tls {
        Error::NoCertificatesPresented => "no_client_certificate",
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => "unknown_ca",
        Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => "expired",
        Error::InvalidCertificate(CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }) => {
            "not_yet_valid"
        }
        Error::InvalidCertificate(CertificateError::BadSignature) => "bad_signature",
        Error::InvalidCertificate(_) => "bad_certificate",
        Error::AlertReceived(rustls::AlertDescription::UnknownCA) => "peer_rejected_unknown_ca",
        Error::AlertReceived(rustls::AlertDescription::CertificateExpired) => "peer_rejected_expired",
        Error::AlertReceived(_) => "alert_received",
        Error::NoApplicationProtocol => "no_alpn",
        Error::PeerIncompatible(_) => "incompatible",
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } | Error::InappropriateHandshakeMessage { .. } => {
            "protocol"
        }
        _ => "other",
    }
}
