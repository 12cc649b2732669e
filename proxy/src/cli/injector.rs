//! `meshward injector`: the mutating admission webhook. HTTPS (rustls) on
//! `--listen`; `POST /inject` takes an `admission.k8s.io/v1` AdmissionReview
//! and answers with [`crate::k8s::admission::review`] (the same injection as
//! `meshward inject`); `GET /healthz` and `GET /metrics` for the kubelet and
//! Prometheus. The serving certificate and key are re-read when their
//! content changes (cert-manager rotates them in place), without dropping
//! open connections; a bad update keeps the last good pair.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use rustls::ServerConfig;
use sha2::{Digest as _, Sha256};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::inject::SettingsArgs;
use crate::k8s::admission::review;
use crate::k8s::inject::Settings;

/// The API server sends whole pods; 8 MiB is far above any real pod.
const MAX_BODY: usize = 8 << 20;
/// Time open connections get to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Time for a client to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Arguments of `meshward injector`.
#[derive(Debug, clap::Args)]
pub struct InjectorArgs {
    /// HTTPS listen address.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// PEM serving certificate chain (its SAN must be the webhook Service's DNS name).
    #[arg(long)]
    pub tls_cert: PathBuf,
    /// PEM private key of the serving certificate.
    #[arg(long)]
    pub tls_key: PathBuf,
    /// How often the certificate and key files are checked for changes.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub reload_interval: Duration,
    /// Injection settings (the same as `meshward inject`).
    #[command(flatten)]
    pub settings: SettingsArgs,
}

/// The webhook's metrics (`meshward_injector_*`).
struct Metrics {
    registry: Registry,
    reviews: Family<Vec<(String, String)>, Counter>,
    review_seconds: Histogram,
    reloads: Family<Vec<(String, String)>, Counter>,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("meshward_injector");
        let reviews = Family::default();
        let review_seconds = Histogram::new([0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1]);
        let reloads = Family::default();
        registry.register("reviews", "AdmissionReviews answered, by decision", reviews.clone());
        registry.register("review_duration_seconds", "Time to decide one review", review_seconds.clone());
        registry.register("certificate_reloads", "Serving certificate reloads by result", reloads.clone());
        Self { registry, reviews, review_seconds, reloads }
    }

    fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

struct State {
    settings: Settings,
    metrics: Metrics,
}

/// Runs the webhook until SIGTERM or SIGINT.
pub async fn run(args: InjectorArgs) -> anyhow::Result<()> {
    let settings = args.settings.settings()?;
    let (config, hash) = load_tls(&args.tls_cert, &args.tls_key)?;
    let tls = Arc::new(ArcSwap::from_pointee(config));
    let state = Arc::new(State { settings, metrics: Metrics::new() });
    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, image = %state.settings.image, "meshward injector serving");
    tokio::spawn(reload_loop(
        args.tls_cert.clone(),
        args.tls_key.clone(),
        args.reload_interval,
        hash,
        tls.clone(),
        state.clone(),
    ));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // On SIGTERM, open connections finish their request in flight and close
    // (the API server retries a review on a new connection, to another replica).
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        let acceptor = TlsAcceptor::from(tls.load_full());
        let state = state.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let service = hyper::service::service_fn(move |req| handle(req, state.clone()));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    tracing::info!(open = graceful.count(), "meshward injector stopping");
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
    }
    Ok(())
}

async fn handle(req: Request<Incoming>, state: Arc<State>) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, ctype: &str, body: Vec<u8>| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = http::HeaderValue::from_str(ctype) {
            r.headers_mut().insert(http::header::CONTENT_TYPE, v);
        }
        Ok(r)
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
        (&Method::GET, "/metrics") => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.encode().into_bytes(),
        ),
        (&Method::POST, "/inject") => {
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    state.metrics.reviews.get_or_create(&vec![("decision".into(), "malformed".into())]).inc();
                    return reply(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "text/plain",
                        format!("cannot read the review: {e}\n").into_bytes(),
                    );
                }
            };
            let started = Instant::now();
            let answer = review(&body, &state.settings);
            let elapsed = started.elapsed();
            state.metrics.review_seconds.observe(elapsed.as_secs_f64());
            state.metrics.reviews.get_or_create(&vec![("decision".into(), answer.decision.label().into())]).inc();
            tracing::info!(decision = answer.decision.label(), micros = elapsed.as_micros() as u64, "review");
            let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_REQUEST);
            reply(status, "application/json", answer.body)
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            b"not found (POST /inject, GET /healthz, GET /metrics)\n".to_vec(),
        ),
    }
}

/// Reads the pair, builds the TLS config; also returns the files' content hash.
fn load_tls(cert: &Path, key: &Path) -> anyhow::Result<(ServerConfig, [u8; 32])> {
    let cert_pem = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
    let key_pem = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
    let hash: [u8; 32] = Sha256::new().chain_update(&cert_pem).chain_update(&key_pem).finalize().into();
    let chain: Vec<_> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: invalid PEM", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{}: no CERTIFICATE found", cert.display());
    let key_der = rustls_pemfile::private_key(&mut &key_pem[..])
        .with_context(|| format!("{}: invalid PEM", key.display()))?
        .with_context(|| format!("{}: no PRIVATE KEY found", key.display()))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .with_context(|| format!("{} does not match {}", key.display(), cert.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((config, hash))
}

async fn reload_loop(
    cert: PathBuf,
    key: PathBuf,
    interval: Duration,
    mut hash: [u8; 32],
    tls: Arc<ArcSwap<ServerConfig>>,
    state: Arc<State>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (c, k) = (cert.clone(), key.clone());
        let loaded = tokio::task::spawn_blocking(move || load_tls(&c, &k)).await;
        let result = match loaded {
            Ok(Ok((config, new_hash))) if new_hash != hash => {
                hash = new_hash;
                tls.store(Arc::new(config));
                tracing::info!(cert = %cert.display(), "serving certificate reloaded");
                "success"
            }
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => {
                tracing::warn!(error = %format!("{e:#}"), "serving certificate not reloaded; keeping the last good one");
                "failure"
            }
            Err(e) => {
                tracing::warn!(error = %e, "certificate reload task failed");
                "failure"
            }
        };
        state.metrics.reloads.get_or_create(&vec![("result".into(), result.into())]).inc();
    }
}
