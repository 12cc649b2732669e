//! Real Open Inference Protocol peers from PyPI through client -> outbound
//! sidecar -> mTLS -> inbound sidecar -> model server: `tritonclient.http`
//! (the Triton client) calls MLServer (scikit-learn runtime) and KServe's
//! ModelServer, each serving a LogisticRegression trained by the test
//! (`peers/train.py`), once directly and once through the sidecars. Health,
//! model metadata and inference answers must be identical (outputs compared
//! element for element and by the SHA-256 of their bytes), with JSON tensors
//! and, on KServe (MLServer's REST API has no binary tensor extension), with
//! the binary tensor extension both ways (`Inference-Header-Content-Length`).
//!
//! The Python environments: `E2E_MLSERVER_PYTHON` (mlserver,
//! mlserver-sklearn, tritonclient[http], scikit-learn) and
//! `E2E_KSERVE_PYTHON` (kserve, scikit-learn), default `python3`. They
//! are separate because MLServer needs protobuf 6 and KServe and
//! grpcio-health-checking need newer packages; `.ci/run` makes both venvs.
//! Without them a test prints why it skips, except under CI, where it fails.
//! (Not `MESHWARD_*`: the sidecar reads those as configuration overrides.)

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

/// The helper scripts, next to this file.
const PEERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/e2e/peers");
const MODEL: &str = "iris";
/// A model server has this long to answer `/v2/health/ready` (MLServer
/// usually takes 3-20 s to import and load).
const SERVER_START: Duration = Duration::from_secs(90);
/// One client script run, at most (the `timeout` command enforces it).
const CLIENT_TIMEOUT_S: &str = "180";
/// A second identity for the extraction client of the detector test.
const SCRAPER_ID: &str = "spiffe://e2e.test/ns/apps/sa/scraper";

/// The interpreter named by `var` (default `python3`) if it imports `modules`.
/// Under CI a missing environment fails the test instead of skipping it.
fn python_with(var: &str, modules: &str, what: &str) -> Option<String> {
    let python = std::env::var(var).unwrap_or_else(|_| "python3".to_owned());
    let ok = Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    let reason = format!("{python:?} (from {var}, default python3) cannot import {modules}: {what} not installed");
    assert!(std::env::var_os("CI").is_none(), "{reason}; .ci/run installs it");
    eprintln!("SKIP {reason}");
    None
}

fn mlserver_python() -> Option<String> {
    python_with(
        "E2E_MLSERVER_PYTHON",
        "mlserver, mlserver_sklearn, tritonclient.http, sklearn, joblib",
        "MLServer / tritonclient",
    )
}

fn kserve_python() -> Option<String> {
    python_with("E2E_KSERVE_PYTHON", "kserve, sklearn, joblib", "KServe")
}

/// A model server process, killed by PID when dropped; its output goes to a log file.
struct Server {
    child: std::process::Child,
    log: PathBuf,
    name: &'static str,
}

impl Server {
    fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> Self {
        let out = std::fs::File::create(&log).expect("server log");
        let err = out.try_clone().expect("server log");
        let child = cmd.stdout(out).stderr(err).spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        Self { child, log, name }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until `GET /v2/health/ready` answers 200.
    fn wait_ready(&mut self, addr: SocketAddr) {
        let start = Instant::now();
        while start.elapsed() < SERVER_START {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited with {status} before it was ready\n{}", self.name, self.logs());
            }
            if admin_get(addr, "/v2/health/ready").is_some_and(|(s, _)| s == 200) {
                eprintln!("{} ready on {addr} after {:?}", self.name, start.elapsed());
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("{} not ready on {addr} within {SERVER_START:?}\n{}", self.name, self.logs());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill(); // SIGKILL by PID; MLServer runs with parallel_workers 0, so no worker processes
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- {} log ----\n{}", self.name, self.logs());
        }
    }
}

/// Trains the model into `dir` (an MLServer repository: settings.json, iris/).
fn train(python: &str, dir: &Path) {
    let out = Command::new("timeout")
        .args([CLIENT_TIMEOUT_S, python, &format!("{PEERS}/train.py")])
        .arg(dir)
        .output()
        .expect("run train.py");
    assert!(
        out.status.success(),
        "train.py failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts MLServer on a free loopback HTTP port (gRPC on another free port, metrics off).
fn start_mlserver(python: &str, repo: &Path) -> (Server, SocketAddr) {
    let http = free_addr();
    let mut cmd = Command::new(python);
    cmd.args(["-c", "import sys; from mlserver.cli import main; sys.argv[0] = 'mlserver'; sys.exit(main())"])
        .arg("start")
        .arg(repo)
        .env("MLSERVER_HTTP_PORT", http.port().to_string())
        .env("MLSERVER_GRPC_PORT", free_port().to_string());
    let mut server = Server::spawn("mlserver", cmd, repo.join("mlserver.log"));
    server.wait_ready(http);
    (server, http)
}

/// Starts KServe's ModelServer with the trained model on a free loopback port.
fn start_kserve(python: &str, repo: &Path) -> (Server, SocketAddr) {
    let http = free_addr();
    let mut cmd = Command::new(python);
    cmd.arg(format!("{PEERS}/kserve_server.py")).arg(repo.join("iris/model.joblib")).arg(http.port().to_string());
    let mut server = Server::spawn("kserve", cmd, repo.join("kserve.log"));
    server.wait_ready(http);
    (server, http)
}

/// Runs `oip_client.py ARGS` and parses the JSON line it prints.
fn oip_client(python: &str, args: &[&str], sidecars: &[&Proxy]) -> Value {
    let started = Instant::now();
    let out = Command::new("timeout")
        .args([CLIENT_TIMEOUT_S, python, &format!("{PEERS}/oip_client.py")])
        .args(args)
        .output()
        .expect("run oip_client.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let logs: String = sidecars.iter().map(|p| format!("---- sidecar log ----\n{}\n", p.logs())).collect();
    assert!(
        out.status.success(),
        "oip_client.py {args:?} failed after {:?}: {}\nstdout: {stdout}\nstderr: {}\n{logs}",
        started.elapsed(),
        out.status,
        String::from_utf8_lossy(&out.stderr),
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("oip_client.py {args:?} printed no JSON ({e}): {stdout}"))
}

/// The answers of `check` are those of a working model: healthy, and the
/// three iris rows of the fixed batch classified as their classes.
fn assert_sane(check: &Value, what: &str) {
    for key in ["live", "ready", "model_ready"] {
        assert_eq!(check[key], Value::Bool(true), "{what}: {key}\n{check:#}");
    }
    assert_eq!(check["model_metadata"]["name"], MODEL, "{what}\n{check:#}");
    let predict = &check["outputs"]["predict"]["values"];
    let classes: Vec<i64> =
        predict.as_array().expect("predict values").iter().filter_map(|row| row[0].as_i64()).collect();
    assert_eq!(classes.get(..3), Some(&[0, 1, 2][..]), "{what}: setosa, versicolor, virginica rows\n{check:#}");
    assert_eq!(check["outputs"]["predict_proba"]["shape"], serde_json::json!([5, 3]), "{what}\n{check:#}");
}

/// Inbound requests with the client's identity answered 2xx, per the server sidecar.
fn inbound_2xx(server: &Proxy, id: &str) -> f64 {
    metric_sum(&server.metrics(), "meshward_requests_total", &["inbound", "2xx", id])
}

#[test]
fn tritonclient_gets_identical_answers_from_mlserver_through_the_sidecars() {
    let Some(python) = mlserver_python() else { return };
    let repo = tempfile::tempdir().expect("tempdir");
    train(&python, repo.path());
    let (_mlserver, app) = start_mlserver(&python, repo.path());

    let pki = Pki::new();
    let (server, inbound) = pki.inbound_sidecar(app, "strict", "");
    let (client, outbound) = pki.outbound_sidecar(inbound, SERVER_ID, "");
    let sidecars = [&client, &server];
    let (direct, meshed) = (app.to_string(), outbound.to_string());

    let want = oip_client(&python, &["check", &direct, MODEL, "json"], &sidecars);
    assert_sane(&want, "mlserver direct");
    let before = inbound_2xx(&server, CLIENT_ID);
    let got = oip_client(&python, &["check", &meshed, MODEL, "json"], &sidecars);
    assert_eq!(got, want, "through the sidecars vs direct");
    // live, ready, model ready, metadata, infer: all five crossed the mesh as the client.
    assert!(inbound_2xx(&server, CLIENT_ID) - before >= 5.0, "{}", server.metrics());

    // Latency: 200 JSON inferences each way, interleaved on kept-alive connections.
    let bench = oip_client(&python, &["bench", &direct, &meshed, MODEL, "200"], &sidecars);
    eprintln!(
        "mlserver JSON infer p50: direct {} ms, through outbound+inbound sidecars {} ms (p90 {} / {} ms, n=200)",
        bench["a_p50_ms"], bench["b_p50_ms"], bench["a_p90_ms"], bench["b_p90_ms"]
    );
    assert!(inbound_2xx(&server, CLIENT_ID) - before >= 205.0, "{}", server.metrics());
}

#[test]
fn tritonclient_binary_tensors_reach_kserve_through_the_sidecars_unchanged() {
    let Some(client_python) = mlserver_python() else { return };
    let Some(server_python) = kserve_python() else { return };
    let repo = tempfile::tempdir().expect("tempdir");
    train(&client_python, repo.path());
    let (_kserve, app) = start_kserve(&server_python, repo.path());

    let pki = Pki::new();
    let (server, inbound) = pki.inbound_sidecar(app, "strict", "");
    let (client, outbound) = pki.outbound_sidecar(inbound, SERVER_ID, "");
    let sidecars = [&client, &server];
    let (direct, meshed) = (app.to_string(), outbound.to_string());

    let json = oip_client(&client_python, &["check", &direct, MODEL, "json"], &sidecars);
    assert_sane(&json, "kserve json direct");
    for mode in ["json", "binary"] {
        let want = oip_client(&client_python, &["check", &direct, MODEL, mode], &sidecars);
        let got = oip_client(&client_python, &["check", &meshed, MODEL, mode], &sidecars);
        assert_eq!(got, want, "{mode}: through the sidecars vs direct");
        // The same tensors whichever encoding carried them.
        assert_eq!(got["outputs"], json["outputs"], "{mode} vs json outputs");
    }
    // Binary answers: the JSON part gives each output's byte size (5x1 INT64, 5x3 FP64).
    let binary = oip_client(&client_python, &["check", &meshed, MODEL, "binary"], &sidecars);
    assert_eq!(binary["binary_data_size"], serde_json::json!({"predict": 40, "predict_proba": 120}), "{binary:#}");
    assert!(inbound_2xx(&server, CLIENT_ID) >= 15.0, "{}", server.metrics());
}

/// An `AnomalyPolicy` for the model: per-request anomalies and client
/// signals (extraction) are blocked, suspicious requests only audited.
fn anomaly_policy() -> String {
    "apiVersion: meshward.dev/v1\nkind: AnomalyPolicy\nmetadata: {name: protect-iris}\nspec:\n  rules:\n  - to: [{operation: {paths: ['/v2/models/{model}/infer']}}]\n    suspicious: audit\n    anomalous: block\n    clientSignal: block\n".to_owned()
}

/// The detector in the data path against real peers. Warm-up: the normal
/// client (rows near the training data, 20 ms apart) teaches the detector
/// its traffic in rounds of 200 requests until it gives verdicts. Then, three times, the normal client sends
/// 300 more while an extraction client with its own SPIFFE identity sends
/// 300 as fast as answers come: uniform random points over a box twice the
/// data's range, a grid over that box walked one coordinate at a time, and
/// uniform random points inside the data's own box (every value in range).
/// The normal client must get 100% success every time; the extraction
/// client must be refused with 403 (block) or 429 (rate limit) within its
/// first 100 requests, and the server sidecar must count the refusals as
/// anomaly-policy blocks and as 4xx for the extraction client's identity.
#[test]
fn an_extraction_client_is_refused_while_the_normal_client_is_not() {
    let Some(python) = mlserver_python() else { return };
    let repo = tempfile::tempdir().expect("tempdir");
    train(&python, repo.path());
    let (_mlserver, app) = start_mlserver(&python, repo.path());

    let pki = Pki::new();
    pki.issue("scraper", SCRAPER_ID, false);
    let policies = tempfile::tempdir().expect("tempdir");
    std::fs::write(policies.path().join("anomaly.yaml"), anomaly_policy()).expect("write policy");
    let extra = format!(
        "policy: {{paths: ['{}']}}\ndetector: {{client_key: [peer], tuning: {{warmup_samples: 300, publish_every: 100}}}}\n",
        policies.path().display()
    );
    let (server, inbound) = pki.inbound_sidecar(app, "strict", &extra);
    let (normal_sidecar, normal) = pki.outbound_sidecar(inbound, SERVER_ID, "");
    let scraper = free_addr();
    let scraper_sidecar = Proxy::start(&format!(
        "{}outbound: {{listeners: [{{name: up, listen: '{scraper}', target: '{inbound}', server_identity: '{SERVER_ID}'}}]}}\n",
        pki.identity_yaml("scraper"),
    ));
    let sidecars = [&normal_sidecar, &scraper_sidecar, &server];

    // Warm-up: normal traffic until the detector gives verdicts (bounded).
    let warming = || {
        admin_get(server.admin, "/detector")
            .and_then(|(_, b)| serde_json::from_str::<Value>(&b).ok())
            .is_none_or(|v| v["warming_up"] != false)
    };
    let mut rounds = 0;
    while warming() {
        assert!(rounds < 10, "still warming up after {rounds} rounds of 200 requests");
        let seed = (rounds + 1).to_string();
        let warm = oip_client(&python, &["traffic", "normal", &normal.to_string(), MODEL, "200", &seed], &sidecars);
        assert_eq!(warm["statuses"], serde_json::json!({"200": 200}), "warm-up must all pass: {warm}");
        rounds += 1;
    }

    let mut refused_total = 0.0;
    for (kind, seed) in [("extract-uniform", "2"), ("extract-grid", "3"), ("extract-box", "4")] {
        let normal_url = normal.to_string();
        let py = python.clone();
        let steady = std::thread::spawn(move || {
            let out = Command::new("timeout")
                .args([CLIENT_TIMEOUT_S, &py, &format!("{PEERS}/oip_client.py")])
                .args(["traffic", "normal", &normal_url, MODEL, "300", seed])
                .output()
                .expect("run normal client");
            (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
        });
        let attack = oip_client(&python, &["traffic", kind, &scraper.to_string(), MODEL, "300", seed], &sidecars);
        let (ok, line) = steady.join().expect("normal client thread");
        assert!(ok, "normal client failed during {kind}: {line}\n{}", server.logs());
        let steady: Value = serde_json::from_str(line.trim()).expect("normal client JSON");
        assert_eq!(steady["statuses"], serde_json::json!({"200": 300}), "{kind}: normal client refused: {steady}");

        let refused: u64 = ["403", "429"].iter().filter_map(|s| attack["statuses"][s].as_u64()).sum();
        assert!(refused > 0, "{kind}: never refused: {attack}\n{}", server.logs());
        let first = attack["first_refused"].as_u64().expect("an index");
        assert!(first < 100, "{kind}: first refusal only after {first} requests: {attack}");
        refused_total += refused as f64;
        eprintln!("{kind}: {attack}");
    }
    let m = server.metrics();
    let enforced: f64 = ["block", "rate_limited", "quarantined"]
        .iter()
        .map(|a| {
            metric_sum(&m, "meshward_detector_decisions_total", &[&format!("action=\"{a}\""), "dry_run=\"false\""])
        })
        .sum();
    assert!(enforced >= refused_total, "{refused_total} refusals, {enforced} enforced anomaly decisions:\n{m}");
    assert!(metric_sum(&m, "meshward_requests_total", &["inbound", SCRAPER_ID, "4xx"]) >= refused_total, "{m}");
}
