//! Outbound listeners: plaintext from the local app, mutual TLS to the peer
//! sidecar. HTTP is proxied per request (pooled, HTTP/2 between sidecars);
//! anything else is carried as opaque TCP inside mTLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::orig_dst::original_dst;
use crate::config::{OutboundListener, Protocol};
use crate::http::forward::connect_mtls;
use crate::http::server::{self, HttpVersions};
use crate::metrics::{ReasonLabels, OUTBOUND};
use crate::pipeline::{self, Shared};

/// Runs one outbound accept loop until `shutdown`.
pub async fn run(
    listener: TcpListener,
    route: Arc<OutboundListener>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let metrics = shared.metrics.clone();
    let max = shared.limits.max_connections;
    let sd = shutdown.clone();
    super::accept_loop(listener, OUTBOUND, max, metrics, shutdown, tracker, move |stream, peer| {
        handle(stream, peer, route.clone(), shared.clone(), sd.clone())
    })
    .await;
}

async fn handle(
    stream: TcpStream,
    client: SocketAddr,
    route: Arc<OutboundListener>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let dest = match route.target {
        Some(t) => t,
        None => match original_dst(&stream) {
            Ok(Some(d)) => d,
            Ok(None) | Err(_) => {
                shared
                    .metrics
                    .connections_refused
                    .get_or_create(&ReasonLabels { direction: OUTBOUND, reason: "no_original_destination" })
                    .inc();
                tracing::warn!(%client, listener = %route.name, "transparent outbound connection was not redirected; closing");
                return;
            }
        },
    };
    let is_http = match route.protocol {
        Protocol::Http => true,
        Protocol::Tcp => false,
        Protocol::Auto => detect_http(&stream, shared.limits.protocol_detect_timeout).await,
    };
    if is_http {
        let limits = shared.limits.clone();
        server::serve(stream, HttpVersions::Auto, &limits, shutdown, move |req| {
            pipeline::outbound(req, client, dest, route.clone(), shared.clone())
        })
        .await;
        return;
    }
    let expected = route.expected_identity(dest);
    match connect_mtls(&shared.store, dest, expected, true, shared.limits.connect_timeout).await {
        Ok((tls, peer)) => {
            tracing::info!(target: "meshward::access", direction = OUTBOUND, protocol = "tcp", peer_identity = %peer, client = %client, upstream = %dest);
            super::tcp::splice(stream, tls, "outbound").await;
        }
        Err(e) => {
            shared
                .metrics
                .connections_refused
                .get_or_create(&ReasonLabels { direction: OUTBOUND, reason: "upstream_connect" })
                .inc();
            tracing::warn!(%dest, error = %e, "opaque TCP: cannot reach peer sidecar");
        }
    }
}

/// True when the client's first bytes look like HTTP/1 or the HTTP/2 preface.
/// Server-first protocols send nothing: after `wait` they count as opaque TCP.
async fn detect_http(stream: &TcpStream, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; 16];
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => return false,
        };
        match looks_like_http(&buf[..n]) {
            Some(answer) => return answer,
            None if n == buf.len() => return false,
            // Not enough bytes yet to tell; wait a little for more.
            None => {
                if tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_millis(2))).await.is_err() {
                    return false;
                }
            }
        }
    }
}

/// `Some(true)` for HTTP, `Some(false)` for not HTTP, `None` for "need more bytes".
fn looks_like_http(b: &[u8]) -> Option<bool> {
    if b.is_empty() {
        return None;
    }
    const PREFACE: &[u8] = b"PRI * HTTP/2.0";
    let n = b.len().min(PREFACE.len());
    if b[..n] == PREFACE[..n] {
        return if n == PREFACE.len() { Some(true) } else { None };
    }
    // An HTTP/1 request line starts with an upper-case token and a space.
    match b.iter().position(|&c| c == b' ') {
        Some(0) => Some(false),
        Some(i) => Some(i <= 12 && b[..i].iter().all(u8::is_ascii_uppercase)),
        None => {
            if b.iter().all(u8::is_ascii_uppercase) {
                None
            } else {
                Some(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::looks_like_http;

    #[test]
    fn detects_http_and_not_http() {
        assert_eq!(looks_like_http(b"GET / HTTP/1.1\r\n"), Some(true));
        assert_eq!(looks_like_http(b"POST /v2"), Some(true));
        assert_eq!(looks_like_http(b"PRI * HTTP/2.0\r\n\r\n"), Some(true));
        assert_eq!(looks_like_http(b"PRI"), None);
        assert_eq!(looks_like_http(b"GE"), None);
        assert_eq!(looks_like_http(b"\x16\x03\x01\x02"), Some(false));
        assert_eq!(looks_like_http(b"*1\r\n$4\r\nPING"), Some(false));
        assert_eq!(looks_like_http(b"SSH-2.0-OpenSSH"), Some(false));
    }
}
