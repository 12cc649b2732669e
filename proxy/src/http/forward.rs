//! Upstream clients: plaintext to the local app, mutual TLS to peer sidecars.
//!
//! Each client is bound to one upstream address (the connector ignores the
//! request URI), so requests keep their original `Host`/`:authority` while
//! connections go where the route says. hyper-util's pool reuses
//! connections; between sidecars HTTP/2 is used whenever the peer offers it
//! in ALPN, multiplexing all requests on one connection.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::body::ProxyBody;
use super::error::ProxyError;
use crate::tls::{CertStore, SpiffeId};

/// Why a connection to an upstream could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect (plus handshake) took too long.
    #[error("timed out")]
    Timeout,
    /// TCP or TLS failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// No certificate is loaded yet.
    #[error("no workload certificate loaded")]
    NoCertificate,
    /// The peer's SPIFFE ID is not the expected one.
    #[error("peer identity {got} is not the expected {expected}")]
    Identity {
        /// Presented.
        got: String,
        /// Expected.
        expected: String,
    },
}

/// Opens TCP connections to one address, with a timeout.
async fn tcp(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr)).await.map_err(|_| ConnectError::Timeout)??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Opens a mutual-TLS connection to a peer sidecar and checks its identity
/// before returning, so no byte is sent to an unexpected peer.
pub async fn connect_mtls(
    store: &CertStore,
    addr: SocketAddr,
    expected: Option<&SpiffeId>,
    opaque: bool,
    timeout: Duration,
) -> Result<(TlsStream<TcpStream>, SpiffeId), ConnectError> {
    let loaded = store.current().ok_or(ConnectError::NoCertificate)?;
    let config = if opaque { loaded.client_tcp.clone() } else { loaded.client_http.clone() };
    let connector = tokio_rustls::TlsConnector::from(config);
    let fut = async {
        let stream = tcp(addr, timeout).await?;
        // SPIFFE peers are verified by URI SAN, not by name (see tls::verifier);
        // the IP only fills the required field and is not sent as SNI.
        let name = ServerName::IpAddress(addr.ip().into());
        Ok::<_, ConnectError>(connector.connect(name, stream).await?)
    };
    let tls = tokio::time::timeout(timeout, fut).await.map_err(|_| ConnectError::Timeout)??;
    let (_, conn) = tls.get_ref();
    let peer = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| ConnectError::Io(std::io::Error::other("peer sent no certificate")))?;
    let got = SpiffeId::from_cert_der(peer).map_err(|e| ConnectError::Io(std::io::Error::other(e)))?;
    if let Some(want) = expected {
        if &got != want {
            return Err(ConnectError::Identity { got: got.to_string(), expected: want.to_string() });
        }
    }
    Ok((tls, got))
}

/// A TLS connection as hyper-util's pool sees it: h2 when ALPN said so.
pub struct MtlsConn(TlsStream<TcpStream>);

impl Connection for MtlsConn {
    fn connected(&self) -> Connected {
        let (_, conn) = self.0.get_ref();
        if conn.alpn_protocol() == Some(crate::tls::ALPN_H2) {
            Connected::new().negotiated_h2()
        } else {
            Connected::new()
        }
    }
}

impl AsyncRead for MtlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for MtlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Connector bound to one plaintext address (the local app).
#[derive(Clone)]
pub struct PlainConnector {
    addr: SocketAddr,
    timeout: Duration,
}

impl tower_service::Service<Uri> for PlainConnector {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectError;
    type Future = BoxFuture<Result<Self::Response, ConnectError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let (addr, timeout) = (self.addr, self.timeout);
        Box::pin(async move { Ok(TokioIo::new(tcp(addr, timeout).await?)) })
    }
}

/// Connector bound to one peer sidecar, with mutual TLS and an identity check.
#[derive(Clone)]
pub struct MtlsConnector {
    store: Arc<CertStore>,
    addr: SocketAddr,
    expected: Option<SpiffeId>,
    timeout: Duration,
}

impl tower_service::Service<Uri> for MtlsConnector {
    type Response = TokioIo<MtlsConn>;
    type Error = ConnectError;
    type Future = BoxFuture<Result<Self::Response, ConnectError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (tls, _) = connect_mtls(&this.store, this.addr, this.expected.as_ref(), false, this.timeout).await?;
            Ok(TokioIo::new(MtlsConn(tls)))
        })
    }
}

/// Which HTTP version to speak to the local app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppProtocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 with prior knowledge (gRPC apps).
    Http2,
}

/// At most this many upstream clients are kept (transparent mode can see many destinations).
const MAX_CLIENTS: usize = 1024;

/// A bounded map from upstream key to its pooled client. When full, it is
/// cleared: pools then refill on demand, which costs a handshake per upstream.
struct ClientCache<K, C> {
    map: Mutex<HashMap<K, Client<C, ProxyBody>>>,
}

impl<K: std::hash::Hash + Eq, C: Clone> ClientCache<K, C> {
    fn new() -> Self {
        Self { map: Mutex::new(HashMap::new()) }
    }

    fn get(&self, key: K, make: impl FnOnce() -> Client<C, ProxyBody>) -> Client<C, ProxyBody> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_CLIENTS && !map.contains_key(&key) {
            map.clear();
        }
        map.entry(key).or_insert_with(make).clone()
    }
}

/// Clients to the local app, one per (address, protocol).
#[derive(Clone)]
pub struct AppClients {
    timeout: Duration,
    clients: Arc<ClientCache<(SocketAddr, AppProtocol), PlainConnector>>,
}

impl AppClients {
    /// Clients that connect within `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        Self { timeout: connect_timeout, clients: Arc::new(ClientCache::new()) }
    }

    fn client(&self, addr: SocketAddr, proto: AppProtocol) -> Client<PlainConnector, ProxyBody> {
        self.clients.get((addr, proto), || {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_timer(TokioTimer::new()).pool_idle_timeout(Duration::from_secs(90));
            if proto == AppProtocol::Http2 {
                b.http2_only(true).timer(TokioTimer::new());
            }
            b.build(PlainConnector { addr, timeout: self.timeout })
        })
    }

    /// Sends `req` to the app at `addr`.
    pub async fn send(
        &self,
        addr: SocketAddr,
        proto: AppProtocol,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, ProxyError> {
        *req.version_mut() = match proto {
            AppProtocol::Http1 => Version::HTTP_11,
            AppProtocol::Http2 => Version::HTTP_2,
        };
        let client = self.client(addr, proto);
        client.request(req).await.map_err(|e| map_client_error(addr, &e))
    }
}

/// Clients to peer sidecars, one per (address, expected identity).
#[derive(Clone)]
pub struct PeerClients {
    store: Arc<CertStore>,
    timeout: Duration,
    clients: Arc<ClientCache<(SocketAddr, Option<SpiffeId>), MtlsConnector>>,
}

impl PeerClients {
    /// Clients using the certificates in `store`.
    pub fn new(store: Arc<CertStore>, connect_timeout: Duration) -> Self {
        Self { store, timeout: connect_timeout, clients: Arc::new(ClientCache::new()) }
    }

    /// Sends `req` over mTLS to the sidecar at `addr`.
    pub async fn send(
        &self,
        addr: SocketAddr,
        expected: Option<&SpiffeId>,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let client = self.clients.get((addr, expected.cloned()), || {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .http2_keep_alive_interval(Duration::from_secs(30))
                .http2_adaptive_window(true);
            let (store, expected, timeout) = (self.store.clone(), expected.cloned(), self.timeout);
            b.build(MtlsConnector { store, addr, expected, timeout })
        });
        // The pool picks HTTP/2 when ALPN negotiated it, whatever this says.
        *req.version_mut() = Version::HTTP_11;
        client.request(req).await.map_err(|e| map_client_error(addr, &e))
    }
}

/// Maps a hyper-util client error to the data-plane error.
fn map_client_error(addr: SocketAddr, e: &hyper_util::client::legacy::Error) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if s.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
            return ProxyError::BodyTooLarge;
        }
        if let Some(c) = s.downcast_ref::<ConnectError>() {
            return match c {
                ConnectError::Timeout => ProxyError::UpstreamConnectTimeout(addr.to_string()),
                ConnectError::NoCertificate => ProxyError::Unavailable("no workload certificate"),
                ConnectError::Identity { got, expected } => {
                    ProxyError::UpstreamIdentity { got: got.clone(), expected: expected.clone() }
                }
                ConnectError::Io(io) => ProxyError::UpstreamConnect { addr: addr.to_string(), cause: io.to_string() },
            };
        }
        source = s.source();
    }
    ProxyError::Upstream(error_chain(e))
}

/// `a: b: c` for an error and its sources.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}
