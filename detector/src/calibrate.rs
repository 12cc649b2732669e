//! Calibration: map a false-positive budget to score thresholds, from the
//! recent scores of traffic as it was scored (score first, learn after).
//!
//! The window holds the raw scores of the last N samples handed to the
//! learner, flagged or not. The anomalous threshold is the `1 - budget`
//! quantile of that window, so on traffic like the window's about `budget`
//! of normal requests land above it. Because flagged samples are attacks
//! *or* false positives and the two cannot be told apart here, a window
//! whose flagged share is already above the budget does not move the
//! thresholds (an attack cannot drag them up to hide itself); the operator
//! raises the budget if normal traffic changed.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Smallest anomalous threshold, bits: below this nothing is rare enough to
/// block whatever the budget says (e.g. a perfectly regular service).
pub const MIN_ANOMALOUS: f64 = 8.0;
/// Smallest suspicious threshold, bits.
pub const MIN_SUSPICIOUS: f64 = 4.0;

/// Score thresholds (raw bits) of the bands.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// At or above: suspicious.
    pub suspicious: f64,
    /// At or above: anomalous (flagged).
    pub anomalous: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { suspicious: MIN_SUSPICIOUS, anomalous: MIN_ANOMALOUS }
    }
}

/// Window of recent raw scores.
#[derive(Debug, Clone)]
pub struct Calibrator {
    cap: usize,
    scores: VecDeque<(f32, bool)>,
    flagged: usize,
}

impl Calibrator {
    /// A window of `cap` scores.
    pub fn new(cap: usize) -> Self {
        Calibrator { cap: cap.max(1), scores: VecDeque::new(), flagged: 0 }
    }

    /// Record one scored sample.
    pub fn record(&mut self, raw: f64, flagged: bool) {
        if self.scores.len() == self.cap {
            if let Some((_, f)) = self.scores.pop_front() {
                self.flagged -= usize::from(f);
            }
        }
        self.scores.push_back((raw as f32, flagged));
        self.flagged += usize::from(flagged);
    }

    /// Scores in the window.
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// Thresholds for the budgets, given the current ones (`None` before the
    /// first calibration: then the window is taken as it is).
    pub fn thresholds(&self, fp_budget: f64, suspicious_budget: f64, current: Option<Thresholds>) -> Thresholds {
        if self.scores.is_empty() {
            return current.unwrap_or_default();
        }
        let n = self.scores.len() as f64;
        if let Some(current) = current {
            if self.flagged as f64 > fp_budget * n && self.flagged > 1 {
                return current;
            }
        }
        let mut v: Vec<f32> = self.scores.iter().map(|(s, _)| *s).collect();
        let index = |p: f64| ((p * n).ceil() as usize).saturating_sub(1).min(v.len() - 1);
        let (ia, is) = (index(1.0 - fp_budget), index(1.0 - suspicious_budget));
        // Selection, not a sort: under `total_cmp` the i-th smallest value is
        // one value, whichever way it is found. The higher quantile first;
        // the lower one then lies in the part below it.
        let (hi, lo) = (ia.max(is), ia.min(is));
        let q_hi = *v.select_nth_unstable_by(hi, f32::total_cmp).1;
        let q_lo = if lo < hi { *v[..hi].select_nth_unstable_by(lo, f32::total_cmp).1 } else { q_hi };
        let q = |i: usize| f64::from(if i == hi { q_hi } else { q_lo });
        // Just above the quantile value: a score equal to it is not flagged.
        let anomalous = (q(ia) + 0.5).max(MIN_ANOMALOUS);
        let suspicious = (q(is) + 0.5).clamp(MIN_SUSPICIOUS, anomalous);
        Thresholds { suspicious, anomalous }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_maps_to_quantile() {
        let mut c = Calibrator::new(10_000);
        for i in 0..10_000 {
            c.record(f64::from(i % 1000) / 10.0, false);
        }
        let t = c.thresholds(0.001, 0.01, None);
        // 99.9% of the scores are <= 99.8.
        assert!((t.anomalous - 100.3).abs() < 0.2, "{t:?}");
        assert!((t.suspicious - 99.4).abs() < 0.2, "{t:?}");
    }

    #[test]
    fn floors_and_attack_heavy_windows() {
        let mut c = Calibrator::new(1000);
        for _ in 0..1000 {
            c.record(0.0, false);
        }
        assert_eq!(c.thresholds(0.001, 0.01, None), Thresholds::default());
        let current = Thresholds { suspicious: 9.0, anomalous: 20.0 };
        for _ in 0..100 {
            c.record(50.0, true);
        }
        assert_eq!(c.thresholds(0.001, 0.01, Some(current)), current);
        assert!(c.thresholds(0.001, 0.01, None).anomalous > 50.0);
    }
}
