//! The published model: immutable, `Send + Sync`, shared by the proxy behind
//! an `Arc` and swapped whole when the learner publishes a new one.
//!
//! It holds the standardisation of the request vector, the k-means centroids
//! with a per-cluster radius, the profiles (endpoints, parameters, headers,
//! inputs, client signals), the calibrated thresholds and metadata.
//! [`Model::snapshot`] and [`Model::from_snapshot`] save and load it
//! (versioned JSON) so a model learned in staging can ship with a deployment.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::calibrate::Thresholds;
use crate::features::DIM;
use crate::profile::Profiles;

/// Snapshot format name (the `format` key).
pub const SNAPSHOT_FORMAT: &str = "meshward-detector-model";
/// Snapshot format version written by this build (the `version` key).
pub const SNAPSHOT_VERSION: u32 = 1;

/// Per-feature mean and standard deviation of the request vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standardizer {
    /// Means.
    pub mean: [f64; DIM],
    /// Standard deviations (floored so constant features do not explode).
    pub std: [f64; DIM],
}

impl Default for Standardizer {
    fn default() -> Self {
        Standardizer { mean: [0.0; DIM], std: [1.0; DIM] }
    }
}

impl Standardizer {
    /// Smallest standard deviation used.
    pub const STD_FLOOR: f64 = 0.05;

    /// Standardise `v`, clamped to +-50 (no NaN reaches k-means).
    pub fn apply(&self, v: &[f64; DIM]) -> [f64; DIM] {
        let mut z = [0.0; DIM];
        for i in 0..DIM {
            let x = (v[i] - self.mean[i]) / self.std[i].max(Self::STD_FLOOR);
            z[i] = if x.is_finite() { x.clamp(-50.0, 50.0) } else { 50.0 };
        }
        z
    }
}

/// The k-means part of the model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Clusters {
    /// Standardisation applied before distances.
    pub standardizer: Standardizer,
    /// Centroids (standardised space).
    pub centroids: Vec<[f64; DIM]>,
    /// Per cluster: 99th percentile distance of learned members.
    pub radii: Vec<f64>,
}

impl Clusters {
    /// Nearest cluster of a raw vector: `(index, distance, radius, standardised vector)`.
    pub fn nearest(&self, v: &[f64; DIM]) -> Option<(usize, f64, f64, [f64; DIM])> {
        let z = self.standardizer.apply(v);
        let mut best = (usize::MAX, f64::INFINITY);
        for (i, c) in self.centroids.iter().enumerate() {
            let d: f64 = c.iter().zip(&z).map(|(a, b)| (a - b) * (a - b)).sum();
            if d < best.1 {
                best = (i, d);
            }
        }
        let radius = *self.radii.get(best.0)?;
        Some((best.0, best.1.sqrt(), radius, z))
    }
}

/// An immutable detector model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Publication number (0: the empty model).
    pub version: u64,
    /// Samples learned when it was published.
    pub samples: u64,
    /// Samples refused (flagged) by the learner so far.
    pub refused: u64,
    /// Whether warm-up is over: verdicts are given.
    pub ready: bool,
    /// The k-means part.
    pub clusters: Clusters,
    /// Profiles.
    pub profiles: Profiles,
    /// Calibrated thresholds.
    pub thresholds: Thresholds,
    /// Budget the thresholds were calibrated for.
    pub fp_budget: f64,
}

/// A snapshot that cannot be loaded.
#[derive(Debug, Error)]
pub enum SnapshotError {
    /// Not JSON, or not a detector snapshot.
    #[error("not a meshward detector model snapshot: {0}")]
    Format(String),
    /// Written by a format version this build does not read.
    #[error("detector model snapshot version {found} is not supported (this build reads version {supported})")]
    Version {
        /// Version in the file.
        found: u64,
        /// Version this build reads.
        supported: u32,
    },
    /// The right format and version, but the content is invalid.
    #[error("invalid detector model snapshot: {0}")]
    Invalid(String),
}

#[derive(Serialize)]
struct SnapshotOut<'a> {
    format: &'a str,
    version: u32,
    model: &'a Model,
}

#[derive(Deserialize)]
struct SnapshotHead {
    format: Option<String>,
    version: Option<u64>,
}

#[derive(Deserialize)]
struct SnapshotIn {
    model: Model,
}

impl Model {
    /// The model before anything was learned: warming up, no profiles.
    pub fn empty() -> Self {
        Model {
            version: 0,
            samples: 0,
            refused: 0,
            ready: false,
            clusters: Clusters::default(),
            profiles: Profiles::default(),
            thresholds: Thresholds::default(),
            fp_budget: 0.001,
        }
    }

    /// Serialise to a versioned snapshot (JSON).
    pub fn snapshot(&self) -> Vec<u8> {
        let out = SnapshotOut { format: SNAPSHOT_FORMAT, version: SNAPSHOT_VERSION, model: self };
        // Serialising plain structs with finite floats into a Vec cannot fail;
        // an empty Vec would be refused by from_snapshot anyway.
        serde_json::to_vec(&out).unwrap_or_default()
    }

    /// Load a snapshot written by [`Model::snapshot`].
    pub fn from_snapshot(bytes: &[u8]) -> Result<Model, SnapshotError> {
        let head: SnapshotHead = serde_json::from_slice(bytes).map_err(|e| SnapshotError::Format(e.to_string()))?;
        if head.format.as_deref() != Some(SNAPSHOT_FORMAT) {
            return Err(SnapshotError::Format(format!(
                "format is {:?} (expected \"{SNAPSHOT_FORMAT}\")",
                head.format.unwrap_or_default()
            )));
        }
        match head.version {
            Some(v) if v == u64::from(SNAPSHOT_VERSION) => {}
            Some(v) => return Err(SnapshotError::Version { found: v, supported: SNAPSHOT_VERSION }),
            None => return Err(SnapshotError::Format("no version".into())),
        }
        let m: SnapshotIn = serde_json::from_slice(bytes).map_err(|e| SnapshotError::Invalid(e.to_string()))?;
        let m = m.model;
        if m.clusters.centroids.len() != m.clusters.radii.len() {
            return Err(SnapshotError::Invalid(format!(
                "{} centroids but {} radii",
                m.clusters.centroids.len(),
                m.clusters.radii.len()
            )));
        }
        Ok(m)
    }
}
