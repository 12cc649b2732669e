//! JWT key sets from `jwksUri` and `jwksFile`: fetched when a policy set
//! names them, refreshed on the rule's interval, refetched on an unknown
//! `kid` (at most once per `jwksMinRefetchInterval`), and handed to
//! `policies::jwt` as parsed [`KeySet`]s. The request path only reads the
//! cached set; it waits for a fetch only on an unknown `kid`, and then shares
//! one fetch with every other request that needs it.
//!
//! Fail closed: until a source has been loaded once its issuer's tokens are
//! refused (503, `jwt_keys_unavailable`) and the sidecar is not ready. A
//! failed refresh keeps the last good keys, logs and counts the failure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use meshward_policies::jwt::{JwtRule, KeySet, KeySource, Keys};

use crate::metrics::{JwksLabels, Metrics};

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// Time allowed for one fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Retry period while a source has never loaded.
const INITIAL_RETRY: Duration = Duration::from_secs(2);

type HttpsClient =
    Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Empty<Bytes>>;

/// Every key source the current policies name.
pub struct Jwks {
    client: HttpsClient,
    metrics: Arc<Metrics>,
    sources: Mutex<HashMap<String, Arc<Source>>>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks").finish_non_exhaustive()
    }
}

/// One URL or file.
struct Source {
    location: String,
    is_file: bool,
    issuer: String,
    refresh: Duration,
    min_refetch: Duration,
    keys: ArcSwapOption<KeySet>,
    /// When the last fetch finished; held across a fetch so that concurrent
    /// unknown-`kid` refetches wait for one fetch instead of starting many.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

impl Jwks {
    /// An empty cache; HTTPS fetches trust the Mozilla root store (webpki-roots).
    pub fn new(metrics: Arc<Metrics>) -> Result<Arc<Self>, std::io::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)
            .map_err(|e| std::io::Error::other(format!("tls setup for JWKS fetches: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
        Ok(Arc::new(Self { client, metrics, sources: Mutex::new(HashMap::new()) }))
    }

    /// Makes the cache follow a policy set: starts fetching new sources (each
    /// with its own refresh task) and forgets sources no policy names.
    pub fn sync(self: &Arc<Self>, rules: &[&JwtRule]) {
        let mut wanted = Vec::new();
        let mut started = Vec::new();
        {
            let mut sources = self.sources.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for rule in rules {
                let (location, is_file) = match &rule.keys {
                    KeySource::Inline(_) => continue,
                    KeySource::File(f) => (f.clone(), true),
                    KeySource::Uri(u) => (u.clone(), false),
                };
                wanted.push(location.clone());
                sources.entry(location.clone()).or_insert_with(|| {
                    let s = Arc::new(Source {
                        location,
                        is_file,
                        issuer: rule.issuer.clone(),
                        refresh: rule.refresh_interval,
                        min_refetch: rule.min_refetch_interval,
                        keys: ArcSwapOption::empty(),
                        last_fetch: tokio::sync::Mutex::new(None),
                    });
                    started.push(Arc::clone(&s));
                    s
                });
            }
            sources.retain(|k, _| wanted.contains(k));
        }
        for s in started {
            let this = Arc::downgrade(self);
            tokio::spawn(refresh_loop(this, Arc::downgrade(&s)));
        }
    }

    /// The keys of `rule` as cached now.
    pub fn keys(&self, rule: &JwtRule) -> Keys {
        match self.source(rule).and_then(|s| s.keys.load_full()) {
            Some(set) => Keys::Ready(set),
            None => Keys::Unavailable,
        }
    }

    /// Refetches `rule`'s keys after an unknown `kid`, unless the last fetch
    /// is more recent than the rule's floor. True if new keys were loaded.
    pub async fn refetch(&self, rule: &JwtRule) -> bool {
        let Some(source) = self.source(rule) else { return false };
        let before = source.keys.load_full();
        let mut last = source.last_fetch.lock().await;
        // Someone else fetched while we waited for the lock.
        let after = source.keys.load_full();
        if !same(before.as_ref(), after.as_ref()) {
            return true;
        }
        if last.is_some_and(|t| t.elapsed() < source.min_refetch) {
            return false;
        }
        let changed = self.fetch(&source, "unknown_kid").await;
        *last = Some(Instant::now());
        changed
    }

    /// True when every source has loaded at least once (readiness).
    pub fn ready(&self) -> bool {
        let sources = self.sources.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        sources.values().all(|s| s.keys.load().is_some())
    }

    fn source(&self, rule: &JwtRule) -> Option<Arc<Source>> {
        let location = match &rule.keys {
            KeySource::Inline(_) => return None,
            KeySource::File(f) => f,
            KeySource::Uri(u) => u,
        };
        self.sources.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(location).cloned()
    }

    /// One fetch; stores the keys if they parse. True if the keys changed.
    async fn fetch(&self, source: &Source, trigger: &'static str) -> bool {
        let result = match tokio::time::timeout(FETCH_TIMEOUT, self.load(source)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {FETCH_TIMEOUT:?}")),
        };
        let label = |result| JwksLabels { issuer: source.issuer.clone(), result, trigger };
        match result {
            Ok(bytes) => match KeySet::parse(&bytes) {
                Ok(set) => {
                    self.metrics.jwks_fetches.get_or_create(&label("ok")).inc();
                    tracing::info!(issuer = %source.issuer, source = %source.location, keys = set.len(), trigger, "JWT keys loaded");
                    source.keys.store(Some(Arc::new(set)));
                    true
                }
                Err(e) => {
                    self.metrics.jwks_fetches.get_or_create(&label("error")).inc();
                    tracing::warn!(issuer = %source.issuer, source = %source.location, error = %e, "JWT keys unusable; keeping the last good keys");
                    false
                }
            },
            Err(e) => {
                self.metrics.jwks_fetches.get_or_create(&label("error")).inc();
                tracing::warn!(issuer = %source.issuer, source = %source.location, error = %e, "JWT key fetch failed; keeping the last good keys");
                false
            }
        }
    }

    async fn load(&self, source: &Source) -> Result<Vec<u8>, String> {
        if source.is_file {
            return tokio::fs::read(&source.location).await.map_err(|e| e.to_string());
        }
        let uri: http::Uri = source.location.parse().map_err(|e| format!("bad URL: {e}"))?;
        let req = http::Request::get(uri)
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let resp = self.client.request(req).await.map_err(|e| format!("{e:#}"))?;
        if !resp.status().is_success() {
            return Err(format!("HTTP status {}", resp.status()));
        }
        let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES).collect().await.map_err(|e| e.to_string())?;
        Ok(body.to_bytes().to_vec())
    }
}

fn same(a: Option<&Arc<KeySet>>, b: Option<&Arc<KeySet>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// Loads a source now, then every refresh interval (every few seconds while
/// it has never loaded), until no policy names it any more.
async fn refresh_loop(jwks: Weak<Jwks>, source: Weak<Source>) {
    let mut trigger = "initial";
    loop {
        let (Some(j), Some(s)) = (jwks.upgrade(), source.upgrade()) else { return };
        {
            let mut last = s.last_fetch.lock().await;
            j.fetch(&s, trigger).await;
            *last = Some(Instant::now());
        }
        let wait = if s.keys.load().is_some() { s.refresh } else { INITIAL_RETRY };
        trigger = "refresh";
        drop((j, s));
        tokio::time::sleep(wait).await;
    }
}
