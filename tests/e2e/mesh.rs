//! Client -> outbound sidecar -> mTLS -> inbound sidecar -> app, over
//! HTTP/1.1 and HTTP/2: identity reaches the app, cannot be spoofed, trace
//! context passes, trailers and large bodies arrive byte-exact.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};
use sha2::{Digest, Sha256};

use crate::util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_http2_reach_the_app_with_the_callers_identity() {
    let mesh = Mesh::start().await;
    for h2 in [false, true] {
        let url = format!("http://{}/v2/models/iris/infer?x=1", mesh.outbound);
        let (status, echo) =
            get_echo(h2, &url, &[(IDENTITY_HEADER, "spiffe://e2e.test/ns/attacker/sa/admin"), ("x-app", "kept")]).await;
        assert_eq!(status, 200, "h2={h2}\nclient log:\n{}\nserver log:\n{}", mesh.client.logs(), mesh.server.logs());
        let echo = echo.expect("echo body");
        assert_eq!(echo.path, "/v2/models/iris/infer?x=1");
        assert_eq!(
            echo.headers.get(IDENTITY_HEADER),
            Some(&vec![CLIENT_ID.to_owned()]),
            "spoofed copy must be gone: {echo:?}"
        );
        assert_eq!(echo.header("x-app"), Some("kept"));
        let tp = echo.header("traceparent").expect("a traceparent is started");
        assert_eq!(tp.len(), 55, "{tp}");
        // Plain HTTP reaches the app as HTTP/1.1 whatever the caller spoke (auto).
        assert_eq!(echo.version, "HTTP/1.1");
    }
    // A valid incoming traceparent passes unchanged and its trace id is logged.
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let (_, echo) = get_echo(false, &format!("http://{}/traced", mesh.outbound), &[("traceparent", tp)]).await;
    assert_eq!(echo.expect("echo").header("traceparent"), Some(tp));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(mesh.server.logs().contains("0af7651916cd43dd8448eb211c80319c"), "trace id in the access log");

    let m = mesh.server.metrics();
    let n = metric_sum(&m, "meshward_requests_total", &["inbound", "2xx", CLIENT_ID]);
    assert!(n >= 3.0, "inbound requests by identity in /metrics:\n{m}");
    assert!(m.contains("meshward_request_duration_seconds_bucket"), "{m}");
    assert!(m.contains("meshward_certificate_expiry_timestamp_seconds"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_style_trailers_pass_over_http2() {
    let mesh = Mesh::start().await;
    let req = Request::post(format!("http://{}/pkg.Svc/Method", mesh.outbound))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-want-trailers", "1")
        .body(Full::new(Bytes::from_static(b"\x00\x00\x00\x00\x03abc")))
        .expect("request");
    let resp = client(true).request(req).await.expect("send");
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.expect("body");
    let trailers = collected.trailers().cloned().expect("trailers arrive");
    assert_eq!(trailers.get("x-app-trailer").map(|v| v.as_bytes()), Some(&b"done"[..]));
    let echo: Echo = serde_json::from_slice(&collected.to_bytes()).expect("echo");
    assert_eq!(echo.body_len, 8);
    assert_eq!(echo.header("te"), Some("trailers"));
    assert_eq!(echo.version, "HTTP/2.0", "gRPC reaches the app over HTTP/2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_streamed_upload_arrives_byte_exact() {
    let mesh = Mesh::start().await;
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 100;
    // Deterministic, non-repeating content.
    let mut hasher = Sha256::new();
    let mut chunks = Vec::with_capacity(CHUNKS);
    let mut state = 0x9e3779b97f4a7c15u64;
    for _ in 0..CHUNKS {
        let mut c = vec![0u8; CHUNK];
        for b in c.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = state as u8;
        }
        hasher.update(&c);
        chunks.push(Bytes::from(c));
    }
    let want = format!("{:x}", hasher.finalize());
    for h2 in [false, true] {
        // No content-length: HTTP/1.1 sends it chunked, HTTP/2 as DATA frames.
        let frames = chunks.iter().map(|c| Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(c.clone())));
        let body = StreamBody::new(futures_util::stream::iter(frames.collect::<Vec<_>>()));
        let req = Request::post(format!("http://{}/upload", mesh.outbound)).body(body).expect("request");
        let mut b = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
        if h2 {
            b.http2_only(true);
        }
        let resp = b.build_http().request(req).await.expect("send");
        assert_eq!(resp.status(), 200, "h2={h2}");
        let echo: Echo =
            serde_json::from_slice(&resp.into_body().collect().await.expect("body").to_bytes()).expect("echo");
        assert_eq!(echo.body_len, (CHUNK * CHUNKS) as u64, "h2={h2}");
        assert_eq!(echo.body_sha256, want, "h2={h2}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_port_accepts_plaintext_without_identity() {
    let app = EchoApp::start().await;
    let pki = Pki::new();
    let (server, inbound) = pki.inbound_sidecar(app.addr, "permissive", "");
    let (status, echo) = get_echo(false, &format!("http://{inbound}/metrics"), &[(IDENTITY_HEADER, CLIENT_ID)]).await;
    assert_eq!(status, 200, "{}", server.logs());
    assert_eq!(echo.expect("echo").header(IDENTITY_HEADER), None, "plaintext carries no identity, spoofed or not");
    // mTLS still works on the same port and carries the identity.
    let cfg = mtls_client_config(
        &pki.path().join("client.crt"),
        &pki.path().join("client.key"),
        &pki.path().join("ca.crt"),
        &[b"http/1.1"],
    );
    assert_eq!(mtls_get(inbound, cfg).await, Ok(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_http2_mtls_client_reaches_an_http1_only_app() {
    // curl and h2load offer h2 in ALPN by default; most model servers speak HTTP/1.1.
    let app = EchoApp::start_http1_only().await;
    let pki = Pki::new();
    let (server, inbound) = pki.inbound_sidecar(app.addr, "strict", "");
    let p = pki.path();
    let cfg = mtls_client_config(&p.join("client.crt"), &p.join("client.key"), &p.join("ca.crt"), &[b"h2"]);
    let tcp = tokio::net::TcpStream::connect(inbound).await.expect("connect");
    let name = rustls::pki_types::ServerName::IpAddress(inbound.ip().into());
    let tls = tokio_rustls::TlsConnector::from(cfg).connect(name, tcp).await.expect("mTLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = Request::post(format!("https://{inbound}/v2/models/iris/infer"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{}")))
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200, "{}", server.logs());
    let echo: Echo = serde_json::from_slice(&resp.into_body().collect().await.expect("body").to_bytes()).expect("echo");
    assert_eq!(echo.version, "HTTP/1.1");
    assert_eq!(echo.header(IDENTITY_HEADER), Some(CLIENT_ID));
}

/// A TCP app that sends `banner` on connect (if any), then echoes lines upper-cased.
async fn tcp_app(banner: &'static [u8]) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(banner).await;
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n].to_ascii_uppercase()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_http_traffic_rides_mtls_as_opaque_tcp() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for (banner, first) in [(&b""[..], "client speaks first"), (&b"220 ready\r\n"[..], "server speaks first")] {
        let app = tcp_app(banner).await;
        let pki = Pki::new();
        let (server, inbound) = pki.inbound_sidecar(app, "strict", "");
        // protocol auto: a client that sends nothing HTTP-like within the
        // detection window is carried as opaque TCP.
        let (client, outbound) = pki.outbound_sidecar(inbound, SERVER_ID, "limits: {protocol_detect_timeout: 300ms}\n");
        let mut s = tokio::net::TcpStream::connect(outbound).await.expect("connect");
        let mut got = vec![0u8; banner.len()];
        if !banner.is_empty() {
            tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
                .await
                .expect("banner in time")
                .expect("banner");
            assert_eq!(got, banner, "{first}");
        }
        s.write_all(b"*1\r\n$4\r\nping\r\n").await.expect("write");
        let mut reply = [0u8; 14];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut reply))
            .await
            .unwrap_or_else(|_| panic!("{first}: no echo\nclient:\n{}\nserver:\n{}", client.logs(), server.logs()))
            .expect("echo");
        assert_eq!(&reply, b"*1\r\n$4\r\nPING\r\n", "{first}");
        drop(s);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(server.logs().contains("\"protocol\":\"tcp\""), "{first}: opaque TCP logged with the peer identity");
        assert!(server.logs().contains(CLIENT_ID), "{first}");
    }
}
