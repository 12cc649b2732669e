//! Transparent capture for real: two network namespaces ("pods") joined by a
//! veth pair, nat rules like an injected pod's, and the app and both
//! sidecars running inside them. Needs root, `ip`, `iptables`/`ip6tables`,
//! `setpriv`, `curl`, `timeout` and `python3`; skipped (reason printed) otherwise.
//!
//! Pod A (client): curl as root -> nat OUTPUT REDIRECT -> meshward A :15001
//! (transparent outbound, SO_ORIGINAL_DST) -> mTLS as uid 1337, which the
//! owner rule leaves alone. Pod B (server): nat PREROUTING REDIRECT ->
//! meshward B :15006 (transparent strict inbound, original port) -> app :8080.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{metric_sum, teardown_netns_pods, Pki, BIN, CLIENT_ID, IDENTITY_HEADER, SERVER_ID};

const SIDECAR: [&str; 4] = ["setpriv", "--reuid=1337", "--regid=1337", "--clear-groups"];
const WAIT: Duration = Duration::from_secs(15);

/// Answers every GET with JSON `{path, headers: [[name, value], ...]}` and
/// appends the path to the file named by argv[1].
const APP: &str = r#"
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        with open(sys.argv[1], "a") as f: f.write(self.path + "\n")
        body = json.dumps({"path": self.path, "headers": [[k.lower(), v] for k, v in self.headers.items()]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args): pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
"#;

struct Family {
    v: &'static str,
    iptables: &'static str,
    a: &'static str,
    b: &'static str,
    prefix: u8,
    loopback: &'static str,
    any: &'static str,
    url_b: &'static str,
}

const V4: Family = Family {
    v: "4",
    iptables: "iptables",
    a: "198.18.0.1",
    b: "198.18.0.2",
    prefix: 24,
    loopback: "127.0.0.0/8",
    any: "0.0.0.0",
    url_b: "198.18.0.2",
};

const V6: Family = Family {
    v: "6",
    iptables: "ip6tables",
    a: "2001:db8::1",
    b: "2001:db8::2",
    prefix: 64,
    loopback: "::1/128",
    any: "[::]",
    url_b: "[2001:db8::2]",
};

/// IPv4 traffic through dual-stack `[::]` listeners (one listener per port
/// serving both families, as a dual-stack pod needs).
const V4_VIA_DUAL_STACK: Family = Family { any: "[::]", v: "4d", ..V4 };

#[test]
fn transparent_capture_ipv4() {
    scenario(&V4);
}

#[test]
fn transparent_capture_ipv4_via_dual_stack_listeners() {
    scenario(&V4_VIA_DUAL_STACK);
}

#[test]
fn transparent_capture_ipv6() {
    scenario(&V6);
}

fn skip_reason(fam: &Family) -> Option<String> {
    let uid = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if uid.as_deref().ok() != Some("0") {
        return Some(format!("needs root (id -u = {uid:?})"));
    }
    for (tool, arg) in [("ip", "-V"), (fam.iptables, "--version"), ("setpriv", "--version"), ("curl", "--version")]
        .into_iter()
        .chain([("python3", "--version"), ("timeout", "--version")])
    {
        if !Command::new(tool).arg(arg).output().is_ok_and(|o| o.status.success()) {
            return Some(format!("`{tool}` is not available"));
        }
    }
    if fam.any == "[::]" && !Path::new("/proc/net/if_inet6").exists() {
        return Some("the kernel has IPv6 disabled".into());
    }
    None
}

/// Result of one bounded command.
struct Out {
    code: Option<i32>,
    stdout: String,
}

/// Two namespaces and everything started in them; Drop cleans up (also on panic).
struct Pods {
    a: String,
    b: String,
    dir: tempfile::TempDir,
    children: Vec<(String, Child)>,
    transcript: RefCell<String>,
}

impl Pods {
    fn new(fam: &Family) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let pid = std::process::id();
        let pods = Self {
            a: format!("mwt-{pid}-{}a", fam.v),
            b: format!("mwt-{pid}-{}b", fam.v),
            dir,
            children: Vec::new(),
            transcript: RefCell::new(String::new()),
        };
        let (a, b) = (pods.a.as_str(), pods.b.as_str());
        pods.must(&["ip", "netns", "add", a]);
        pods.must(&["ip", "netns", "add", b]);
        pods.must(&["ip", "link", "add", "eth0", "netns", a, "type", "veth", "peer", "name", "eth0", "netns", b]);
        for (ns, addr) in [(a, fam.a), (b, fam.b)] {
            let cidr = format!("{addr}/{}", fam.prefix);
            let mut add = vec!["ip", "-n", ns, "addr", "add", &cidr, "dev", "eth0"];
            if fam.v == "6" {
                add.push("nodad");
            }
            pods.must(&add);
            pods.must(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
            pods.must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        pods
    }

    /// Runs `argv` under `timeout`, records it in the transcript.
    fn run(&self, argv: &[&str]) -> Out {
        let out = Command::new("timeout")
            .args(["-k", "2", "15"])
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .expect("spawn timeout");
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let short: String = stdout.chars().take(3000).collect();
        let _ = writeln!(
            self.transcript.borrow_mut(),
            "$ {}\n  status: {}\n  stdout: {short}\n  stderr: {stderr}",
            argv.join(" "),
            out.status
        );
        Out { code: out.status.code(), stdout: stdout.into_owned() }
    }

    fn must(&self, argv: &[&str]) -> Out {
        let out = self.run(argv);
        assert_eq!(out.code, Some(0), "command failed: {}", argv.join(" "));
        out
    }

    /// `ip netns exec NS ARGV`.
    fn exec(&self, ns: &str, argv: &[&str]) -> Out {
        let full: Vec<&str> = ["ip", "netns", "exec", ns].iter().chain(argv).copied().collect();
        self.run(&full)
    }

    /// `IPTABLES -t nat -A RULE` in NS (RULE is split on spaces).
    fn nat(&self, ns: &str, iptables: &str, rule: &str) {
        let argv: Vec<&str> =
            ["ip", "netns", "exec", ns, iptables, "-t", "nat", "-A"].into_iter().chain(rule.split(' ')).collect();
        self.must(&argv);
    }

    /// Starts `ARGV` in NS in the background; output goes to NAME.log.
    fn spawn(&mut self, name: &str, ns: &str, argv: &[&str]) {
        let log = std::fs::File::create(self.log_path(name)).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn");
        let _ =
            writeln!(self.transcript.borrow_mut(), "$ ip netns exec {ns} {} &  (pid {})", argv.join(" "), child.id());
        self.children.push((name.to_owned(), child));
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    fn write(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        p.to_str().expect("utf8").to_owned()
    }

    /// Polls `f` until it holds; panics after WAIT.
    fn wait_for(&self, what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn http_code(&self, ns: &str, url: &str) -> String {
        self.exec(ns, &["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", url]).stdout
    }

    fn metrics(&self, ns: &str) -> String {
        self.exec(ns, &["curl", "-s", "--max-time", "5", "http://127.0.0.1:15000/metrics"]).stdout
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        let dir = self.dir.path().to_owned();
        let transcript = self.transcript.borrow().to_string();
        teardown_netns_pods(&mut self.children, &[&self.a, &self.b], &transcript, |name| {
            dir.join(format!("{name}.log"))
        });
    }
}

/// The values of `name` the app saw, from its JSON echo.
fn echoed(body: &str, name: &str) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not the app's echo ({e}): {body:?}"));
    let headers = v["headers"].as_array().cloned().unwrap_or_default();
    headers.iter().filter(|h| h[0] == name).filter_map(|h| h[1].as_str().map(str::to_owned)).collect()
}

fn scenario(fam: &Family) {
    if let Some(why) = skip_reason(fam) {
        eprintln!("skipping transparent IPv{} capture test: {why}", fam.v);
        return;
    }
    let pki = Pki::new();
    // The sidecars run as uid 1337: make the PKI readable (keys are written 0600).
    std::fs::set_permissions(pki.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod pki");
    for e in std::fs::read_dir(pki.path()).expect("pki dir") {
        let p = e.expect("entry").path();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let mut pods = Pods::new(fam);
    let (a, b) = (pods.a.clone(), pods.b.clone());
    // The test binary's target dir may sit under /root (0700); copy the proxy.
    let bin = pods.dir.path().join("meshward");
    std::fs::copy(BIN, &bin).expect("copy meshward");
    let bin = bin.to_str().expect("utf8").to_owned();
    let python = pods.must(&["python3", "-c", "import sys; print(sys.executable)"]).stdout.trim().to_owned();

    // Pod B: the app, its sidecar, and PREROUTING capture of everything inbound.
    let app_log = pods.log_path("app-requests");
    let app_log = app_log.to_str().expect("utf8").to_owned();
    pods.spawn("app", &b, &[&python, "-c", APP, &app_log]);
    let admin = "admin: {listen: '127.0.0.1:15000'}\nlog: {format: json, level: info}\n";
    let cfg_b = pods.write(
        "b.yaml",
        &format!(
            "{}inbound: {{listen: '{}:15006', transparent: true, mode: strict}}\n{admin}",
            pki.identity_yaml("server"),
            fam.any
        ),
    );
    let sidecar = |cfg: &str| -> Vec<String> {
        SIDECAR
            .iter()
            .map(|s| s.to_string())
            .chain([bin.clone(), "run".into(), "--config".into(), cfg.into()])
            .collect()
    };
    let argv_b = sidecar(&cfg_b);
    pods.spawn("meshward-b", &b, &argv_b.iter().map(String::as_str).collect::<Vec<_>>());
    pods.nat(&b, fam.iptables, "PREROUTING -p tcp -j REDIRECT --to-ports 15006");

    // Pod A: its sidecar (transparent outbound) and OUTPUT capture except uid 1337 and loopback.
    let cfg_a = pods.write(
        "a.yaml",
        &format!(
            "{}outbound: {{listeners: [{{name: transparent, listen: '{}:15001', server_identity: '{SERVER_ID}'}}]}}\n{admin}",
            pki.identity_yaml("client"),
            fam.any
        ),
    );
    let argv_a = sidecar(&cfg_a);
    pods.spawn("meshward-a", &a, &argv_a.iter().map(String::as_str).collect::<Vec<_>>());
    pods.nat(&a, fam.iptables, "OUTPUT -p tcp -m owner --uid-owner 1337 -j RETURN");
    pods.nat(&a, fam.iptables, &format!("OUTPUT -d {} -j RETURN", fam.loopback));
    pods.nat(&a, fam.iptables, "OUTPUT -p tcp -j REDIRECT --to-ports 15001");

    pods.wait_for("the app", || pods.http_code(&b, "http://127.0.0.1:8080/probe") == "200");
    for ns in [&a, &b] {
        pods.wait_for(&format!("meshward in {ns} to be ready"), || {
            pods.http_code(ns, "http://127.0.0.1:15000/ready") == "200"
        });
    }

    // Captured in A, mTLS between the pods, captured in B, app on its original port.
    let url = |path: &str| format!("http://{}:8080{path}", fam.url_b);
    let curl = ["curl", "-sS", "-g", "--max-time", "10"];
    let hello = pods.exec(&a, &[&curl[..], &[url("/hello").as_str()]].concat());
    assert_eq!(hello.code, Some(0), "request through both sidecars failed");
    assert_eq!(echoed(&hello.stdout, IDENTITY_HEADER), [CLIENT_ID], "app must see the client's SPIFFE ID");

    // A spoofed identity header from the app is replaced, not passed along.
    let spoof =
        pods.exec(&a, &[&curl[..], &["-H", "x-meshward-peer-id: spiffe://evil/x", url("/spoof").as_str()]].concat());
    assert_eq!(spoof.code, Some(0), "spoofed request failed");
    assert_eq!(echoed(&spoof.stdout, IDENTITY_HEADER), [CLIENT_ID], "spoofed identity must not reach the app");

    // Plaintext that bypasses A's sidecar (uid 1337 is not captured) meets B's strict inbound.
    let bypass = pods.exec(&a, &[&SIDECAR[..], &curl[..], &[url("/bypass").as_str()]].concat());
    assert_ne!(bypass.code, Some(0), "plaintext must not be answered");
    assert!(bypass.stdout.is_empty(), "plaintext got an HTTP response: {}", bypass.stdout);

    // A: exactly the two curls were captured (meshward's own connection was not).
    let outbound = |m: &str| metric_sum(m, "meshward_connections_total", &["direction=\"outbound\""]);
    pods.wait_for("A's outbound connection count", || outbound(&pods.metrics(&a)) >= 2.0);
    assert_eq!(outbound(&pods.metrics(&a)), 2.0, "meshward A's own upstream connection was re-captured");

    // B: two 2xx requests from the client identity, one plaintext refusal.
    let id = format!("peer_identity=\"{CLIENT_ID}\"");
    let ok =
        |m: &str| metric_sum(m, "meshward_requests_total", &["direction=\"inbound\"", "status_class=\"2xx\"", &id]);
    let refused =
        |m: &str| metric_sum(m, "meshward_connections_refused_total", &["inbound", "plaintext_on_strict_port"]);
    pods.wait_for("B's request and refusal counts", || {
        let m = pods.metrics(&b);
        ok(&m) >= 2.0 && refused(&m) >= 1.0
    });
    let m = pods.metrics(&b);
    assert_eq!((ok(&m), refused(&m)), (2.0, 1.0), "B's inbound metrics");

    let seen = std::fs::read_to_string(&app_log).unwrap_or_default();
    assert!(seen.contains("/hello\n") && seen.contains("/spoof\n"), "app log: {seen}");
    assert!(!seen.contains("/bypass"), "plaintext reached the app: {seen}");
}
