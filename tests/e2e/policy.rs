//! Authorization policies enforced by the inbound sidecar: allowed, denied
//! with the deciding policy named, dry-run counted but not enforced, hot
//! reload applied to an open connection, a broken reload keeping the last
//! good set, an invalid set at start refused with exit 64.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::*;

fn policy(name: &str, body: &str) -> String {
    format!("---\napiVersion: meshward.dev/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}}}\nspec:\n{body}")
}

fn infer_only() -> String {
    policy(
        "infer-from-caller",
        &format!(
            "  rules:\n  - from: [{{source: {{principals: ['{CLIENT_ID}']}}}}]\n    to: [{{operation: {{methods: [POST], paths: ['/v2/models/{{model}}/infer']}}}}]\n"
        ),
    ) + &policy("deny-debug", "  action: DENY\n  dryRun: true\n  rules:\n  - when: [{key: 'request.headers[x-debug]', values: ['*']}]\n")
}

/// Atomic write, like a ConfigMap update.
fn write(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, dir.join(name)).expect("rename");
}

async fn call(
    outbound: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, Option<String>) {
    use http_body_util::BodyExt;
    let mut req = http::Request::builder().method(method).uri(format!("http://{outbound}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client(false)
        .request(req.body(http_body_util::Full::new(bytes::Bytes::new())).expect("req"))
        .await
        .expect("send");
    let status = resp.status().as_u16();
    let which = resp.headers().get("x-meshward-policy").map(|v| v.to_str().unwrap_or("").to_owned());
    let body = String::from_utf8_lossy(&resp.into_body().collect().await.expect("body").to_bytes()).into_owned();
    (status, body, which)
}

fn wait_metric(p: &Proxy, name: &str, needles: &[&str], at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric_sum(&p.metrics(), name, needles) < at_least {
        assert!(Instant::now() < deadline, "{name}{needles:?} never reached {at_least}\n{}", p.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_are_enforced_reloaded_and_dry_run_is_only_counted() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "authz.yaml", &infer_only());
    let app = EchoApp::start().await;
    let extra = format!("policy: {{paths: ['{}'], reload_interval: 100ms}}\n", dir.path().display());
    let (server, inbound) = pki.inbound_sidecar(app.addr, "strict", &extra);
    let (_client, outbound) = pki.outbound_sidecar(inbound, SERVER_ID, "");

    let (s, _, _) = call(outbound, "POST", "/v2/models/iris/infer", &[]).await;
    assert_eq!(s, 200, "{}", server.logs());
    let (s, body, which) = call(outbound, "GET", "/v2/models/iris", &[]).await;
    assert_eq!((s, body.trim()), (403, "denied: no ALLOW policy matched"));
    assert_eq!(which.as_deref(), Some("no ALLOW policy matched"));
    assert_eq!(app.count(), 1, "the denied request never reached the app");

    // Dry-run: counted as a deny, not enforced.
    let (s, _, _) = call(outbound, "POST", "/v2/models/iris/infer", &[("x-debug", "1")]).await;
    assert_eq!(s, 200);
    let m = server.metrics();
    assert_eq!(
        metric_sum(&m, "meshward_policy_decisions_total", &["decision=\"deny\"", "deny-debug", "dry_run=\"true\""]),
        1.0,
        "{m}"
    );
    assert!(
        metric_sum(
            &m,
            "meshward_policy_decisions_total",
            &["decision=\"allow\"", "infer-from-caller", "rule=\"1\"", "dry_run=\"false\""]
        ) >= 2.0,
        "{m}"
    );

    // Hot reload: allow metadata reads too; the sidecars' connection stays open.
    let conns = metric_sum(&m, "meshward_connections_total", &["inbound"]);
    write(
        dir.path(),
        "authz.yaml",
        &(infer_only()
            + &policy("metadata", "  rules:\n  - to: [{operation: {methods: [GET], paths: ['/v2/models/*']}}]\n")),
    );
    wait_metric(&server, "meshward_policy_reloads_total", &["success"], 1.0);
    let (s, _, _) = call(outbound, "GET", "/v2/models/iris", &[]).await;
    assert_eq!(s, 200, "reloaded policy applies\n{}", server.logs());
    assert_eq!(metric_sum(&server.metrics(), "meshward_connections_total", &["inbound"]), conns, "same connection");
    let (status, json) = admin_get(server.admin, "/policies").expect("admin");
    assert_eq!(status, 200);
    assert!(json.contains("\"name\":\"metadata\""), "{json}");

    // A broken change is refused; the last good set stays.
    write(
        dir.path(),
        "authz.yaml",
        "apiVersion: meshward.dev/v1\nkind: AuthorizationPolicy\nmetadata: {name: x}\nspec: {action: PERMIT}\n",
    );
    wait_metric(&server, "meshward_policy_reloads_total", &["failure"], 1.0);
    let (s, _, _) = call(outbound, "GET", "/v2/models/iris", &[]).await;
    assert_eq!(s, 200, "last good set still enforced");
    let (s, _, _) = call(outbound, "DELETE", "/v2/models/iris", &[]).await;
    assert_eq!(s, 403);
    assert!(server.logs().contains("authz.yaml:4:16"), "the log has file:line:column\n{}", server.logs());
}

#[test]
fn an_invalid_policy_at_start_exits_64_before_binding() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "bad.yaml", &policy("bad", "  action: DENIED\n  rules: [{}]\n"));
    let inbound = free_addr();
    let cfg = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(
        cfg.path(),
        format!(
            "{}inbound: {{listen: '{inbound}', app: '127.0.0.1:9'}}\npolicy: {{paths: ['{}']}}\n",
            pki.identity_yaml("server"),
            dir.path().display()
        ),
    )
    .expect("write");
    let out = std::process::Command::new(BIN).args(["run", "--config"]).arg(cfg.path()).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("bad.yaml:6:11: policy 'bad': unknown action \"DENIED\""), "{err}");
    std::net::TcpListener::bind(inbound).expect("nothing was bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_clients_flood_is_limited_while_another_is_served() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "limits.yaml",
        "apiVersion: meshward.dev/v1\nkind: RateLimitPolicy\nmetadata: {name: per-client}\nspec:\n  rules:\n  - to: [{operation: {paths: ['/v2/models/{m}/infer']}}]\n    key: {source: header, name: x-client}\n    limit: {requests: 5, per: 1m, burst: 5}\n    overrides: [{value: premium, requests: 100, per: 1m}]\n---\napiVersion: meshward.dev/v1\nkind: RateLimitPolicy\nmetadata: {name: shadow-global}\nspec:\n  dryRun: true\n  rules:\n  - key: {source: ip}\n    limit: {requests: 3, per: 1m}\n",
    );
    let app = EchoApp::start().await;
    let extra = format!("policy: {{paths: ['{}']}}\n", dir.path().display());
    let (server, inbound) = pki.inbound_sidecar(app.addr, "permissive", &extra);
    let url = |c: &str| (format!("http://{inbound}/v2/models/iris/infer"), c.to_owned());
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let (u, c) = url("flooder");
        statuses.push(get_echo(false, &u, &[("x-client", &c)]).await.0);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429], "{}", server.logs());
    // Another client, and the premium client, are still served.
    let (u, _) = url("");
    assert_eq!(get_echo(false, &u, &[("x-client", "quiet")]).await.0, 200);
    for _ in 0..10 {
        assert_eq!(get_echo(false, &u, &[("x-client", "premium")]).await.0, 200);
    }
    // The 429 says why and when to come back.
    let answer = raw_exchange(
        inbound,
        b"GET /v2/models/iris/infer HTTP/1.1\r\nHost: m\r\nx-client: flooder\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await
    .to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 429"), "{answer}");
    for h in [
        "retry-after: ",
        "ratelimit-limit: 5",
        "ratelimit-remaining: 0",
        "ratelimit-policy: 5;w=60",
        "rate limited: policy 'per-client' rule 1",
    ] {
        assert!(answer.contains(h), "{h} missing in {answer}");
    }
    assert_eq!(app.count(), 16, "limited requests never reached the app");
    // The dry-run limit (3 per minute per IP) was exceeded but only counted.
    let m = server.metrics();
    assert!(
        metric_sum(&m, "meshward_policy_decisions_total", &["rate_limited", "shadow-global", "dry_run=\"true\""])
            >= 10.0,
        "{m}"
    );
    assert_eq!(
        metric_sum(&m, "meshward_policy_decisions_total", &["rate_limited", "per-client", "dry_run=\"false\""]),
        4.0,
        "{m}"
    );
}
