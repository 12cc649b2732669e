//! Alerting tests: grouping with explicit clocks, payload shapes, config
//! errors, and deliveries to local hyper receivers on 127.0.0.1.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use serde_json::Value;

use super::config::{AlertsConfig, Format, RawAlerts, SinkConfig};
use super::group::{Added, Grouper, Status};
use super::metrics::{DeliveryLabels, DropLabels};
use super::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn finding(client: &str, n: usize) -> Finding {
    Finding {
        workload: "fraud-model".into(),
        policy: "extraction".into(),
        rule: 2,
        client: client.into(),
        action: "block",
        band: "anomalous",
        severity: if n % 2 == 0 { Severity::Warning } else { Severity::Critical },
        score: 10.0 + n as f64,
        threshold: 9.5,
        reasons: vec!["input spread far wider than usual".into(), "grid-like inputs".into()],
        peer_identity: Some("spiffe://cluster.local/ns/ml/sa/scraper".into()),
        jwt_subject: Some("svc-scraper".into()),
        method: "POST".into(),
        path: "/v2/models/fraud/infer".into(),
        request_id: format!("req-{n}"),
        dry_run: false,
        at: SystemTime::now(),
    }
}

fn cfg(sinks: Vec<SinkConfig>) -> AlertsConfig {
    AlertsConfig {
        group_window: Duration::from_millis(300),
        resolve_after: Duration::from_millis(700),
        max_attempts: 3,
        timeout: Duration::from_secs(2),
        backoff: Duration::from_millis(10),
        max_backoff: Duration::from_secs(3),
        sinks,
        ..AlertsConfig::default()
    }
}

fn sink(name: &str, format: Format, url: &str, secret: Option<&str>) -> SinkConfig {
    SinkConfig {
        name: name.into(),
        format,
        url: url.parse().expect("test URL"),
        secret: secret.map(|s| Secret::parse(s).expect("test secret")),
        ca: None,
    }
}

fn metrics() -> (AlertMetrics, Registry) {
    let mut reg = Registry::with_prefix("meshward");
    let m = AlertMetrics::register(&mut reg);
    (m, reg)
}

fn deliveries(m: &AlertMetrics, sink: &str, result: &'static str) -> u64 {
    m.deliveries.get_or_create(&DeliveryLabels { sink: sink.into(), result }).get()
}

fn dropped(m: &AlertMetrics, sink: &str, reason: &'static str) -> u64 {
    m.dropped.get_or_create(&DropLabels { sink: sink.into(), reason }).get()
}

/// Polls `cond` every 10 ms for at most `limit`.
async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

/// One request as a receiver saw it.
#[derive(Clone, Debug)]
struct Received {
    at: Instant,
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

type Answer = Arc<dyn Fn(usize) -> (StatusCode, Option<&'static str>) + Send + Sync>;

/// A webhook receiver on 127.0.0.1:0 that records every request and answers
/// the n-th (0-based) with `answer(n)`. Stops when dropped.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start(answer: Answer) -> Receiver {
        Receiver::start_with(answer, None).await
    }

    /// Over TLS when `tls` is given (URL `https://127.0.0.1:port/hook`).
    async fn start_with(answer: Answer, tls: Option<tokio_rustls::TlsAcceptor>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}/hook", listener.local_addr().expect("local addr"));
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let count = Arc::new(AtomicUsize::new(0));
        let g = Arc::clone(&got);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (g, answer, count) = (Arc::clone(&g), Arc::clone(&answer), Arc::clone(&count));
                let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let (g, answer, count) = (Arc::clone(&g), Arc::clone(&answer), Arc::clone(&count));
                    async move {
                        let headers = req.headers().clone();
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        g.lock().expect("lock").push(Received { at: Instant::now(), headers, body });
                        let (status, retry_after) = answer(count.fetch_add(1, Ordering::SeqCst));
                        let mut resp = Response::builder().status(status);
                        if let Some(r) = retry_after {
                            resp = resp.header("retry-after", r);
                        }
                        resp.body(Full::new(Bytes::from_static(b"{}")))
                    }
                });
                let http = hyper::server::conn::http1::Builder::new();
                match &tls {
                    None => {
                        tokio::spawn(http.serve_connection(TokioIo::new(stream), svc));
                    }
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(tls), svc).await;
                            }
                        });
                    }
                }
            }
        });
        Receiver { url, got, task }
    }

    fn ok() -> Answer {
        Arc::new(|_| (StatusCode::OK, None))
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }
}

#[test]
fn findings_of_one_key_form_one_incident_with_their_count() {
    let mut g = Grouper::new(&cfg(vec![]));
    let t0 = Instant::now();
    let mut new = 0;
    for i in 0..10 {
        match g.add(finding("10.0.0.7", i), t0 + Duration::from_millis(i as u64)) {
            Added::New(n) => {
                new += 1;
                assert_eq!(n.status, Status::Firing);
                assert_eq!(n.incident.count, 1, "the first firing goes out with the first finding");
            }
            Added::Updated => {}
            Added::Full => panic!("not full"),
        }
    }
    assert_eq!((new, g.len()), (1, 1));
    // Another client is another incident.
    assert!(matches!(g.add(finding("10.0.0.8", 0), t0), Added::New(_)));
    assert_eq!(g.len(), 2);
    // Before the window ends nothing is due; after it, one update with count 10.
    assert!(g.due(t0 + Duration::from_millis(100), SystemTime::now()).is_empty());
    let due = g.due(t0 + Duration::from_millis(310), SystemTime::now());
    assert_eq!(due.len(), 1, "{due:?}");
    let d = &due[0].incident;
    assert_eq!((d.count, d.severity, d.score), (10, Severity::Critical, 19.0));
    assert_eq!(d.sample_request_ids, ["req-0", "req-1", "req-2", "req-3", "req-4"]);
    // No new finding: no second update; quiet for resolve_after: resolved, forgotten.
    assert!(g.due(t0 + Duration::from_millis(650), SystemTime::now()).is_empty());
    let due = g.due(t0 + Duration::from_millis(720), SystemTime::now());
    assert_eq!(due.len(), 2);
    assert!(due.iter().all(|n| n.status == Status::Resolved && n.incident.ends_at.is_some()));
    assert!(g.is_empty());
}

#[test]
fn incidents_beyond_the_limit_are_refused() {
    let mut g = Grouper::new(&AlertsConfig { max_incidents: 2, ..cfg(vec![]) });
    let now = Instant::now();
    assert!(matches!(g.add(finding("a", 0), now), Added::New(_)));
    assert!(matches!(g.add(finding("b", 0), now), Added::New(_)));
    assert!(matches!(g.add(finding("c", 0), now), Added::Full));
    assert!(matches!(g.add(finding("a", 1), now), Added::Updated), "open incidents still count");
}

#[tokio::test]
async fn alertmanager_sink_gets_firing_then_update_then_resolved() {
    let rx = Receiver::start(Receiver::ok()).await;
    let (m, reg) = metrics();
    let alerts = Alerts::start(cfg(vec![sink("am", Format::Alertmanager, &rx.url, None)]), m.clone());
    for i in 0..20 {
        alerts.report(finding("10.0.0.7", i));
    }
    assert!(wait_for(Duration::from_secs(5), || rx.got().len() >= 3).await, "got {:?}", rx.got());
    let got: Vec<Value> = rx.got().iter().map(Received::json).collect();
    let status: Vec<&str> = got.iter().map(|v| v["status"].as_str().unwrap_or("")).collect();
    let counts: Vec<&str> = got.iter().map(|v| v["alerts"][0]["annotations"]["count"].as_str().unwrap_or("")).collect();
    assert_eq!(status, ["firing", "firing", "resolved"]);
    assert_eq!(counts, ["1", "20", "20"]);
    let fp: Vec<&Value> = got.iter().map(|v| &v["alerts"][0]["fingerprint"]).collect();
    assert!(fp.iter().all(|f| *f == fp[0]), "one incident: {fp:?}");
    assert_eq!(got[0]["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    assert_ne!(got[2]["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    // Counted once the sender has read the answer, after the receiver holds
    // it (the metric first, then the snapshot's count).
    assert!(wait_for(Duration::from_secs(5), || alerts.snapshot()["sinks"]["am"]["delivered"] == 3).await);
    assert_eq!(deliveries(&m, "am", "ok"), 3);
    let snap = alerts.snapshot();
    assert_eq!(snap["open_incidents"], 0, "{snap}");
    assert_eq!(snap["sinks"]["am"]["delivered"], 3, "{snap}");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).expect("encode");
    assert!(text.contains("meshward_alerts_findings_total 20"), "{text}");
    assert!(text.contains(r#"meshward_alert_deliveries_total{sink="am",result="ok"} 3"#), "{text}");
}

#[tokio::test]
async fn standard_sink_signs_and_receivers_verify() {
    let rx = Receiver::start(Receiver::ok()).await;
    let (m, _reg) = metrics();
    let alerts = Alerts::start(cfg(vec![sink("siem", Format::Standard, &rx.url, Some(SECRET))]), m);
    alerts.report(finding("svc-scraper", 1));
    assert!(alerts.idle(Duration::from_secs(5)).await, "{}", alerts.snapshot());
    assert_eq!(rx.got().len(), 1, "idle means delivered");
    let r = &rx.got()[0];
    let secret = Secret::parse(SECRET).expect("secret");
    let tol = Duration::from_secs(300);
    sign::verify_headers(&secret, &r.headers, &r.body, SystemTime::now(), tol).expect("valid signature");
    let wrong = Secret::parse("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").expect("secret");
    assert_eq!(sign::verify_headers(&wrong, &r.headers, &r.body, SystemTime::now(), tol), Err(VerifyError::NoMatch));
    let mut tampered = r.body.to_vec();
    tampered[0] = b' ';
    assert_eq!(sign::verify_headers(&secret, &r.headers, &tampered, SystemTime::now(), tol), Err(VerifyError::NoMatch));
    let v = r.json();
    assert_eq!(v["type"], "meshward.incident.firing");
    let d = &v["data"];
    assert_eq!(
        (d["client"].as_str(), d["rule"].as_u64(), d["count"].as_u64()),
        (Some("svc-scraper"), Some(2), Some(1))
    );
    assert_eq!(d["jwt_subject"], "svc-scraper");
    assert_eq!(d["peer_identity"], "spiffe://cluster.local/ns/ml/sa/scraper");
    assert_eq!(d["sample_request_ids"], serde_json::json!(["req-1"]));
    assert_eq!(d["threshold"], 9.5);
}

#[tokio::test]
async fn retry_after_is_honoured_and_the_id_is_stable() {
    let rx = Receiver::start(Arc::new(|n| {
        if n == 0 {
            (StatusCode::SERVICE_UNAVAILABLE, Some("1"))
        } else {
            (StatusCode::OK, None)
        }
    }))
    .await;
    let (m, _reg) = metrics();
    // Long windows: only the first firing is sent during this test.
    let c = AlertsConfig {
        group_window: Duration::from_secs(30),
        resolve_after: Duration::from_secs(60),
        ..cfg(vec![sink("siem", Format::Standard, &rx.url, Some(SECRET))])
    };
    let alerts = Alerts::start(c, m.clone());
    alerts.report(finding("c", 1));
    assert!(wait_for(Duration::from_secs(5), || rx.got().len() >= 2).await, "got {:?}", rx.got());
    let got = rx.got();
    let gap = got[1].at - got[0].at;
    println!("retry after a 503 with Retry-After: 1 came {gap:?} later (backoff alone would be ~10 ms)");
    assert!(gap >= Duration::from_millis(900), "retried after {gap:?}");
    assert_eq!(got[0].headers["webhook-id"], got[1].headers["webhook-id"]);
    let secret = Secret::parse(SECRET).expect("secret");
    for r in &got {
        sign::verify_headers(&secret, &r.headers, &r.body, SystemTime::now(), Duration::from_secs(60)).expect("signed");
    }
    // The receiver holds the second delivery before the sender has read its
    // answer and counted it: wait for the count (it raced, and failed CI once).
    let counts = || (deliveries(&m, "siem", "retry"), deliveries(&m, "siem", "ok"));
    assert!(wait_for(Duration::from_secs(5), || counts() == (1, 1)).await, "{:?}", counts());
}

#[tokio::test]
async fn a_dead_receiver_is_retried_then_the_alert_is_dropped_and_counted() {
    // A port that was just free: connections are refused.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let (m, _reg) = metrics();
    let alerts =
        Alerts::start(cfg(vec![sink("am", Format::Alertmanager, &format!("http://{closed}/"), None)]), m.clone());
    let t = Instant::now();
    alerts.report(finding("c", 1));
    assert!(t.elapsed() < Duration::from_millis(50), "report waited {:?}", t.elapsed());
    assert!(!alerts.idle(Duration::from_millis(1)).await, "not idle while a finding is waiting");
    assert!(alerts.idle(Duration::from_secs(5)).await, "{}", alerts.snapshot());
    assert_eq!(dropped(&m, "am", "attempts_exhausted"), 1);
    assert_eq!((deliveries(&m, "am", "retry"), deliveries(&m, "am", "failed")), (2, 1));
    let snap = alerts.snapshot();
    assert_eq!(snap["sinks"]["am"]["failed"], 1, "{snap}");
    assert!(snap["sinks"]["am"]["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{snap}");
}

#[tokio::test]
async fn a_refusing_receiver_is_not_retried() {
    let rx = Receiver::start(Arc::new(|_| (StatusCode::BAD_REQUEST, None))).await;
    let (m, _reg) = metrics();
    let alerts = Alerts::start(cfg(vec![sink("am", Format::Alertmanager, &rx.url, None)]), m.clone());
    alerts.report(finding("c", 1));
    assert!(wait_for(Duration::from_secs(5), || dropped(&m, "am", "rejected") == 1).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rx.got().len(), 1);
    assert_eq!(deliveries(&m, "am", "retry"), 0);
}

/// Current-thread runtime: the grouping task cannot run while the loop
/// reports, so exactly `queue` findings get in and the rest are dropped.
#[tokio::test]
async fn a_full_queue_drops_findings_and_report_never_waits() {
    let (m, _reg) = metrics();
    let alerts = Alerts::start(cfg(vec![sink("am", Format::Alertmanager, "http://127.0.0.1:9/", None)]), m.clone());
    let findings: Vec<Finding> = (0..100_000).map(|i| finding("flood", i)).collect();
    let t = Instant::now();
    for f in findings {
        alerts.report(f);
    }
    let took = t.elapsed();
    println!("report() of 100000 findings took {took:?} ({:.0} ns each)", took.as_nanos() as f64 / 1e5);
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(m.findings.get(), 100_000);
    assert_eq!(dropped(&m, metrics::ALL_SINKS, "queue_full"), 99_000);
    assert_eq!(alerts.snapshot()["findings_dropped"], 99_000);
}

#[tokio::test]
async fn a_full_delivery_queue_drops_notifications_and_counts_them() {
    // The receiver holds every request for a while, so the one sink task is busy.
    let rx = Receiver::start(Arc::new(|_| (StatusCode::SERVICE_UNAVAILABLE, Some("2")))).await;
    let (m, _reg) = metrics();
    let alerts = Alerts::start(
        AlertsConfig { queue: 2, ..cfg(vec![sink("am", Format::Alertmanager, &rx.url, None)]) },
        m.clone(),
    );
    for i in 0..10 {
        alerts.report(finding(&format!("client-{i}"), i));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One in flight, two queued, the other seven dropped.
    assert!(wait_for(Duration::from_secs(2), || dropped(&m, "am", "queue_full") == 7).await, "{}", alerts.snapshot());
    assert_eq!(alerts.snapshot()["sinks"]["am"]["dropped"], 7);
}

#[tokio::test]
async fn slack_gets_blocks_with_escaped_peer_text() {
    let rx = Receiver::start(Receiver::ok()).await;
    let (m, _reg) = metrics();
    let alerts = Alerts::start(cfg(vec![sink("slack", Format::Slack, &rx.url, None)]), m);
    let mut f = finding("<https://evil.example|click> @here", 1);
    f.reasons = vec!["burst & <grid>".into()];
    alerts.report(f);
    assert!(wait_for(Duration::from_secs(5), || !rx.got().is_empty()).await);
    let v = rx.got()[0].json();
    let text = v["text"].as_str().expect("text");
    assert!(text.starts_with(":rotating_light: [FIRING] critical:"), "{text}");
    assert!(!text.contains("<https://evil"), "peer text must not form a link: {text}");
    assert!(text.contains("&lt;https://evil.example|click&gt;"), "{text}");
    let blocks = v["blocks"].as_array().expect("blocks");
    let kinds: Vec<&str> = blocks.iter().map(|b| b["type"].as_str().unwrap_or("")).collect();
    assert_eq!(kinds, ["header", "section", "section", "context"]);
    assert_eq!(blocks[0]["text"]["type"], "plain_text");
    let fields = blocks[1]["fields"].as_array().expect("fields");
    assert!(fields.len() <= 10, "Slack allows 10 fields");
    assert!(fields.iter().any(|f| f["text"] == "*JWT subject*\n`svc-scraper`"), "{fields:?}");
    assert_eq!(blocks[2]["text"]["text"], "• burst &amp; &lt;grid&gt;");
}

fn raw(yaml: &str) -> RawAlerts {
    serde_yaml::from_str(yaml).expect("yaml")
}

fn check(yaml: &str) -> Result<AlertsConfig, String> {
    AlertsConfig::from_raw(raw(yaml), &|v| (v == "WHSEC").then(|| SECRET.to_string())).map_err(|e| e.to_string())
}

#[test]
fn config_parses_the_documented_example() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("whsec");
    std::fs::write(&path, format!("{SECRET}\n")).expect("write");
    let c = check(&format!(
        "group_window: 1m\nresolve_after: 5m\nqueue: 1000\nmax_attempts: 5\ntimeout: 5s\nsinks:\n\
         - {{name: am, format: alertmanager, url: \"http://127.0.0.1:9093/hook\"}}\n\
         - {{name: siem, format: standard, url: \"https://siem.example/hook\", secret_file: {}}}\n\
         - {{name: siem2, format: standard, url: \"https://siem.example/hook\", secret_env: WHSEC}}\n\
         - {{name: slack, format: slack, url: \"https://hooks.slack.com/services/T0/B0/tokentoken\"}}\n",
        path.display()
    ))
    .expect("valid");
    assert_eq!(
        (c.group_window, c.resolve_after, c.queue, c.max_attempts),
        (Duration::from_secs(60), Duration::from_secs(300), 1000, 5)
    );
    assert_eq!(c.sinks.len(), 4);
    assert!(c.sinks[1].secret.is_some() && c.sinks[2].secret.is_some());
    let debug = format!("{c:?}");
    assert!(!debug.contains("tokentoken") && !debug.contains("MfKQ9r8"), "secrets in Debug: {debug}");
    assert!(debug.contains("https://hooks.slack.com/…"), "{debug}");
}

#[test]
fn config_refuses_bad_values_quoting_them() {
    let cases = [
        ("group_window: soon", "alerts.group_window: \"soon\" is not a duration"),
        ("group_window: 0s", "alerts.group_window: must be greater than zero"),
        ("group_window: 10m\nresolve_after: 1m", "alerts.resolve_after: 1m is shorter than group_window (10m)"),
        ("queue: 0", "alerts.queue: 0 is out of range"),
        ("max_attempts: 1000", "alerts.max_attempts: 1000 is out of range"),
        ("sinks: [{name: a, format: alertmanger, url: 'http://x/'}]", "unknown format \"alertmanger\""),
        ("sinks: [{name: a, format: slack, url: 'ftp://x/'}]", "alerts.sinks[0].url: \"ftp://x/\" is not an http"),
        ("sinks: [{name: 'A b', format: slack, url: 'http://x/'}]", "\"A b\" is not a sink name"),
        (
            "sinks: [{name: a, format: slack, url: 'http://x/'}, {name: a, format: slack, url: 'http://y/'}]",
            "alerts.sinks[1].name: \"a\" is used twice",
        ),
        ("sinks: [{name: s, format: standard, url: 'http://x/'}]", "has format standard but no secret"),
        (
            "sinks: [{name: am, format: alertmanager, url: 'http://127.0.0.1:9093/api/v2/alerts'}]",
            "\"http://127.0.0.1:9093/api/v2/alerts\" is Alertmanager's alert API",
        ),
        (
            "sinks: [{name: s, format: standard, url: 'http://x/', secret_env: NOPE}]",
            "environment variable NOPE is not set",
        ),
        (
            "sinks: [{name: s, format: standard, url: 'http://x/', secret_file: /nonexistent/whsec}]",
            "cannot read secret file /nonexistent/whsec",
        ),
    ];
    for (yaml, want) in cases {
        let err = check(yaml).expect_err(yaml);
        assert!(err.contains(want), "{yaml}: got {err:?}, want {want:?}");
    }
    assert!(serde_yaml::from_str::<RawAlerts>("group_windw: 1m").is_err(), "unknown fields are refused");
}

#[test]
fn a_malformed_secret_fails_the_config_without_echoing_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("whsec");
    std::fs::write(&path, "hunter2-not-a-webhook-secret").expect("write");
    let err =
        check(&format!("sinks: [{{name: s, format: standard, url: 'http://x/', secret_file: {}}}]", path.display()))
            .expect_err("malformed");
    assert!(err.contains("does not start with \"whsec_\""), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn alertmanager_payload_has_the_v4_shape() {
    let mut g = Grouper::new(&cfg(vec![]));
    let Added::New(note) = g.add(finding("10.0.0.7", 1), Instant::now()) else { panic!("new incident") };
    let c = AlertsConfig { external_url: "http://meshward.local/admin/alerts".into(), ..cfg(vec![]) };
    let body = payload::render(&note, Format::Alertmanager, "am", &c);
    let v: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["version"], "4");
    assert_eq!(v["status"], "firing");
    assert_eq!(v["receiver"], "am");
    assert_eq!(v["externalURL"], "http://meshward.local/admin/alerts");
    assert_eq!(
        v["groupKey"],
        r#"{}:{alertname="MeshwardAnomaly",client="10.0.0.7",policy="extraction",rule="2",workload="fraud-model"}"#
    );
    assert_eq!(v["groupLabels"]["client"], "10.0.0.7");
    assert!(v["groupLabels"].get("severity").is_none());
    assert_eq!(v["commonLabels"]["severity"], "critical");
    let a = &v["alerts"][0];
    for k in ["status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"] {
        assert!(a.get(k).is_some(), "alert lacks {k}: {a}");
    }
    assert_eq!(a["fingerprint"].as_str().map(str::len), Some(16));
    assert_eq!(a["annotations"]["request"], "POST /v2/models/fraud/infer");
    assert_eq!(a["annotations"]["score"], "11.000");
    assert_eq!(a["annotations"]["description"], "input spread far wider than usual; grid-like inputs");
}

#[test]
fn alertmanager_api_payload_is_a_list_of_postable_alerts() {
    let c = cfg(vec![]);
    let mut g = Grouper::new(&c);
    let t0 = Instant::now();
    let Added::New(firing) = g.add(finding("10.0.0.7", 1), t0) else { panic!("new incident") };
    let v: Value = serde_json::from_slice(&payload::render(&firing, Format::AlertmanagerApi, "am", &c)).expect("json");
    let alerts = v.as_array().expect("a list");
    assert_eq!(alerts.len(), 1);
    let a = &alerts[0];
    assert_eq!(a["labels"]["alertname"], payload::ALERT_NAME);
    assert_eq!(a["labels"]["severity"], "critical");
    assert!(a.get("generatorURL").is_none(), "no external_url: no generatorURL");
    // Firing: ends resolve_after past the last finding, later than it starts.
    let starts = humantime::parse_rfc3339(a["startsAt"].as_str().expect("startsAt")).expect("rfc3339");
    let ends = humantime::parse_rfc3339(a["endsAt"].as_str().expect("endsAt")).expect("rfc3339");
    let lead = ends.duration_since(starts).expect("ends after start");
    assert!(lead >= c.resolve_after && lead < c.resolve_after + Duration::from_secs(5), "{lead:?}");
    let resolved = g.due(t0 + c.resolve_after, SystemTime::now()).pop().expect("resolved");
    let v: Value =
        serde_json::from_slice(&payload::render(&resolved, Format::AlertmanagerApi, "am", &c)).expect("json");
    let ends = v[0]["endsAt"].as_str().expect("endsAt");
    assert_eq!(
        humantime::parse_rfc3339(ends).ok(),
        resolved.incident.ends_at.map(|t| {
            // Rendered with millisecond precision.
            SystemTime::UNIX_EPOCH
                + Duration::from_millis(t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64))
        })
    );
}

/// A test CA (PEM) and a TLS acceptor whose certificate it issued for 127.0.0.1.
fn test_pki() -> (String, tokio_rustls::TlsAcceptor) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let key = KeyPair::generate().expect("key");
    let mut leaf = CertificateParams::new(Vec::<String>::new()).expect("params");
    leaf.subject_alt_names = vec![SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())];
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).expect("leaf");
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key der");
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key_der)
        .expect("server config");
    (ca_cert.pem(), tokio_rustls::TlsAcceptor::from(Arc::new(server)))
}

#[tokio::test]
async fn https_sinks_verify_the_receiver_against_their_roots() {
    let (ca_pem, acceptor) = test_pki();
    let rx = Receiver::start_with(Receiver::ok(), Some(acceptor)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca_pem).expect("write");
    let trusted = check(&format!(
        "sinks: [{{name: internal, format: standard, url: '{}', secret_env: WHSEC, ca_file: {}}}]",
        rx.url,
        ca_path.display()
    ))
    .expect("config")
    .sinks
    .remove(0);
    // Same receiver with the Mozilla roots: its certificate is not trusted.
    let untrusted = sink("public", Format::Standard, &rx.url, Some(SECRET));
    let (m, _reg) = metrics();
    let alerts = Alerts::start(cfg(vec![trusted, untrusted]), m.clone());
    alerts.report(finding("c", 1));
    assert!(alerts.idle(Duration::from_secs(5)).await, "{}", alerts.snapshot());
    assert_eq!(rx.got().len(), 1, "only the sink trusting the test CA got through");
    assert_eq!(deliveries(&m, "internal", "ok"), 1);
    assert_eq!(dropped(&m, "public", "attempts_exhausted"), 1);
    let err = alerts.snapshot()["sinks"]["public"]["last_error"].as_str().unwrap_or("").to_string();
    assert!(err.contains("certificate"), "{err}");
    let secret = Secret::parse(SECRET).expect("secret");
    let r = &rx.got()[0];
    sign::verify_headers(&secret, &r.headers, &r.body, SystemTime::now(), Duration::from_secs(60)).expect("signed");
}

#[test]
fn ca_file_must_hold_certificates_and_serve_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").expect("write");
    let err = check(&format!("sinks: [{{name: a, format: slack, url: 'https://x/', ca_file: {}}}]", empty.display()))
        .expect_err("no certificate");
    assert!(err.contains("alerts.sinks[0].ca_file") && err.contains("no CERTIFICATE found"), "{err}");
    let err = check(&format!("sinks: [{{name: a, format: slack, url: 'http://x/', ca_file: {}}}]", empty.display()))
        .expect_err("http");
    assert!(err.contains("set, but the url \"http://x/\" is not https://"), "{err}");
}

/// Reports from several threads at once: every finding is either in the
/// incident's count or counted as dropped, none lost silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reports_are_all_accounted_for() {
    let rx = Receiver::start(Receiver::ok()).await;
    let (m, _reg) = metrics();
    let c = AlertsConfig {
        group_window: Duration::from_secs(30),
        resolve_after: Duration::from_secs(60),
        ..cfg(vec![sink("am", Format::Alertmanager, &rx.url, None)])
    };
    let alerts = Alerts::start(c, m.clone());
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let a = alerts.clone();
            tokio::task::spawn_blocking(move || {
                for i in 0..5000 {
                    a.report(finding("one-client", t * 5000 + i));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("reporter");
    }
    assert!(alerts.idle(Duration::from_secs(5)).await, "{}", alerts.snapshot());
    let snap = alerts.snapshot();
    let counted = snap["incidents"][0]["count"].as_u64().expect("one incident");
    let dropped = snap["findings_dropped"].as_u64().expect("dropped");
    println!("20000 concurrent reports: {counted} grouped, {dropped} dropped (queue 1000)");
    assert_eq!(snap["open_incidents"], 1, "{snap}");
    assert_eq!(counted + dropped, 20_000, "{snap}");
    assert_eq!(m.findings.get(), 20_000);
    assert_eq!(rx.got().len(), 1, "one firing; updates wait for the 30 s window");
}
