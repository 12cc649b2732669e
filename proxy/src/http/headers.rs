//! Header rules applied to every forwarded request: hop-by-hop headers are
//! removed, the identity header is set by meshward only, and a W3C
//! `traceparent` is passed through or started.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use rand::Rng;

/// Default header carrying the verified peer SPIFFE ID to the app.
pub const DEFAULT_IDENTITY_HEADER: &str = "x-meshward-peer-id";

/// Set by the outbound sidecar when it carries an HTTP/1.x request over HTTP/2
/// to the peer sidecar, so the inbound sidecar speaks HTTP/1.1 to the app.
pub const ORIG_PROTO: HeaderName = HeaderName::from_static("x-meshward-orig-proto");

/// W3C trace context header.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Connection-specific headers (RFC 9110 7.6.1) that a proxy must not forward.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// True for headers that must not be used as the identity header.
pub fn is_reserved(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name == header::CONTENT_LENGTH || name == header::HOST || name == header::TE
}

/// Removes hop-by-hop headers, including those named in `Connection`.
/// `TE: trailers` survives (gRPC needs it over HTTP/2); other TE values go.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::try_from(t.trim()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    let keep_te = headers
        .get_all(header::TE)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case("trailers"))));
    headers.remove(header::TE);
    if keep_te {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// A parsed `traceparent`: what the access log shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// True when meshward started the trace (none or an invalid one came in).
    pub started: bool,
}

/// Keeps a valid incoming `traceparent` or replaces it with a new one.
pub fn ensure_traceparent(headers: &mut HeaderMap) -> TraceContext {
    if let Some(trace_id) = headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(valid_trace_id) {
        return TraceContext { trace_id: trace_id.to_owned(), started: false };
    }
    let mut rng = rand::thread_rng();
    let trace: u128 = rng.gen_range(1..=u128::MAX);
    let span: u64 = rng.gen_range(1..=u64::MAX);
    let value = format!("00-{trace:032x}-{span:016x}-01");
    let trace_id = value[3..35].to_owned();
    if let Ok(v) = HeaderValue::try_from(value) {
        headers.insert(TRACEPARENT, v);
    }
    TraceContext { trace_id, started: true }
}

/// The trace id of a valid version-00 `traceparent`.
fn valid_trace_id(v: &str) -> Option<&str> {
    let parts: Vec<&str> = v.trim().split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    match parts.as_slice() {
        [ver, trace, span, flags]
            if hex(ver, 2)
                && *ver != "ff"
                && hex(trace, 32)
                && hex(span, 16)
                && hex(flags, 2)
                && trace.bytes().any(|b| b != b'0')
                && span.bytes().any(|b| b != b'0') =>
        {
            Some(trace)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed_but_te_trailers_kept() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers, deflate"));
        h.insert("x-app", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h[header::TE], "trailers");
        assert_eq!(h["x-app"], "kept");
    }

    #[test]
    fn valid_traceparent_passes_and_invalid_is_replaced() {
        let mut h = HeaderMap::new();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        h.insert(TRACEPARENT, HeaderValue::from_static(tp));
        let t = ensure_traceparent(&mut h);
        assert_eq!((t.trace_id.as_str(), t.started), ("4bf92f3577b34da6a3ce929d0e0e4736", false));
        assert_eq!(h[TRACEPARENT], tp);

        h.insert(TRACEPARENT, HeaderValue::from_static("00-00000000000000000000000000000000-00f067aa0ba902b7-01"));
        let t = ensure_traceparent(&mut h);
        assert!(t.started);
        let new = h[TRACEPARENT].to_str().expect("ascii");
        assert_eq!(valid_trace_id(new), Some(t.trace_id.as_str()));
    }
}
