//! The `alerts:` section of the sidecar config: raw (serde) and checked.
//!
//! Secrets are read here, once, so a missing or malformed secret fails the
//! config at start (fail closed) instead of at the first alert.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::sign::Secret;

/// `alerts:` as written. Durations are humantime strings (`1m`, `250ms`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    /// Findings with the same workload, policy, rule and client within this
    /// window form one incident; an updated "firing" is sent at most once per
    /// window (default 1m).
    pub group_window: Option<String>,
    /// An incident without a new finding for this long is sent as "resolved"
    /// (default 5m; at least `group_window`).
    pub resolve_after: Option<String>,
    /// Capacity of the findings queue and of each sink's delivery queue;
    /// beyond it new entries are dropped and counted (default 1000).
    pub queue: Option<u64>,
    /// Delivery attempts per notification, first one included (default 5).
    pub max_attempts: Option<u64>,
    /// Time allowed for one attempt, connect to response body (default 5s).
    pub timeout: Option<String>,
    /// First retry delay; doubles per attempt, jittered (default 1s).
    pub backoff: Option<String>,
    /// Longest delay between attempts, also the cap on a `Retry-After` (default 60s).
    pub max_backoff: Option<String>,
    /// Open incidents kept at most; findings for new incidents beyond it are
    /// dropped and counted (default 10000).
    pub max_incidents: Option<u64>,
    /// Link put in Alertmanager's `externalURL` and `generatorURL` (default empty).
    pub external_url: Option<String>,
    /// Where notifications go.
    #[serde(default)]
    pub sinks: Vec<RawSink>,
}

/// One entry of `alerts.sinks` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSink {
    /// Label in metrics and logs (`[a-z0-9_-]`, unique).
    pub name: String,
    /// `alertmanager` (v4 webhook payload, for webhook receivers), `alertmanager-api`
    /// (a list of alerts for Alertmanager's own `POST /api/v2/alerts`), `standard`
    /// (signed JSON event) or `slack`.
    pub format: String,
    /// `http://` or `https://` URL the payload is POSTed to.
    pub url: String,
    /// File holding the `whsec_<base64>` signing secret.
    pub secret_file: Option<PathBuf>,
    /// Environment variable holding the `whsec_<base64>` signing secret.
    pub secret_env: Option<String>,
    /// PEM file of CA certificates trusted for this `https://` sink instead
    /// of the Mozilla roots (receivers behind an internal CA).
    pub ca_file: Option<PathBuf>,
}

/// Payload shape of a sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Alertmanager webhook payload, `version: "4"`: what Alertmanager sends
    /// to its receivers, so anything built for them accepts it.
    Alertmanager,
    /// A list of alerts for Alertmanager's `POST /api/v2/alerts`, so that a
    /// real Alertmanager groups, silences and routes them.
    AlertmanagerApi,
    /// `{type, timestamp, data}` event signed per Standard Webhooks.
    Standard,
    /// Slack incoming webhook `{text, blocks}`.
    Slack,
}

impl Format {
    /// The name used in config.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Alertmanager => "alertmanager",
            Format::AlertmanagerApi => "alertmanager-api",
            Format::Standard => "standard",
            Format::Slack => "slack",
        }
    }
}

/// A checked sink. Its `Debug` output shows only the URL's scheme and host:
/// webhook URLs often carry a token in the path (Slack's do).
#[derive(Clone)]
pub struct SinkConfig {
    /// Label in metrics, logs and the admin view.
    pub name: String,
    /// Payload shape.
    pub format: Format,
    /// Target.
    pub url: http::Uri,
    /// Signing secret; when present every request carries `webhook-*` headers.
    pub secret: Option<Secret>,
    /// Roots trusted instead of the Mozilla ones (`ca_file`).
    pub ca: Option<Arc<rustls::RootCertStore>>,
}

impl std::fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkConfig")
            .field("name", &self.name)
            .field("format", &self.format)
            .field("url", &redacted_url(&self.url))
            .field("secret", &self.secret)
            .field("ca_roots", &self.ca.as_ref().map(|c| c.len()))
            .finish()
    }
}

/// `scheme://host[:port]/…`: what a log may say about a webhook URL.
pub fn redacted_url(u: &http::Uri) -> String {
    let scheme = u.scheme_str().unwrap_or("");
    let auth = u.authority().map_or("", |a| a.as_str());
    // Userinfo is a credential too.
    let host = auth.rsplit('@').next().unwrap_or("");
    format!("{scheme}://{host}/…")
}

/// The checked `alerts:` section.
#[derive(Clone, Debug)]
pub struct AlertsConfig {
    /// See [`RawAlerts::group_window`].
    pub group_window: Duration,
    /// See [`RawAlerts::resolve_after`].
    pub resolve_after: Duration,
    /// See [`RawAlerts::queue`].
    pub queue: usize,
    /// See [`RawAlerts::max_attempts`].
    pub max_attempts: u32,
    /// See [`RawAlerts::timeout`].
    pub timeout: Duration,
    /// See [`RawAlerts::backoff`].
    pub backoff: Duration,
    /// See [`RawAlerts::max_backoff`].
    pub max_backoff: Duration,
    /// See [`RawAlerts::max_incidents`].
    pub max_incidents: usize,
    /// See [`RawAlerts::external_url`].
    pub external_url: String,
    /// The sinks, in config order.
    pub sinks: Vec<SinkConfig>,
}

impl Default for AlertsConfig {
    /// Defaults and no sinks (alerting off).
    fn default() -> Self {
        Self {
            group_window: Duration::from_secs(60),
            resolve_after: Duration::from_secs(300),
            queue: 1000,
            max_attempts: 5,
            timeout: Duration::from_secs(5),
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_incidents: 10_000,
            external_url: String::new(),
            sinks: Vec::new(),
        }
    }
}

/// Why `alerts:` was refused.
#[derive(Debug, thiserror::Error)]
pub enum AlertsConfigError {
    /// A field parsed but its value is not acceptable.
    #[error("{field}: {message}")]
    Invalid {
        /// Dotted path of the field, e.g. `alerts.sinks[1].url`.
        field: String,
        /// What is wrong and what was expected.
        message: String,
    },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> AlertsConfigError {
    AlertsConfigError::Invalid { field: field.into(), message: message.into() }
}

impl TryFrom<RawAlerts> for AlertsConfig {
    type Error = AlertsConfigError;

    /// Checks every field; `secret_env` is read from the process environment.
    fn try_from(raw: RawAlerts) -> Result<Self, Self::Error> {
        AlertsConfig::from_raw(raw, &|name| std::env::var(name).ok())
    }
}

impl AlertsConfig {
    /// Checks every field, reading `secret_env` variables through `env`
    /// (tests inject it instead of touching the process environment).
    pub fn from_raw(raw: RawAlerts, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, AlertsConfigError> {
        let d = AlertsConfig::default();
        let group_window = duration("alerts.group_window", raw.group_window.as_deref(), d.group_window)?;
        let resolve_after = duration("alerts.resolve_after", raw.resolve_after.as_deref(), d.resolve_after)?;
        if resolve_after < group_window {
            return Err(invalid(
                "alerts.resolve_after",
                format!(
                    "{} is shorter than group_window ({}); expected at least the group window",
                    humantime::format_duration(resolve_after),
                    humantime::format_duration(group_window)
                ),
            ));
        }
        let queue = count("alerts.queue", raw.queue, d.queue as u64, 1_000_000)?;
        let max_attempts = count("alerts.max_attempts", raw.max_attempts, u64::from(d.max_attempts), 100)?;
        let timeout = duration("alerts.timeout", raw.timeout.as_deref(), d.timeout)?;
        let backoff = duration("alerts.backoff", raw.backoff.as_deref(), d.backoff)?;
        let max_backoff = duration("alerts.max_backoff", raw.max_backoff.as_deref(), d.max_backoff)?;
        if max_backoff < backoff {
            return Err(invalid(
                "alerts.max_backoff",
                format!(
                    "{} is shorter than backoff ({})",
                    humantime::format_duration(max_backoff),
                    humantime::format_duration(backoff)
                ),
            ));
        }
        let max_incidents = count("alerts.max_incidents", raw.max_incidents, d.max_incidents as u64, 10_000_000)?;
        let external_url = raw.external_url.unwrap_or_default();
        let mut names = HashSet::new();
        let mut sinks = Vec::with_capacity(raw.sinks.len());
        for (i, s) in raw.sinks.into_iter().enumerate() {
            let sink = sink(&format!("alerts.sinks[{i}]"), s, env)?;
            if !names.insert(sink.name.clone()) {
                return Err(invalid(format!("alerts.sinks[{i}].name"), format!("\"{}\" is used twice", sink.name)));
            }
            sinks.push(sink);
        }
        Ok(Self {
            group_window,
            resolve_after,
            queue: queue as usize,
            // Bounded by 100 above.
            max_attempts: max_attempts as u32,
            timeout,
            backoff,
            max_backoff,
            max_incidents: max_incidents as usize,
            external_url,
            sinks,
        })
    }
}

fn sink(field: &str, raw: RawSink, env: &dyn Fn(&str) -> Option<String>) -> Result<SinkConfig, AlertsConfigError> {
    let name = raw.name.trim().to_string();
    if name.is_empty()
        || name.len() > 64
        || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(invalid(
            format!("{field}.name"),
            format!("\"{}\" is not a sink name (expected 1-64 of a-z, 0-9, '-', '_')", raw.name),
        ));
    }
    let format = match raw.format.trim() {
        "alertmanager" => Format::Alertmanager,
        "alertmanager-api" => Format::AlertmanagerApi,
        "standard" => Format::Standard,
        "slack" => Format::Slack,
        other => {
            return Err(invalid(
                format!("{field}.format"),
                format!("unknown format \"{other}\" (expected alertmanager, alertmanager-api, standard, slack)"),
            ))
        }
    };
    let url = url(&format!("{field}.url"), &raw.url)?;
    if format == Format::Alertmanager && ["/api/v2/alerts", "/api/v1/alerts"].iter().any(|p| url.path().ends_with(p)) {
        return Err(invalid(
            format!("{field}.url"),
            format!(
                "\"{}\" is Alertmanager's alert API, which takes a list of alerts, not the v4 webhook payload \
                 (expected format: alertmanager-api for it, or a webhook receiver's URL for format: alertmanager)",
                raw.url
            ),
        ));
    }
    let secret = match (raw.secret_file, raw.secret_env) {
        (Some(_), Some(_)) => {
            return Err(invalid(field, "secret_file and secret_env are both set (expected one of them)"));
        }
        (Some(path), None) => {
            let f = format!("{field}.secret_file");
            let text = std::fs::read_to_string(&path)
                .map_err(|e| invalid(&f, format!("cannot read secret file {}: {e}", path.display())))?;
            Some(Secret::parse(text.trim()).map_err(|e| invalid(&f, format!("{}: {e}", path.display())))?)
        }
        (None, Some(var)) => {
            let f = format!("{field}.secret_env");
            let text = env(&var).ok_or_else(|| invalid(&f, format!("environment variable {var} is not set")))?;
            Some(Secret::parse(text.trim()).map_err(|e| invalid(&f, format!("{var}: {e}")))?)
        }
        (None, None) => None,
    };
    if format == Format::Standard && secret.is_none() {
        return Err(invalid(
            field,
            format!("sink \"{name}\" has format standard but no secret (expected secret_file or secret_env)"),
        ));
    }
    let ca = match raw.ca_file {
        None => None,
        Some(path) => {
            let f = format!("{field}.ca_file");
            if url.scheme_str() != Some("https") {
                return Err(invalid(&f, format!("set, but the url \"{}\" is not https://", raw.url)));
            }
            Some(Arc::new(roots(&path).map_err(|e| invalid(&f, e))?))
        }
    };
    Ok(SinkConfig { name, format, url, secret, ca })
}

/// Every certificate of a PEM file as trust anchors; none is an error.
fn roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut store = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        let cert = cert.map_err(|e| format!("{}: invalid PEM ({e})", path.display()))?;
        store.add(cert).map_err(|e| format!("{}: unusable CA certificate ({e})", path.display()))?;
    }
    if store.is_empty() {
        return Err(format!("{}: no CERTIFICATE found (expected PEM CA certificates)", path.display()));
    }
    Ok(store)
}

fn url(field: &str, s: &str) -> Result<http::Uri, AlertsConfigError> {
    let uri: http::Uri = s
        .trim()
        .parse()
        .map_err(|e| invalid(field, format!("\"{s}\" is not a URL ({e}; expected http(s)://host/path)")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(invalid(field, format!("\"{s}\" is not an http:// or https:// URL"))),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid(field, format!("\"{s}\" has no host")));
    }
    Ok(uri)
}

fn duration(field: &str, v: Option<&str>, default: Duration) -> Result<Duration, AlertsConfigError> {
    let d = match v {
        None => default,
        Some(s) => humantime::parse_duration(s.trim())
            .map_err(|e| invalid(field, format!("\"{s}\" is not a duration ({e}; expected e.g. 10s, 250ms, 5m)")))?,
    };
    if d.is_zero() {
        return Err(invalid(field, "must be greater than zero"));
    }
    Ok(d)
}

fn count(field: &str, v: Option<u64>, default: u64, max: u64) -> Result<u64, AlertsConfigError> {
    let n = v.unwrap_or(default);
    if n == 0 || n > max {
        return Err(invalid(field, format!("{n} is out of range (expected 1 to {max})")));
    }
    Ok(n)
}
