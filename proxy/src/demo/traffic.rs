//! Demo traffic generator: a constant-rate, open-loop mix of Open Inference
//! Protocol v2 calls against a base URL (normally a local sidecar).
//!
//! The mix is ~85% `POST /v2/models/iris/infer` with plausible iris feature
//! vectors (batch 1-4), ~10% `GET /v2/models/iris` and ~5%
//! `GET /v2/health/ready`. Requests are scheduled on a fixed timetable and
//! each latency is measured from the request's *scheduled* send time, so a
//! slow server cannot hide its stalls (no coordinated omission).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{Instant, MissedTickBehavior};

/// Longest a single request may take before it counts as a transport error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Per-class (mean, standard deviation) of the four iris features, from the
/// classic data set; used to draw realistic inputs.
const IRIS_STATS: [[(f64, f64); 4]; 3] = [
    [(5.006, 0.352), (3.428, 0.379), (1.462, 0.174), (0.246, 0.105)],
    [(5.936, 0.516), (2.770, 0.314), (4.260, 0.470), (1.326, 0.198)],
    [(6.588, 0.636), (2.974, 0.322), (5.552, 0.552), (2.026, 0.275)],
];

/// What to send, where, and how fast.
#[derive(Debug, Clone)]
pub struct TrafficConfig {
    /// Base URL, e.g. `http://127.0.0.1:15001` (a path prefix is kept).
    pub base: Uri,
    /// Target request rate per second; 0 sends nothing.
    pub rps: u32,
    /// How long to keep scheduling requests.
    pub duration: Duration,
    /// Maximum requests in flight (0 is treated as 1).
    pub concurrency: usize,
}

/// Outcome of a traffic run (or of the part run so far).
#[derive(Debug, Default, Clone)]
pub struct TrafficReport {
    /// Completed requests: responses of any status plus transport errors.
    pub requests: u64,
    /// Responses per HTTP status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Transport errors and timeouts (requests without an HTTP status).
    pub errors: u64,
    /// Latency of every response, in microseconds from its scheduled send time.
    pub latencies_us: Vec<u64>,
}

impl TrafficReport {
    /// Latency percentile `p` (0-100, nearest rank) in milliseconds; 0.0 when
    /// no latencies were recorded.
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
        let idx = rank.clamp(1, n) - 1;
        sorted[idx] as f64 / 1000.0
    }

    /// Adds one finished request.
    fn record(&mut self, sample: Sample) {
        self.requests += 1;
        match sample.status {
            Some(status) => {
                *self.statuses.entry(status).or_insert(0) += 1;
                self.latencies_us.push(sample.latency_us);
            }
            None => self.errors += 1,
        }
    }
}

/// Result of one request, sent from its task to the scheduler.
#[derive(Clone, Copy)]
struct Sample {
    status: Option<u16>,
    latency_us: u64,
}

/// The three endpoint URIs derived from the base URL.
struct Targets {
    infer: Uri,
    metadata: Uri,
    ready: Uri,
}

impl Targets {
    /// Joins the OIP paths onto `base`; `None` when `base` lacks scheme or host.
    fn new(base: &Uri) -> Option<Self> {
        let scheme = base.scheme()?.clone();
        let authority = base.authority()?.clone();
        let prefix = base.path().trim_end_matches('/');
        let join = |path: &str| {
            Uri::builder()
                .scheme(scheme.clone())
                .authority(authority.clone())
                .path_and_query(format!("{prefix}{path}"))
                .build()
                .ok()
        };
        Some(Self {
            infer: join("/v2/models/iris/infer")?,
            metadata: join("/v2/models/iris")?,
            ready: join("/v2/health/ready")?,
        })
    }
}

/// Runs the traffic; calls `progress` about once a second with the report so far.
pub async fn run(cfg: TrafficConfig, mut progress: impl FnMut(&TrafficReport) + Send) -> TrafficReport {
    let TrafficConfig { base, rps, duration, concurrency } = cfg;
    let mut report = TrafficReport::default();
    let Some(targets) = Targets::new(&base) else {
        tracing::warn!(%base, "traffic: base URL needs a scheme and host");
        return report;
    };
    if rps == 0 || duration.is_zero() {
        return report;
    }
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let (tx, mut rx) = mpsc::unbounded_channel::<Sample>();
    let mut rng = StdRng::from_entropy();

    let start = Instant::now();
    // Saturating: `Duration::MAX` means "effectively forever", not a panic.
    let deadline = start.checked_add(duration).unwrap_or_else(|| start + Duration::from_secs(100 * 365 * 24 * 3600));
    // Clamped: a zero period would panic in `interval_at` for huge `rps`.
    let period = Duration::from_secs_f64(1.0 / f64::from(rps)).max(Duration::from_nanos(1));
    let mut schedule = tokio::time::interval_at(start, period);
    // Burst: ticks missed while waiting for a permit fire immediately, with
    // their original scheduled instants, so the offered rate stays constant.
    schedule.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut ticker = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // A request whose scheduled time has come but which still waits for a permit.
    let mut pending: Option<Instant> = None;
    let mut seq: u64 = 0;

    loop {
        tokio::select! {
            biased;
            Some(sample) = rx.recv() => report.record(sample),
            _ = ticker.tick() => progress(&report),
            () = tokio::time::sleep_until(deadline), if pending.is_some() => break,
            scheduled = schedule.tick(), if pending.is_none() => {
                if scheduled >= deadline {
                    break;
                }
                pending = Some(scheduled);
            }
            permit = Arc::clone(&permits).acquire_owned(), if pending.is_some() => {
                let (Ok(permit), Some(scheduled)) = (permit, pending.take()) else { break };
                seq += 1;
                let req = build_request(&targets, &mut rng, seq);
                let client = client.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let status = send(&client, req).await;
                    let latency_us = u64::try_from(scheduled.elapsed().as_micros()).unwrap_or(u64::MAX);
                    drop(permit);
                    let _ = tx.send(Sample { status, latency_us });
                });
            }
        }
    }

    // Drain: every spawned task holds a sender clone, so `recv` ends once all
    // of them have reported (each is bounded by REQUEST_TIMEOUT).
    drop(tx);
    loop {
        tokio::select! {
            biased;
            sample = rx.recv() => match sample {
                Some(sample) => report.record(sample),
                None => break,
            },
            _ = ticker.tick() => progress(&report),
        }
    }
    report
}

/// Sends one request and reads the whole response; `None` on transport
/// error or timeout.
async fn send(client: &Client<HttpConnector, Full<Bytes>>, req: Request<Full<Bytes>>) -> Option<u16> {
    let exchange = async {
        let resp = client.request(req).await.ok()?;
        let status = resp.status().as_u16();
        resp.into_body().collect().await.ok()?;
        Some(status)
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange).await.ok().flatten()
}

/// Draws the next request of the mix.
fn build_request(targets: &Targets, rng: &mut StdRng, seq: u64) -> Request<Full<Bytes>> {
    let roll: f64 = rng.gen();
    let (method, uri, body) = if roll < 0.85 {
        (Method::POST, targets.infer.clone(), infer_body(rng, seq))
    } else if roll < 0.95 {
        (Method::GET, targets.metadata.clone(), Bytes::new())
    } else {
        (Method::GET, targets.ready.clone(), Bytes::new())
    };
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = method.clone();
    *req.uri_mut() = uri;
    let headers = req.headers_mut();
    headers.insert(header::USER_AGENT, header::HeaderValue::from_static("meshward-demo-traffic/0.1"));
    headers.insert(header::ACCEPT, header::HeaderValue::from_static("application/json"));
    if method == Method::POST {
        headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    }
    req
}

/// A JSON OIP v2 inference request with 1-4 iris-like rows.
fn infer_body(rng: &mut StdRng, seq: u64) -> Bytes {
    let batch: usize = rng.gen_range(1..=4);
    let rows: Vec<[f64; 4]> = (0..batch).map(|_| iris_sample(rng)).collect();
    // Clients differ: some send nested rows, most send flat row-major data.
    let data = if rng.gen_bool(0.2) { json!(rows) } else { json!(rows.iter().flatten().collect::<Vec<_>>()) };
    let mut body = json!({
        "inputs": [{ "name": "input", "shape": [batch, 4], "datatype": "FP32", "data": data }],
    });
    if rng.gen_bool(0.5) {
        if let Some(obj) = body.as_object_mut() {
            obj.insert("id".to_owned(), Value::String(format!("req-{seq}")));
        }
    }
    Bytes::from(body.to_string())
}

/// One plausible iris measurement (cm, one decimal) of a random class.
fn iris_sample(rng: &mut StdRng) -> [f64; 4] {
    let class = &IRIS_STATS[rng.gen_range(0..IRIS_STATS.len())];
    class.map(|(mean, sd)| {
        let x = mean + sd * standard_normal(rng);
        (x.max(0.1) * 10.0).round() / 10.0
    })
}

/// A standard normal draw (Box-Muller), avoiding a `rand_distr` dependency.
fn standard_normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = 1.0 - rng.gen::<f64>(); // (0, 1], keeps ln finite
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::demo::model::{self, AppStats};
    use std::sync::Mutex;

    #[test]
    fn percentiles() {
        assert!(TrafficReport::default().percentile_ms(99.0).abs() < f64::EPSILON);
        let report =
            TrafficReport { latencies_us: (1..=100).rev().map(|ms| ms * 1000).collect(), ..Default::default() };
        assert!((report.percentile_ms(50.0) - 50.0).abs() < 1e-9);
        assert!((report.percentile_ms(99.0) - 99.0).abs() < 1e-9);
        assert!((report.percentile_ms(100.0) - 100.0).abs() < 1e-9);
        assert!((report.percentile_ms(0.0) - 1.0).abs() < 1e-9);
        assert!((report.percentile_ms(f64::NAN) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn generated_requests_are_valid() {
        let targets = Targets::new(&"http://127.0.0.1:1/prefix/".parse().unwrap()).unwrap();
        assert_eq!(targets.infer, "http://127.0.0.1:1/prefix/v2/models/iris/infer");
        assert!(Targets::new(&"/relative".parse().unwrap()).is_none());
        let mut rng = StdRng::seed_from_u64(7);
        for seq in 0..200 {
            let body: Value = serde_json::from_slice(&infer_body(&mut rng, seq)).unwrap();
            let input = &body["inputs"][0];
            let batch = input["shape"][0].as_u64().unwrap();
            assert!((1..=4).contains(&batch));
            let values: Vec<&Value> = match input["data"].as_array().unwrap().first() {
                Some(Value::Array(_)) => {
                    input["data"].as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap()).collect()
                }
                _ => input["data"].as_array().unwrap().iter().collect(),
            };
            assert_eq!(values.len() as u64, batch * 4);
            assert!(values.iter().all(|v| v.as_f64().unwrap() > 0.0));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn drives_model_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(Mutex::new(AppStats::default()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(model::serve(
            listener,
            http::HeaderName::from_static("x-identity"),
            Arc::clone(&stats),
            async move {
                let _ = stop_rx.await;
            },
        ));
        let cfg = TrafficConfig {
            base: format!("http://{addr}").parse().unwrap(),
            rps: 200,
            duration: Duration::from_millis(1100),
            concurrency: 16,
        };
        let mut ticks = 0;
        let report = run(cfg, |_| ticks += 1).await;
        stop_tx.send(()).unwrap();
        server.await.unwrap().unwrap();

        assert!(report.requests > 100, "{report:?}");
        assert_eq!(report.errors, 0, "{:?}", report.statuses);
        assert!(report.statuses.keys().all(|s| (200..300).contains(s)), "{:?}", report.statuses);
        assert_eq!(report.statuses.values().sum::<u64>(), report.requests);
        assert_eq!(report.latencies_us.len() as u64, report.requests);
        assert!(ticks >= 1);
        assert!(report.percentile_ms(99.0) > 0.0);
        let stats = stats.lock().unwrap();
        assert_eq!(stats.requests, report.requests);
        assert_eq!(stats.identities.get("(none)"), Some(&report.requests));
    }
}
