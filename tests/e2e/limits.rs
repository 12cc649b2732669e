//! Smuggling attempts get 400 and never reach the app; a header flood and a
//! slow-header client are cut off while other clients are served.

use std::time::{Duration, Instant};

use crate::util::*;

const SMUGGLING: &[(&str, &str)] = &[
    (
        "POST /v2/models/iris/infer HTTP/1.1\r\nHost: m\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX",
        "both content-length and transfer-encoding",
    ),
    (
        "POST /v2/models/iris/infer HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nX",
        "both content-length and transfer-encoding",
    ),
    ("POST / HTTP/1.1\r\nHost: m\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", "duplicate content-length"),
    ("POST / HTTP/1.1\r\nHost: m\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc", "duplicate content-length"),
    ("GET / HTTP/1.1\r\nHost: m\r\nX-Folded: a\r\n b\r\n\r\n", "obsolete line folding"),
    ("GET / HTTP/1.1\nHost: m\n\n", "bare LF in request head"),
    ("POST / HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", "unsupported transfer-encoding"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_attempts_get_400_and_never_reach_the_app() {
    let mesh = Mesh::start().await;
    for (request, reason) in SMUGGLING {
        let answer = raw_exchange(mesh.outbound, request.as_bytes(), Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{request:?} -> {answer:?}");
        assert!(answer.contains(reason), "{request:?} -> {answer:?}");
        assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer:?}");
    }
    // A valid request first, then a smuggling one on the same connection:
    // the first is answered, the second refused.
    let pipelined = "GET /first HTTP/1.1\r\nHost: m\r\n\r\nPOST /second HTTP/1.1\r\nHost: m\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let answer = raw_exchange(mesh.outbound, pipelined.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.contains("HTTP/1.1 400"), "{answer:?}");
    assert_eq!(mesh.app.count(), 1, "only /first reached the app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_flood_and_slow_headers_are_cut_off_while_others_are_served() {
    let app = EchoApp::start().await;
    let pki = Pki::new();
    let (server, inbound) =
        pki.inbound_sidecar(app.addr, "permissive", "limits: {header_read_timeout: 1s, max_header_bytes: 16384}\n");

    // Header flood: 64 KiB of headers.
    let mut flood = String::from("GET / HTTP/1.1\r\nHost: m\r\n");
    for i in 0..1024 {
        flood.push_str(&format!("X-Flood-{i}: {}\r\n", "a".repeat(48)));
    }
    flood.push_str("\r\n");
    let answer = raw_exchange(inbound, flood.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");

    // Slow headers: one byte every 300 ms never completes a head.
    let slow = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(inbound).await.expect("connect");
        let start = Instant::now();
        s.write_all(b"GET / HTTP/1.1\r\n").await.expect("write");
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if s.write_all(b"X").await.is_err() {
                break;
            }
        }
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await;
        (start.elapsed(), String::from_utf8_lossy(&out).into_owned())
    });
    // Meanwhile a normal client is served.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        let (status, _) = get_echo(false, &format!("http://{inbound}/ok"), &[]).await;
        assert_eq!(status, 200, "{}", server.logs());
    }
    let (took, answer) = slow.await.expect("slow client");
    assert!(took < Duration::from_secs(8), "slow client cut off after {took:?}");
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert_eq!(app.count(), 5, "neither the flood nor the slow client reached the app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed_and_counted() {
    let app = EchoApp::start().await;
    let pki = Pki::new();
    let (server, inbound) = pki.inbound_sidecar(app.addr, "permissive", "limits: {max_connections: 2}\n");
    // Two idle connections take both slots.
    let _a = tokio::net::TcpStream::connect(inbound).await.expect("a");
    let _b = tokio::net::TcpStream::connect(inbound).await.expect("b");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answer = raw_exchange(inbound, b"GET / HTTP/1.1\r\nHost: m\r\n\r\n", Duration::from_secs(3)).await;
    assert!(answer.is_empty(), "third connection is closed: {answer:?}");
    let m = server.metrics();
    assert!(metric_sum(&m, "meshward_connections_refused_total", &["connection_limit"]) >= 1.0, "{m}");
    // Slots free up when clients leave.
    drop((_a, _b));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = get_echo(false, &format!("http://{inbound}/after"), &[]).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_app_gives_502_with_a_reason() {
    let pki = Pki::new();
    let dead = free_addr(); // nothing listens here
    let (server, inbound) = pki.inbound_sidecar(dead, "permissive", "");
    let answer =
        raw_exchange(inbound, b"GET / HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n", Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer:?}");
    assert!(answer.contains("upstream connect failed"), "{answer:?}");
    assert!(server.logs().contains("upstream"), "the log has the cause");
}
