//! Data-plane errors and the one place they become HTTP responses.
//!
//! Each error knows whether the client, the upstream or meshward caused it.
//! The client gets a fixed short reason; the log gets the cause.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use super::body::{ProxyBody, ProxyBodyExt};

/// Something that stops a request from being forwarded or answered.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request's HTTP/1 framing is ambiguous (smuggling risk).
    #[error("ambiguous request framing: {0}")]
    Framing(&'static str),
    /// The request is malformed in another way.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The request head (or trailers) exceeds `limits.max_header_bytes`.
    #[error("request headers too large")]
    HeadersTooLarge,
    /// The request body exceeds `limits.max_request_body_bytes`.
    #[error("request body larger than limits.max_request_body_bytes")]
    BodyTooLarge,
    /// The client did not complete a request head within `limits.header_read_timeout`.
    #[error("request head not received within limits.header_read_timeout")]
    HeaderTimeout,
    /// Connecting to the upstream failed.
    #[error("upstream connect to {addr} failed: {cause}")]
    UpstreamConnect {
        /// The upstream address.
        addr: String,
        /// The cause chain.
        cause: String,
    },
    /// Connecting to the upstream took longer than `limits.connect_timeout`.
    #[error("upstream connect to {0} timed out")]
    UpstreamConnectTimeout(String),
    /// The upstream did not answer within `limits.request_timeout`.
    #[error("upstream did not respond in time")]
    UpstreamTimeout,
    /// The upstream's identity is not the expected one.
    #[error("upstream identity {got} is not the expected {expected}")]
    UpstreamIdentity {
        /// What the peer presented.
        got: String,
        /// What the route expects.
        expected: String,
    },
    /// The upstream broke the exchange after connecting.
    #[error("upstream failed: {0}")]
    Upstream(String),
    /// A rate-limit policy's bucket for this client is empty.
    #[error("rate limited: {which}")]
    RateLimited {
        /// `policy 'NAME' rule N`.
        which: String,
        /// Seconds until a token is available (rounded up).
        retry_after_secs: u64,
        /// The bucket's requests per window.
        limit: u32,
        /// The window in seconds (rounded up).
        window_secs: u64,
    },
    /// A `RequestAuthentication` refused the token (or its absence).
    #[error("unauthenticated: {which}: {code}")]
    Unauthenticated {
        /// `policy 'NAME' rule N`.
        which: String,
        /// Machine-readable reason, e.g. `jwt_expired`.
        code: &'static str,
    },
    /// The keys to check the token could not be loaded (fail closed).
    #[error("authentication unavailable: {0}: JWT keys not loaded")]
    AuthKeysUnavailable(String),
    /// An authorization policy denied the request.
    #[error("denied: {0}")]
    PolicyDenied(String),
    /// An anomaly policy refused the request (blocked, or its client is quarantined).
    #[error("refused: {which}: {code}")]
    AnomalyRefused {
        /// `policy 'NAME' rule N`.
        which: String,
        /// `anomaly_blocked` or `client_quarantined`.
        code: &'static str,
        /// Seconds until a quarantine ends.
        retry_after_secs: Option<u64>,
    },
    /// The detector was overloaded and the anomaly policy fails closed.
    #[error("unavailable: {0}: detector_unavailable")]
    DetectorUnavailable(String),
    /// meshward is not ready (no valid certificate) or over a limit.
    #[error("unavailable: {0}")]
    Unavailable(&'static str),
}

impl ProxyError {
    /// Status code for this error: the only mapping in the code base.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Framing(_) | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::HeaderTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::UpstreamConnect { .. } | Self::UpstreamIdentity { .. } | Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::UpstreamConnectTimeout(_) | Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Unavailable(_) | Self::AuthKeysUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Self::PolicyDenied(_) | Self::AnomalyRefused { .. } => StatusCode::FORBIDDEN,
            Self::DetectorUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// A short stable reason: the response body, a metric label and a log field.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Framing(r) => r,
            Self::BadRequest(r) => r,
            Self::BodyTooLarge => "request body too large",
            Self::HeadersTooLarge => "request headers too large",
            Self::HeaderTimeout => "request header timeout",
            Self::UpstreamConnect { .. } => "upstream connect failed",
            Self::UpstreamConnectTimeout(_) => "upstream connect timeout",
            Self::UpstreamTimeout => "upstream response timeout",
            Self::UpstreamIdentity { .. } => "upstream identity mismatch",
            Self::Upstream(_) => "upstream reset",
            Self::Unavailable(r) => r,
            Self::Unauthenticated { code, .. } => code,
            Self::AuthKeysUnavailable(_) => "jwt_keys_unavailable",
            Self::PolicyDenied(_) => "denied by policy",
            Self::RateLimited { .. } => "rate limited",
            Self::AnomalyRefused { code, .. } => code,
            Self::DetectorUnavailable(_) => "detector_unavailable",
        }
    }

    /// The policy and rule behind a refusal (`policy 'NAME' rule N`), if any.
    pub fn which(&self) -> Option<&str> {
        match self {
            Self::PolicyDenied(w)
            | Self::RateLimited { which: w, .. }
            | Self::Unauthenticated { which: w, .. }
            | Self::AuthKeysUnavailable(w)
            | Self::AnomalyRefused { which: w, .. }
            | Self::DetectorUnavailable(w) => Some(w),
            _ => None,
        }
    }

    /// Who caused it, for logs: client, upstream or proxy.
    pub fn origin(&self) -> &'static str {
        match self {
            Self::Framing(_)
            | Self::BadRequest(_)
            | Self::HeadersTooLarge
            | Self::BodyTooLarge
            | Self::HeaderTimeout => "client",
            Self::Unavailable(_) => "proxy",
            Self::PolicyDenied(_)
            | Self::RateLimited { .. }
            | Self::Unauthenticated { .. }
            | Self::AuthKeysUnavailable(_)
            | Self::AnomalyRefused { .. }
            | Self::DetectorUnavailable(_) => "policy",
            _ => "upstream",
        }
    }

    /// The response the client gets. Client errors close the connection.
    pub fn to_response(&self) -> Response<ProxyBody> {
        // A denial names the policy and rule that decided, so teams can tell
        // which rule to look at; everything else gets its fixed reason.
        let body = match self {
            Self::PolicyDenied(_)
            | Self::RateLimited { .. }
            | Self::Unauthenticated { .. }
            | Self::AuthKeysUnavailable(_)
            | Self::AnomalyRefused { .. }
            | Self::DetectorUnavailable(_) => format!("{self}\n"),
            _ => format!("{}\n", self.reason()),
        };
        let mut resp = Response::new(ProxyBody::full(Bytes::from(body)));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        h.insert("x-meshward-error", HeaderValue::from_static(self.reason()));
        if let Self::PolicyDenied(which)
        | Self::RateLimited { which, .. }
        | Self::Unauthenticated { which, .. }
        | Self::AuthKeysUnavailable(which)
        | Self::AnomalyRefused { which, .. }
        | Self::DetectorUnavailable(which) = self
        {
            if let Ok(v) = HeaderValue::from_str(which) {
                h.insert("x-meshward-policy", v);
            }
        }
        if let Self::RateLimited { retry_after_secs, limit, window_secs, .. } = self {
            // Retry-After (RFC 9110) and the IETF RateLimit header fields draft.
            h.insert(http::header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            h.insert("ratelimit-limit", HeaderValue::from(*limit));
            h.insert("ratelimit-remaining", HeaderValue::from(0u32));
            h.insert("ratelimit-reset", HeaderValue::from(*retry_after_secs));
            if let Ok(v) = HeaderValue::from_str(&format!("{limit};w={window_secs}")) {
                h.insert("ratelimit-policy", v);
            }
        }
        if let Self::Unauthenticated { code, .. } = self {
            // RFC 6750: no error code when no token was sent.
            let v = if *code == "jwt_missing" {
                HeaderValue::from_static("Bearer realm=\"meshward\"")
            } else {
                HeaderValue::from_static("Bearer realm=\"meshward\", error=\"invalid_token\"")
            };
            h.insert(http::header::WWW_AUTHENTICATE, v);
        }
        if let Self::AuthKeysUnavailable(_) | Self::DetectorUnavailable(_) = self {
            h.insert(http::header::RETRY_AFTER, HeaderValue::from(5u32));
        }
        if let Self::AnomalyRefused { retry_after_secs: Some(secs), .. } = self {
            h.insert(http::header::RETRY_AFTER, HeaderValue::from(*secs));
        }
        if self.origin() == "client" {
            h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }

    /// Raw HTTP/1.1 bytes of the response, for the framing guard which answers
    /// before hyper has seen the request.
    pub fn to_http1_bytes(&self) -> Vec<u8> {
        let body = format!("{}\n", self.reason());
        let status = self.status();
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\nx-meshward-error: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            self.reason(),
            body.len(),
            body
        )
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_maps_to_its_status() {
        assert_eq!(ProxyError::Framing("x").status(), 400);
        assert_eq!(ProxyError::BodyTooLarge.status(), 413);
        assert_eq!(ProxyError::HeaderTimeout.status(), 408);
        assert_eq!(ProxyError::UpstreamConnect { addr: "a".into(), cause: "b".into() }.status(), 502);
        assert_eq!(ProxyError::UpstreamTimeout.status(), 504);
        assert_eq!(ProxyError::Unavailable("no certificate").status(), 503);
    }

    #[test]
    fn raw_response_is_well_formed() {
        let raw = String::from_utf8(ProxyError::Framing("both content-length and transfer-encoding").to_http1_bytes())
            .expect("utf8");
        assert!(raw.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{raw}");
        let (head, body) = raw.split_once("\r\n\r\n").expect("head");
        assert!(head.contains(&format!("content-length: {}", body.len())), "{raw}");
    }
}
