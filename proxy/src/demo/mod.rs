//! `meshward demo`: a complete local mesh in one command.
//!
//! A development CA, an embedded Open Inference Protocol v2 model server
//! (`model`), a server-side sidecar in front of it (inbound, strict mTLS), a
//! client-side sidecar (outbound, originating mTLS and checking the server's
//! SPIFFE ID), and a traffic generator (`traffic`) calling through both.
//! It ends with a summary table, or one JSON object with `--json`.

pub mod catalog;
pub mod model;
pub mod receiver;
pub mod tokens;
pub mod traffic;

use std::collections::BTreeMap;
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
    /// How long to send traffic, in seconds.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Requests per second.
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

    // The server-side sidecar, then the client-side one pointing at it.
    let server_cfg = Config::from_yaml(&format!(
        "identity: {{cert: '{d}/server.crt', key: '{d}/server.key', trust_bundle: '{d}/ca.crt'}}\n\
         inbound: {{listen: '127.0.0.1:0', app: '{app_addr}', mode: strict}}\n\
         admin: {{listen: '127.0.0.1:0'}}\n"
    ))?;
    let no_policy = || PolicyStore::load(Vec::new(), None).map(Arc::new);
    let server = Proxy::bind(server_cfg, no_policy()?).await?;
    let server_addrs = server.addresses();
    let inbound = server_addrs.inbound.context("inbound address")?;
    let client_cfg = Config::from_yaml(&format!(
        "identity: {{cert: '{d}/client.crt', key: '{d}/client.key', trust_bundle: '{d}/ca.crt'}}\n\
         outbound: {{listeners: [{{name: iris, listen: '127.0.0.1:0', target: '{inbound}', server_identity: '{SERVER_ID}', protocol: http}}]}}\n\
         admin: {{listen: '127.0.0.1:0'}}\n"
    ))?;
    let client = Proxy::bind(client_cfg, no_policy()?).await?;
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
        eprintln!("  certificates                           {d}\n");
        eprintln!("Try:");
        eprintln!("  curl -s http://{outbound}/v2/models/iris");
        eprintln!(
            "  curl -s http://{outbound}/v2/models/iris/infer -H 'content-type: application/json' \\\n    \
             -d '{{\"inputs\":[{{\"name\":\"input\",\"shape\":[1,4],\"datatype\":\"FP32\",\"data\":[5.1,3.5,1.4,0.2]}}]}}'"
        );
        eprintln!("  curl -s http://{}/metrics | grep meshward_requests", server_addrs.admin);
        crate::cli::run::termination_signal().await;
        stop.cancel();
        let _ = tokio::join!(server_task, client_task);
        return Ok(());
    }

    // Security checks a user can see: plaintext is refused by the strict
    // inbound port, and a spoofed identity header never reaches the app.
    let plaintext_refused = plaintext_is_refused(inbound).await;
    let spoof_stripped = spoofed_identity_is_replaced(outbound, &stats).await;

    eprintln!(
        "meshward demo: {} rps for {} s through client sidecar {outbound} -> mTLS -> server sidecar {inbound} -> model {app_addr}",
        args.rps, args.duration
    );
    let started = Instant::now();
    let cfg = traffic::TrafficConfig {
        base: format!("http://{outbound}").parse()?,
        rps: args.rps,
        duration: Duration::from_secs(args.duration),
        concurrency: 64,
    };
    let report = traffic::run(cfg, |r| {
        eprintln!(
            "  {:>5.1}s  requests {:>6}  ok {:>6}  errors {:>4}  p50 {:>6.2} ms  p99 {:>6.2} ms",
            started.elapsed().as_secs_f64(),
            r.requests,
            r.statuses.iter().filter(|(s, _)| (200..300).contains(*s)).map(|(_, n)| n).sum::<u64>(),
            r.errors + r.statuses.iter().filter(|(s, _)| **s >= 500).map(|(_, n)| n).sum::<u64>(),
            r.percentile_ms(50.0),
            r.percentile_ms(99.0),
        );
    })
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    stop.cancel();
    let _ = tokio::join!(server_task, client_task);

    let identities = stats.lock().map(|s| s.identities.clone()).unwrap_or_default();
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
    });
    if args.json {
        println!("{summary}");
    } else {
        print_table(&report, &identities, elapsed, plaintext_refused, spoof_stripped);
    }
    Ok(())
}

fn print_table(
    r: &traffic::TrafficReport,
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
