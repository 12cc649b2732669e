//! `meshward run`: bind every listener, then serve until SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState};
use crate::config::{Config, IdentityFiles};
use crate::http::forward::{AppClients, PeerClients};
use crate::listen;
use crate::metrics::{Metrics, ResultLabel};
use crate::pipeline::Shared;
use crate::policy_store::PolicyStore;
use crate::tls::CertStore;

/// A proxy whose listeners are bound (so their addresses are known) but not yet serving.
pub struct Proxy {
    config: Config,
    shared: Arc<Shared>,
    admin: Arc<AdminState>,
    admin_listener: TcpListener,
    inbound: Option<TcpListener>,
    outbound: Vec<TcpListener>,
}

/// The bound addresses.
#[derive(Debug, Clone)]
pub struct Addresses {
    /// Admin server.
    pub admin: SocketAddr,
    /// Inbound listener.
    pub inbound: Option<SocketAddr>,
    /// Outbound listeners, by name.
    pub outbound: Vec<(String, SocketAddr)>,
}

impl Proxy {
    /// Loads certificates (a failure is logged, not fatal: the proxy starts
    /// not ready and refuses TLS until they load) and binds every listener.
    pub async fn bind(config: Config, policies: Arc<PolicyStore>) -> anyhow::Result<Self> {
        let metrics = Metrics::new();
        let store = Arc::new(CertStore::default());
        if let Some(files) = &config.identity {
            reload_once(&store, files, &metrics, true);
        }
        let jwks = crate::jwks::Jwks::new(metrics.clone())?;
        jwks.sync(&policies.current().jwt_rules());
        let detector = start_detector(&config, &policies, &metrics)?;
        let shared = Arc::new(Shared {
            limits: config.limits.clone(),
            metrics: metrics.clone(),
            store: store.clone(),
            apps: AppClients::new(config.limits.connect_timeout),
            peers: PeerClients::new(store.clone(), config.limits.connect_timeout),
            policies: policies.clone(),
            limiters: Default::default(),
            jwks: jwks.clone(),
            detector: detector.clone(),
            alerts: match &config.alerts {
                Some(a) => crate::alerts::Alerts::start(a.clone(), metrics.alerts.clone()),
                None => crate::alerts::Alerts::disabled(),
            },
            workload: workload_name(&config),
        });
        let bind = |addr: SocketAddr, what: String| async move {
            TcpListener::bind(addr).await.with_context(|| format!("cannot bind {what} on {addr}"))
        };
        let admin_listener = bind(config.admin_listen, "admin".into()).await?;
        let inbound = match &config.inbound {
            Some(i) => Some(bind(i.listen, "inbound".into()).await?),
            None => None,
        };
        let mut outbound = Vec::new();
        for o in &config.outbound {
            outbound.push(bind(o.listen, format!("outbound listener '{}'", o.name)).await?);
        }
        let admin = Arc::new(AdminState {
            metrics,
            store: config.identity.as_ref().map(|_| store),
            policies,
            jwks,
            detector,
            alerts: shared.alerts.clone(),
            accepting: true.into(),
        });
        Ok(Self { config, shared, admin, admin_listener, inbound, outbound })
    }

    /// The shared request state (for tests and the demo).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn addresses(&self) -> Addresses {
        let addr = |l: &TcpListener| l.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        Addresses {
            admin: addr(&self.admin_listener),
            inbound: self.inbound.as_ref().map(addr),
            outbound: self.config.outbound.iter().zip(&self.outbound).map(|(o, l)| (o.name.clone(), addr(l))).collect(),
        }
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight requests
    /// finish for up to the grace period. Returns true if everything drained.
    pub async fn serve(self, shutdown: CancellationToken) -> bool {
        let tracker = TaskTracker::new();
        let conn_shutdown = CancellationToken::new();
        let admin_stop = CancellationToken::new();
        tokio::spawn(admin::serve(self.admin_listener, self.admin.clone(), admin_stop.clone()));
        if let Some(files) = self.config.identity.clone() {
            let (store, metrics) = (self.shared.store.clone(), self.shared.metrics.clone());
            let stop = conn_shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(files.reload_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => {
                            // File reads stay off the (single) request thread.
                            let (store, files, metrics) = (store.clone(), files.clone(), metrics.clone());
                            let _ = tokio::task::spawn_blocking(move || reload_once(&store, &files, &metrics, false)).await;
                        }
                    }
                }
            });
        }
        if !self.config.policy_paths.is_empty() {
            let (policies, metrics, jwks) =
                (self.shared.policies.clone(), self.shared.metrics.clone(), self.shared.jwks.clone());
            let (every, stop) = (self.config.policy_reload_interval, conn_shutdown.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut last_error = String::new();
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    let p = policies.clone();
                    let Ok(result) = tokio::task::spawn_blocking(move || p.reload()).await else { continue };
                    match result {
                        Ok(false) => {}
                        Ok(true) => {
                            last_error.clear();
                            metrics.policy_reloads.get_or_create(&ResultLabel { result: "success" }).inc();
                            let set = policies.current();
                            jwks.sync(&set.jwt_rules());
                            tracing::info!(
                                authorization = set.policies.len(),
                                rate_limits = set.rate_limits.len(),
                                authentication = set.authentication.len(),
                                hash = %set.hash,
                                "policy set reloaded"
                            );
                        }
                        Err(e) => {
                            metrics.policy_reloads.get_or_create(&ResultLabel { result: "failure" }).inc();
                            let msg = e.to_string();
                            if msg != last_error {
                                tracing::error!(error = %msg, "policy reload refused; keeping the last good policy set");
                                last_error = msg;
                            }
                        }
                    }
                }
            });
        }
        let mut loops = Vec::new();
        if let (Some(l), Some(cfg)) = (self.inbound, self.config.inbound.clone()) {
            tracing::info!(listen = %cfg.listen, transparent = cfg.transparent, mode = ?cfg.mode, "inbound listening");
            loops.push(tokio::spawn(listen::inbound::run(
                l,
                Arc::new(cfg),
                self.shared.clone(),
                conn_shutdown.clone(),
                tracker.clone(),
            )));
        }
        for (l, cfg) in self.outbound.into_iter().zip(self.config.outbound.iter().cloned()) {
            tracing::info!(name = %cfg.name, listen = %cfg.listen, target = ?cfg.target, "outbound listening");
            loops.push(tokio::spawn(listen::outbound::run(
                l,
                Arc::new(cfg),
                self.shared.clone(),
                conn_shutdown.clone(),
                tracker.clone(),
            )));
        }

        shutdown.cancelled().await;
        tracing::info!(grace_period = ?self.config.grace_period, "shutting down: no new connections, draining in-flight requests");
        self.admin.accepting.store(false, Ordering::Relaxed);
        conn_shutdown.cancel(); // accept loops stop, connections drain
        for l in loops {
            let _ = l.await;
        }
        tracker.close();
        let drained = tokio::time::timeout(self.config.grace_period, tracker.wait()).await.is_ok();
        if drained {
            tracing::info!("all connections drained");
        } else {
            tracing::warn!(open = tracker.len(), "grace period over; closing remaining connections");
        }
        admin_stop.cancel();
        drained
    }
}

fn reload_once(store: &CertStore, files: &IdentityFiles, metrics: &Metrics, first: bool) {
    match store.reload(files) {
        Ok(true) => {
            metrics.cert_reloads.get_or_create(&ResultLabel { result: "success" }).inc();
            if let Some(l) = store.current() {
                tracing::info!(identity = %l.identity, not_after = ?l.not_after, "workload certificate loaded");
            }
        }
        Ok(false) => {}
        Err(e) => {
            metrics.cert_reloads.get_or_create(&ResultLabel { result: "failure" }).inc();
            if first || store.current().is_some() {
                tracing::error!(error = %e, "cannot load workload certificate; {}", if store.current().is_some() {
                    "keeping the previous one"
                } else {
                    "not ready and refusing TLS until it loads"
                });
            } else {
                tracing::debug!(error = %e, "workload certificate still not loadable");
            }
        }
    }
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn termination_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `meshward run`: serve until a termination signal.
pub async fn run(config: Config, policies: PolicyStore) -> anyhow::Result<()> {
    let set = policies.current();
    tracing::info!(
        authorization = set.policies.len(),
        rate_limits = set.rate_limits.len(),
        authentication = set.authentication.len(),
        not_attached = set.not_attached.len(),
        files = set.files.len(),
        "policy set loaded"
    );
    let proxy = Proxy::bind(config, Arc::new(policies)).await?;
    let addrs = proxy.addresses();
    tracing::info!(admin = %addrs.admin, inbound = ?addrs.inbound, outbound = ?addrs.outbound, "meshward started");
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        termination_signal().await;
        trigger.cancel();
    });
    proxy.serve(shutdown).await;
    Ok(())
}

/// The detector of the inbound side, when it is enabled. The false-positive
/// budget and warm-up of the attached anomaly policies (the smallest, if
/// several set one) replace the detector's own; they are read at start.
fn start_detector(
    config: &Config,
    policies: &PolicyStore,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Option<Arc<crate::detect::Detector>>> {
    if config.inbound.is_none() || !config.detector.enabled {
        return Ok(None);
    }
    let mut cfg = config.detector.clone();
    let set = policies.current();
    if let Some(budget) = set.anomaly.iter().filter_map(|p| p.fp_budget).reduce(f64::min) {
        cfg.model.fp_budget = budget;
        cfg.model.suspicious_budget = cfg.model.suspicious_budget.max(budget);
    }
    if let Some(warmup) = set.anomaly.iter().filter_map(|p| p.warmup_samples).min() {
        cfg.model.warmup_samples = warmup;
    }
    Ok(Some(Arc::new(crate::detect::Detector::start(cfg, metrics.clone())?)))
}

/// How alerts name this workload: `namespace/app` (or `namespace/name`)
/// from the `workload:` section, else the inbound app address.
fn workload_name(config: &Config) -> String {
    let w = config.workload.as_ref();
    let ns = w.and_then(|w| w.namespace.clone());
    let app = w.and_then(|w| ["app.kubernetes.io/name", "app", "name"].iter().find_map(|k| w.labels.get(*k).cloned()));
    match (ns, app) {
        (Some(ns), Some(app)) => format!("{ns}/{app}"),
        (None, Some(app)) => app,
        (Some(ns), None) => ns,
        (None, None) => {
            config.inbound.as_ref().and_then(|i| i.app).map_or_else(|| "meshward".to_owned(), |a| a.to_string())
        }
    }
}
