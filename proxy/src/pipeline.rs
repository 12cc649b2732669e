//! The request's life, phase after phase, in one place.
//!
//! Inbound (a peer sidecar or a plaintext client calls our app):
//!  1. TLS and peer identity: done by `listen::inbound` before we get here;
//!     the verified SPIFFE ID (or none, for plaintext) arrives in [`InboundConn`].
//!  2. HTTP parse and limits: hyper behind the framing guard
//!     (`http::framing`); body size checked here and while streaming.
//!  3. Headers: hop-by-hop removed, identity header set by us only,
//!     `traceparent` kept or started.
//!  4. Authentication (JWT, `authn`), then authorization and rate limits.
//!  5. Detector: the request (headers as sent, first body bytes) is scored;
//!     `AnomalyPolicy` maps the verdict to forward, audit, a reduced rate,
//!     403 or quarantine (`detect::enforce`); an alert is queued.
//!  6. Forward to the app, streamed; response streamed back.
//!  7. Metrics and one access-log line.
//!
//! Outbound (our app calls a peer): phases 2, 3 and 6 against the peer
//! sidecar over mutual TLS, with the peer's identity checked on connect.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{HeaderValue, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::config::{AppProtocolSetting, Inbound, Limits, OutboundListener};
use crate::detect::{self, Detector};
use crate::http::body::{self, ProxyBody};
use crate::http::error::ProxyError;
use crate::http::forward::{AppClients, AppProtocol, PeerClients};
use crate::http::headers::{self, ORIG_PROTO};
use crate::metrics::{self, DecisionLabels, DirectionLabel, Metrics, ReasonLabels, RequestLabels};
use crate::policy_store::{PolicySet, PolicyStore};
use crate::tls::{CertStore, SpiffeId};
use meshward_policies::eval::{evaluate, HeaderLookup, Reason, RequestAttrs, Verdict, VerifiedJwt};

/// What every request handler shares.
pub struct Shared {
    /// Limits and timeouts.
    pub limits: Limits,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Certificates.
    pub store: Arc<CertStore>,
    /// Clients to the local app.
    pub apps: AppClients,
    /// Clients to peer sidecars.
    pub peers: PeerClients,
    /// Authorization and rate-limit policies.
    pub policies: Arc<PolicyStore>,
    /// Token buckets of the rate-limit policies.
    pub limiters: crate::ratelimit::Limiters,
    /// JWT key sets named by the policies.
    pub jwks: Arc<crate::jwks::Jwks>,
    /// The anomaly detector; `None` when `detector.enabled` is false.
    pub detector: Option<Arc<Detector>>,
    /// Alert webhooks (disabled without sinks).
    pub alerts: crate::alerts::Alerts,
    /// Workload name in alerts: `namespace/app` from the `workload:` labels, or the inbound app address.
    pub workload: String,
}

/// What an inbound connection knows about its peer.
#[derive(Debug, Clone)]
pub struct InboundConn {
    /// Verified SPIFFE ID of the peer; `None` for plaintext (permissive ports).
    pub peer_identity: Option<SpiffeId>,
    /// Client socket address.
    pub client_addr: SocketAddr,
    /// Where the app is.
    pub app: SocketAddr,
}

/// Handles one inbound request. Never fails: errors become responses.
pub async fn inbound(
    req: Request<Incoming>,
    conn: Arc<InboundConn>,
    cfg: Arc<Inbound>,
    shared: Arc<Shared>,
) -> Result<Response<ProxyBody>, Infallible> {
    let start = Instant::now();
    let (method, path, version) = (req.method().clone(), req.uri().path().to_owned(), req.version());
    let (mut parts, incoming) = req.into_parts();
    // The detector judges the headers the client sent, before meshward's changes.
    let sent_headers = shared.detector.as_ref().filter(|d| d.config().enabled).map(|_| parts.headers.clone());

    // 3. Headers that only meshward may set.
    let trace = headers::ensure_traceparent(&mut parts.headers);
    let orig_proto = parts.headers.remove(ORIG_PROTO);
    headers::strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(&cfg.identity_header);
    if let Some(id) = &conn.peer_identity {
        if let Ok(v) = HeaderValue::from_str(id.as_str()) {
            parts.headers.insert(cfg.identity_header.clone(), v);
        }
    }
    let app_proto =
        app_protocol(cfg.app_protocol, version, conn.peer_identity.is_some(), orig_proto.as_ref(), &parts.headers);

    // 4. Authentication, authorization, rate limits, against the set current now.
    let set = shared.policies.current();
    let mut decided = Decided::default();
    let (jwt, authz) = match crate::authn::authenticate(&set, &mut parts, &shared).await {
        Ok(jwt) => {
            decided.principal = jwt.as_ref().map(|j| j.principal.clone()).unwrap_or_default();
            let authz = enforce_policies(&set, &method, &path, &parts.headers, jwt.as_deref(), &conn, &shared);
            (jwt, authz)
        }
        Err(refused) => (None, Err(refused)),
    };

    // 5. Detector: score the request as the client sent it; anomaly policies act on the verdict.
    let mut body = body::limited(incoming, shared.limits.max_request_body_bytes);
    let mut detected = None;
    let mut recording = None;
    let authz = match (authz, &shared.detector, sent_headers) {
        (Ok(which), Some(det), Some(sent)) => {
            let (inspected, cut) = if is_grpc(&sent) {
                (bytes::Bytes::new(), false)
            } else {
                let cfg = det.config();
                let ins = detect::body::inspect(body, cfg.max_inspect_bytes, cfg.inspect_wait).await;
                body = ins.body;
                (ins.prefix, ins.cut)
            };
            let (d, result) = detect_phase(
                det,
                &set,
                &parts.uri,
                &method,
                &path,
                &sent,
                (&inspected, cut),
                jwt.as_deref(),
                &conn,
                &shared,
                &trace.trace_id,
            );
            detected = Some(d);
            if det.recorder.is_some() {
                let target = parts.uri.path_and_query().map_or_else(|| path.clone(), |pq| pq.as_str().to_owned());
                recording = Some((sent, (inspected, cut), target));
            }
            result.map(|()| which)
        }
        (authz, _, _) => authz,
    };
    match &authz {
        Ok(which) => (decided.decision, decided.policy) = ("allow", which.clone()),
        Err(e) => (decided.decision, decided.policy) = (e.reason(), e.which().unwrap_or_default().to_owned()),
    }

    // 6. Forward.
    let result = match authz {
        Err(denied) => Err(denied),
        Ok(_) => match upstream_request(parts, body, conn.app, &shared.limits) {
            Ok(req) => within(shared.limits.request_timeout, shared.apps.send(conn.app, app_proto, req)).await,
            Err(e) => Err(e),
        },
    };
    if let (Some(d), Some(det)) = (&detected, &shared.detector) {
        // Response features feed the client's window; the alert goes to its queue.
        let latency = start.elapsed().as_secs_f64();
        let status = result.as_ref().ok().map(|r| r.status().as_u16());
        if let Some(status) = status {
            det.observe_response(&d.client, status, latency, d.ts);
        }
        if let (Some(rec), Some((sent, body, target))) = (&det.recorder, recording) {
            let verdict = (d.score, d.band, d.action);
            let body = (&body.0[..], body.1);
            rec.record(d.ts, &d.client, method.as_str(), &target, &sent, body, status, latency * 1000.0, verdict);
        }
        if d.alerting() {
            let f =
                detect::alert::finding(d, &shared.workload, &conn, &decided.principal, &method, &path, &trace.trace_id);
            shared.alerts.report(f);
        }
        decided.detector = Some((d.score, d.band, d.action));
    }

    let peer = conn.peer_identity.as_ref().map_or("none", SpiffeId::as_str);
    let resp = finish(result, metrics::INBOUND, &shared.metrics, peer);
    access_log(
        &shared.metrics,
        metrics::INBOUND,
        &method,
        &path,
        &resp,
        start,
        peer,
        &conn.client_addr,
        &conn.app,
        &trace.trace_id,
        &decided,
    );
    Ok(resp)
}

/// Handles one outbound request from the local app to `dest` (a peer sidecar).
pub async fn outbound(
    req: Request<Incoming>,
    client_addr: SocketAddr,
    dest: SocketAddr,
    route: Arc<OutboundListener>,
    shared: Arc<Shared>,
) -> Result<Response<ProxyBody>, Infallible> {
    let start = Instant::now();
    let (method, path, version) = (req.method().clone(), req.uri().path().to_owned(), req.version());
    let (mut parts, incoming) = req.into_parts();
    let trace = headers::ensure_traceparent(&mut parts.headers);
    headers::strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(ORIG_PROTO);
    if version != Version::HTTP_2 {
        parts.headers.insert(ORIG_PROTO, HeaderValue::from_static("HTTP/1.1"));
    }
    let expected = route.expected_identity(dest);
    let body = body::limited(incoming, shared.limits.max_request_body_bytes);
    let result = match upstream_request(parts, body, dest, &shared.limits) {
        Ok(req) => within(shared.limits.request_timeout, shared.peers.send(dest, expected, req)).await,
        Err(e) => Err(e),
    };
    let peer = expected.map_or("any", SpiffeId::as_str);
    let resp = finish(result, metrics::OUTBOUND, &shared.metrics, peer);
    access_log(
        &shared.metrics,
        metrics::OUTBOUND,
        &method,
        &path,
        &resp,
        start,
        peer,
        &client_addr,
        &dest,
        &trace.trace_id,
        &Decided::default(),
    );
    Ok(resp)
}

/// Builds the detector's view of the request and runs phase 5.
#[allow(clippy::too_many_arguments)] // the request's parts, each named
fn detect_phase(
    det: &Detector,
    set: &PolicySet,
    uri: &Uri,
    method: &http::Method,
    path: &str,
    sent: &http::HeaderMap,
    (body, cut): (&[u8], bool),
    jwt: Option<&VerifiedJwt>,
    conn: &InboundConn,
    shared: &Shared,
    request_id: &str,
) -> (detect::enforce::Detected, Result<(), ProxyError>) {
    let peer = conn.peer_identity.as_ref().map(SpiffeId::as_str);
    let client = det.client_key(jwt.map(|j| j.principal.as_str()), peer, conn.client_addr.ip());
    let pairs: Vec<(&str, &str)> = sent.iter().filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str(), v))).collect();
    let target = uri.path_and_query().map_or(path, PathAndQuery::as_str);
    let req = meshward_detector::Request {
        method: method.as_str(),
        uri: target,
        headers: &pairs,
        body,
        client: &client,
        ts: detect::now_secs(),
        truncated: cut,
    };
    let lookup = HeaderMapLookup(sent);
    let attrs = RequestAttrs {
        method: method.as_str(),
        path,
        port: conn.app.port(),
        peer,
        source_ip: conn.client_addr.ip(),
        headers: &lookup,
        jwt,
    };
    detect::enforce::enforce(det, &set.anomaly, &req, &attrs, &shared.limiters, request_id)
}

/// gRPC bodies are length-prefixed protobuf streams: the detector scores
/// their request line and headers, and never holds a stream back.
fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Header lookup over a request's header map, for policy conditions.
pub struct HeaderMapLookup<'a>(pub &'a http::HeaderMap);

impl HeaderLookup for HeaderMapLookup<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Phase 4: authorization, then rate limits, against the current policy set.
fn enforce_policies(
    set: &PolicySet,
    method: &http::Method,
    path: &str,
    headers: &http::HeaderMap,
    jwt: Option<&VerifiedJwt>,
    conn: &InboundConn,
    shared: &Shared,
) -> Result<String, ProxyError> {
    if set.policies.is_empty() && set.rate_limits.is_empty() {
        return Ok(String::new());
    }
    let headers = HeaderMapLookup(headers);
    let req = RequestAttrs {
        method: method.as_str(),
        path,
        port: conn.app.port(),
        peer: conn.peer_identity.as_ref().map(SpiffeId::as_str),
        source_ip: conn.client_addr.ip(),
        headers: &headers,
        jwt,
    };
    let which = authorize(set, &req, &shared.metrics)?;
    rate_limit(set, &req, shared)?;
    Ok(which)
}

/// Takes a token from every bucket that applies; the first empty bucket of an
/// enforced policy refuses the request (429). Dry-run buckets are only counted.
fn rate_limit(set: &PolicySet, req: &RequestAttrs<'_>, shared: &Shared) -> Result<(), ProxyError> {
    let m = &shared.metrics;
    for b in meshward_policies::ratelimit::buckets(&set.rate_limits, req) {
        let (result, reset) = shared.limiters.check(&b);
        if reset {
            m.ratelimit_state_resets.inc();
            tracing::warn!(
                policy = b.policy,
                rule = b.rule,
                "rate-limit key state reset: more distinct keys than the bound"
            );
        }
        let Err(over) = result else { continue };
        let dry_run = if b.dry_run { "true" } else { "false" };
        let labels =
            DecisionLabels { decision: "rate_limited", policy: b.policy.to_owned(), rule: b.rule.to_string(), dry_run };
        m.policy_decisions.get_or_create(&labels).inc();
        tracing::info!(target: "meshward::policy", policy = b.policy, rule = b.rule, key = %b.key, dry_run = b.dry_run, "rate limit exceeded");
        if !b.dry_run {
            let ceil = |d: std::time::Duration| d.as_secs() + u64::from(d.subsec_nanos() > 0);
            return Err(ProxyError::RateLimited {
                which: format!("policy '{}' rule {}", b.policy, b.rule),
                retry_after_secs: ceil(over.retry_after).max(1),
                limit: b.limit.requests,
                window_secs: ceil(b.limit.per).max(1),
            });
        }
    }
    Ok(())
}

/// Evaluates the authorization policies; counts and logs the decision, what
/// dry-run policies would have done, and AUDIT matches.
/// `Ok` names what allowed the request (empty without authorization policies).
fn authorize(set: &PolicySet, req: &RequestAttrs<'_>, m: &Metrics) -> Result<String, ProxyError> {
    if set.policies.is_empty() {
        return Ok(String::new());
    }
    let path = req.path;
    let d = evaluate(&set.policies, req);
    let count = |verdict: Verdict, reason: &Reason, dry_run: &'static str| {
        let (policy, rule) = match reason {
            Reason::Allowed(r) | Reason::Denied(r) => (r.policy.clone(), r.rule.to_string()),
            Reason::NoAllowMatched => ("(none)".to_owned(), String::new()),
            Reason::NoAllowPolicies => ("(default)".to_owned(), String::new()),
        };
        let decision = if verdict == Verdict::Allow { "allow" } else { "deny" };
        m.policy_decisions.get_or_create(&DecisionLabels { decision, policy, rule, dry_run }).inc();
    };
    count(d.verdict, &d.reason, "false");
    if let Some((verdict, reason)) = &d.dry_run {
        count(*verdict, reason, "true");
        tracing::info!(target: "meshward::policy", path, peer = ?req.peer, would = ?verdict, reason = %describe(reason), "dry-run policy would change the decision");
    }
    for a in &d.audited {
        m.policy_decisions
            .get_or_create(&DecisionLabels {
                decision: "audit",
                policy: a.policy.clone(),
                rule: a.rule.to_string(),
                dry_run: "false",
            })
            .inc();
        tracing::info!(target: "meshward::policy", path, peer = ?req.peer, policy = %a.policy, rule = a.rule, "audit policy matched");
    }
    match d.verdict {
        Verdict::Allow => Ok(describe(&d.reason)),
        Verdict::Deny => Err(ProxyError::PolicyDenied(describe(&d.reason))),
    }
}

/// `policy 'name' rule N`, or why no policy decided.
fn describe(reason: &Reason) -> String {
    match reason {
        Reason::Allowed(r) | Reason::Denied(r) => format!("policy '{}' rule {}", r.policy, r.rule),
        Reason::NoAllowMatched => "no ALLOW policy matched".to_owned(),
        Reason::NoAllowPolicies => "no ALLOW policy".to_owned(),
    }
}

/// The HTTP version to speak to the app. `auto` speaks HTTP/1.1 (what most
/// model servers serve) unless the request is gRPC over HTTP/2, which needs
/// HTTP/2 end to end. The outbound sidecar marks HTTP/1 requests that rode
/// HTTP/2 between sidecars; only an authenticated peer's mark counts.
fn app_protocol(
    setting: AppProtocolSetting,
    version: Version,
    from_mesh_peer: bool,
    orig_proto: Option<&HeaderValue>,
    headers: &http::HeaderMap,
) -> AppProtocol {
    match setting {
        AppProtocolSetting::Http1 => AppProtocol::Http1,
        AppProtocolSetting::Http2 => AppProtocol::Http2,
        AppProtocolSetting::Auto => {
            let was_http1 = from_mesh_peer && orig_proto.is_some_and(|p| p.as_bytes().starts_with(b"HTTP/1"));
            let grpc =
                headers.get(http::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
            if version == Version::HTTP_2 && grpc && !was_http1 {
                AppProtocol::Http2
            } else {
                AppProtocol::Http1
            }
        }
    }
}

/// The request as it goes upstream: absolute URI, body streamed with the size
/// limit, a declared length over the limit refused before connecting.
fn upstream_request(
    mut parts: http::request::Parts,
    body: ProxyBody,
    fallback: SocketAddr,
    limits: &Limits,
) -> Result<Request<ProxyBody>, ProxyError> {
    check_declared_length(&parts.headers, limits.max_request_body_bytes)?;
    parts.uri = upstream_uri(&parts.uri, &parts.headers, fallback)?;
    Ok(Request::from_parts(parts, body))
}

/// Waits for the upstream's response head for at most `limit`.
async fn within<F>(limit: std::time::Duration, fut: F) -> Result<Response<Incoming>, ProxyError>
where
    F: std::future::Future<Output = Result<Response<Incoming>, ProxyError>>,
{
    tokio::time::timeout(limit, fut).await.map_err(|_| ProxyError::UpstreamTimeout)?
}

/// Refuses a declared `Content-Length` above the limit before connecting upstream.
fn check_declared_length(headers: &http::HeaderMap, limit: u64) -> Result<(), ProxyError> {
    let declared =
        headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > limit => Err(ProxyError::BodyTooLarge),
        _ => Ok(()),
    }
}

/// The absolute URI hyper's client needs: the original authority (so the
/// app sees its own `Host`/`:authority`), the original path and query.
fn upstream_uri(uri: &Uri, headers: &http::HeaderMap, fallback: SocketAddr) -> Result<Uri, ProxyError> {
    let authority = match uri.authority() {
        Some(a) => a.clone(),
        None => match headers.get(HOST) {
            Some(h) => Authority::try_from(h.as_bytes()).map_err(|_| ProxyError::BadRequest("invalid host header"))?,
            None => Authority::try_from(fallback.to_string()).map_err(|_| ProxyError::BadRequest("invalid host"))?,
        },
    };
    let pq = uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority)
        .path_and_query(pq)
        .build()
        .map_err(|_| ProxyError::BadRequest("invalid request target"))
}

/// Turns the upstream result into the client's response and counts it.
fn finish(
    result: Result<Response<Incoming>, ProxyError>,
    direction: metrics::Direction,
    m: &Metrics,
    peer: &str,
) -> Response<ProxyBody> {
    let resp = match result {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.map_err(Into::into).boxed_unsync())
        }
        Err(e) => {
            m.proxy_errors.get_or_create(&ReasonLabels { direction, reason: e.reason() }).inc();
            tracing::warn!(%direction, origin = e.origin(), status = e.status().as_u16(), error = %e, "request failed");
            e.to_response()
        }
    };
    m.requests
        .get_or_create(&RequestLabels {
            direction,
            status_class: status_class(resp.status().as_u16()),
            peer_identity: peer.to_owned(),
        })
        .inc();
    resp
}

fn status_class(code: u16) -> &'static str {
    match code {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The policy outcome of an inbound request, for its access-log line.
#[derive(Debug, Default)]
struct Decided {
    /// `allow`, or the refusal reason (e.g. `jwt_expired`, `denied by policy`).
    decision: &'static str,
    /// Which policy and rule decided (`policy 'NAME' rule N`), if any.
    policy: String,
    /// The verified JWT principal `iss/sub`, if any.
    principal: String,
    /// Detector score, band and anomaly action, when the detector judged.
    detector: Option<(f64, &'static str, &'static str)>,
}

#[allow(clippy::too_many_arguments)] // one access-log line, every field named
fn access_log(
    m: &Metrics,
    direction: metrics::Direction,
    method: &http::Method,
    path: &str,
    resp: &Response<ProxyBody>,
    start: Instant,
    peer: &str,
    client: &SocketAddr,
    upstream: &SocketAddr,
    trace_id: &str,
    decided: &Decided,
) {
    let elapsed = start.elapsed();
    m.request_duration.get_or_create(&DirectionLabel { direction }).observe(elapsed.as_secs_f64());
    tracing::info!(
        target: "meshward::access",
        direction,
        method = %method,
        path,
        status = resp.status().as_u16(),
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        peer_identity = peer,
        client = %client,
        upstream = %upstream,
        trace_id,
        decision = decided.decision,
        policy = %decided.policy,
        request_principal = %decided.principal,
        anomaly_score = decided.detector.map(|d| d.0),
        anomaly_band = decided.detector.map(|d| d.1),
        anomaly_action = decided.detector.map(|d| d.2),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_uri_keeps_host_path_and_query() {
        let mut h = http::HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("iris.ml.svc:8080"));
        let fallback: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let u = upstream_uri(&"/v2/models/iris/infer?x=1".parse().expect("uri"), &h, fallback).expect("uri");
        assert_eq!(u.to_string(), "http://iris.ml.svc:8080/v2/models/iris/infer?x=1");
        let u = upstream_uri(&"/".parse().expect("uri"), &http::HeaderMap::new(), fallback).expect("uri");
        assert_eq!(u.to_string(), "http://127.0.0.1:9/");
        h.insert(HOST, HeaderValue::from_static("bad host"));
        assert!(upstream_uri(&"/".parse().expect("uri"), &h, fallback).is_err());
    }

    #[test]
    fn auto_speaks_http2_to_the_app_only_for_grpc_over_http2() {
        let grpc = {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc+proto"));
            h
        };
        let json = http::HeaderMap::new();
        let h1 = HeaderValue::from_static("HTTP/1.1");
        let auto = AppProtocolSetting::Auto;
        assert_eq!(app_protocol(auto, Version::HTTP_2, true, None, &grpc), AppProtocol::Http2);
        assert_eq!(app_protocol(auto, Version::HTTP_2, false, None, &grpc), AppProtocol::Http2);
        // curl --http2 or h2load against an HTTP/1.1 model server.
        assert_eq!(app_protocol(auto, Version::HTTP_2, false, None, &json), AppProtocol::Http1);
        assert_eq!(app_protocol(auto, Version::HTTP_11, true, None, &grpc), AppProtocol::Http1);
        assert_eq!(app_protocol(auto, Version::HTTP_2, true, Some(&h1), &grpc), AppProtocol::Http1);
        assert_eq!(app_protocol(AppProtocolSetting::Http2, Version::HTTP_11, false, None, &json), AppProtocol::Http2);
        assert_eq!(app_protocol(AppProtocolSetting::Http1, Version::HTTP_2, true, None, &grpc), AppProtocol::Http1);
    }

    #[test]
    fn declared_lengths_over_the_limit_are_refused() {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("11"));
        assert!(check_declared_length(&h, 10).is_err());
        assert!(check_declared_length(&h, 11).is_ok());
    }
}
