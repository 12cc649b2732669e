//! Learning, off the request path: samples of requests judged normal go in,
//! new [`Model`]s come out every `publish_every` samples.
//!
//! - Profiles learn every accepted sample.
//! - The request vector is standardised with online (Welford) statistics,
//!   frozen at each re-seed so that centroids stay in one space.
//! - k-means is linfa-clustering's mini-batch `KMeans::fit_with`: each full
//!   batch of standardised vectors updates the centroids (a `NotConverged`
//!   result is the normal path and carries the updated model). Every
//!   `reseed_every` samples the statistics are refrozen and k-means is
//!   refitted from the recent window, so the model follows drift.
//! - Calibration records the score of every sample (flagged or not) and maps
//!   the false-positive budget to thresholds at each publication.
//! - Flagged samples are refused and counted: an attacker's own traffic never
//!   becomes normal.

use std::collections::VecDeque;

use linfa::prelude::*;
use linfa_clustering::{IncrKMeansError, KMeans};
use linfa_nn::distance::L2Dist;
use ndarray::Array2;

use crate::calibrate::{Calibrator, Thresholds};
use crate::config::Config;
use crate::features::{Sample, DIM};
use crate::model::{Clusters, Model, Standardizer};
use crate::profile::{service_level, Profiles, Stat};
use crate::score::settled_invariant_broken;

/// Raw vectors kept for re-seeding and cluster radii.
const RECENT: usize = 4096;

/// What [`Learner::learn`] did with a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// Learned.
    Learned,
    /// Refused: the sample was flagged.
    Refused,
}

/// The mutable learning state.
#[derive(Debug)]
pub struct Learner {
    cfg: Config,
    profiles: Profiles,
    welford: Vec<Stat>,
    standardizer: Standardizer,
    kmeans: Option<KMeans<f64, L2Dist>>,
    batch: Vec<f64>,
    recent: VecDeque<[f64; DIM]>,
    calibrator: Calibrator,
    thresholds: Thresholds,
    learned: u64,
    refused: u64,
    since_publish: u64,
    since_reseed: u64,
    next_publish: u64,
    version: u64,
    template: String,
    kmeans_errors: u64,
    calibrated: bool,
}

impl Learner {
    /// A learner that knows nothing yet.
    pub fn new(cfg: Config) -> Self {
        Learner {
            calibrator: Calibrator::new(cfg.calibration_window),
            cfg,
            profiles: Profiles::default(),
            welford: vec![Stat::default(); DIM],
            standardizer: Standardizer::default(),
            kmeans: None,
            batch: Vec::new(),
            recent: VecDeque::with_capacity(RECENT),
            thresholds: Thresholds::default(),
            learned: 0,
            refused: 0,
            since_publish: 0,
            since_reseed: 0,
            next_publish: 100,
            version: 0,
            template: String::new(),
            kmeans_errors: 0,
            calibrated: false,
        }
    }

    /// Continue learning from a loaded model (profiles, thresholds and
    /// clusters carry over; k-means restarts from its centroids).
    pub fn from_model(cfg: Config, model: &Model) -> Self {
        let mut l = Learner::new(cfg);
        l.profiles = model.profiles.clone();
        l.thresholds = model.thresholds;
        l.calibrated = model.ready;
        l.standardizer = model.clusters.standardizer.clone();
        l.learned = model.samples;
        l.refused = model.refused;
        l.version = model.version;
        l.next_publish = l.cfg.publish_every;
        if !model.clusters.centroids.is_empty() {
            let k = model.clusters.centroids.len();
            let flat: Vec<f64> = model.clusters.centroids.iter().flatten().copied().collect();
            if let Ok(c) = Array2::from_shape_vec((k, DIM), flat) {
                let params = KMeans::params(k).init_method(linfa_clustering::KMeansInit::Precomputed(c.clone()));
                let ds = DatasetBase::from(c);
                l.kmeans = match params.fit_with(None, &ds) {
                    Ok(m) | Err(IncrKMeansError::NotConverged(m)) => Some(m),
                    Err(_) => None,
                };
            }
        }
        l
    }

    /// Samples learned.
    pub fn learned(&self) -> u64 {
        self.learned
    }

    /// Samples refused because they were flagged.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Whether `sample` breaks an invariant of the profiles learned so far
    /// that held in 1/budget observations (the scorer's rule for flagging
    /// it, `BROKEN_BUDGETS`): the scorer judges against the published model,
    /// which lags (warm-up, a first model), and one NaN learned then would
    /// end the invariant for good. A younger invariant still learns: NaN
    /// that a service's clients send now and then is theirs to send.
    fn breaks_invariant(&self, sample: &Sample) -> bool {
        sample.fields.iter().filter(|o| o.invariant && service_level(o.kind)).any(|o| {
            let learned = self.profiles.service.field(o.kind, sample.name(o));
            learned.is_some_and(|p| p.surprise(o).1.is_some_and(|w| settled_invariant_broken(&w, self.cfg.fp_budget)))
        })
    }

    /// Learn from a scored sample; flagged samples are refused, and so are
    /// those that broke a settled invariant and suspicious ones that would
    /// create an endpoint (their score still counts for calibration).
    pub fn learn(&mut self, sample: &Sample) -> Learned {
        // Scores from a model that has not finished warm-up are not what a
        // mature model gives: they would inflate the thresholds for a whole
        // window (a young model finds ordinary values surprising).
        if sample.model_samples >= self.cfg.warmup_samples {
            self.calibrator.record(sample.raw, sample.flagged);
        }
        if sample.flagged || self.breaks_invariant(sample) || (sample.suspicious && sample.new_endpoint) {
            self.refused += 1;
            return Learned::Refused;
        }
        self.learned += 1;
        self.since_publish += 1;
        self.since_reseed += 1;
        self.profiles.learn(sample, &mut self.template);
        let v = sanitize(&sample.vector);
        for (s, x) in self.welford.iter_mut().zip(v) {
            s.push(x);
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(v);
        if self.kmeans.is_none() || self.since_reseed >= self.cfg.reseed_every {
            if self.recent.len() >= (self.cfg.clusters * 8).max(256) {
                self.reseed();
            }
        } else {
            self.batch.extend_from_slice(&self.standardizer.apply(&v));
            if self.batch.len() >= self.cfg.batch * DIM {
                self.fit_batch();
            }
        }
        Learned::Learned
    }

    /// Refreeze the standardisation and refit k-means from the recent window.
    fn reseed(&mut self) {
        self.since_reseed = 0;
        self.batch.clear();
        let mut sd = Standardizer::default();
        for (i, s) in self.welford.iter().enumerate() {
            sd.mean[i] = s.mean;
            sd.std[i] = s.std().max(Standardizer::STD_FLOOR);
        }
        self.standardizer = sd;
        let rows: Vec<f64> = self.recent.iter().flat_map(|v| self.standardizer.apply(v)).collect();
        let n = self.recent.len();
        let Ok(data) = Array2::from_shape_vec((n, DIM), rows) else { return };
        let k = self.cfg.clusters.min(n);
        let ds = DatasetBase::from(data);
        let mut model = None;
        // Mini-batch passes over the window: the first call seeds with k-means++.
        for _ in 0..5 {
            match KMeans::params(k).tolerance(1e-4).fit_with(model.take(), &ds) {
                Ok(m) => {
                    model = Some(m);
                    break;
                }
                Err(IncrKMeansError::NotConverged(m)) => model = Some(m),
                Err(_) => {
                    self.kmeans_errors += 1;
                    return;
                }
            }
        }
        self.kmeans = model;
    }

    fn fit_batch(&mut self) {
        let rows = std::mem::take(&mut self.batch);
        let n = rows.len() / DIM;
        let Ok(data) = Array2::from_shape_vec((n, DIM), rows) else { return };
        let ds = DatasetBase::from(data);
        let k = self.kmeans.as_ref().map_or(self.cfg.clusters, |m| m.centroids().nrows());
        match KMeans::params(k).tolerance(1e-4).fit_with(self.kmeans.take(), &ds) {
            Ok(m) | Err(IncrKMeansError::NotConverged(m)) => self.kmeans = Some(m),
            Err(_) => self.kmeans_errors += 1,
        }
    }

    /// A new model if one is due (every `publish_every` samples, sooner while
    /// young: after 100, 200, 400, ... samples), else `None`. A model that
    /// can end warm-up (enough scores of mature models to calibrate) is
    /// published as soon as it can.
    pub fn maybe_publish(&mut self) -> Option<Model> {
        let can_end_warmup =
            !self.calibrated && self.learned >= self.cfg.warmup_samples && self.calibrator.len() >= self.min_scores();
        if self.learned < self.next_publish && !can_end_warmup {
            return None;
        }
        self.next_publish = if self.learned < self.cfg.publish_every {
            (self.learned * 2).min(self.cfg.publish_every)
        } else {
            self.learned + self.cfg.publish_every
        };
        Some(self.model())
    }

    /// Scores of mature models needed before the first calibration.
    fn min_scores(&self) -> usize {
        (self.cfg.warmup_samples / 2).clamp(1, 1000) as usize
    }

    /// Build a model from the current state now.
    pub fn model(&mut self) -> Model {
        self.since_publish = 0;
        self.version += 1;
        self.profiles.refresh();
        let ready =
            self.learned >= self.cfg.warmup_samples && (self.calibrated || self.calibrator.len() >= self.min_scores());
        if ready {
            let current = if self.calibrated { Some(self.thresholds) } else { None };
            self.thresholds = self.calibrator.thresholds(self.cfg.fp_budget, self.cfg.suspicious_budget, current);
            self.calibrated = true;
        }
        Model {
            version: self.version,
            samples: self.learned,
            refused: self.refused,
            ready,
            clusters: self.clusters(),
            profiles: self.profiles.clone(),
            thresholds: self.thresholds,
            fp_budget: self.cfg.fp_budget,
        }
    }

    /// Centroids with per-cluster radii (99th percentile distance of recent
    /// members; clusters with few members use the overall percentile).
    fn clusters(&self) -> Clusters {
        let Some(km) = &self.kmeans else { return Clusters::default() };
        let centroids: Vec<[f64; DIM]> = km
            .centroids()
            .rows()
            .into_iter()
            .map(|r| {
                let mut c = [0.0; DIM];
                for (o, v) in c.iter_mut().zip(r.iter()) {
                    *o = if v.is_finite() { *v } else { 0.0 };
                }
                c
            })
            .collect();
        let k = centroids.len();
        let mut per: Vec<Vec<f64>> = vec![Vec::new(); k];
        let mut all = Vec::with_capacity(self.recent.len());
        let tmp =
            Clusters { standardizer: self.standardizer.clone(), centroids: centroids.clone(), radii: vec![1.0; k] };
        for v in &self.recent {
            if let Some((c, d, _, _)) = tmp.nearest(v) {
                per[c].push(d);
                all.push(d);
            }
        }
        let overall = q99(&mut all).unwrap_or(1.0).max(0.5);
        let radii =
            per.iter_mut().map(|d| if d.len() >= 20 { q99(d).unwrap_or(overall).max(0.5) } else { overall }).collect();
        Clusters { standardizer: self.standardizer.clone(), centroids, radii }
    }
}

fn q99(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let i = ((v.len() as f64 * 0.99).ceil() as usize).saturating_sub(1).min(v.len() - 1);
    // Selection, not a sort: under `total_cmp` the i-th smallest value is one
    // value, whichever way it is found (sorting here and in calibration was
    // 0.6% of `meshward eval`).
    Some(*v.select_nth_unstable_by(i, f64::total_cmp).1)
}

fn sanitize(v: &[f64; DIM]) -> [f64; DIM] {
    let mut o = *v;
    for x in &mut o {
        if !x.is_finite() {
            *x = 0.0;
        }
    }
    o
}
