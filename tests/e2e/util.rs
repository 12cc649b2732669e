//! Test harness: the real `meshward` binary on free loopback ports, a dev PKI
//! made with `meshward certs`, an in-process echo app, and HTTP clients.

#![allow(dead_code)] // each test module uses a different part

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};

pub const BIN: &str = env!("CARGO_BIN_EXE_meshward");
pub const TD: &str = "e2e.test";
pub const SERVER_ID: &str = "spiffe://e2e.test/ns/ml/sa/model";
pub const CLIENT_ID: &str = "spiffe://e2e.test/ns/apps/sa/caller";
pub const IDENTITY_HEADER: &str = "x-meshward-peer-id";

/// A free loopback port (bound then released). The kernel may hand a just
/// released port out again, so ports already given to this test process are
/// never returned twice.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = StdListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port");
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Runs `meshward ARGS` to completion; panics with its output on failure.
pub fn meshward(args: &[&str]) -> std::process::Output {
    let out = Command::new(BIN).args(args).output().expect("run meshward");
    assert!(
        out.status.success(),
        "meshward {args:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A directory with a dev CA and workload certificates.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    /// CA plus `server` and `client` certificates.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().to_str().expect("utf8 path").to_owned();
        meshward(&["certs", "ca", "--out", &p, "--trust-domain", TD]);
        let pki = Self { dir };
        pki.issue("server", SERVER_ID, false);
        pki.issue("client", CLIENT_ID, false);
        pki
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().expect("utf8").to_owned()
    }

    /// Issues NAME.crt/NAME.key for `id` (optionally already expired).
    pub fn issue(&self, name: &str, id: &str, expired: bool) {
        let p = self.file("");
        let mut args = vec!["certs", "issue", "--ca", &p, "--out", &p, "--name", name, "--spiffe-id", id];
        if expired {
            args.push("--expired");
        }
        meshward(&args);
    }

    /// A second, unrelated CA in `sub`, with a certificate `name` for `id`.
    pub fn other_ca(&self, sub: &str, name: &str, id: &str) -> PathBuf {
        let d = self.dir.path().join(sub);
        let p = d.to_str().expect("utf8").to_owned();
        meshward(&["certs", "ca", "--out", &p, "--trust-domain", "rogue.test"]);
        meshward(&["certs", "issue", "--ca", &p, "--out", &p, "--name", name, "--spiffe-id", id]);
        d
    }

    /// A server-side sidecar with the `server` certificate: inbound on a free
    /// port forwarding to `app` in `mode`, plus `extra` YAML. Waits until ready.
    pub fn inbound_sidecar(&self, app: SocketAddr, mode: &str, extra: &str) -> (Proxy, SocketAddr) {
        let inbound = free_addr();
        let yaml = format!(
            "{}inbound: {{listen: '{inbound}', app: '{app}', mode: {mode}}}\n{extra}",
            self.identity_yaml("server")
        );
        (Proxy::start(&yaml), inbound)
    }

    /// A client-side sidecar with the `client` certificate: one outbound
    /// listener on a free port to `target`, expecting `server_identity`.
    pub fn outbound_sidecar(&self, target: SocketAddr, server_identity: &str, extra: &str) -> (Proxy, SocketAddr) {
        let outbound = free_addr();
        let yaml = format!(
            "{}outbound: {{listeners: [{{name: up, listen: '{outbound}', target: '{target}', server_identity: '{server_identity}'}}]}}\n{extra}",
            self.identity_yaml("client")
        );
        (Proxy::start(&yaml), outbound)
    }

    /// YAML `identity:` section using NAME.crt/NAME.key and ca.crt.
    pub fn identity_yaml(&self, name: &str) -> String {
        format!(
            "identity: {{cert: '{}', key: '{}', trust_bundle: '{}', reload_interval: 200ms}}\n",
            self.file(&format!("{name}.crt")),
            self.file(&format!("{name}.key")),
            self.file("ca.crt")
        )
    }
}

/// A running `meshward run` process, killed by PID when dropped.
pub struct Proxy {
    pub child: Child,
    pub admin: SocketAddr,
    pub log: PathBuf,
    pub config: String,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// Starts `meshward run` with `yaml` (an `admin:` section is added) and waits until ready.
    pub fn start(yaml: &str) -> Self {
        let p = Self::spawn(yaml, &[]);
        p.wait_ready();
        p
    }

    /// Starts without waiting; `env` adds environment variables.
    pub fn spawn(yaml: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let admin = free_addr();
        let config = format!("{yaml}admin: {{listen: '{admin}'}}\nlog: {{format: json, level: info}}\n");
        let cfg_path = dir.path().join("meshward.yaml");
        std::fs::write(&cfg_path, &config).expect("write config");
        let log = dir.path().join("meshward.log");
        let child = Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(&cfg_path)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn meshward");
        Self { child, admin, log, config, _dir: dir }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until `/ready` answers 200.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if admin_get(self.admin, "/ready").is_some_and(|(s, _)| s == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("meshward did not become ready\nconfig:\n{}\nlog:\n{}", self.config, self.logs());
    }

    pub fn metrics(&self) -> String {
        admin_get(self.admin, "/metrics").map(|(_, b)| b).unwrap_or_default()
    }

    /// Sends SIGTERM (by PID).
    pub fn sigterm(&self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sum of a metric's samples whose line contains every `needle`.
pub fn metric_sum(text: &str, name: &str, needles: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Blocking GET on the admin server: (status, body).
pub fn admin_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.get(9..12)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// What the echo app saw of one request.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Echo {
    pub method: String,
    pub path: String,
    pub version: String,
    pub headers: BTreeMap<String, Vec<String>>,
    pub body_len: u64,
    pub body_sha256: String,
}

impl Echo {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.first()).map(String::as_str)
    }
}

/// An in-process app that answers every request with an [`Echo`] as JSON
/// (after reading the whole body), plus trailers `x-app-trailer: done` when
/// the request asks with `x-want-trailers: 1`. Counts requests. Serves
/// HTTP/1.1 and HTTP/2 (prior knowledge).
pub struct EchoApp {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EchoApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EchoApp {
    pub async fn start() -> Self {
        Self::spawn(Duration::ZERO, false).await
    }

    /// An app that speaks only HTTP/1.1, like most model servers.
    pub async fn start_http1_only() -> Self {
        Self::spawn(Duration::ZERO, true).await
    }

    /// Like `start`, but each response waits `delay` first (for in-flight tests).
    pub async fn start_with_delay(delay: Duration) -> Self {
        Self::spawn(delay, false).await
    }

    async fn spawn(delay: Duration, http1_only: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind app");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicU64::new(0));
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let counter = counter.clone();
                        async move { echo(req, counter, delay).await }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let builder = if http1_only { builder.http1_only() } else { builder };
                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Self { addr, requests, task }
    }

    pub fn count(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

type EchoBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

async fn echo(
    req: Request<Incoming>,
    counter: Arc<AtomicU64>,
    delay: Duration,
) -> Result<Response<EchoBody>, std::convert::Infallible> {
    counter.fetch_add(1, Ordering::SeqCst);
    let (parts, mut body) = req.into_parts();
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    hasher.update(d);
                    len += d.len() as u64;
                }
            }
            Err(_) => break,
        }
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in &parts.headers {
        headers.entry(k.as_str().to_owned()).or_default().push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let json = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": len,
        "body_sha256": format!("{:x}", hasher.finalize()),
    });
    let want_trailers = parts.headers.get("x-want-trailers").is_some();
    let data = Bytes::from(json.to_string());
    let body: EchoBody = if want_trailers {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-app-trailer", http::HeaderValue::from_static("done"));
        let frames = vec![Ok(hyper::body::Frame::data(data)), Ok(hyper::body::Frame::trailers(trailers))];
        http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed()
    } else {
        Full::new(data).boxed()
    };
    let mut resp = Response::new(body);
    resp.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// A plaintext HTTP client (HTTP/1.1, or HTTP/2 prior knowledge).
pub fn client(
    h2: bool,
) -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    let mut b = hyper_util::client::legacy::Client::builder(TokioExecutor::new());
    if h2 {
        b.http2_only(true);
    }
    b.build_http()
}

/// GET `url` with extra headers; returns status and the parsed echo (if 200).
pub async fn get_echo(h2: bool, url: &str, headers: &[(&str, &str)]) -> (u16, Option<Echo>) {
    let mut req = Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client(h2).request(req.body(Full::new(Bytes::new())).expect("request")).await.expect("send");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&body).ok())
}

/// Writes raw bytes to `addr` and reads until close or `wait`; returns the text read.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A mesh: an app, a server-side sidecar (inbound, strict) and a client-side
/// sidecar (outbound to it, expecting the server identity).
pub struct Mesh {
    pub pki: Pki,
    pub app: EchoApp,
    pub server: Proxy,
    pub client: Proxy,
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
}

impl Mesh {
    pub async fn start() -> Self {
        Self::start_with(EchoApp::start().await, "").await
    }

    /// `server_extra` is appended to the server sidecar's YAML.
    pub async fn start_with(app: EchoApp, server_extra: &str) -> Self {
        let pki = Pki::new();
        let (server, inbound) = pki.inbound_sidecar(app.addr, "strict", server_extra);
        let (client, outbound) = pki.outbound_sidecar(inbound, SERVER_ID, "");
        Self { pki, app, server, client, inbound, outbound }
    }
}

/// A rustls client config presenting NAME.crt/NAME.key from `dir` and trusting `ca`.
pub fn mtls_client_config(cert: &Path, key: &Path, ca: &Path, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut std::io::BufReader::new(std::fs::File::open(cert).expect("cert")))
        .collect::<Result<_, _>>()
        .expect("certs");
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(std::fs::File::open(key).expect("key")))
        .expect("key")
        .expect("a key");
    let verifier = chain_only_verifier(ca);
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(certs, key)
        .expect("client auth");
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(cfg)
}

/// Like [`mtls_client_config`] but without a client certificate.
pub fn tls_client_config_without_cert(ca: &Path) -> Arc<rustls::ClientConfig> {
    let verifier = chain_only_verifier(ca);
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// Trusts `ca` (a PEM file) and checks chains, not DNS names.
fn chain_only_verifier(ca: &Path) -> Arc<ChainOnly> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut std::io::BufReader::new(std::fs::File::open(ca).expect("ca"))) {
        roots.add(c.expect("ca cert")).expect("add root");
    }
    // Tests reach the inbound by IP; SPIFFE certificates carry no DNS name.
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .expect("verifier");
    Arc::new(ChainOnly(verifier))
}

/// Verifies the chain but maps "name mismatch" to success (SPIFFE certs have no DNS SAN).
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext { .. })) => {
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Sends one HTTP/1.1 GET over mTLS directly to an inbound listener.
/// Ok(status) on an answer, Err(text) when the handshake or exchange failed.
pub async fn mtls_get(inbound: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(inbound).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::IpAddress(inbound.ip().into());
    let mut tls = tokio_rustls::TlsConnector::from(cfg).connect(name, tcp).await.map_err(|e| e.to_string())?;
    tls.write_all(b"GET /direct HTTP/1.1\r\nhost: model\r\nconnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out))
        .await
        .map_err(|_| "timeout".to_owned())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out);
    text.get(9..12).and_then(|s| s.parse().ok()).ok_or_else(|| format!("no HTTP answer: {text:?}"))
}

/// Ends a network-namespace test: kills every process it started (by PID),
/// deletes its namespaces and, when the test failed, prints the commands it
/// ran and each process's log.
pub fn teardown_netns_pods(
    children: &mut [(String, Child)],
    namespaces: &[&str],
    transcript: &str,
    log_path: impl Fn(&str) -> PathBuf,
) {
    for (_, child) in children.iter_mut() {
        let _ = child.kill(); // SIGKILL by PID
        let _ = child.wait();
    }
    for ns in namespaces {
        let _ = Command::new("ip").args(["netns", "del", ns]).status();
    }
    if std::thread::panicking() {
        eprintln!("---- commands ----\n{transcript}");
        for (name, _) in children.iter() {
            let log = std::fs::read_to_string(log_path(name)).unwrap_or_default();
            eprintln!("---- {name}.log ----\n{log}");
        }
    }
}
