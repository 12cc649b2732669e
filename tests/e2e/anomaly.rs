//! The detector in the data path, through the real binary: after warm-up an
//! attacking client is refused while normal clients keep 100% success;
//! flagged traffic is never learned from; a dry-run anomaly policy counts
//! without enforcing; a model snapshot loaded at start gives verdicts from
//! the first request.
//!
//! Clients are told apart by source address (127.0.0.2, .3, ... on
//! loopback), keyed with `detector.client_key: [ip]`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::util::*;

/// A webhook receiver on loopback keeping every delivery (headers, body).
struct Receiver {
    addr: SocketAddr,
    got: std::sync::Arc<std::sync::Mutex<Vec<(http::HeaderMap, Bytes)>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let got: std::sync::Arc<std::sync::Mutex<Vec<(http::HeaderMap, Bytes)>>> = Default::default();
        let store = got.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let store = store.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let store = store.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                            store.lock().expect("lock").push((parts.headers, body));
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
                });
            }
        });
        Receiver { addr, got }
    }

    fn deliveries(&self) -> Vec<(http::HeaderMap, Bytes)> {
        self.got.lock().expect("lock").clone()
    }
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

type Http = Client<HttpConnector, Full<Bytes>>;

/// A client whose connections come from `127.0.0.<last>`.
fn client_from(last: u8) -> Http {
    let mut c = HttpConnector::new();
    c.set_local_address(Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))));
    Client::builder(TokioExecutor::new()).build(c)
}

fn anomaly_policy(dry_run: bool) -> String {
    format!(
        "apiVersion: meshward.dev/v1\nkind: AnomalyPolicy\nmetadata: {{name: guard}}\nspec:\n  dryRun: {dry_run}\n  rules:\n  - to: [{{operation: {{paths: ['/v2/models/{{model}}/infer']}}}}]\n    suspicious: audit\n    anomalous: block\n    clientSignal: block\n"
    )
}

/// A normal inference call: four features drawn around their usual values
/// (seeded, so every run sends the same traffic).
fn normal_body(i: u64) -> String {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(i);
    let mut v = |mean: f64, sd: f64| mean + sd * rng.sample::<f64, _>(rand_distr::StandardNormal);
    format!(
        r#"{{"id":"r{i}","inputs":[{{"name":"features","shape":[1,4],"datatype":"FP32","data":[{:.4},{:.4},{:.4},{:.4}]}}]}}"#,
        v(5.8, 0.8),
        v(3.0, 0.4),
        v(3.7, 1.7),
        v(1.2, 0.7)
    )
}

/// Values far outside anything learned, with an unseen parameter.
fn attack_body(i: u64) -> String {
    format!(
        r#"{{"id":"a{i}","parameters":{{"debug":"' OR 1=1 --"}},"inputs":[{{"name":"features","shape":[1,4],"datatype":"FP32","data":[9e9,-9e9,1e12,{i}e8]}}]}}"#
    )
}

async fn infer(c: &Http, inbound: SocketAddr, body: String) -> (u16, String) {
    let req = http::Request::post(format!("http://{inbound}/v2/models/fraud/infer"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let resp = c.request(req).await.expect("send");
    let status = resp.status().as_u16();
    let code = resp.headers().get("x-meshward-error").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let _ = resp.into_body().collect().await;
    (status, code)
}

fn detector_state(p: &Proxy) -> serde_json::Value {
    admin_get(p.admin, "/detector").and_then(|(_, b)| serde_json::from_str(&b).ok()).unwrap_or_default()
}

/// Sends normal traffic from five clients until the model is past warm-up.
async fn warm_up(p: &Proxy, inbound: SocketAddr, clients: &[Http]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut sent = 0;
    while detector_state(p)["warming_up"] != false {
        assert!(Instant::now() < deadline, "never warmed up after {sent}: {}", detector_state(p));
        for c in clients {
            let (s, code) = infer(c, inbound, normal_body(sent)).await;
            assert_eq!(
                s,
                200,
                "warm-up request {sent} refused: {code} {:?}",
                admin_get(p.admin, "/detector/decisions")
            );
            sent += 1;
        }
    }
    sent
}

fn sidecar(pki: &Pki, app: SocketAddr, policy_dir: &Path, extra: &str) -> (Proxy, SocketAddr) {
    sidecar_with(pki, app, policy_dir, extra, "")
}

/// An inbound sidecar (permissive, so loopback clients call it directly)
/// with the detector keyed by client IP, `extra` detector settings and
/// `more` top-level YAML.
fn sidecar_with(pki: &Pki, app: SocketAddr, policy_dir: &Path, extra: &str, more: &str) -> (Proxy, SocketAddr) {
    sidecar_tuned(pki, app, policy_dir, "", extra, more)
}

/// [`sidecar_with`], with `tuning` added to the detector's model settings.
fn sidecar_tuned(
    pki: &Pki,
    app: SocketAddr,
    policy_dir: &Path,
    tuning: &str,
    extra: &str,
    more: &str,
) -> (Proxy, SocketAddr) {
    let inbound = free_addr();
    let yaml = format!(
        "{}inbound: {{listen: '{inbound}', app: '{app}', mode: permissive}}\npolicy: {{paths: ['{}'], reload_interval: 100ms}}\ndetector: {{client_key: [ip], tuning: {{warmup_samples: 300, publish_every: 100{tuning}}}{extra}}}\n{more}",
        pki.identity_yaml("server"),
        policy_dir.display()
    );
    (Proxy::start(&yaml), inbound)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attacker_is_blocked_while_normal_clients_pass_and_its_traffic_is_never_learned() {
    let pki = Pki::new();
    let app = EchoApp::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("guard.yaml"), anomaly_policy(false)).expect("policy");
    let snapshot = dir.path().join("model.json");
    let receiver = Receiver::start().await;
    let secret_file = dir.path().join("whsec");
    std::fs::write(&secret_file, SECRET).expect("secret");
    let alerts = format!(
        "alerts: {{group_window: 1m, sinks: [{{name: siem, format: standard, url: 'http://{}/hook', secret_file: '{}'}}]}}\n",
        receiver.addr,
        secret_file.display()
    );
    let (p, inbound) =
        sidecar_with(&pki, app.addr, dir.path(), &format!(", save_model: '{}'", snapshot.display()), &alerts);
    let normals: Vec<Http> = (2..=6).map(client_from).collect();
    let mut sent = warm_up(&p, inbound, &normals).await;

    // The attacker is refused; normal clients, interleaved, all pass.
    let attacker = client_from(9);
    let (mut blocked, mut first_block) = (0, None);
    for i in 0..30u64 {
        let (s, code) = infer(&attacker, inbound, attack_body(i)).await;
        if s == 403 {
            assert_eq!(code, "anomaly_blocked");
            blocked += 1;
            first_block.get_or_insert(i + 1);
        }
        for c in &normals {
            let (s, _) = infer(c, inbound, normal_body(sent)).await;
            assert_eq!(
                s,
                200,
                "a normal client was refused\n{}",
                admin_get(p.admin, "/detector/decisions").unwrap_or_default().1
            );
            sent += 1;
        }
    }
    assert!(
        blocked >= 28,
        "only {blocked}/30 attack requests blocked\n{}",
        p.logs().lines().filter(|l| l.contains("127.0.0.9")).collect::<Vec<_>>().join("\n")
    );
    assert!(
        first_block.is_some_and(|n| n <= 1),
        "first refusal at attack request {first_block:?}\ndetector: {}\n{}",
        detector_state(&p),
        p.logs().lines().filter(|l| l.contains("127.0.0.9")).take(3).collect::<Vec<_>>().join("\n")
    );

    // Evidence: metrics, the admin views and the access log name the client.
    let m = p.metrics();
    assert!(
        metric_sum(&m, "meshward_detector_decisions_total", &["action=\"block\"", "policy=\"guard\""]) >= 28.0,
        "{m}"
    );
    let clients = admin_get(p.admin, "/detector/clients").expect("clients").1;
    assert!(clients.contains("127.0.0.9"), "{clients}");
    assert!(!clients.contains("127.0.0.2\""), "a normal client is listed as suspicious: {clients}");
    let decisions = admin_get(p.admin, "/detector/decisions").expect("decisions").1;
    assert!(decisions.contains("\"action\":\"block\""), "{decisions}");
    assert!(p.logs().contains("\"anomaly_action\":\"block\""), "{}", p.logs());

    // One signed, grouped alert incident for the attacker, not one per request.
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.deliveries().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no alert delivered\n{}",
            admin_get(p.admin, "/alerts").unwrap_or_default().1
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secret = meshward::alerts::Secret::parse(SECRET).expect("secret");
    let deliveries = receiver.deliveries();
    for (headers, body) in &deliveries {
        meshward::alerts::sign::verify_headers(
            &secret,
            headers,
            body,
            std::time::SystemTime::now(),
            Duration::from_secs(300),
        )
        .expect("a valid Standard Webhooks signature");
    }
    let about_attacker: Vec<serde_json::Value> = deliveries
        .iter()
        .filter_map(|(_, b)| serde_json::from_slice::<serde_json::Value>(b).ok())
        .filter(|v| v.to_string().contains("127.0.0.9"))
        .collect();
    assert!(!about_attacker.is_empty() && about_attacker.len() <= 3, "{about_attacker:?}");
    let text = about_attacker[0].to_string();
    assert!(text.contains("guard") && text.contains("block") && text.contains("/v2/models/fraud/infer"), "{text}");
    assert!(
        !deliveries.iter().any(|(_, b)| String::from_utf8_lossy(b).contains("127.0.0.2\"")),
        "normal client alerted"
    );

    // Flagged traffic never reaches learning: only requests that passed
    // (normal ones, and attack requests the detector did not flag) are learned.
    let learned = metric_sum(&m, "meshward_detector_learning_samples_total", &["result=\"learned\""]);
    let passed = sent + 30 - blocked;
    assert!(learned <= passed as f64, "learned {learned} samples from {passed} requests that passed");
    assert_eq!(app.count(), sent + 30 - blocked, "blocked requests never reached the app");

    // The published model was saved; a sidecar started from it judges the
    // very first request without any warm-up.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !snapshot.exists() {
        assert!(Instant::now() < deadline, "no snapshot written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(p);
    let (p2, inbound2) =
        sidecar(&pki, app.addr, dir.path(), &format!(", learn: false, load_model: '{}'", snapshot.display()));
    assert_eq!(detector_state(&p2)["warming_up"], false);
    let (s, code) = infer(&client_from(10), inbound2, attack_body(5)).await;
    assert_eq!((s, code.as_str()), (403, "anomaly_blocked"), "{:?}", admin_get(p2.admin, "/detector/decisions"));
    let (s, _) = infer(&client_from(2), inbound2, normal_body(1)).await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_alert_receiver_changes_nothing_for_requests_and_its_alerts_are_dropped_and_counted() {
    let pki = Pki::new();
    let app = EchoApp::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("guard.yaml"), anomaly_policy(false)).expect("policy");
    let dead = free_addr(); // nothing listens here
    let alerts = format!(
        "alerts: {{max_attempts: 2, backoff: 50ms, timeout: 500ms, sinks: [{{name: am, format: alertmanager, url: 'http://{dead}/hook'}}]}}\n"
    );
    let (p, inbound) = sidecar_with(&pki, app.addr, dir.path(), "", &alerts);
    let normals: Vec<Http> = (2..=6).map(client_from).collect();
    warm_up(&p, inbound, &normals).await;
    let attacker = client_from(9);
    let started = Instant::now();
    for i in 0..10 {
        let (s, _) = infer(&attacker, inbound, attack_body(i)).await;
        assert!(s == 403 || s == 200, "{s}");
    }
    assert!(started.elapsed() < Duration::from_secs(5), "requests waited on alerting: {:?}", started.elapsed());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = p.metrics();
        let failed = metric_sum(&m, "meshward_alert_deliveries_total", &["sink=\"am\"", "result=\"failed\""])
            + metric_sum(&m, "meshward_alerts_dropped_total", &["sink=\"am\""]);
        if failed >= 1.0 {
            assert!(
                metric_sum(&m, "meshward_alert_deliveries_total", &["result=\"retry\""]) >= 1.0,
                "retried first: {m}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no failed delivery counted\n{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_anomaly_policy_counts_without_enforcing() {
    let pki = Pki::new();
    let app = EchoApp::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("guard.yaml"), anomaly_policy(true)).expect("policy");
    let (p, inbound) = sidecar(&pki, app.addr, dir.path(), "");
    let normals: Vec<Http> = (2..=6).map(client_from).collect();
    warm_up(&p, inbound, &normals).await;
    let attacker = client_from(9);
    for i in 0..10 {
        let (s, _) = infer(&attacker, inbound, attack_body(i)).await;
        assert_eq!(s, 200, "dry-run must not refuse\n{}", p.logs());
    }
    let m = p.metrics();
    assert!(
        metric_sum(&m, "meshward_detector_decisions_total", &["action=\"block\"", "dry_run=\"true\""]) >= 9.0,
        "{m}"
    );
}

/// Sends one record of a traffic file: method, target, headers and body as written.
async fn replay(c: &Http, inbound: SocketAddr, rec: &serde_json::Value) -> u16 {
    let method = rec["method"].as_str().unwrap_or("GET");
    let uri = rec["uri"].as_str().unwrap_or("/");
    let mut req = http::Request::builder().method(method).uri(format!("http://{inbound}{uri}"));
    for h in rec["headers"].as_array().into_iter().flatten() {
        let (Some(n), Some(v)) = (h[0].as_str(), h[1].as_str()) else { continue };
        if !n.eq_ignore_ascii_case("host") && !n.eq_ignore_ascii_case("content-length") {
            req = req.header(n, v);
        }
    }
    let body = match (rec["body"].as_str(), rec["body_base64"].as_str()) {
        (Some(b), _) => Bytes::from(b.to_owned()),
        (None, Some(b)) => {
            use base64::Engine as _;
            Bytes::from(base64::engine::general_purpose::STANDARD.decode(b).unwrap_or_default())
        }
        _ => Bytes::new(),
    };
    let resp = c.request(req.body(Full::new(body)).expect("request")).await.expect("send");
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_a_labelled_file_through_the_sidecar_gives_the_scores_meshward_eval_gives() {
    let pki = Pki::new();
    let app = EchoApp::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |name: &str| dir.path().join(name).display().to_string();
    let ok = |out: std::process::Output| {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        out
    };
    // A model learned offline from generated normal traffic.
    ok(meshward(&[
        "traffic",
        "--train",
        &p("train.jsonl"),
        "--test",
        &p("test.jsonl"),
        "--seed",
        "3",
        "--train-requests",
        "4000",
        "--test-requests",
        "300",
        "--clients",
        "12",
    ]));
    ok(meshward(&[
        "eval",
        "--train",
        &p("train.jsonl"),
        "--test",
        &p("train.jsonl"),
        "--save-model",
        &p("model.json"),
    ]));
    std::fs::create_dir(dir.path().join("policies")).expect("dir");
    std::fs::write(dir.path().join("policies/guard.yaml"), anomaly_policy(false)).expect("policy");

    // The sidecar judges with that model (frozen) and records what it saw.
    let extra = format!(
        ", learn: false, load_model: '{}', record: '{}', record_credentials: true",
        p("model.json"),
        p("seen.jsonl")
    );
    let (sidecar, inbound) = sidecar(&pki, app.addr, &dir.path().join("policies"), &extra);
    let test = std::fs::read_to_string(p("test.jsonl")).expect("test file");
    let records: Vec<serde_json::Value> = test.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let mut ips: std::collections::HashMap<String, Http> = std::collections::HashMap::new();
    for rec in &records {
        let client = rec["client"].as_str().unwrap_or("").to_owned();
        let n = ips.len() as u8;
        let c = ips.entry(client).or_insert_with(|| client_from(20 + n));
        let status = replay(c, inbound, rec).await;
        assert!([200, 403, 429].contains(&status), "{status}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let seen = loop {
        let seen = std::fs::read_to_string(p("seen.jsonl")).unwrap_or_default();
        if seen.lines().count() >= records.len() {
            break seen;
        }
        assert!(Instant::now() < deadline, "{} of {} requests recorded", seen.lines().count(), records.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(sidecar);

    // meshward eval on the recording, the same model frozen: the same score per request.
    ok(meshward(&[
        "eval",
        "--load-model",
        &p("model.json"),
        "--freeze",
        "--test",
        &p("seen.jsonl"),
        "--scores",
        &p("eval.jsonl"),
    ]));
    let by_eval: Vec<f64> = std::fs::read_to_string(p("eval.jsonl"))
        .expect("scores")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["score"].as_f64())
        .collect();
    let by_sidecar: Vec<f64> =
        seen.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["score"].as_f64()).collect();
    assert_eq!(by_eval.len(), records.len());
    assert_eq!(by_sidecar.len(), records.len());
    let seen_lines: Vec<&str> = seen.lines().collect();
    let differ: Vec<String> = by_eval
        .iter()
        .zip(&by_sidecar)
        .enumerate()
        .filter(|(_, (a, b))| (*a - *b).abs() > 1e-9)
        .map(|(i, (a, b))| {
            format!("eval {a} sidecar {b}: {}", {
                let l = seen_lines[i];
                let n = l.len();
                l[n.saturating_sub(400)..].to_owned()
            })
        })
        .collect();
    assert!(
        differ.is_empty(),
        "{} of {} scores differ:\n{}",
        differ.len(),
        records.len(),
        differ[..differ.len().min(5)].join("\n")
    );
    assert!(by_sidecar.iter().any(|s| *s > 0.5), "the replay contains no attack the model scores high");
}

/// A policy whose anomalous band takes `action` (with `more` spec lines).
fn policy_with(action: &str, more: &str) -> String {
    format!(
        "apiVersion: meshward.dev/v1\nkind: AnomalyPolicy\nmetadata: {{name: guard}}\nspec:\n  rules:\n  - to: [{{operation: {{paths: ['/v2/models/{{model}}/infer']}}}}]\n    suspicious: audit\n    anomalous: {action}\n    clientSignal: audit\n{more}"
    )
}

/// Status, `x-meshward-error` and `Retry-After` of one inference call.
async fn infer_full(c: &Http, inbound: SocketAddr, body: String) -> (u16, String, Option<u64>) {
    let req = http::Request::post(format!("http://{inbound}/v2/models/fraud/infer"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let resp = c.request(req).await.expect("send");
    let h = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let out = (
        resp.status().as_u16(),
        h("x-meshward-error").unwrap_or_default(),
        h("retry-after").and_then(|v| v.parse().ok()),
    );
    let _ = resp.into_body().collect().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_client_is_refused_even_for_normal_calls_until_the_quarantine_ends() {
    let pki = Pki::new();
    let app = EchoApp::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("guard.yaml"), policy_with("quarantine", "  quarantine: {duration: 2s}\n"))
        .expect("policy");
    let (p, inbound) = sidecar(&pki, app.addr, dir.path(), "");
    let normals: Vec<Http> = (2..=6).map(client_from).collect();
    let mut sent = warm_up(&p, inbound, &normals).await;

    let attacker = client_from(9);
    let (s, code, retry) = infer_full(&attacker, inbound, attack_body(1)).await;
    assert_eq!((s, code.as_str()), (403, "client_quarantined"), "{:?}", admin_get(p.admin, "/detector/decisions"));
    assert!(retry.is_some_and(|r| (1..=2).contains(&r)), "Retry-After {retry:?}");
    let quarantined_at = Instant::now();
    // A normal call from the quarantined client is refused too; other clients pass.
    let (s, code, _) = infer_full(&attacker, inbound, normal_body(sent)).await;
    assert_eq!((s, code.as_str()), (403, "client_quarantined"));
    let (s, _, _) = infer_full(&normals[0], inbound, normal_body(sent + 1)).await;
    assert_eq!(s, 200);
    sent += 2;
    // After the quarantine the client's normal calls pass again.
    tokio::time::sleep(Duration::from_millis(2200).saturating_sub(quarantined_at.elapsed())).await;
    let (s, code, _) = infer_full(&attacker, inbound, normal_body(sent)).await;
    assert_eq!((s, code.as_str()), (200, ""), "{:?}", admin_get(p.admin, "/detector/decisions"));
    let m = p.metrics();
    assert!(metric_sum(&m, "meshward_detector_decisions_total", &["action=\"quarantined\""]) >= 2.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_action_slows_the_client_to_the_reduced_rate() {
    let pki = Pki::new();
    let app = EchoApp::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = policy_with("rate-limit", "  rateLimit: {requests: 1, per: 1m, burst: 1}\n");
    std::fs::write(dir.path().join("guard.yaml"), policy).expect("policy");
    let (p, inbound) = sidecar(&pki, app.addr, dir.path(), "");
    let normals: Vec<Http> = (2..=6).map(client_from).collect();
    warm_up(&p, inbound, &normals).await;
    let attacker = client_from(9);
    let (s, _, _) = infer_full(&attacker, inbound, attack_body(1)).await;
    assert_eq!(s, 200, "the first flagged call fits the reduced rate's burst");
    let (s, code, retry) = infer_full(&attacker, inbound, attack_body(2)).await;
    assert_eq!((s, code.as_str()), (429, "rate limited"), "{:?}", admin_get(p.admin, "/detector/decisions"));
    assert!(retry.is_some_and(|r| r >= 1), "Retry-After {retry:?}");
    let (s, _, _) = infer_full(&normals[0], inbound, normal_body(99_999)).await;
    assert_eq!(s, 200, "other clients are not slowed");
}

/// A sidecar at a 0.5% budget, warmed up (the 300 warm-up calls without NaN
/// are more than 1/budget, 200, which settles the invariant) with bodies cut
/// at `limit` if given. An ordinary call with its second value NaN as
/// Python's json.dumps writes it (the model server reads it), padded in its
/// id to the same length, is blocked; the ordinary call, from another new
/// client, passes.
async fn a_nan_is_blocked_and_the_ordinary_call_passes(limit: Option<usize>) {
    let pki = Pki::new();
    let app = EchoApp::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("guard.yaml"), anomaly_policy(false)).expect("policy");
    let extra = limit.map(|n| format!(", max_inspect_bytes: {n}")).unwrap_or_default();
    let (p, inbound) = sidecar_tuned(&pki, app.addr, dir.path(), ", fp_budget: 0.005", &extra, "");
    let normals: Vec<Http> = (2..=6).map(client_from).collect();
    let sent = warm_up(&p, inbound, &normals).await;
    let normal = normal_body(sent + 1);
    let start = normal.find("\"data\":[").expect("data") + 8;
    let second = start + normal[start..].find(',').expect("a second value") + 1;
    let end = second + normal[second..].find(',').expect("a third value");
    let pad = "x".repeat(end - second - 3);
    let nan =
        format!("{}NaN{}", &normal[..second], &normal[end..]).replacen("\"id\":\"", &format!("\"id\":\"{pad}"), 1);
    assert_eq!(nan.len(), normal.len(), "{nan}");
    if let Some(n) = limit {
        assert!(nan.len() > n && second + pad.len() + 4 <= n, "the NaN and its comma are inspected: {nan}");
    }
    let (s, code) = infer(&client_from(11), inbound, nan).await;
    let decisions = admin_get(p.admin, "/detector/decisions").unwrap_or_default().1;
    assert_eq!((s, code.as_str()), (403, "anomaly_blocked"), "{decisions}");
    assert!(decisions.contains("1 NaN/Inf values in input 'fraud/features' (none in"), "{decisions}");
    let (s, _) = infer(&client_from(12), inbound, normal).await;
    assert_eq!(s, 200, "{}", admin_get(p.admin, "/detector/decisions").unwrap_or_default().1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nan_as_python_writes_it_is_blocked_once_1_over_budget_learned_calls_had_none() {
    a_nan_is_blocked_and_the_ordinary_call_passes(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_past_the_inspect_limit_is_judged_on_the_values_that_arrived() {
    // A limit that cuts every call inside its data, after the first two
    // values (a large image meets the default 64 KiB the same way).
    let limit = normal_body(0).find("\"data\":[").expect("data") + 8 + 20;
    a_nan_is_blocked_and_the_ordinary_call_passes(Some(limit)).await;
}
