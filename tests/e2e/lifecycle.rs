//! Certificate rotation under traffic, and graceful shutdown with requests in flight.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::util::*;

/// Lays out `files` like a Kubernetes Secret volume: DIR/..vN/<file>,
/// DIR/..data -> ..vN, DIR/<file> -> ..data/<file>; swaps atomically.
fn k8s_secret(dir: &Path, version: u32, files: &[(&str, &Path)]) {
    let v = dir.join(format!("..v{version}"));
    std::fs::create_dir_all(&v).expect("mkdir");
    for (name, src) in files {
        std::fs::copy(src, v.join(name)).expect("copy");
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..v{version}"), &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    for (name, _) in files {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).expect("symlink file");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_during_traffic_fails_no_request() {
    let app = EchoApp::start().await;
    let pki = Pki::new();
    let secret = pki.path().join("secret");
    let p = pki.path();
    k8s_secret(
        &secret,
        1,
        &[("tls.crt", &p.join("server.crt")), ("tls.key", &p.join("server.key")), ("ca.crt", &p.join("ca.crt"))],
    );
    let inbound = free_addr();
    let s = secret.display();
    let server = Proxy::start(&format!(
        "identity: {{cert: '{s}/tls.crt', key: '{s}/tls.key', trust_bundle: '{s}/ca.crt', reload_interval: 100ms}}\n\
         inbound: {{listen: '{inbound}', app: '{}'}}\n",
        app.addr
    ));
    let outbound = free_addr();
    let client = Proxy::start(&format!(
        "{}outbound: {{listeners: [{{name: m, listen: '{outbound}', target: '{inbound}', server_identity: '{SERVER_ID}'}}]}}\n",
        pki.identity_yaml("client")
    ));
    let not_after = |p: &Proxy| admin_get(p.admin, "/identity").map(|(_, b)| b).unwrap_or_default();
    let before = not_after(&server);

    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Instant::now() + Duration::from_secs(4);
    let mut workers = Vec::new();
    for h2 in [false, true] {
        let (ok, failed) = (ok.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            while Instant::now() < stop {
                let (status, _) = get_echo(h2, &format!("http://{outbound}/rotate"), &[]).await;
                if status == 200 {
                    ok.fetch_add(1, Ordering::Relaxed)
                } else {
                    failed.fetch_add(1, Ordering::Relaxed)
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    // Rotate both sides mid-traffic: new keys, same identities.
    tokio::time::sleep(Duration::from_secs(1)).await;
    pki.issue("server2", SERVER_ID, false);
    k8s_secret(
        &secret,
        2,
        &[("tls.crt", &p.join("server2.crt")), ("tls.key", &p.join("server2.key")), ("ca.crt", &p.join("ca.crt"))],
    );
    pki.issue("client", CLIENT_ID, false); // rewritten in place
    for w in workers {
        w.await.expect("worker");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{ok} ok, {failed} failed\nserver:\n{}\nclient:\n{}", server.logs(), client.logs());
    assert!(ok > 50, "traffic flowed: {ok}");
    let after = not_after(&server);
    assert_ne!(before, after, "the server's certificate was reloaded");
    for p in [&server, &client] {
        let reloads = metric_sum(&p.metrics(), "meshward_certificate_reloads_total", &["success"]);
        assert!(reloads >= 2.0, "initial load + rotation: {reloads}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_then_exits_0() {
    let app = EchoApp::start_with_delay(Duration::from_millis(1500)).await;
    let mut mesh = Mesh::start_with(app, "shutdown: {grace_period: 10s}\n").await;
    let url = format!("http://{}/slow", mesh.outbound);
    let mut inflight = Vec::new();
    for i in 0..6 {
        let url = url.clone();
        inflight.push(tokio::spawn(async move { get_echo(i % 2 == 0, &url, &[]).await.0 }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mesh.app.count(), 6, "all requests are at the app");
    mesh.server.sigterm();
    for r in inflight {
        assert_eq!(r.await.expect("request"), 200, "in-flight request completed\n{}", mesh.server.logs());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = mesh.server.child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "meshward did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "{}", mesh.server.logs());
    // The listener is gone: new connections are refused.
    assert!(tokio::net::TcpStream::connect(mesh.inbound).await.is_err());
}
