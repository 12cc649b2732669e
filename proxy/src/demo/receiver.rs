//! The demo's webhook receiver: plain HTTP on loopback, in-process, standing
//! in for the security team's SIEM. `POST /standard` takes Standard Webhooks
//! deliveries and verifies each one's signature with the sink's secret;
//! `POST /alertmanager` takes Alertmanager v4 payloads (unsigned by design)
//! and only counts them. Every delivery is answered 204 so the sidecar does
//! not retry; the counts say what a real receiver would have accepted.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::alerts::sign::{verify_headers, Secret};

/// Largest delivery body read.
const MAX_BODY: usize = 1 << 20;
/// Accepted clock skew of `webhook-timestamp` (the Standard Webhooks default).
const TOLERANCE: Duration = Duration::from_secs(300);

/// What the receiver has seen so far.
#[derive(Debug, Default, Clone)]
pub struct Received {
    /// Deliveries of any format (`signatures_valid + signatures_invalid + alertmanager`).
    pub received: u64,
    /// Standard Webhooks deliveries whose signature verified.
    pub signatures_valid: u64,
    /// Standard Webhooks deliveries whose signature did not verify (or was missing).
    pub signatures_invalid: u64,
    /// Alertmanager deliveries.
    pub alertmanager: u64,
    /// One line per verified incident notification, oldest first, for the live view.
    pub lines: Vec<String>,
}

/// The shared state of a running receiver.
#[derive(Debug, Clone)]
pub struct Receiver {
    secret: Arc<Secret>,
    state: Arc<Mutex<Received>>,
}

impl Receiver {
    /// A receiver verifying with `secret`.
    #[must_use]
    pub fn new(secret: Secret) -> Receiver {
        Receiver { secret: Arc::new(secret), state: Arc::default() }
    }

    /// A copy of the counts.
    #[must_use]
    pub fn snapshot(&self) -> Received {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Counts one delivery to `path` (with its headers and body) at `now`.
    pub fn deliver(&self, path: &str, headers: &http::HeaderMap, body: &[u8], now: SystemTime) -> StatusCode {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match path {
            "/standard" => {
                s.received += 1;
                match verify_headers(&self.secret, headers, body, now, TOLERANCE) {
                    Ok(()) => {
                        s.signatures_valid += 1;
                        if let Some(line) = describe(body) {
                            s.lines.push(line);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "demo receiver: delivery with an invalid signature");
                        s.signatures_invalid += 1;
                    }
                }
                StatusCode::NO_CONTENT
            }
            "/alertmanager" => {
                s.received += 1;
                s.alertmanager += 1;
                StatusCode::NO_CONTENT
            }
            _ => StatusCode::NOT_FOUND,
        }
    }

    /// Serves on `listener` until `stop` is cancelled.
    pub async fn serve(self, listener: TcpListener, stop: CancellationToken) {
        loop {
            let (stream, _) = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "demo receiver: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let me = self.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let me = me.clone();
                    async move { Ok::<_, Infallible>(me.handle(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                tokio::select! {
                    _ = conn => {}
                    () = stop.cancelled() => {}
                }
            });
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let status = match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) if parts.method == http::Method::POST => {
                self.deliver(parts.uri.path(), &parts.headers, &b.to_bytes(), SystemTime::now())
            }
            Ok(_) => StatusCode::METHOD_NOT_ALLOWED,
            Err(_) => StatusCode::PAYLOAD_TOO_LARGE,
        };
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = status;
        resp
    }
}

/// Binds the receiver on `127.0.0.1:0`.
///
/// # Errors
/// When binding fails.
pub async fn start(receiver: Receiver, stop: CancellationToken) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(receiver.serve(listener, stop));
    Ok(addr)
}

/// "firing: client X, action Y, N requests (reason)" from a standard event.
fn describe(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let d = v.get("data")?;
    let s = |k: &str| d.get(k).and_then(serde_json::Value::as_str).unwrap_or("?").to_owned();
    let reason = d.get("reasons").and_then(|r| r.get(0)).and_then(serde_json::Value::as_str).unwrap_or("");
    Some(format!(
        "{} {}: client {} ({} band, action {}, {} request(s)) {}",
        s("status"),
        s("severity"),
        d.get("jwt_subject").and_then(serde_json::Value::as_str).map_or_else(|| s("client"), str::to_owned),
        s("band"),
        s("action"),
        d.get("count").and_then(serde_json::Value::as_u64).unwrap_or(0),
        reason
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::alerts::sign::sign;
    use std::time::UNIX_EPOCH;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn headers(id: &str, ts: u64, sig: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("webhook-id", id.parse().unwrap());
        h.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        h.insert("webhook-signature", sig.parse().unwrap());
        h
    }

    #[test]
    fn counts_valid_and_invalid_signatures() {
        let r = Receiver::new(Secret::parse(SECRET).unwrap());
        let secret = Secret::parse(SECRET).unwrap();
        let now = SystemTime::now();
        let ts = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let body = br#"{"type":"meshward.incident.firing","data":{"status":"firing","severity":"critical","client":"c","jwt_subject":"svc-a","band":"anomalous","action":"block","count":3,"reasons":["input far outside"]}}"#;
        let good = sign(&secret, "msg_1", ts, body);
        assert_eq!(r.deliver("/standard", &headers("msg_1", ts, &good), body, now), StatusCode::NO_CONTENT);
        // Tampered body, wrong id, other secret, stale timestamp, missing headers.
        r.deliver("/standard", &headers("msg_1", ts, &good), b"{}", now);
        r.deliver("/standard", &headers("msg_2", ts, &good), body, now);
        let other = Secret::parse("whsec_c2VjcmV0LXRoYXQtaXMtbG9uZy1lbm91Z2gtMzI=").unwrap();
        r.deliver("/standard", &headers("msg_1", ts, &sign(&other, "msg_1", ts, body)), body, now);
        let old = ts - 3600;
        r.deliver("/standard", &headers("msg_1", old, &sign(&secret, "msg_1", old, body)), body, now);
        r.deliver("/standard", &http::HeaderMap::new(), body, now);
        // Alertmanager deliveries are counted, not verified; other paths are not deliveries.
        r.deliver("/alertmanager", &http::HeaderMap::new(), b"{}", now);
        assert_eq!(r.deliver("/other", &http::HeaderMap::new(), b"{}", now), StatusCode::NOT_FOUND);
        let s = r.snapshot();
        assert_eq!((s.received, s.signatures_valid, s.signatures_invalid, s.alertmanager), (7, 1, 5, 1));
        assert_eq!(s.lines.len(), 1);
        assert!(s.lines[0].contains("client svc-a") && s.lines[0].contains("action block"), "{}", s.lines[0]);
    }

    #[tokio::test]
    async fn serves_over_http() {
        let r = Receiver::new(Secret::parse(SECRET).unwrap());
        let stop = CancellationToken::new();
        let addr = start(r.clone(), stop.clone()).await.unwrap();
        let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(hyper_util::client::legacy::connect::HttpConnector::new());
        let req = Request::post(format!("http://{addr}/standard")).body(Full::new(Bytes::from("{}"))).unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        stop.cancel();
        let s = r.snapshot();
        assert_eq!((s.received, s.signatures_invalid), (1, 1));
    }
}
