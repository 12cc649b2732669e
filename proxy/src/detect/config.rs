//! The `detector:` section of the sidecar config: raw (serde) and checked.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;

/// `detector:` as written. See `docs/configuration.md`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDetector {
    /// Score and learn from inbound requests (default true).
    pub enabled: Option<bool>,
    /// Which identity keys a client's window, first one present wins:
    /// `jwt` (verified `iss/sub`), `peer` (SPIFFE ID), `ip`. Default all three in that order.
    pub client_key: Option<Vec<String>>,
    /// Request body bytes inspected before forwarding (default 64 KiB).
    pub max_inspect_bytes: Option<u64>,
    /// Longest wait for those bytes before scoring what arrived (default 100ms).
    pub inspect_wait: Option<String>,
    /// Requests scored at once; beyond it the detector counts as overloaded (default 256).
    pub max_concurrent: Option<u64>,
    /// Samples waiting for the learner; beyond it samples are dropped and counted (default 4096).
    pub learn_queue: Option<u64>,
    /// Learn from traffic judged normal (default true); false freezes the loaded model.
    pub learn: Option<bool>,
    /// After warm-up, samples learned per second at most (default 200); the
    /// rest are skipped, so learning costs a bounded share of a core at any rate.
    pub learn_per_second: Option<u64>,
    /// Model snapshot loaded at start (from `meshward eval --save-model` or `save_model`).
    pub load_model: Option<PathBuf>,
    /// Where each published model is written (atomically), off the request path.
    pub save_model: Option<PathBuf>,
    /// Clients kept by the anomaly policies' offender book (default 100000).
    pub max_offenders: Option<u64>,
    /// Append every scored request, with its score, to this file (eval format).
    pub record: Option<PathBuf>,
    /// Stop recording once the file has this many bytes (default 1 GiB).
    pub record_max_bytes: Option<u64>,
    /// Write credential headers as they are instead of pseudonymised (default false).
    pub record_credentials: Option<bool>,
    /// Model settings (see `meshward_detector::RawConfig`).
    #[serde(default)]
    pub tuning: meshward_detector::RawConfig,
}

/// Which identity keys a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKey {
    /// The verified JWT principal (`iss/sub`).
    Jwt,
    /// The peer's SPIFFE ID.
    Peer,
    /// The client's IP address.
    Ip,
}

/// Body bytes the sidecar inspects by default (`detector.max_inspect_bytes`;
/// `meshward eval --max-inspect-bytes` replays with the same).
pub const DEFAULT_MAX_INSPECT_BYTES: usize = 64 * 1024;
/// Most body bytes that may be inspected (the configuration's upper bound).
pub const MAX_INSPECT_BYTES: u64 = 16 << 20;

/// The checked `detector:` section.
#[derive(Debug, Clone)]
pub struct DetectorConfig {
    /// Score and learn at all.
    pub enabled: bool,
    /// Client key order.
    pub client_key: Vec<ClientKey>,
    /// Body bytes inspected.
    pub max_inspect_bytes: usize,
    /// Wait for them at most this long.
    pub inspect_wait: Duration,
    /// Concurrent scorings before "overloaded".
    pub max_concurrent: usize,
    /// Learner queue bound.
    pub learn_queue: usize,
    /// Learning on.
    pub learn: bool,
    /// Samples learned per second after warm-up.
    pub learn_per_second: u32,
    /// Snapshot to start from.
    pub load_model: Option<PathBuf>,
    /// Snapshot to write.
    pub save_model: Option<PathBuf>,
    /// Offender book bound.
    pub max_offenders: usize,
    /// Recording file.
    pub record: Option<PathBuf>,
    /// Recording size bound.
    pub record_max_bytes: u64,
    /// Credentials recorded as they are.
    pub record_credentials: bool,
    /// Model settings.
    pub model: meshward_detector::Config,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            enabled: true,
            client_key: vec![ClientKey::Jwt, ClientKey::Peer, ClientKey::Ip],
            max_inspect_bytes: DEFAULT_MAX_INSPECT_BYTES,
            inspect_wait: Duration::from_millis(100),
            max_concurrent: 256,
            learn_queue: 4096,
            learn: true,
            learn_per_second: 200,
            load_model: None,
            save_model: None,
            max_offenders: 100_000,
            record: None,
            record_max_bytes: 1 << 30,
            record_credentials: false,
            model: meshward_detector::Config::default(),
        }
    }
}

fn invalid(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.to_owned(), message: message.into() }
}

fn bounded(field: &str, v: Option<u64>, default: usize, lo: u64, hi: u64) -> Result<usize, ConfigError> {
    match v {
        None => Ok(default),
        Some(n) if (lo..=hi).contains(&n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        Some(n) => Err(invalid(field, format!("{n} is out of range (expected {lo} to {hi})"))),
    }
}

impl TryFrom<RawDetector> for DetectorConfig {
    type Error = ConfigError;

    fn try_from(raw: RawDetector) -> Result<Self, ConfigError> {
        let d = DetectorConfig::default();
        let client_key = match raw.client_key {
            None => d.client_key,
            Some(list) if list.is_empty() => {
                return Err(invalid("detector.client_key", "is empty (expected e.g. [jwt, peer, ip])"))
            }
            Some(list) => list
                .iter()
                .map(|k| match k.as_str() {
                    "jwt" => Ok(ClientKey::Jwt),
                    "peer" => Ok(ClientKey::Peer),
                    "ip" => Ok(ClientKey::Ip),
                    other => {
                        Err(invalid("detector.client_key", format!("unknown key {other:?} (expected jwt, peer or ip)")))
                    }
                })
                .collect::<Result<_, _>>()?,
        };
        let inspect_wait = match raw.inspect_wait {
            None => d.inspect_wait,
            Some(s) => humantime::parse_duration(&s)
                .map_err(|e| invalid("detector.inspect_wait", format!("{s:?} is not a duration: {e}")))?,
        };
        let model = meshward_detector::Config::try_from(raw.tuning)
            .map_err(|e| invalid("detector.tuning", e.to_string().trim_start_matches("detector: ").to_owned()))?;
        Ok(DetectorConfig {
            enabled: raw.enabled.unwrap_or(d.enabled),
            client_key,
            max_inspect_bytes: bounded(
                "detector.max_inspect_bytes",
                raw.max_inspect_bytes,
                d.max_inspect_bytes,
                0,
                MAX_INSPECT_BYTES,
            )?,
            inspect_wait,
            max_concurrent: bounded("detector.max_concurrent", raw.max_concurrent, d.max_concurrent, 1, 1_000_000)?,
            learn_queue: bounded("detector.learn_queue", raw.learn_queue, d.learn_queue, 1, 10_000_000)?,
            learn: raw.learn.unwrap_or(d.learn),
            learn_per_second: u32::try_from(bounded(
                "detector.learn_per_second",
                raw.learn_per_second,
                d.learn_per_second as usize,
                1,
                1_000_000,
            )?)
            .unwrap_or(u32::MAX),
            load_model: raw.load_model,
            save_model: raw.save_model,
            max_offenders: bounded("detector.max_offenders", raw.max_offenders, d.max_offenders, 1, 10_000_000)?,
            record: raw.record,
            record_max_bytes: raw.record_max_bytes.unwrap_or(d.record_max_bytes),
            record_credentials: raw.record_credentials.unwrap_or(d.record_credentials),
            model,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const BASE: &str = "admin: {listen: '127.0.0.1:0'}\n";

    fn err(yaml: &str) -> String {
        Config::from_yaml(&format!("{BASE}{yaml}")).expect_err("invalid").to_string()
    }

    #[test]
    fn the_detector_section_has_defaults_and_names_bad_values() {
        let c = Config::from_yaml(BASE).expect("valid");
        assert!(c.detector.enabled && c.detector.learn);
        assert_eq!(c.detector.max_inspect_bytes, 64 * 1024);
        let c = Config::from_yaml(&format!(
            "{BASE}detector: {{client_key: [ip], inspect_wait: 20ms, tuning: {{fp_budget: 0.01, warmup_samples: 50}}}}\n"
        ))
        .expect("valid");
        assert_eq!(c.detector.client_key, vec![super::ClientKey::Ip]);
        assert_eq!(c.detector.model.fp_budget, 0.01);
        assert_eq!(c.detector.model.warmup_samples, 50);
        let e = err("detector: {client_key: [cookie]}\n");
        assert!(e.contains("detector.client_key") && e.contains("\"cookie\""), "{e}");
        let e = err("detector: {tuning: {fp_budget: 0.7}}\n");
        assert!(e.contains("detector.tuning") && e.contains("fp_budget 0.7"), "{e}");
        let e = err("detector: {inspect_wait: soon}\n");
        assert!(e.contains("detector.inspect_wait") && e.contains("\"soon\""), "{e}");
        let e = err("detector: {max_concurrent: 0}\n");
        assert!(e.contains("detector.max_concurrent: 0 is out of range"), "{e}");
        let e = err("detector: {tunning: {}}\n");
        assert!(e.contains("tunning"), "{e}");
    }
}
