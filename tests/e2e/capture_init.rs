//! `meshward init` for real: the init container's arguments and the proxy's
//! environment are taken from a pod injected by `meshward inject`, and run
//! in two network namespaces this test creates (a client pod and a server
//! pod joined by a veth pair). The rules `meshward init` writes must capture
//! the client's outbound and the server's inbound TCP into the running
//! sidecars (mTLS between them, the app sees the client's SPIFFE ID), leave
//! the proxy's own uid alone, skip the admin port, and survive a re-run
//! without duplicates. IPv4 and IPv6. Needs root, `ip`, `iptables`,
//! `ip6tables`, `setpriv`, `curl`, `timeout` and `python3`; skipped with the
//! reason printed otherwise. Namespaces are deleted and processes killed by
//! PID at the end, also when the test fails.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::inject::{documents, inject, proxy_of, typed_pod_spec};
use crate::util::{metric_sum, teardown_netns_pods, Pki, BIN, CLIENT_ID, SERVER_ID};

const AS_PROXY: [&str; 4] = ["setpriv", "--reuid=1337", "--regid=1337", "--clear-groups"];

/// Answers GET with the x-meshward-peer-id header it received (or "none").
const APP: &str = r#"
import http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = (self.headers.get("x-meshward-peer-id") or "none").encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args): pass
class S(http.server.ThreadingHTTPServer):
    address_family = __import__("socket").AF_INET6
    def server_bind(self):
        self.socket.setsockopt(__import__("socket").IPPROTO_IPV6, __import__("socket").IPV6_V6ONLY, 0)
        super().server_bind()
S(("::", 8080), H).serve_forever()
"#;

struct Net {
    v: &'static str,
    /// Pod annotations for `meshward inject` (e.g. IPv4 only).
    annotations: &'static str,
    a: &'static str,
    b: &'static str,
    prefix: u8,
    url_host: &'static str,
}

const V4: Net = Net { v: "4", annotations: "{}", a: "198.18.1.1", b: "198.18.1.2", prefix: 24, url_host: "198.18.1.2" };
const V6: Net =
    Net { v: "6", annotations: "{}", a: "2001:db8:1::1", b: "2001:db8:1::2", prefix: 64, url_host: "[2001:db8:1::2]" };

/// `meshward.dev/ipv6: "false"`: IPv4 listeners (0.0.0.0) and iptables rules only.
const V4_ONLY: Net = Net { v: "4o", annotations: "{meshward.dev/ipv6: 'false'}", ..V4 };

#[test]
fn meshward_init_captures_ipv4_only_pod() {
    scenario(&V4_ONLY);
}

#[test]
fn meshward_init_captures_ipv4() {
    scenario(&V4);
}

#[test]
fn meshward_init_captures_ipv6() {
    scenario(&V6);
}

fn skip_reason() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if uid.as_deref().ok() != Some("0") {
        return Some(format!("needs root (id -u = {uid:?})"));
    }
    for tool in ["ip", "iptables-restore", "ip6tables-restore", "setpriv", "curl", "python3", "timeout"] {
        let arg = if tool == "ip" { "-V" } else { "--version" };
        if !Command::new(tool).arg(arg).output().is_ok_and(|o| o.status.success()) {
            return Some(format!("`{tool}` is not available"));
        }
    }
    if !std::path::Path::new("/proc/net/if_inet6").exists() {
        return Some("the kernel has IPv6 disabled".into());
    }
    None
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Two namespaces and the processes in them; Drop deletes and kills (by PID).
struct Pods {
    a: String,
    b: String,
    dir: tempfile::TempDir,
    children: Vec<(String, Child)>,
    transcript: String,
}

impl Pods {
    fn new(net: &Net) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let pid = std::process::id();
        let mut p = Self {
            a: format!("mwi-{pid}-{}a", net.v),
            b: format!("mwi-{pid}-{}b", net.v),
            dir,
            children: Vec::new(),
            transcript: String::new(),
        };
        let (a, b) = (p.a.clone(), p.b.clone());
        p.must(&["ip", "netns", "add", &a]);
        p.must(&["ip", "netns", "add", &b]);
        p.must(&["ip", "link", "add", "eth0", "netns", &a, "type", "veth", "peer", "name", "eth0", "netns", &b]);
        for (ns, addr) in [(&a, net.a), (&b, net.b)] {
            let cidr = format!("{addr}/{}", net.prefix);
            let mut add = vec!["ip", "-n", ns, "addr", "add", &cidr, "dev", "eth0"];
            if net.v == "6" {
                add.push("nodad");
            }
            p.must(&add);
            p.must(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
            p.must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        p
    }

    fn run(&mut self, argv: &[&str]) -> Out {
        let out =
            Command::new("timeout").args(["-k", "2", "20"]).args(argv).stdin(Stdio::null()).output().expect("spawn");
        let o = Out {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        let short: String = o.stdout.chars().take(3000).collect();
        let _ = writeln!(
            self.transcript,
            "$ {}\n  status: {}\n  stdout: {short}\n  stderr: {}",
            argv.join(" "),
            out.status,
            o.stderr
        );
        o
    }

    fn must(&mut self, argv: &[&str]) -> Out {
        let o = self.run(argv);
        assert_eq!(o.code, Some(0), "command failed: {}\n{}", argv.join(" "), o.stderr);
        o
    }

    fn exec(&mut self, ns: &str, argv: &[&str]) -> Out {
        let full: Vec<&str> = ["ip", "netns", "exec", ns].iter().chain(argv).copied().collect();
        self.run(&full)
    }

    fn spawn(&mut self, name: &str, ns: &str, argv: &[String], env: &[(String, String)]) {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn");
        let _ = writeln!(self.transcript, "$ ip netns exec {ns} {} &  (pid {})", argv.join(" "), child.id());
        self.children.push((name.to_owned(), child));
    }

    fn curl(&mut self, ns: &str, as_proxy: bool, url: &str) -> Out {
        let mut argv: Vec<&str> = if as_proxy { AS_PROXY.to_vec() } else { Vec::new() };
        argv.extend(["curl", "-sS", "-g", "--max-time", "5", url]);
        self.exec(ns, &argv)
    }

    fn wait_for(&mut self, what: &str, mut f: impl FnMut(&mut Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !f(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().expect("utf8").to_owned()
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        let dir = self.dir.path().to_owned();
        let transcript = self.transcript.to_string();
        teardown_netns_pods(&mut self.children, &[&self.a, &self.b], &transcript, |name| {
            dir.join(format!("{name}.log"))
        });
    }
}

/// The injected pod's init-container args and proxy env (labels file mapped to `labels_dir`).
fn injected_pod(labels_dir: &str, annotations: &str) -> (Vec<String>, Vec<(String, String)>) {
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: model, namespace: ml, labels: {{app: model}}, annotations: {annotations}}}\nspec: {{serviceAccountName: model, containers: [{{name: model, image: model, ports: [{{containerPort: 8080}}]}}]}}\n"
    );
    let (out, _) = inject(&["-"], &pod);
    let doc = documents(&out).pop().expect("pod");
    let spec = typed_pod_spec(&doc).expect("spec");
    let init = spec.init_containers.iter().flatten().find(|c| c.name == "meshward-init").expect("init");
    let args = init.args.clone().expect("init args");
    let proxy = proxy_of(&spec).expect("proxy");
    let env = proxy
        .env
        .iter()
        .flatten()
        .map(|e| {
            let v = e.value.clone().unwrap_or_else(|| "ml".into()); // downward API metadata.namespace
            let v = v.replace("/var/run/meshward/podinfo", labels_dir);
            (e.name.clone(), v)
        })
        .collect::<Vec<_>>();
    (args, env)
}

fn with_identity(env: &[(String, String)], pki: &Pki, name: &str) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| {
            let v = v
                .replace("/var/run/meshward/identity/tls.crt", &pki.file(&format!("{name}.crt")))
                .replace("/var/run/meshward/identity/tls.key", &pki.file(&format!("{name}.key")))
                .replace("/var/run/meshward/identity/ca.crt", &pki.file("ca.crt"));
            (k.clone(), v)
        })
        .collect()
}

fn scenario(net: &Net) {
    if let Some(why) = skip_reason() {
        eprintln!("skipping meshward init IPv{} capture test: {why}", net.v);
        return;
    }
    let pki = Pki::new();
    std::fs::set_permissions(pki.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod pki");
    for e in std::fs::read_dir(pki.path()).expect("pki dir") {
        std::fs::set_permissions(e.expect("entry").path(), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let mut pods = Pods::new(net);
    let (a, b) = (pods.a.clone(), pods.b.clone());
    let bin = PathBuf::from(pods.path("meshward"));
    std::fs::copy(BIN, &bin).expect("copy meshward");
    let bin = bin.to_str().expect("utf8").to_owned();
    std::fs::write(pods.path("labels"), "app=\"model\"\n").expect("labels");
    std::fs::set_permissions(pods.path("labels"), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (init_args, env) = injected_pod(pods.dir.path().to_str().expect("utf8"), net.annotations);

    // A non-root process has no CAP_NET_ADMIN: a clear error, nothing written.
    let argv: Vec<&str> =
        AS_PROXY.iter().copied().chain([bin.as_str()]).chain(init_args.iter().map(String::as_str)).collect();
    let denied = pods.exec(&b, &argv);
    assert_ne!(denied.code, Some(0));
    assert!(denied.stderr.contains("CAP_NET_ADMIN is missing"), "{}", denied.stderr);

    // Without the iptables binaries: an error that names the missing one.
    let argv: Vec<&str> =
        ["env", "PATH=/nonexistent", bin.as_str()].into_iter().chain(init_args.iter().map(String::as_str)).collect();
    let missing = pods.exec(&b, &argv);
    assert_ne!(missing.code, Some(0));
    assert!(missing.stderr.contains("`iptables-save` was not found"), "{}", missing.stderr);

    // The capture init container, as injected, in both pods (twice in B: re-running is safe).
    let init: Vec<&str> = [bin.as_str()].into_iter().chain(init_args.iter().map(String::as_str)).collect();
    let o = pods.exec(&a, &init);
    assert_eq!(o.code, Some(0), "meshward init in A: {}", o.stderr);
    for _ in 0..2 {
        let o = pods.exec(&b, &init);
        assert_eq!(o.code, Some(0), "meshward init in B: {}", o.stderr);
    }
    if net.v == "4o" {
        assert!(init_args.contains(&"--ipv6=false".to_owned()), "{init_args:?}");
        let saved = pods.exec(&b, &["ip6tables-save", "-t", "nat"]).stdout;
        assert!(!saved.contains("MESHWARD"), "IPv4-only pod got ip6tables rules: {saved}");
    }
    let tools: &[&str] = if net.v == "4o" { &["iptables-save"] } else { &["iptables-save", "ip6tables-save"] };
    for tool in tools {
        let saved = pods.exec(&b, &[tool, "-t", "nat"]).stdout;
        assert_eq!(saved.matches("-A PREROUTING -p tcp -j MESHWARD_INBOUND").count(), 1, "{tool}: {saved}");
        assert_eq!(saved.matches("-A MESHWARD_INBOUND -p tcp -j MESHWARD_IN_REDIRECT").count(), 1, "{tool}: {saved}");
    }
    // --dry-run prints the rules that were applied.
    let dry: Vec<&str> = init.iter().copied().chain(["--dry-run"]).collect();
    let dry = pods.exec(&b, &dry).stdout;
    assert!(dry.contains("-A MESHWARD_OUTPUT -m owner --uid-owner 1337 -j RETURN") && dry.contains("*nat"), "{dry}");

    // The app in B, the sidecars (uid 1337) with the injected environment.
    let python = pods.must(&["python3", "-c", "import sys; print(sys.executable)"]).stdout.trim().to_owned();
    pods.spawn("app", &b, &[python, "-c".into(), APP.into()], &[]);
    let proxy: Vec<String> = AS_PROXY.iter().map(|s| s.to_string()).chain([bin.clone(), "run".into()]).collect();
    pods.spawn("meshward-b", &b, &proxy, &with_identity(&env, &pki, "server"));
    pods.spawn("meshward-a", &a, &proxy, &with_identity(&env, &pki, "client"));
    for ns in [a.clone(), b.clone()] {
        pods.wait_for(&format!("meshward in {ns}"), |p| {
            p.exec(&ns, &["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:15000/ready"]).stdout
                == "200"
        });
    }
    pods.wait_for("the app", |p| p.exec(&b, &["curl", "-s", "http://127.0.0.1:8080/"]).stdout == "none");

    let url = format!("http://{}:8080/hello", net.url_host);
    // Captured in A (outbound), mTLS, captured in B (inbound): the app sees A's identity.
    let hello = pods.curl(&a, false, &url);
    assert_eq!((hello.code, hello.stdout.as_str()), (Some(0), CLIENT_ID), "{}", hello.stderr);
    // The proxy's own uid is not captured in A: plaintext meets B's strict inbound and is refused.
    let bypass = pods.curl(&a, true, &url);
    assert_ne!(bypass.code, Some(0), "plaintext from uid 1337 was answered: {}", bypass.stdout);
    // The admin port is skipped by B's inbound capture: reached directly.
    let admin = pods.curl(&a, true, &format!("http://{}:15000/identity", net.url_host));
    assert!(admin.stdout.contains(SERVER_ID), "admin port was captured: {} {}", admin.stdout, admin.stderr);

    // A: exactly one captured outbound connection (meshward's own upstream connection was not re-captured).
    let outbound = |m: &str| metric_sum(m, "meshward_connections_total", &["direction=\"outbound\""]);
    let metrics = pods.exec(&a, &["curl", "-s", "http://127.0.0.1:15000/metrics"]).stdout;
    assert_eq!(outbound(&metrics), 1.0, "{metrics}");
    let metrics = pods.exec(&b, &["curl", "-s", "http://127.0.0.1:15000/metrics"]).stdout;
    let refused = metric_sum(&metrics, "meshward_connections_refused_total", &["plaintext_on_strict_port"]);
    assert_eq!(refused, 1.0, "{metrics}");
}
