//! Detector settings: a serde shape ([`RawConfig`]) checked into [`Config`].

use serde::Deserialize;
use thiserror::Error;

/// Detector settings, checked. Build with [`Config::default`] or from a
/// [`RawConfig`] with `TryFrom`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Share of normal requests allowed to land in the anomalous band
    /// (default 0.001 = 0.1%).
    pub fp_budget: f64,
    /// Share of normal requests allowed at suspicious or above (default 0.01).
    pub suspicious_budget: f64,
    /// Samples learned before verdicts are given (default 1000).
    pub warmup_samples: u64,
    /// Samples learned between model publications (default 2000).
    pub publish_every: u64,
    /// k-means clusters (default 8).
    pub clusters: usize,
    /// Mini-batch size of the streaming k-means (default 256).
    pub batch: usize,
    /// Samples between k-means re-seeds that follow drift (default 20000).
    pub reseed_every: u64,
    /// Recent scores kept for calibration (default 10000).
    pub calibration_window: usize,
    /// Clients tracked at once, least recent evicted (default 10000).
    pub max_clients: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            fp_budget: 0.001,
            suspicious_budget: 0.01,
            warmup_samples: 1000,
            publish_every: 2000,
            clusters: 8,
            batch: 256,
            reseed_every: 20_000,
            calibration_window: 10_000,
            max_clients: 10_000,
        }
    }
}

/// Detector settings as a person writes them (every field optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// See [`Config::fp_budget`].
    pub fp_budget: Option<f64>,
    /// See [`Config::suspicious_budget`].
    pub suspicious_budget: Option<f64>,
    /// See [`Config::warmup_samples`].
    pub warmup_samples: Option<u64>,
    /// See [`Config::publish_every`].
    pub publish_every: Option<u64>,
    /// See [`Config::clusters`].
    pub clusters: Option<usize>,
    /// See [`Config::batch`].
    pub batch: Option<usize>,
    /// See [`Config::reseed_every`].
    pub reseed_every: Option<u64>,
    /// See [`Config::calibration_window`].
    pub calibration_window: Option<usize>,
    /// See [`Config::max_clients`].
    pub max_clients: Option<usize>,
}

/// A setting out of range.
#[derive(Debug, Error, PartialEq)]
pub enum ConfigError {
    /// A budget outside (0, 0.5).
    #[error("detector: {name} {value} is out of range (expected a share between 0 and 0.5, e.g. 0.001)")]
    Budget {
        /// Which budget.
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// The suspicious budget is below the anomalous one.
    #[error("detector: suspicious_budget {suspicious} is below fp_budget {fp} (expected suspicious >= anomalous)")]
    BudgetOrder {
        /// The suspicious budget.
        suspicious: f64,
        /// The anomalous budget.
        fp: f64,
    },
    /// A count outside its range.
    #[error("detector: {name} {value} is out of range (expected {expected})")]
    Count {
        /// Which setting.
        name: &'static str,
        /// The value given.
        value: u64,
        /// The allowed range.
        expected: &'static str,
    },
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Config, ConfigError> {
        let d = Config::default();
        let c = Config {
            fp_budget: raw.fp_budget.unwrap_or(d.fp_budget),
            suspicious_budget: raw.suspicious_budget.unwrap_or(d.suspicious_budget.max(raw.fp_budget.unwrap_or(0.0))),
            warmup_samples: raw.warmup_samples.unwrap_or(d.warmup_samples),
            publish_every: raw.publish_every.unwrap_or(d.publish_every),
            clusters: raw.clusters.unwrap_or(d.clusters),
            batch: raw.batch.unwrap_or(d.batch),
            reseed_every: raw.reseed_every.unwrap_or(d.reseed_every),
            calibration_window: raw.calibration_window.unwrap_or(d.calibration_window),
            max_clients: raw.max_clients.unwrap_or(d.max_clients),
        };
        for (name, value) in [("fp_budget", c.fp_budget), ("suspicious_budget", c.suspicious_budget)] {
            if !(value > 0.0 && value < 0.5) {
                return Err(ConfigError::Budget { name, value });
            }
        }
        if c.suspicious_budget < c.fp_budget {
            return Err(ConfigError::BudgetOrder { suspicious: c.suspicious_budget, fp: c.fp_budget });
        }
        let counts: [(&'static str, u64, u64, u64, &'static str); 6] = [
            ("warmup_samples", c.warmup_samples, 20, 10_000_000, "20 to 10000000"),
            ("publish_every", c.publish_every, 10, 10_000_000, "10 to 10000000"),
            ("clusters", c.clusters as u64, 1, 64, "1 to 64"),
            ("batch", c.batch as u64, 16, 65_536, "16 to 65536"),
            ("calibration_window", c.calibration_window as u64, 100, 10_000_000, "100 to 10000000"),
            ("max_clients", c.max_clients as u64, 1, 10_000_000, "1 to 10000000"),
        ];
        for (name, value, lo, hi, expected) in counts {
            if value < lo || value > hi {
                return Err(ConfigError::Count { name, value, expected });
            }
        }
        if c.reseed_every < c.batch as u64 {
            return Err(ConfigError::Count { name: "reseed_every", value: c.reseed_every, expected: "at least batch" });
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_bad_values_are_refused() {
        assert_eq!(Config::try_from(RawConfig::default()), Ok(Config::default()));
        let e = Config::try_from(RawConfig { fp_budget: Some(0.0), ..RawConfig::default() }).expect_err("zero budget");
        assert!(e.to_string().contains("fp_budget 0"), "{e}");
        let e = Config::try_from(RawConfig { clusters: Some(0), ..RawConfig::default() }).expect_err("no clusters");
        assert!(e.to_string().contains("clusters 0"), "{e}");
        let e =
            Config::try_from(RawConfig { fp_budget: Some(0.1), suspicious_budget: Some(0.01), ..RawConfig::default() })
                .expect_err("order");
        assert!(matches!(e, ConfigError::BudgetOrder { .. }));
        let raw: Result<RawConfig, _> = serde_json::from_str(r#"{"fp_budgte": 0.1}"#);
        assert!(raw.is_err());
    }
}
