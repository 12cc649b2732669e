//! The inbound listener: mutual TLS (or plaintext on permissive ports) from
//! peers, the peer's SPIFFE ID, then HTTP or opaque TCP to the local app.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::orig_dst::original_dst;
use crate::config::{Inbound, MtlsMode};
use crate::http::server::{self, HttpVersions};
use crate::metrics::{ReasonLabels, INBOUND};
use crate::pipeline::{self, InboundConn, Shared};
use crate::tls::{self, SpiffeId};

/// Runs the inbound accept loop until `shutdown`.
pub async fn run(
    listener: TcpListener,
    cfg: Arc<Inbound>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let metrics = shared.metrics.clone();
    let max = shared.limits.max_connections;
    let sd = shutdown.clone();
    super::accept_loop(listener, INBOUND, max, metrics, shutdown, tracker, move |stream, peer| {
        handle(stream, peer, cfg.clone(), shared.clone(), sd.clone())
    })
    .await;
}

fn refuse(shared: &Shared, reason: &'static str, peer: SocketAddr) {
    shared.metrics.connections_refused.get_or_create(&ReasonLabels { direction: INBOUND, reason }).inc();
    tracing::info!(%peer, reason, "inbound connection refused");
}

async fn handle(
    stream: TcpStream,
    client: SocketAddr,
    cfg: Arc<Inbound>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    // Where the app is: the original destination port when redirected.
    let app = match (cfg.transparent, original_dst(&stream)) {
        (true, Ok(Some(orig))) => SocketAddr::new(cfg.app_host, orig.port()),
        (_, Err(e)) if cfg.transparent => {
            tracing::warn!(error = %e, "cannot read original destination");
            return refuse(&shared, "no_original_destination", client);
        }
        _ => match cfg.app {
            Some(app) => app,
            None => return refuse(&shared, "no_original_destination", client),
        },
    };
    let mode = cfg.mode_for(app.port());

    // TLS records start with 0x16 (handshake); anything else is plaintext.
    let mut first = [0u8; 1];
    let is_tls = match tokio::time::timeout(shared.limits.header_read_timeout, stream.peek(&mut first)).await {
        Ok(Ok(1)) => first[0] == 0x16,
        Ok(_) => return, // closed before sending anything
        Err(_) => return refuse(&shared, "first_byte_timeout", client),
    };

    if !is_tls {
        if mode == MtlsMode::Strict {
            shared
                .metrics
                .tls_handshake_failures
                .get_or_create(&ReasonLabels { direction: INBOUND, reason: "plaintext" })
                .inc();
            return refuse(&shared, "plaintext_on_strict_port", client);
        }
        let conn = Arc::new(InboundConn { peer_identity: None, client_addr: client, app });
        return serve_http(stream, HttpVersions::Auto, conn, cfg, shared, shutdown).await;
    }

    let Some(loaded) = shared.store.current() else {
        return refuse(&shared, "no_certificate_loaded", client);
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(loaded.server.clone());
    let tls = match tokio::time::timeout(shared.limits.header_read_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let reason = tls::handshake_failure_reason(&e);
            shared.metrics.tls_handshake_failures.get_or_create(&ReasonLabels { direction: INBOUND, reason }).inc();
            tracing::info!(%client, reason, error = %e, "inbound TLS handshake failed");
            return;
        }
        Err(_) => {
            shared
                .metrics
                .tls_handshake_failures
                .get_or_create(&ReasonLabels { direction: INBOUND, reason: "timeout" })
                .inc();
            return;
        }
    };
    let (_, session) = tls.get_ref();
    let identity = match session.peer_certificates().and_then(|c| c.first()).map(|c| SpiffeId::from_cert_der(c)) {
        Some(Ok(id)) => id,
        Some(Err(e)) => {
            shared
                .metrics
                .tls_handshake_failures
                .get_or_create(&ReasonLabels { direction: INBOUND, reason: "no_spiffe_id" })
                .inc();
            tracing::info!(%client, error = %e, "peer certificate has no usable SPIFFE ID");
            return;
        }
        None => {
            shared
                .metrics
                .tls_handshake_failures
                .get_or_create(&ReasonLabels { direction: INBOUND, reason: "no_client_certificate" })
                .inc();
            return;
        }
    };
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    if alpn.as_deref() == Some(tls::ALPN_OPAQUE_TCP) {
        let upstream = match tokio::time::timeout(shared.limits.connect_timeout, TcpStream::connect(app)).await {
            Ok(Ok(s)) => s,
            _ => {
                tracing::warn!(%app, peer = %identity, "opaque TCP: app unreachable");
                return;
            }
        };
        tracing::info!(target: "meshward::access", direction = INBOUND, protocol = "tcp", peer_identity = %identity, client = %client, upstream = %app);
        return super::tcp::splice(tls, upstream, "inbound").await;
    }
    let versions = if alpn.as_deref() == Some(tls::ALPN_H2) { HttpVersions::Http2 } else { HttpVersions::Http1 };
    let conn = Arc::new(InboundConn { peer_identity: Some(identity), client_addr: client, app });
    serve_http(tls, versions, conn, cfg, shared, shutdown).await;
}

async fn serve_http<IO>(
    io: IO,
    versions: HttpVersions,
    conn: Arc<InboundConn>,
    cfg: Arc<Inbound>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let limits = shared.limits.clone();
    server::serve(io, versions, &limits, shutdown, move |req| {
        pipeline::inbound(req, conn.clone(), cfg.clone(), shared.clone())
    })
    .await;
}
