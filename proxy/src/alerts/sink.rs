//! Delivery to one sink: a task reading that sink's bounded queue and
//! POSTing each notification in order, with retries.
//!
//! An attempt that ends in a connect error, a timeout, a 5xx or a 429 is
//! retried after a jittered exponential delay (or the `Retry-After` the
//! receiver sent, capped at `max_backoff`) until `max_attempts` are spent;
//! then the notification is dropped and counted. Other statuses (4xx, 3xx)
//! are final: the receiver refused it and retrying would not change that.
//! The `webhook-id` is the same for every attempt; `webhook-timestamp` and
//! the signature are made afresh per attempt so they pass the receiver's
//! timestamp window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use rand::Rng;
use tokio::sync::mpsc;

use super::config::{AlertsConfig, Format, SinkConfig};
use super::group::Notification;
use super::metrics::AlertMetrics;
use super::{payload, sign, unix_secs};

/// The shared HTTP(S) client of every sink.
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Response body bytes read (and discarded) so the connection can be reused.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Slack accepts about one message per second per webhook.
const SLACK_INTERVAL: Duration = Duration::from_secs(1);

/// An HTTP/1.1 client for `http://` and `https://` sinks; HTTPS trusts
/// `roots` if given, else the Mozilla root store (webpki-roots), with the
/// ring provider, like JWKS fetches.
pub fn client(
    connect_timeout: Duration,
    roots: Option<Arc<rustls::RootCertStore>>,
) -> Result<HttpClient, std::io::Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls_error = |e: rustls::Error| std::io::Error::other(format!("tls setup for alert webhooks: {e}"));
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match roots {
        None => builder.with_provider_and_webpki_roots(provider).map_err(tls_error)?,
        Some(roots) => builder.with_tls_config(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(tls_error)?
                .with_root_certificates(roots)
                .with_no_client_auth(),
        ),
    };
    let https = builder.https_or_http().enable_http1().wrap_connector(http);
    Ok(Client::builder(hyper_util::rt::TokioExecutor::new()).build(https))
}

/// Per-sink counts for the admin view.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Notifications delivered (2xx).
    pub ok: AtomicU64,
    /// Attempts that failed and were retried.
    pub retries: AtomicU64,
    /// Notifications given up (attempts exhausted or refused).
    pub failed: AtomicU64,
    /// Notifications dropped because the sink's queue was full.
    pub dropped: AtomicU64,
    /// Notifications queued or being delivered.
    pub pending: AtomicU64,
    /// Why the last attempt failed, if the last attempt failed.
    pub last_error: Mutex<Option<String>>,
}

impl SinkStats {
    /// JSON for the admin view.
    pub fn view(&self, format: &str) -> serde_json::Value {
        let last_error = self.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone();
        serde_json::json!({
            "format": format,
            "delivered": self.ok.load(Ordering::Relaxed),
            "retries": self.retries.load(Ordering::Relaxed),
            "failed": self.failed.load(Ordering::Relaxed),
            "dropped": self.dropped.load(Ordering::Relaxed),
            "pending": self.pending.load(Ordering::Relaxed),
            "last_error": last_error,
        })
    }

    fn set_error(&self, e: Option<String>) {
        *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = e;
    }
}

/// How one attempt ended.
#[derive(Debug)]
enum Outcome {
    Ok,
    /// Worth retrying; `Some` when the receiver said how long to wait.
    Retry(String, Option<Duration>),
    /// Final refusal.
    Rejected(String),
}

/// The delivery task of one sink.
#[derive(Debug)]
pub struct Sink {
    cfg: SinkConfig,
    alerts: Arc<AlertsConfig>,
    client: HttpClient,
    metrics: AlertMetrics,
    stats: Arc<SinkStats>,
}

impl Sink {
    /// A task for `cfg`, not started.
    pub fn new(
        cfg: SinkConfig,
        alerts: Arc<AlertsConfig>,
        client: HttpClient,
        metrics: AlertMetrics,
        stats: Arc<SinkStats>,
    ) -> Self {
        Self { cfg, alerts, client, metrics, stats }
    }

    /// Delivers queued notifications one after the other until the queue
    /// closes and is empty.
    pub async fn run(self, mut rx: mpsc::Receiver<Arc<Notification>>) {
        let mut last_send: Option<Instant> = None;
        while let Some(note) = rx.recv().await {
            if self.cfg.format == Format::Slack {
                if let Some(t) = last_send {
                    tokio::time::sleep_until((t + SLACK_INTERVAL).into()).await;
                }
            }
            self.deliver(&note).await;
            self.stats.pending.fetch_sub(1, Ordering::Relaxed);
            last_send = Some(Instant::now());
        }
    }

    async fn deliver(&self, note: &Notification) {
        let name = self.cfg.name.as_str();
        let body = Bytes::from(payload::render(note, self.cfg.format, name, &self.alerts));
        let max = self.alerts.max_attempts;
        for attempt in 1..=max {
            match self.attempt(&note.id, body.clone()).await {
                Outcome::Ok => {
                    self.metrics.delivery(name, "ok");
                    self.stats.ok.fetch_add(1, Ordering::Relaxed);
                    self.stats.set_error(None);
                    return;
                }
                Outcome::Rejected(why) => {
                    self.metrics.delivery(name, "failed");
                    self.metrics.drop(name, "rejected");
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(sink = name, id = %note.id, error = %why, "alert refused by the receiver; dropped");
                    self.stats.set_error(Some(why));
                    return;
                }
                Outcome::Retry(why, retry_after) => {
                    if attempt == max {
                        self.metrics.delivery(name, "failed");
                        self.metrics.drop(name, "attempts_exhausted");
                        self.stats.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(sink = name, id = %note.id, attempts = max, error = %why, "alert not delivered; dropped");
                        self.stats.set_error(Some(why));
                        return;
                    }
                    self.metrics.delivery(name, "retry");
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    let wait = match retry_after {
                        Some(r) => r.min(self.alerts.max_backoff),
                        None => backoff(attempt, self.alerts.backoff, self.alerts.max_backoff),
                    };
                    tracing::debug!(sink = name, id = %note.id, attempt, error = %why, wait_ms = wait.as_millis() as u64, "alert delivery failed; retrying");
                    self.stats.set_error(Some(why));
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn attempt(&self, id: &str, body: Bytes) -> Outcome {
        let now = unix_secs(SystemTime::now());
        let mut req = http::Request::post(self.cfg.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, concat!("meshward/", env!("CARGO_PKG_VERSION")))
            .header("webhook-id", id)
            .header("webhook-timestamp", now);
        if let Some(secret) = &self.cfg.secret {
            req = req.header("webhook-signature", sign::sign(secret, id, now, &body));
        }
        let req = match req.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => return Outcome::Rejected(format!("request not built: {e}")),
        };
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| error_chain(&e))?;
            let status = resp.status();
            let retry_after = resp.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(retry_after);
            // Read the (small) answer so the connection goes back to the pool.
            let _ = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES).collect().await;
            Ok::<_, String>((status, retry_after))
        };
        match tokio::time::timeout(self.alerts.timeout, exchange).await {
            Err(_) => Outcome::Retry(format!("no answer within {:?}", self.alerts.timeout), None),
            Ok(Err(e)) => Outcome::Retry(e, None),
            Ok(Ok((status, _))) if status.is_success() => Outcome::Ok,
            Ok(Ok((status, ra))) if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS => {
                Outcome::Retry(format!("HTTP status {status}"), ra)
            }
            Ok(Ok((status, _))) => Outcome::Rejected(format!("HTTP status {status}")),
        }
    }
}

/// Delay before attempt `attempt + 1`: `base * 2^(attempt-1)` capped at
/// `max`, then a uniformly random point in its upper half (so clients that
/// failed together do not retry together).
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20)).min(max);
    let half = exp / 2;
    half + rand::thread_rng().gen_range(Duration::ZERO..=half)
}

/// `Retry-After` as delay-seconds or an HTTP date.
pub fn retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// An error and its causes on one line (hyper-util's top error says little).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
