//! `meshward injector` over HTTPS on loopback: AdmissionReviews built from
//! the corpus' pod templates are answered with a JSONPatch that, applied
//! (json-patch), gives exactly what `meshward inject` gives; reinvocation
//! gives no patch; host-network and opted-out pods pass untouched with a
//! reason; malformed bodies get an AdmissionReview error; the serving
//! certificate (made here with rcgen) is reloaded when its files change.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::inject::{corpus, documents, inject};
use crate::util::{free_addr, BIN};

const DNS_NAME: &str = "meshward-injector.meshward-system.svc";

struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    pem: String,
}

impl Ca {
    fn new() -> Self {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, "meshward injector test CA");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = p.self_signed(&key).expect("ca");
        let pem = cert.pem();
        Self { cert, key, pem }
    }

    /// A serving certificate for the webhook Service name: (cert PEM, key PEM, cert DER).
    fn issue(&self, serial: u64) -> (String, String, Vec<u8>) {
        let mut p = rcgen::CertificateParams::new(vec![DNS_NAME.to_owned()]).expect("params");
        p.serial_number = Some(serial.into());
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &self.cert, &self.key).expect("sign");
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

struct Injector {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Drop for Injector {
    fn drop(&mut self) {
        let _ = self.child.kill(); // by PID
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- injector log ----\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}

fn start(dir: &Path) -> Injector {
    let addr = free_addr();
    let log = dir.join("injector.log");
    let child = Command::new(BIN)
        .args(["injector", "--listen", &addr.to_string(), "--reload-interval", "200ms"])
        .arg("--tls-cert")
        .arg(dir.join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.join("tls.key"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn injector");
    Injector { child, addr, log }
}

/// One HTTPS connection to the webhook that checks the Service DNS name against `ca_pem`.
struct Conn {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    peer_cert: Vec<u8>,
}

async fn connect(addr: SocketAddr, ca_pem: &str) -> std::io::Result<Conn> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c.expect("ca")).expect("root");
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from(DNS_NAME).expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await?;
    let peer_cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(Conn { send, peer_cert })
}

impl Conn {
    async fn request(&mut self, method: &str, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", DNS_NAME)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        self.send.ready().await.expect("connection ready");
        let resp = self.send.send_request(req).await.expect("send");
        let status = resp.status().as_u16();
        (status, resp.into_body().collect().await.expect("body").to_bytes().to_vec())
    }
}

fn review_body(uid: &str, pod: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": pod["metadata"]["namespace"].as_str().unwrap_or("default"),
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller", "groups": ["system:serviceaccounts"]},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    }))
    .expect("review json")
}

/// The pods of the corpus: every Pod and every workload's template made into a Pod.
fn corpus_pods() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for file in corpus() {
        let text = std::fs::read_to_string(&file).expect("read");
        for doc in documents(&text) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            let tpl = match kind.as_str() {
                "Pod" => Some(doc.clone()),
                "CronJob" => doc.pointer("/spec/jobTemplate/spec/template").cloned(),
                _ => doc.pointer("/spec/template").cloned(),
            };
            let Some(mut tpl) = tpl else { continue };
            if kind != "Pod" {
                let ns = doc["metadata"]["namespace"].clone();
                let mut meta = tpl["metadata"].take();
                if meta.is_null() {
                    meta = json!({});
                }
                meta["generateName"] = json!(format!("{}-", doc["metadata"]["name"].as_str().unwrap_or("x")));
                if !ns.is_null() {
                    meta["namespace"] = ns;
                }
                tpl = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": tpl["spec"].take()});
            }
            let name = format!(
                "{}:{kind}/{}",
                file.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
                doc["metadata"]["name"]
            );
            out.push((name, tpl));
        }
    }
    out
}

fn response(body: &[u8]) -> Value {
    let v: Value =
        serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)));
    assert_eq!(
        (v["apiVersion"].as_str(), v["kind"].as_str()),
        (Some("admission.k8s.io/v1"), Some("AdmissionReview")),
        "{v}"
    );
    v["response"].clone()
}

fn apply_patch(pod: &Value, resp: &Value) -> Option<Value> {
    let b64 = resp.get("patch")?.as_str().expect("patch is a base64 string");
    assert_eq!(resp["patchType"], "JSONPatch");
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).expect("base64");
    let patch: json_patch::Patch = serde_json::from_slice(&raw).expect("JSONPatch");
    let mut out = pod.clone();
    json_patch::patch(&mut out, &patch).expect("patch applies to the submitted pod");
    Some(out)
}

async fn wait_healthy(inj: &Injector, ca: &str) -> Conn {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(mut c) = connect(inj.addr, ca).await {
            if c.request("GET", "/healthz", Vec::new()).await.0 == 200 {
                return c;
            }
        }
        assert!(
            Instant::now() < deadline,
            "injector not healthy: {}",
            std::fs::read_to_string(&inj.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_patches_match_inject_and_reinvocation_is_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new();
    let (cert, key, _) = ca.issue(1);
    std::fs::write(dir.path().join("tls.crt"), cert).expect("cert");
    std::fs::write(dir.path().join("tls.key"), key).expect("key");
    let inj = start(dir.path());
    let mut conn = wait_healthy(&inj, &ca.pem).await;

    let (mut injected, mut skipped) = (0, 0);
    for (i, (name, pod)) in corpus_pods().iter().enumerate() {
        let (status, body) = conn.request("POST", "/inject", review_body(&format!("uid-{i}"), pod)).await;
        assert_eq!(status, 200, "{name}");
        let resp = response(&body);
        assert_eq!(
            (resp["uid"].as_str(), resp["allowed"].as_bool()),
            (Some(format!("uid-{i}").as_str()), Some(true)),
            "{name}: {resp}"
        );
        let (cli_out, _) = inject(&["-"], &serde_yaml::to_string(pod).expect("yaml"));
        let cli: Value = documents(&cli_out).pop().expect("one document");
        match apply_patch(pod, &resp) {
            None => {
                assert_eq!(&cli, pod, "{name}: webhook skipped a pod that inject changed");
                let message = resp["status"]["message"].as_str().unwrap_or_default();
                assert!(message.contains("hostNetwork") || message.contains("disabled"), "{name}: no reason: {resp}");
                skipped += 1;
            }
            Some(patched) => {
                assert_eq!(patched, cli, "{name}: webhook and meshward inject disagree");
                // Reinvocation (the API server may call again): no patch.
                let (status, body) = conn.request("POST", "/inject", review_body("again", &patched)).await;
                let again = response(&body);
                assert_eq!((status, again["allowed"].as_bool()), (200, Some(true)));
                assert!(again.get("patch").is_none(), "{name}: reinvocation patched: {again}");
                injected += 1;
            }
        }
    }
    assert_eq!((injected, skipped), (8, 2));

    // Warnings for unknown annotations; refusal for an invalid one.
    let mut pod = corpus_pods().into_iter().find(|(n, _)| n.contains("ranker")).expect("ranker").1;
    pod["metadata"]["annotations"] = json!({"meshward.dev/logLevel": "debug"});
    let resp = response(&conn.request("POST", "/inject", review_body("w", &pod)).await.1);
    assert!(resp["warnings"][0].as_str().is_some_and(|w| w.contains("meshward.dev/logLevel")), "{resp}");
    pod["metadata"]["annotations"] = json!({"meshward.dev/proxy-memory": "a lot"});
    let resp = response(&conn.request("POST", "/inject", review_body("r", &pod)).await.1);
    assert_eq!(resp["allowed"], false);
    assert!(
        resp["status"]["message"].as_str().is_some_and(|m| m.contains("proxy-memory") && m.contains("a lot")),
        "{resp}"
    );

    // Malformed reviews: an AdmissionReview error, never a crash.
    for body in [&b"not json"[..], b"{}", b"{\"request\": {\"uid\": 5}}", &[0xff; 64]] {
        let (status, answer) = conn.request("POST", "/inject", body.to_vec()).await;
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(body));
        assert_eq!(response(&answer)["allowed"], false);
    }
    let (status, answer) = conn
        .request(
            "POST",
            "/inject",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"m-1","object":"pod"}}"#
                .to_vec(),
        )
        .await;
    assert_eq!((status, response(&answer)["uid"].as_str()), (200, Some("m-1")));
    assert_eq!(conn.request("GET", "/nope", Vec::new()).await.0, 404);
    let (status, metrics) = conn.request("GET", "/metrics", Vec::new()).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert_eq!(status, 200);
    assert!(metrics.contains("meshward_injector_reviews_total{decision=\"injected\"} 9"), "{metrics}");
    assert!(metrics.contains("meshward_injector_reviews_total{decision=\"malformed\"} 5"), "{metrics}");
    assert!(inj.child.id() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_certificate_reloads_and_latency() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new();
    let (cert, key, der1) = ca.issue(1);
    std::fs::write(dir.path().join("tls.crt"), cert).expect("cert");
    std::fs::write(dir.path().join("tls.key"), key).expect("key");
    let inj = start(dir.path());
    let mut conn = wait_healthy(&inj, &ca.pem).await;
    assert_eq!(conn.peer_cert, der1);

    // Latency of one review over a kept-alive connection (the API server keeps them).
    let pod = corpus_pods().into_iter().find(|(n, _)| n.contains("triton")).expect("triton").1;
    let body = review_body("lat", &pod);
    let mut times = Vec::new();
    for _ in 0..300 {
        let t = Instant::now();
        let (status, _) = conn.request("POST", "/inject", body.clone()).await;
        times.push(t.elapsed());
        assert_eq!(status, 200);
    }
    times.sort();
    eprintln!(
        "injector review round trip over HTTPS keep-alive, {} reviews: p50 {:?}, p99 {:?}, max {:?}",
        times.len(),
        times[times.len() / 2],
        times[times.len() * 99 / 100],
        times[times.len() - 1]
    );

    // Rotation in place: new connections get the new certificate, the old one keeps working.
    let (cert2, key2, der2) = ca.issue(2);
    std::fs::write(dir.path().join("tls.key"), key2).expect("key");
    std::fs::write(dir.path().join("tls.crt"), cert2).expect("cert");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = connect(inj.addr, &ca.pem).await.expect("connect");
        if c.peer_cert == der2 {
            break;
        }
        assert!(Instant::now() < deadline, "certificate not reloaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(conn.request("GET", "/healthz", Vec::new()).await.0, 200, "open connection dropped by the reload");

    // A broken update keeps the last good pair.
    std::fs::write(dir.path().join("tls.crt"), "-----BEGIN CERTIFICATE-----\ngarbage\n").expect("cert");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut c = connect(inj.addr, &ca.pem).await.expect("still serving after a bad update");
    assert_eq!(c.peer_cert, der2);
    let metrics = String::from_utf8_lossy(&c.request("GET", "/metrics", Vec::new()).await.1).into_owned();
    assert!(metrics.contains("meshward_injector_certificate_reloads_total{result=\"failure\"}"), "{metrics}");
    assert!(metrics.contains("meshward_injector_certificate_reloads_total{result=\"success\"}"), "{metrics}");

    // SIGTERM: the open keep-alive connections are closed gracefully and the process exits 0.
    let mut inj = inj;
    let pid = inj.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let deadline = Instant::now() + Duration::from_secs(8);
    let status = loop {
        if let Some(status) = inj.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "injector did not stop after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "injector exited with {status}");
}
