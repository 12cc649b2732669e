//! Replays generator records ([`crate::dataset::Record`]) over HTTP with
//! their method, path, headers and body, at a fixed offered rate with
//! bounded concurrency, and reports what each one got back.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::dataset::Record;

/// Longest a request may take before it counts as a transport error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests in flight at most.
const CONCURRENCY: usize = 32;
/// Headers of the record not replayed: hop-by-hop, framing (hyper sets
/// them for the body actually sent) and `host` (the target decides it).
const SKIPPED: [&str; 7] = ["host", "content-length", "connection", "keep-alive", "transfer-encoding", "te", "upgrade"];

/// A plain HTTP/1.1 client.
pub type Http = Client<HttpConnector, Full<Bytes>>;

/// A client with `TCP_NODELAY` and pooled connections.
#[must_use]
pub fn client() -> Http {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(c)
}

/// A record to send and the bearer token to send it with (`None`: the
/// record's own `authorization`, if any, is kept).
#[derive(Debug, Clone)]
pub struct Item {
    /// What the generator produced.
    pub record: Record,
    /// Replaces the record's `authorization` with `Bearer <token>`.
    pub token: Option<String>,
}

/// What one request got.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// HTTP status; `None` on transport error, timeout, or a record that is
    /// not a valid HTTP request.
    pub status: Option<u16>,
    /// The sidecar's `x-meshward-error` reason code, if any.
    pub code: Option<String>,
    /// From send to the end of the response body, in microseconds.
    pub latency_us: u64,
}

/// The HTTP request for `item` against `base` (`http://host:port`); `None`
/// when the record's method or path cannot be sent.
#[must_use]
pub fn request(base: &str, item: &Item) -> Option<Request<Full<Bytes>>> {
    let r = &item.record;
    let uri: Uri = format!("{base}{}", r.uri).parse().ok()?;
    let method = Method::from_bytes(r.method.as_bytes()).ok()?;
    let mut req = Request::new(Full::new(Bytes::from(r.body.clone())));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    let h = req.headers_mut();
    for (k, v) in &r.headers {
        let k = k.to_ascii_lowercase();
        if SKIPPED.contains(&k.as_str()) || (k == "authorization" && item.token.is_some()) {
            continue;
        }
        // A header the generator wrote but HTTP cannot carry is left out.
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
            h.append(name, value);
        }
    }
    if let Some(t) = &item.token {
        if let Ok(v) = HeaderValue::from_str(&format!("Bearer {t}")) {
            h.insert(header::AUTHORIZATION, v);
        }
    }
    Some(req)
}

async fn send_one(http: Http, req: Option<Request<Full<Bytes>>>) -> Outcome {
    let started = Instant::now();
    let Some(req) = req else { return Outcome::default() };
    let exchange = async {
        let resp = http.request(req).await.ok()?;
        let status = resp.status().as_u16();
        let code = resp.headers().get("x-meshward-error").and_then(|v| v.to_str().ok()).map(str::to_owned);
        resp.into_body().collect().await.ok()?;
        Some((status, code))
    };
    let got = tokio::time::timeout(REQUEST_TIMEOUT, exchange).await.ok().flatten();
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    match got {
        Some((status, code)) => Outcome { status: Some(status), code, latency_us },
        None => Outcome { latency_us, ..Outcome::default() },
    }
}

/// Sends `items` to `base` at `rps` (at least 1), at most [`CONCURRENCY`]
/// in flight; returns the outcomes in the order of `items`.
pub async fn send_all(http: &Http, base: &str, items: &[Arc<Item>], rps: u32) -> Vec<Outcome> {
    let period = Duration::from_secs_f64(1.0 / f64::from(rps.max(1))).max(Duration::from_micros(1));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut tasks = JoinSet::new();
    for (i, item) in items.iter().enumerate() {
        ticks.tick().await;
        // The semaphore is never closed, so acquiring only waits.
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else { break };
        let req = request(base, item);
        let http = http.clone();
        tasks.spawn(async move {
            let out = send_one(http, req).await;
            drop(permit);
            (i, out)
        });
    }
    let mut out = vec![Outcome::default(); items.len()];
    while let Some(done) = tasks.join_next().await {
        if let Ok((i, o)) = done {
            out[i] = o;
        }
    }
    out
}

/// Totals of many outcomes: the mesh's own summary.
#[derive(Debug, Default, Clone)]
pub struct Totals {
    /// Requests: responses of any status plus transport errors.
    pub requests: u64,
    /// Responses per HTTP status code.
    pub statuses: std::collections::BTreeMap<u16, u64>,
    /// Requests without an HTTP status (transport error, timeout, unsendable record).
    pub errors: u64,
    /// Latency of every response, in microseconds.
    pub latencies_us: Vec<u64>,
}

impl Totals {
    /// Adds up `outcomes`.
    #[must_use]
    pub fn of(outcomes: &[Outcome]) -> Totals {
        let mut t = Totals { requests: outcomes.len() as u64, ..Totals::default() };
        for o in outcomes {
            match o.status {
                Some(s) => {
                    *t.statuses.entry(s).or_insert(0) += 1;
                    t.latencies_us.push(o.latency_us);
                }
                None => t.errors += 1,
            }
        }
        t
    }

    /// Latency percentile `p` (0-100, nearest rank) in milliseconds; 0.0
    /// when no latencies were recorded.
    #[must_use]
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 100.0) };
        let n = sorted.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        sorted[rank.clamp(1, n) - 1] as f64 / 1000.0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::dataset::Label;

    fn item(token: Option<&str>) -> Item {
        Item {
            record: Record {
                ts: 0.0,
                client: "svc-a".into(),
                method: "POST".into(),
                uri: "/v2/models/iris_classifier/infer?x=1".into(),
                headers: vec![
                    ("host".into(), "model-server:8000".into()),
                    ("Authorization".into(), "Bearer theirs".into()),
                    ("content-length".into(), "999".into()),
                    ("x-bad".into(), "line\nbreak".into()),
                    ("content-type".into(), "application/json".into()),
                ],
                body: b"{}".to_vec(),
                label: Label::Normal,
                scenario: None,
                status: None,
                latency_ms: None,
            },
            token: token.map(Into::into),
        }
    }

    #[test]
    fn totals_and_percentiles() {
        assert!(Totals::default().percentile_ms(99.0).abs() < f64::EPSILON);
        let mut outcomes: Vec<Outcome> =
            (1..=100).rev().map(|ms| Outcome { status: Some(200), code: None, latency_us: ms * 1000 }).collect();
        outcomes.push(Outcome::default());
        outcomes[0].status = Some(403);
        let t = Totals::of(&outcomes);
        assert_eq!((t.requests, t.errors, t.statuses[&200], t.statuses[&403]), (101, 1, 99, 1));
        assert!((t.percentile_ms(50.0) - 50.0).abs() < 1e-9);
        assert!((t.percentile_ms(99.0) - 99.0).abs() < 1e-9);
        assert!((t.percentile_ms(100.0) - 100.0).abs() < 1e-9);
        assert!((t.percentile_ms(0.0) - 1.0).abs() < 1e-9);
        assert!((t.percentile_ms(f64::NAN) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn requests_keep_the_records_shape_and_swap_the_token() {
        let req = request("http://127.0.0.1:9", &item(Some("mine"))).unwrap();
        assert_eq!(req.uri(), "http://127.0.0.1:9/v2/models/iris_classifier/infer?x=1");
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.headers()["authorization"], "Bearer mine");
        assert_eq!(req.headers()["content-type"], "application/json");
        assert!(req.headers().get("host").is_none() && req.headers().get("content-length").is_none());
        assert!(req.headers().get("x-bad").is_none());
        let theirs = request("http://127.0.0.1:9", &item(None)).unwrap();
        assert_eq!(theirs.headers()["authorization"], "Bearer theirs");
        let mut bad = item(None);
        bad.record.uri = "/a b".into();
        assert!(request("http://127.0.0.1:9", &bad).is_none());
    }
}
