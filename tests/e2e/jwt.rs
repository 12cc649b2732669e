//! JWT authentication through real sidecars, with keys served by a local JWKS
//! server: valid tokens pass with claims copied to headers and the token
//! stripped; missing, invalid, expired, wrong-audience, `alg: none` and
//! HS-vs-RS-confused tokens get 401 with the reason; a rotated key is picked
//! up by one rate-limited refetch; JWT principals and claims drive
//! authorization; an unreachable JWKS fails closed (503, not ready).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use meshward_policies::testkeys::{self, SigningKey};

use crate::util::*;

const ISS: &str = "https://auth.example.com";

/// A JWKS endpoint on loopback whose document the test can change; counts fetches.
struct JwksServer {
    addr: SocketAddr,
    doc: Arc<Mutex<String>>,
    fetches: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JwksServer {
    async fn start(doc: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (doc, fetches) = (Arc::new(Mutex::new(doc)), Arc::new(AtomicU64::new(0)));
        let (d, f) = (doc.clone(), fetches.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (d, f) = (d.clone(), f.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        f.fetch_add(1, Ordering::SeqCst);
                        let body = d.lock().expect("doc").clone();
                        async move { Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(body)))) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
                });
            }
        });
        Self { addr, doc, fetches, task }
    }

    fn set(&self, doc: String) {
        *self.doc.lock().expect("doc") = doc;
    }

    fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

fn claims(extra: serde_json::Value) -> serde_json::Value {
    let mut c = serde_json::json!({"iss": ISS, "sub": "alice", "aud": "inference", "exp": now() + 600, "tier": "gold"});
    if let (Some(c), serde_json::Value::Object(e)) = (c.as_object_mut(), extra) {
        c.extend(e);
    }
    c
}

fn policies(jwks_uri: &str) -> String {
    format!(
        "apiVersion: meshward.dev/v1\nkind: RequestAuthentication\nmetadata: {{name: gateway-jwt}}\nspec:\n  jwtRules:\n  - issuer: {ISS}\n    audiences: [inference]\n    jwksUri: {jwks_uri}\n    jwksMinRefetchInterval: 2s\n    outputClaimToHeaders: [{{header: x-tier, claim: tier}}]\n---\napiVersion: meshward.dev/v1\nkind: AuthorizationPolicy\nmetadata: {{name: infer-needs-gold}}\nspec:\n  rules:\n  - from: [{{source: {{requestPrincipals: ['{ISS}/*']}}}}]\n    to: [{{operation: {{paths: ['/v2/models/{{model}}/infer']}}}}]\n    when: [{{key: 'request.auth.claims[tier]', values: [gold]}}]\n  - to: [{{operation: {{paths: ['/v2/health/*']}}}}]\n"
    )
}

async fn call(outbound: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String, http::HeaderMap) {
    let mut req = http::Request::post(format!("http://{outbound}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client(false).request(req.body(Full::new(Bytes::new())).expect("req")).await.expect("send");
    let (status, head) = (resp.status().as_u16(), resp.headers().clone());
    let body = String::from_utf8_lossy(&resp.into_body().collect().await.expect("body").to_bytes()).into_owned();
    (status, body, head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_tokens_are_verified_rotated_and_drive_authorization() {
    let rsa = SigningKey::rsa("k1");
    let jwks = JwksServer::start(testkeys::jwks(&[&rsa])).await;
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("p.yaml"), policies(&format!("http://{}/jwks", jwks.addr))).expect("write");
    let app = EchoApp::start().await;
    let extra = format!("policy: {{paths: ['{}']}}\n", dir.path().display());
    let (server, inbound) = pki.inbound_sidecar(app.addr, "strict", &extra);
    let (_client, outbound) = pki.outbound_sidecar(inbound, SERVER_ID, "");
    assert_eq!(jwks.fetches(), 1, "keys fetched once at start");
    let infer = "/v2/models/iris/infer";

    // A valid token: passes, claim copied, token and spoofed claim header gone.
    let good = format!("Bearer {}", rsa.sign(&claims(serde_json::json!({}))));
    let (s, body, _) = call(outbound, infer, &[("authorization", &good), ("x-tier", "platinum")]).await;
    assert_eq!(s, 200, "{body}\n{}", server.logs());
    let echo: Echo = serde_json::from_str(&body).expect("echo");
    assert_eq!(echo.header("x-tier"), Some("gold"));
    assert_eq!(echo.header("authorization"), None, "token stripped");

    // No token: authentication passes, authorization (requestPrincipals) denies.
    let (s, body, _) = call(outbound, infer, &[]).await;
    assert_eq!((s, body.trim()), (403, "denied: no ALLOW policy matched"));
    let (s, _, _) = call(outbound, "/v2/health/ready", &[]).await;
    assert_eq!(s, 200, "anonymous calls where policy allows them");
    // A valid token whose claim does not match the rule.
    let silver = format!("Bearer {}", rsa.sign(&claims(serde_json::json!({"tier": "silver"}))));
    assert_eq!(call(outbound, infer, &[("authorization", &silver)]).await.0, 403);

    // Refusals: 401 with the reason, the policy named, WWW-Authenticate set.
    let n = rsa.jwk()["n"].as_str().expect("n").to_owned();
    let bad: Vec<(String, &str)> = vec![
        (rsa.sign(&claims(serde_json::json!({"exp": now() - 3600}))), "jwt_expired"),
        (rsa.sign(&claims(serde_json::json!({"aud": "billing"}))), "jwt_wrong_audience"),
        (testkeys::unsigned(&claims(serde_json::json!({}))), "jwt_malformed"),
        (testkeys::hs256_with_secret("k1", n.as_bytes(), &claims(serde_json::json!({}))), "jwt_algorithm_not_allowed"),
        (SigningKey::rsa("k1").sign(&claims(serde_json::json!({}))), "jwt_bad_signature"),
        ("garbage".to_owned(), "jwt_malformed"),
    ];
    for (token, code) in &bad {
        let (s, body, head) = call(outbound, infer, &[("authorization", &format!("Bearer {token}"))]).await;
        assert_eq!(s, 401, "{code}: {body}");
        assert_eq!(body.trim(), format!("unauthenticated: policy 'gateway-jwt' rule 1: {code}"));
        let www = head.get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(www.contains("invalid_token"), "{www}");
    }
    let before = app.count();
    assert_eq!(before, 2, "refused requests never reached the app");

    // Key rotation: a token signed by a new key is accepted after one refetch
    // (once the refetch floor, 2s, has passed since the last fetch).
    let rotated = SigningKey::ec("k2");
    jwks.set(testkeys::jwks(&[&rsa, &rotated]));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let t2 = format!("Bearer {}", rotated.sign(&claims(serde_json::json!({}))));
    let (s, body, _) = call(outbound, infer, &[("authorization", &t2)]).await;
    assert_eq!(s, 200, "{body}\n{}", server.logs());
    assert_eq!(jwks.fetches(), 2, "one refetch for the unknown kid");
    // A kid nobody has: refused, and no refetch inside the floor (2s).
    let t3 = format!("Bearer {}", SigningKey::ec("k3").sign(&claims(serde_json::json!({}))));
    for _ in 0..5 {
        let (s, body, _) = call(outbound, infer, &[("authorization", &t3)]).await;
        assert_eq!((s, body.trim()), (401, "unauthenticated: policy 'gateway-jwt' rule 1: jwt_unknown_kid"));
    }
    assert_eq!(jwks.fetches(), 2, "refetches are rate-limited");

    let m = server.metrics();
    assert!(
        metric_sum(&m, "meshward_policy_decisions_total", &["jwt_valid", "gateway-jwt", "rule=\"1\""]) >= 3.0,
        "{m}"
    );
    assert_eq!(metric_sum(&m, "meshward_policy_decisions_total", &["jwt_expired", "gateway-jwt"]), 1.0, "{m}");
    assert_eq!(metric_sum(&m, "meshward_jwks_fetches_total", &["result=\"ok\"", "unknown_kid"]), 1.0, "{m}");
    let logs = server.logs();
    assert!(!logs.contains(&good[7..]), "tokens never appear in logs");
    // The access log carries the decision, the deciding policy and the JWT principal.
    assert!(
        logs.lines().any(|l| l.contains("meshward::access")
            && l.contains("\"decision\":\"allow\"")
            && l.contains("\"policy\":\"policy 'infer-needs-gold' rule 1\"")
            && l.contains(&format!("\"request_principal\":\"{ISS}/alice\""))),
        "{logs}"
    );
    assert!(
        logs.lines().any(|l| l.contains("meshward::access")
            && l.contains("\"decision\":\"jwt_expired\"")
            && l.contains("\"status\":401")),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_jwks_fails_closed() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing listens on this port.
    let dead = free_addr();
    std::fs::write(dir.path().join("p.yaml"), policies(&format!("http://{dead}/jwks"))).expect("write");
    let app = EchoApp::start().await;
    let inbound = free_addr();
    let yaml = format!(
        "{}inbound: {{listen: '{inbound}', app: '{}', mode: permissive}}\npolicy: {{paths: ['{}']}}\n",
        pki.identity_yaml("server"),
        app.addr,
        dir.path().display()
    );
    let server = Proxy::spawn(&yaml, &[]);
    // Listening, but not ready: its JWT keys never loaded.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (status, body) = loop {
        if let Some((s, b)) = admin_get(server.admin, "/ready") {
            break (s, b);
        }
        assert!(std::time::Instant::now() < deadline, "admin never answered\n{}", server.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("JWT keys"), "{body}");
    let rsa = SigningKey::rsa("k1");
    let token = format!("Bearer {}", rsa.sign(&claims(serde_json::json!({}))));
    let (s, body, head) = call(inbound, "/v2/models/iris/infer", &[("authorization", &token)]).await;
    assert_eq!(s, 503, "{body}");
    assert_eq!(body.trim(), "authentication unavailable: policy 'gateway-jwt' rule 1: JWT keys not loaded");
    assert!(head.get("retry-after").is_some());
    assert_eq!(app.count(), 0);
    assert!(metric_sum(&server.metrics(), "meshward_jwks_fetches_total", &["result=\"error\""]) >= 1.0);
}
