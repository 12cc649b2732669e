//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>):
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`
//! with the key written `whsec_<base64>`.
//!
//! [`sign`] is what every signed delivery carries; [`verify`] is what a
//! receiver runs (the demo's webhook receiver and the tests use it): it checks
//! the timestamp window first, then compares in constant time over the raw
//! body bytes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::hmac;

/// Prefix of a written secret.
const PREFIX: &str = "whsec_";
/// Shortest and longest key the Standard Webhooks spec recommends, in bytes.
const KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// An HMAC-SHA256 signing key. Its bytes never appear in `Debug` output.
#[derive(Clone)]
pub struct Secret {
    key: hmac::Key,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a written secret was refused. Messages never include the secret.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The text does not start with `whsec_`.
    #[error("secret does not start with \"whsec_\" (expected whsec_<base64>)")]
    Prefix,
    /// The part after the prefix is not base64.
    #[error("secret is not valid base64 after \"whsec_\"")]
    Base64,
    /// The decoded key is too short or too long.
    #[error("secret decodes to {0} bytes (expected 24 to 64)")]
    Length(usize),
}

impl Secret {
    /// Parses `whsec_<base64>` (standard alphabet, padding optional).
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let b64 = text.strip_prefix(PREFIX).ok_or(SecretError::Prefix)?;
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(b64.trim_end_matches('='))
            .map_err(|_| SecretError::Base64)?;
        if !KEY_BYTES.contains(&bytes.len()) {
            return Err(SecretError::Length(bytes.len()));
        }
        Ok(Self::from_bytes(&bytes))
    }

    /// A key from raw bytes (tests, receivers that store the decoded key).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, bytes) }
    }

    fn tag(&self, id: &str, timestamp: &str, body: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.as_bytes());
        ctx.update(b".");
        ctx.update(body);
        ctx.sign()
    }
}

/// The `webhook-signature` value for one message: `v1,<base64>`.
pub fn sign(secret: &Secret, id: &str, timestamp: u64, body: &[u8]) -> String {
    let tag = secret.tag(id, &timestamp.to_string(), body);
    format!("v1,{}", B64.encode(tag.as_ref()))
}

/// Why a delivery failed verification.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// `webhook-id`, `webhook-timestamp` or `webhook-signature` is absent or not text.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// `webhook-timestamp` is not a number of seconds.
    #[error("webhook-timestamp \"{0}\" is not unix seconds")]
    BadTimestamp(String),
    /// The timestamp is further from now than the tolerance.
    #[error("webhook-timestamp {timestamp} is {skew_secs} s away from now (tolerance {tolerance_secs} s)")]
    OutsideTolerance {
        /// The timestamp sent.
        timestamp: u64,
        /// Distance from the receiver's clock.
        skew_secs: u64,
        /// Allowed distance.
        tolerance_secs: u64,
    },
    /// No `v1,` signature in the header matches the body.
    #[error("no v1 signature matches")]
    NoMatch,
}

/// Checks a delivery: `id`, `timestamp` and `signatures` are the values of
/// `webhook-id`, `webhook-timestamp` and `webhook-signature` (space-separated
/// `v1,<base64>` entries, any one may match); `body` is the raw request body.
pub fn verify(
    secret: &Secret,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let ts: u64 = timestamp.trim().parse().map_err(|_| VerifyError::BadTimestamp(clip(timestamp)))?;
    let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let skew = now_secs.abs_diff(ts);
    if skew > tolerance.as_secs() {
        return Err(VerifyError::OutsideTolerance {
            timestamp: ts,
            skew_secs: skew,
            tolerance_secs: tolerance.as_secs(),
        });
    }
    let ts_text = timestamp.trim();
    let mut signed = Vec::with_capacity(id.len() + ts_text.len() + body.len() + 2);
    for part in [id.as_bytes(), b".", ts_text.as_bytes(), b".", body] {
        signed.extend_from_slice(part);
    }
    for entry in signatures.split_ascii_whitespace() {
        let Some(b64) = entry.strip_prefix("v1,") else { continue };
        let Ok(sig) = B64.decode(b64) else { continue };
        // ring compares in constant time.
        if hmac::verify(&secret.key, &signed, &sig).is_ok() {
            return Ok(());
        }
    }
    Err(VerifyError::NoMatch)
}

/// [`verify`] reading the three headers from a request.
pub fn verify_headers(
    secret: &Secret,
    headers: &http::HeaderMap,
    body: &[u8],
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let get =
        |name: &'static str| headers.get(name).and_then(|v| v.to_str().ok()).ok_or(VerifyError::MissingHeader(name));
    verify(secret, get("webhook-id")?, get("webhook-timestamp")?, get("webhook-signature")?, body, now, tolerance)
}

/// A peer-sent value shortened for an error message.
fn clip(s: &str) -> String {
    s.chars().take(32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the Standard Webhooks reference implementations.
    #[test]
    fn matches_the_reference_vector() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("valid secret");
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let now = UNIX_EPOCH + Duration::from_secs(1614265330 + 10);
        let tol = Duration::from_secs(300);
        verify(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", &sig, body, now, tol).expect("verifies");
        // Any one of several signatures may match.
        let several = format!("v1,AAAA v1a,xyz {sig}");
        verify(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", &several, body, now, tol).expect("verifies");
        // A changed body, id or timestamp does not.
        let e = verify(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", &sig, b"{}", now, tol);
        assert_eq!(e, Err(VerifyError::NoMatch));
        let e = verify(&secret, "msg_other", "1614265330", &sig, body, now, tol);
        assert_eq!(e, Err(VerifyError::NoMatch));
        let late = UNIX_EPOCH + Duration::from_secs(1614265330 + 301);
        let e = verify(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", &sig, body, late, tol);
        assert!(matches!(e, Err(VerifyError::OutsideTolerance { skew_secs: 301, .. })), "{e:?}");
    }

    #[test]
    fn bad_secrets_are_refused_without_echoing_them() {
        assert_eq!(Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").err(), Some(SecretError::Prefix));
        assert_eq!(Secret::parse("whsec_!!!notbase64!!!").err(), Some(SecretError::Base64));
        assert_eq!(Secret::parse("whsec_c2hvcnQ=").err(), Some(SecretError::Length(5)));
        let s = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("valid");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
    }
}
