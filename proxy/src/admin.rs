//! The admin server (default 127.0.0.1:15000): `/live`, `/ready`,
//! `/metrics` and read-only JSON views. It never changes state on GET.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::http::body::{ProxyBody, ProxyBodyExt};
use crate::metrics::Metrics;
use crate::policy_store::PolicyStore;
use crate::tls::CertStore;

/// What the admin server reports on.
pub struct AdminState {
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Certificates; `None` when no listener needs them.
    pub store: Option<Arc<CertStore>>,
    /// Authorization policies.
    pub policies: Arc<PolicyStore>,
    /// JWT key sets (not ready until each has loaded once).
    pub jwks: Arc<crate::jwks::Jwks>,
    /// The anomaly detector, when enabled.
    pub detector: Option<Arc<crate::detect::Detector>>,
    /// Alert webhooks.
    pub alerts: crate::alerts::Alerts,
    /// False once shutdown began (so load balancers stop sending).
    pub accepting: AtomicBool,
}

impl AdminState {
    /// Why the proxy is not ready, or `None` when it is.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        if !self.accepting.load(Ordering::Relaxed) {
            return Some("shutting down");
        }
        if let Some(store) = &self.store {
            match store.current() {
                None => return Some("workload certificate not loaded"),
                Some(l) if !l.is_valid_at(SystemTime::now()) => {
                    return Some("workload certificate expired or not yet valid")
                }
                Some(_) => {}
            }
        }
        if !self.jwks.ready() {
            return Some("JWT keys (jwksUri/jwksFile) not loaded yet");
        }
        None
    }

    fn refresh_cert_gauges(&self) {
        let Some(store) = &self.store else { return };
        match store.current() {
            Some(l) => {
                let secs = l.not_after.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
                self.metrics.cert_expiry.set(secs);
                self.metrics.cert_valid.set(i64::from(l.is_valid_at(SystemTime::now())));
            }
            None => {
                self.metrics.cert_valid.set(0);
            }
        }
    }
}

/// Serves the admin endpoints until `shutdown`.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, shutdown: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => match a { Ok(x) => x, Err(_) => continue },
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, state.clone()));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    r
}

async fn handle(req: Request<Incoming>, state: Arc<AdminState>) -> Result<Response<ProxyBody>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n".into()));
    }
    Ok(match req.uri().path() {
        "/live" => text(StatusCode::OK, "text/plain", "live\n".into()),
        "/ready" => match state.not_ready_reason() {
            None => text(StatusCode::OK, "text/plain", "ready\n".into()),
            Some(r) => text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("not ready: {r}\n")),
        },
        "/metrics" => {
            state.refresh_cert_gauges();
            if let Some(det) = &state.detector {
                det.refresh_gauges();
            }
            text(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", state.metrics.encode())
        }
        "/identity" => {
            let body = match state.store.as_ref().and_then(|s| s.current()) {
                Some(l) => serde_json::json!({
                    "spiffe_id": l.identity.as_str(),
                    "not_before": unix(l.not_before),
                    "not_after": unix(l.not_after),
                    "valid_now": l.is_valid_at(SystemTime::now()),
                }),
                None => serde_json::json!({ "spiffe_id": null, "valid_now": false }),
            };
            text(StatusCode::OK, "application/json", format!("{body}\n"))
        }
        "/policies" => {
            let set = state.policies.current();
            let policies: Vec<_> = set
                .policies
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "name": p.name,
                        "namespace": p.namespace,
                        "action": p.action.to_string(),
                        "dry_run": p.dry_run,
                        "rules": p.rules.len(),
                        "source": p.location.to_string(),
                    })
                })
                .collect();
            let files: Vec<_> = set.files.iter().map(|(f, h)| serde_json::json!({"path": f, "sha256": h})).collect();
            let rate_limits: Vec<_> = set
                .rate_limits
                .iter()
                .map(|p| serde_json::json!({"name": p.name, "dry_run": p.dry_run, "rules": p.rules.len()}))
                .collect();
            let authentication: Vec<_> = set
                .authentication
                .iter()
                .map(|p| {
                    let issuers: Vec<&str> = p.rules.iter().map(|r| r.issuer.as_str()).collect();
                    serde_json::json!({"name": p.name, "dry_run": p.dry_run, "require_token": p.require_token,
                        "issuers": issuers, "source": p.location.to_string()})
                })
                .collect();
            let anomaly: Vec<_> = set
                .anomaly
                .iter()
                .map(|p| {
                    serde_json::json!({"name": p.name, "dry_run": p.dry_run, "rules": p.rules.len(),
                        "warmup_samples": p.warmup_samples, "fp_budget": p.fp_budget,
                        "fail_mode": format!("{:?}", p.fail_mode).to_lowercase(), "source": p.location.to_string()})
                })
                .collect();
            let body = serde_json::json!({
                "policies": policies,
                "rate_limits": rate_limits,
                "authentication": authentication,
                "anomaly": anomaly,
                "not_attached": set.not_attached,
                "files": files,
                "hash": set.hash,
                "loaded_at": set.loaded_at.map(unix),
            });
            text(StatusCode::OK, "application/json", format!("{body}\n"))
        }
        "/alerts" => text(StatusCode::OK, "application/json", format!("{}\n", state.alerts.snapshot())),
        "/detector" | "/detector/clients" | "/detector/decisions" => match &state.detector {
            None => text(StatusCode::NOT_FOUND, "text/plain", "the detector is not enabled on this sidecar\n".into()),
            Some(det) => {
                let body = match req.uri().path() {
                    "/detector" => det.views.model_json(det.config().model.warmup_samples),
                    "/detector/clients" => det.views.clients_json(20),
                    _ => det.views.decisions_json(),
                };
                text(StatusCode::OK, "application/json", format!("{body}\n"))
            }
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found (try /live, /ready, /metrics, /identity, /policies, /alerts, /detector, /detector/clients, /detector/decisions)\n"
                .into(),
        ),
    })
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
