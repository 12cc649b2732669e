//! What must be refused: no client certificate, another CA, an expired
//! certificate, plaintext on a strict port, a server with the wrong SPIFFE ID.

use crate::util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_refuses_bad_clients_and_counts_why() {
    let mesh = Mesh::start().await;
    let p = mesh.pki.path();
    let ca = p.join("ca.crt");

    // The good client is served (control).
    let good = mtls_client_config(&p.join("client.crt"), &p.join("client.key"), &ca, &[b"http/1.1"]);
    assert_eq!(mtls_get(mesh.inbound, good).await, Ok(200));

    let before = mesh.app.count();
    // No client certificate.
    let r = mtls_get(mesh.inbound, tls_client_config_without_cert(&ca)).await;
    assert!(r.is_err(), "no client cert must be refused: {r:?}");
    // A certificate from another CA.
    let other = mesh.pki.other_ca("other", "rogue", CLIENT_ID);
    let rogue = mtls_client_config(&other.join("rogue.crt"), &other.join("rogue.key"), &ca, &[b"http/1.1"]);
    let r = mtls_get(mesh.inbound, rogue).await;
    assert!(r.is_err(), "foreign CA must be refused: {r:?}");
    // An expired certificate from the right CA.
    mesh.pki.issue("expired", CLIENT_ID, true);
    let expired = mtls_client_config(&p.join("expired.crt"), &p.join("expired.key"), &ca, &[b"http/1.1"]);
    let r = mtls_get(mesh.inbound, expired).await;
    assert!(r.is_err(), "expired cert must be refused: {r:?}");
    // Plaintext on a strict port gets no HTTP answer.
    let text =
        raw_exchange(mesh.inbound, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", std::time::Duration::from_secs(3)).await;
    assert!(!text.starts_with("HTTP/"), "{text}");
    assert_eq!(mesh.app.count(), before, "no refused request reached the app");

    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let m = mesh.server.metrics();
    for reason in ["no_client_certificate", "unknown_ca", "expired", "plaintext"] {
        assert!(
            metric_sum(&m, "meshward_tls_handshake_failures_total", &[reason]) >= 1.0,
            "handshake failure reason {reason} counted:\n{m}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_refuses_a_server_with_the_wrong_identity() {
    let app = EchoApp::start().await;
    let pki = Pki::new();
    // The server presents SERVER_ID, but the route expects another workload.
    let (_server, inbound) = pki.inbound_sidecar(app.addr, "strict", "");
    let (client, outbound) = pki.outbound_sidecar(inbound, "spiffe://e2e.test/ns/ml/sa/other", "");
    let (status, _) = get_echo(false, &format!("http://{outbound}/x"), &[]).await;
    assert_eq!(status, 502, "{}", client.logs());
    assert_eq!(app.count(), 0, "nothing may be sent to an unexpected peer");
    assert!(client.logs().contains("spiffe://e2e.test/ns/ml/sa/model"), "the log names the identity presented");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_with_an_expired_certificate_is_not_ready() {
    let pki = Pki::new();
    pki.issue("old", SERVER_ID, true);
    let inbound = free_addr();
    let p = Proxy::spawn(
        &format!("{}inbound: {{listen: '{inbound}', app: '127.0.0.1:9'}}\n", pki.identity_yaml("old")),
        &[],
    );
    let mut status = None;
    for _ in 0..100 {
        status = admin_get(p.admin, "/ready").map(|(s, _)| s);
        if status.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(status, Some(503), "{}", p.logs());
    let m = p.metrics();
    assert!(m.contains("meshward_certificate_valid 0"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_certificate_it_refuses_then_serves_once_the_files_appear() {
    // cert-manager writes the Secret after the pod started.
    let app = EchoApp::start().await;
    let pki = Pki::new();
    let later = tempfile::tempdir().expect("tempdir");
    let d = later.path().display();
    let inbound = free_addr();
    let server = Proxy::spawn(
        &format!(
            "identity: {{cert: '{d}/tls.crt', key: '{d}/tls.key', trust_bundle: '{d}/ca.crt', reload_interval: 100ms}}\n\
             inbound: {{listen: '{inbound}', app: '{}'}}\n",
            app.addr
        ),
        &[],
    );
    let mut ready = None;
    for _ in 0..100 {
        ready = admin_get(server.admin, "/ready");
        if ready.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (status, body) = ready.expect("admin answers");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("certificate"), "{body}");
    let p = pki.path();
    let client = mtls_client_config(&p.join("client.crt"), &p.join("client.key"), &p.join("ca.crt"), &[b"http/1.1"]);
    assert!(mtls_get(inbound, client.clone()).await.is_err(), "fail closed without a certificate");

    for (from, to) in [("server.crt", "tls.crt"), ("server.key", "tls.key"), ("ca.crt", "ca.crt")] {
        std::fs::copy(p.join(from), later.path().join(to)).expect("copy");
    }
    server.wait_ready();
    assert_eq!(mtls_get(inbound, client).await, Ok(200), "{}", server.logs());
    assert_eq!(app.count(), 1);
}
