//! `meshward demo`: a complete local mesh in one command, and the story of
//! the detector in it.
//!
//! A development CA, an embedded Open Inference Protocol v2 model server
//! (`model`, serving `iris` and the five models of `meshward traffic`), a
//! server-side sidecar in front of it (inbound, strict mTLS, the detector on
//! with an `AnomalyPolicy`, signed alert webhooks), a client-side sidecar
//! (outbound, originating mTLS and checking the server's SPIFFE ID), and a
//! local webhook receiver (`receiver`) verifying every alert's signature.
//!
//! Traffic is the generator's (`crate::traffic`): a warm-up of normal
//! requests while the detector learns, then the test period with every
//! attack scenario interleaved, replayed (`replay`) through the client
//! sidecar. Each generator client sends a JWT with its own name as subject
//! (`tokens`), so the inbound detector (client key `jwt` first) sees each as
//! a separate client although all arrive over the one mTLS peer. It ends
//! with a table per scenario (`story`), or one JSON object with `--json`.

pub mod catalog;
pub mod model;
pub mod receiver;
pub mod replay;
pub mod story;
pub mod tokens;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use http::HeaderName;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::cli::certs::{write_pem, DevCa, Validity};
use crate::cli::run::Proxy;
use crate::config::Config;
use crate::http::headers::DEFAULT_IDENTITY_HEADER;
use crate::policy_store::PolicyStore;
use crate::tls::SpiffeId;

/// Arguments of `meshward demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Length of the attack phase in seconds at `--rps`: it replays about
    /// 0.6 x duration x rps normal requests plus every attack scenario (at
    /// least 60 requests each). The warm-up before it takes about
    /// 1200 / rps seconds, the latency check after it 2 x 300 / rps.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Requests per second offered in every phase.
    #[arg(long, default_value_t = 200)]
    pub rps: u32,
    /// Serve until Ctrl-C instead of running traffic, printing the addresses.
    #[arg(long)]
    pub serve: bool,
    /// Print the summary as one JSON object on stdout (progress stays on stderr).
    #[arg(long)]
    pub json: bool,
}

const CLIENT_ID: &str = "spiffe://demo.local/ns/demo/sa/client";
const SERVER_ID: &str = "spiffe://demo.local/ns/demo/sa/iris-server";
/// Normal requests the detector learns from before it gives verdicts.
const WARMUP_SAMPLES: u64 = 1000;
/// Simulated normal clients (the generator adds two late ones and three probers).
const CLIENTS: usize = 20;
/// Requests sent both directly and through the mesh to measure the overhead.
const LATENCY_SAMPLES: usize = 300;

/// The demo's anomaly policy: on inference calls an anomalous request is
/// refused and a client whose behaviour across requests is off (extraction,
/// flooding, scanning) is slowed; repeat offenders are held at the reduced
/// rate, then quarantined. Other routes block only what is anomalous.
fn anomaly_policy() -> String {
    format!(
        "apiVersion: meshward.dev/v1\nkind: AnomalyPolicy\nmetadata: {{name: demo-guard}}\nspec:\n  \
         warmupSamples: {WARMUP_SAMPLES}\n  falsePositiveBudget: 0.001\n  rules:\n  \
         - to: [{{operation: {{methods: [POST], paths: ['/v2/models/{{model}}/infer', '/v2/models/{{model}}/versions/{{version}}/infer']}}}}]\n    \
         suspicious: audit\n    anomalous: block\n    clientSignal: rate-limit\n  \
         - suspicious: allow\n    anomalous: block\n    clientSignal: rate-limit\n  \
         rateLimit: {{requests: 2, per: 1s, burst: 4}}\n  quarantine: {{duration: 10m}}\n  escalation:\n  \
         - {{flagged: 3, within: 1m, action: rate-limit}}\n  - {{flagged: 10, within: 5m, action: quarantine}}\n"
    )
}

/// A fresh `whsec_` secret for the signed alert sink.
fn webhook_secret() -> anyhow::Result<String> {
    use base64::Engine as _;
    use ring::rand::SecureRandom as _;
    let mut key = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut key).map_err(|_| anyhow::anyhow!("no system randomness"))?;
    Ok(format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key)))
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let ca = DevCa::new("demo.local", 1)?;
    ca.write(dir.path())?;
    for (name, id) in [("client", CLIENT_ID), ("server", SERVER_ID)] {
        let pem = ca.issue(&SpiffeId::parse(id)?, Validity::For(Duration::from_secs(86_400)), &[])?;
        write_pem(dir.path(), name, &pem)?;
    }
    let d = dir.path().display();

    // The model server.
    let app_listener = TcpListener::bind("127.0.0.1:0").await?;
    let app_addr = app_listener.local_addr()?;
    let stats = Arc::new(Mutex::new(model::AppStats::default()));
    let stop = CancellationToken::new();
    let app_stop = stop.clone();
    tokio::spawn(model::serve(
        app_listener,
        HeaderName::from_static(DEFAULT_IDENTITY_HEADER),
        stats.clone(),
        async move { app_stop.cancelled().await },
    ));

    // Policies: the clients' token issuer and the anomaly policy.
    let issuer = tokens::Issuer::new()?;
    let policy_dir = dir.path().join("policies");
    std::fs::create_dir(&policy_dir).context("creating the policy directory")?;
    std::fs::write(policy_dir.join("demo-clients.yaml"), issuer.policy()).context("writing the JWT policy")?;
    std::fs::write(policy_dir.join("demo-guard.yaml"), anomaly_policy()).context("writing the anomaly policy")?;

    // The webhook receiver, with the signed sink's secret.
    let secret_text = webhook_secret()?;
    let secret_file = dir.path().join("webhook-secret");
    std::fs::write(&secret_file, &secret_text).context("writing the webhook secret")?;
    let secret = crate::alerts::sign::Secret::parse(&secret_text).context("the generated webhook secret")?;
    let receiver = receiver::Receiver::new(secret);
    let hook = receiver::start(receiver.clone(), stop.clone()).await.context("binding the webhook receiver")?;

    // The server-side sidecar, then the client-side one pointing at it.
    let server_cfg = Config::from_yaml(&format!(
        "identity: {{cert: '{d}/server.crt', key: '{d}/server.key', trust_bundle: '{d}/ca.crt'}}\n\
         inbound: {{listen: '127.0.0.1:0', app: '{app_addr}', mode: strict}}\n\
         admin: {{listen: '127.0.0.1:0'}}\n\
         detector: {{client_key: [jwt, peer, ip], tuning: {{warmup_samples: {WARMUP_SAMPLES}, publish_every: 100}}}}\n\
         alerts: {{group_window: 2s, resolve_after: 1m, sinks: [\
           {{name: siem, format: standard, url: 'http://{hook}/standard', secret_file: '{}'}}, \
           {{name: alertmanager, format: alertmanager, url: 'http://{hook}/alertmanager'}}]}}\n",
        secret_file.display()
    ))?;
    let server_policies = Arc::new(PolicyStore::load(vec![policy_dir.clone()], None)?);
    let server = Proxy::bind(server_cfg, server_policies).await?;
    let server_addrs = server.addresses();
    let inbound = server_addrs.inbound.context("inbound address")?;
    let client_cfg = Config::from_yaml(&format!(
        "identity: {{cert: '{d}/client.crt', key: '{d}/client.key', trust_bundle: '{d}/ca.crt'}}\n\
         outbound: {{listeners: [{{name: iris, listen: '127.0.0.1:0', target: '{inbound}', server_identity: '{SERVER_ID}', protocol: http}}]}}\n\
         admin: {{listen: '127.0.0.1:0'}}\n"
    ))?;
    let client = Proxy::bind(client_cfg, Arc::new(PolicyStore::load(Vec::new(), None)?)).await?;
    let client_addrs = client.addresses();
    let outbound = client_addrs.outbound.first().map(|(_, a)| *a).context("outbound address")?;
    let (s1, s2) = (stop.clone(), stop.clone());
    let server_task = tokio::spawn(server.serve(s1));
    let client_task = tokio::spawn(client.serve(s2));

    if args.serve {
        eprintln!("meshward demo: a local mesh is running (Ctrl-C to stop)\n");
        eprintln!("  model server (plain, behind the mesh)  http://{app_addr}");
        eprintln!("  server sidecar inbound (strict mTLS)   https://{inbound}   admin http://{}", server_addrs.admin);
        eprintln!("  client sidecar outbound (plaintext)    http://{outbound}   admin http://{}", client_addrs.admin);
        eprintln!("  alert webhook receiver                 http://{hook}/standard (signed), /alertmanager");
        eprintln!("  certificates and policies              {d}\n");
        eprintln!(
            "The detector learns from the first {WARMUP_SAMPLES} requests, then enforces {d}/policies/demo-guard.yaml."
        );
        eprintln!("Try:");
        eprintln!("  curl -s http://{outbound}/v2/models/iris");
        eprintln!(
            "  curl -s http://{outbound}/v2/models/iris/infer -H 'content-type: application/json' \\\n    \
             -d '{{\"inputs\":[{{\"name\":\"input\",\"shape\":[1,4],\"datatype\":\"FP32\",\"data\":[5.1,3.5,1.4,0.2]}}]}}'"
        );
        eprintln!("  curl -s http://{}/detector", server_addrs.admin);
        eprintln!("  curl -s http://{}/metrics | grep meshward_detector", server_addrs.admin);
        crate::cli::run::termination_signal().await;
        stop.cancel();
        let _ = tokio::join!(server_task, client_task);
        return Ok(());
    }

    // Security checks a user can see: plaintext is refused by the strict
    // inbound port, and a spoofed identity header never reaches the app.
    let plaintext_refused = plaintext_is_refused(inbound).await;
    let spoof_stripped = spoofed_identity_is_replaced(outbound, &stats).await;

    let started = Instant::now();
    let (warmup, test) = simulate(&issuer, args.duration, args.rps)?;
    let http = replay::client();
    let mesh = format!("http://{outbound}");
    let mut run = Run::new(receiver.clone());
    eprintln!(
        "meshward demo: generator traffic at {} req/s through client sidecar {outbound} -> mTLS -> server sidecar {inbound} (detector, policy demo-guard) -> model {app_addr}; alerts to {hook}",
        args.rps
    );

    // Warm-up: normal traffic until the detector has learned enough.
    eprintln!("phase 1: warm-up, the detector learns from normal traffic ({WARMUP_SAMPLES} samples)");
    let admin = server_addrs.admin;
    let mut warm_sent = 0;
    for chunk in warmup.chunks(args.rps.max(1) as usize) {
        let out = replay::send_all(&http, &mesh, chunk, args.rps).await;
        run.record("warm-up", chunk, &out, started);
        warm_sent += chunk.len();
        let state = admin_json(&http, admin, "/detector").await;
        eprintln!(
            "  learned {}/{}",
            state["warmup"]["samples"].as_u64().unwrap_or(0),
            state["warmup"]["of"].as_u64().unwrap_or(WARMUP_SAMPLES)
        );
        if state["warming_up"] == false {
            break;
        }
    }
    if admin_json(&http, admin, "/detector").await["warming_up"] != false {
        eprintln!("  warning: the detector is still warming up after {warm_sent} requests; verdicts may be late");
    }

    // Attacks: the test period, every scenario among drifting normal traffic.
    eprintln!("phase 2: attacks ({} scenarios) among normal traffic", crate::traffic::Scenario::ALL.len());
    for chunk in test.chunks(args.rps.max(1) as usize) {
        let out = replay::send_all(&http, &mesh, chunk, args.rps).await;
        run.record("attack", chunk, &out, started);
    }

    // Latency: the same normal requests straight to the app, then through the mesh.
    eprintln!("phase 3: latency, {LATENCY_SAMPLES} normal requests directly to the app and through both sidecars");
    let attackers: HashSet<&str> =
        test.iter().filter(|i| i.record.scenario.is_some()).map(|i| i.record.client.as_str()).collect();
    let sample: Vec<Arc<replay::Item>> = warmup
        .iter()
        .filter(|i| i.record.method == "POST" && !attackers.contains(i.record.client.as_str()))
        .take(LATENCY_SAMPLES)
        .cloned()
        .collect();
    let direct = replay::send_all(&http, &format!("http://{app_addr}"), &sample, args.rps).await;
    let through = replay::send_all(&http, &mesh, &sample, args.rps).await;
    let ok_latencies = |o: &[replay::Outcome]| -> Vec<u64> {
        o.iter().filter(|o| o.status == Some(200)).map(|o| o.latency_us).collect()
    };
    let (direct_p50, mesh_p50) = (story::p50_ms(&ok_latencies(&direct)), story::p50_ms(&ok_latencies(&through)));
    run.mesh.extend(through.iter().cloned());

    // Alerts are grouped and sent off the request path: give them a moment.
    let settle = Instant::now();
    let mut last = (receiver.snapshot().received, Instant::now());
    while settle.elapsed() < Duration::from_secs(6) && last.1.elapsed() < Duration::from_millis(2500) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        run.print_alerts();
        let now = receiver.snapshot().received;
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.cancel();
    let _ = tokio::join!(server_task, client_task);

    let table = story::summarize(&run.sent);
    let alerts = receiver.snapshot();
    let identities = stats.lock().map(|s| s.identities.clone()).unwrap_or_default();
    let report = replay::Totals::of(&run.mesh);
    let summary = json!({
        "requests": report.requests,
        "statuses": report.statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "errors": report.errors,
        "duration_s": elapsed,
        "rps": report.requests as f64 / elapsed.max(0.001),
        "latency_ms": {
            "p50": report.percentile_ms(50.0),
            "p90": report.percentile_ms(90.0),
            "p99": report.percentile_ms(99.0),
            "max": report.percentile_ms(100.0),
        },
        "identities": identities,
        "checks": {
            "plaintext_refused": plaintext_refused,
            "spoofed_identity_replaced": spoof_stripped,
        },
        "detector": table.to_json(),
        "alerts": {
            "received": alerts.received,
            "signatures_valid": alerts.signatures_valid,
            "signatures_invalid": alerts.signatures_invalid,
            "alertmanager": alerts.alertmanager,
        },
        "latency_overhead_ms": {"direct_p50": direct_p50, "mesh_p50": mesh_p50, "added_p50": mesh_p50 - direct_p50},
    });
    if args.json {
        println!("{summary}");
    } else {
        print_table(&report, &identities, elapsed, plaintext_refused, spoof_stripped);
        story::print_table(&table, direct_p50, mesh_p50);
        println!(
            "\nalerts received {} ({} Alertmanager), signatures valid {}, invalid {}",
            alerts.received, alerts.alertmanager, alerts.signatures_valid, alerts.signatures_invalid
        );
    }
    Ok(())
}

/// Records to replay, shared with the tasks sending them.
type Items = Vec<Arc<replay::Item>>;

/// The generator's records for the demo: the warm-up (train) records and
/// the test period (normal with drift, plus every attack scenario), each
/// with its client's token. Token-stuffing attackers keep their own
/// rotating, unverifiable tokens: that is the attack, and JWT
/// authentication answers it with 401 before the detector.
fn simulate(issuer: &tokens::Issuer, duration: u64, rps: u32) -> anyhow::Result<(Items, Items)> {
    let normal = ((duration as f64 * f64::from(rps) * 0.6) as usize).max(100);
    let cfg = crate::traffic::TrafficConfig {
        seed: 7,
        train_requests: (WARMUP_SAMPLES as usize) * 3,
        test_requests: normal,
        scenarios: crate::traffic::Scenario::ALL.to_vec(),
        attack_share: 0.4,
        clients: CLIENTS,
    };
    let mut tokens: BTreeMap<String, String> = BTreeMap::new();
    let (mut warmup, mut test) = (Vec::new(), Vec::new());
    for (phase, record) in crate::traffic::Simulation::new(cfg) {
        let token = if record.scenario.as_deref() == Some(crate::traffic::Scenario::TokenStuffing.name()) {
            None
        } else {
            Some(match tokens.get(&record.client) {
                Some(t) => t.clone(),
                None => {
                    let t = issuer.token(&record.client)?;
                    tokens.insert(record.client.clone(), t.clone());
                    t
                }
            })
        };
        let item = Arc::new(replay::Item { record, token });
        match phase {
            crate::traffic::Phase::Train => warmup.push(item),
            crate::traffic::Phase::Test => test.push(item),
        }
    }
    Ok((warmup, test))
}

/// GETs a JSON admin view; `Null` when it cannot be read.
async fn admin_json(http: &replay::Http, admin: std::net::SocketAddr, path: &str) -> serde_json::Value {
    let Ok(uri) = format!("http://{admin}{path}").parse::<http::Uri>() else { return serde_json::Value::Null };
    let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(5), http.get(uri)).await else {
        return serde_json::Value::Null;
    };
    let body = http_body_util::BodyExt::collect(resp.into_body()).await.map(|b| b.to_bytes()).unwrap_or_default();
    serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null)
}

/// What the run has seen so far, and the live view on stderr.
struct Run {
    /// Every replayed generator request in send order (warm-up and attacks).
    sent: Vec<story::Sent>,
    /// Every outcome through the mesh (for the top-level counts).
    mesh: Vec<replay::Outcome>,
    /// Clients that already got a verdict (the first one is printed).
    judged: HashSet<String>,
    receiver: receiver::Receiver,
    alerts_shown: usize,
}

impl Run {
    fn new(receiver: receiver::Receiver) -> Run {
        Run { sent: Vec::new(), mesh: Vec::new(), judged: HashSet::new(), receiver, alerts_shown: 0 }
    }

    /// Adds one chunk's outcomes and prints its line, first verdicts and new alerts.
    fn record(&mut self, phase: &str, items: &[Arc<replay::Item>], out: &[replay::Outcome], started: Instant) {
        let (mut ok, mut blocked, mut limited, mut unauth, mut other, mut attacks) = (0, 0, 0, 0, 0, 0);
        for (item, o) in items.iter().zip(out) {
            let r = &item.record;
            attacks += u64::from(r.scenario.is_some());
            match o.status {
                Some(200..=299) => ok += 1,
                Some(403) => blocked += 1,
                Some(429) => limited += 1,
                Some(401) => unauth += 1,
                _ => other += 1,
            }
            if story::is_verdict(o.status) && self.judged.insert(r.client.clone()) {
                let what = r.scenario.as_deref().map_or("normal traffic (false positive?)", |s| s);
                let before = self.sent.iter().filter(|s| s.client == r.client).count();
                eprintln!(
                    "    verdict  {:<24} client {}: {} {} after {before} earlier requests",
                    what,
                    r.client,
                    o.status.unwrap_or(0),
                    o.code.as_deref().unwrap_or("")
                );
            }
            self.sent.push(story::Sent { client: r.client.clone(), scenario: r.scenario.clone(), status: o.status });
        }
        self.mesh.extend(out.iter().cloned());
        let a = self.receiver.snapshot();
        eprintln!(
            "  {:>5.1}s {phase:<8} sent {:>4} (attack {attacks:>3})  ok {ok:>4}  blocked {blocked:>3}  limited {limited:>3}  401 {unauth:>3}  other {other:>3}  alerts {} (valid {})",
            started.elapsed().as_secs_f64(),
            items.len(),
            a.received,
            a.signatures_valid
        );
        self.print_alerts();
    }

    /// Prints alerts that arrived since the last call (at most five at a time).
    fn print_alerts(&mut self) {
        let a = self.receiver.snapshot();
        let new = a.lines.len().saturating_sub(self.alerts_shown);
        let issuer = format!("{}/", tokens::ISSUER);
        for line in a.lines.iter().skip(self.alerts_shown).take(5) {
            eprintln!("    alert    {}", line.replace(&issuer, ""));
        }
        if new > 5 {
            eprintln!("    alert    ... and {} more", new - 5);
        }
        self.alerts_shown = a.lines.len();
    }
}

/// The mesh's own summary: counts, latency, identities and the checks.
fn print_table(
    r: &replay::Totals,
    identities: &BTreeMap<String, u64>,
    elapsed: f64,
    plaintext_refused: bool,
    spoof: bool,
) {
    println!("\nmeshward demo summary");
    println!("  {:<28} {}", "requests", r.requests);
    println!("  {:<28} {:.1}", "requests/s", r.requests as f64 / elapsed.max(0.001));
    for (status, n) in &r.statuses {
        println!("  {:<28} {n}", format!("status {status}"));
    }
    println!("  {:<28} {}", "transport errors", r.errors);
    for p in [50.0, 90.0, 99.0, 100.0] {
        let label = if p == 100.0 { "latency max (ms)".to_owned() } else { format!("latency p{p} (ms)") };
        println!("  {:<28} {:.2}", label, r.percentile_ms(p));
    }
    for (id, n) in identities {
        println!("  {:<28} {n}  {id}", "identity seen by the app");
    }
    let yes = |b| if b { "yes" } else { "NO" };
    println!("  {:<28} {}", "plaintext refused (strict)", yes(plaintext_refused));
    println!("  {:<28} {}", "spoofed identity replaced", yes(spoof));
}

/// A plaintext HTTP request to the strict inbound port gets no HTTP answer.
async fn plaintext_is_refused(inbound: std::net::SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(inbound).await else { return false };
    let _ = s.write_all(b"GET /v2/health/ready HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
        Ok(Ok(n)) => !buf[..n].starts_with(b"HTTP/"),
        Ok(Err(_)) => true,
        Err(_) => false,
    }
}

/// A request claiming to be someone else reaches the app as the real caller.
async fn spoofed_identity_is_replaced(outbound: std::net::SocketAddr, stats: &Mutex<model::AppStats>) -> bool {
    let before = stats.lock().map(|s| s.identities.get("spiffe://evil/ns/x/sa/admin").copied()).unwrap_or(None);
    let Ok(mut s) = TcpStream::connect(outbound).await else { return false };
    let req = format!(
        "GET /v2/health/ready HTTP/1.1\r\nhost: iris\r\n{DEFAULT_IDENTITY_HEADER}: spiffe://evil/ns/x/sa/admin\r\nconnection: close\r\n\r\n"
    );
    let _ = s.write_all(req.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let after = stats.lock().map(|s| s.identities.get("spiffe://evil/ns/x/sa/admin").copied()).unwrap_or(None);
    out.starts_with(b"HTTP/1.1 200") && before == after
}
