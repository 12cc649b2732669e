//! Evaluation metrics over labelled scores: AUROC (ties count half), AUPRC
//! (average precision), TPR at a fixed FPR, and the operating point of a
//! threshold.

/// Area under the ROC curve; ties between an attack and a normal score count
/// half. `None` without both classes.
pub fn auroc(scores: &[f64], attack: &[bool]) -> Option<f64> {
    let mut v: Vec<(f64, bool)> = scores.iter().copied().zip(attack.iter().copied()).collect();
    let pos = v.iter().filter(|(_, a)| *a).count() as f64;
    let neg = v.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return None;
    }
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Mann-Whitney U with mid-ranks for ties.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j < v.len() && v[j].0.total_cmp(&v[i].0).is_eq() {
            j += 1;
        }
        let mid = (i + j + 1) as f64 / 2.0;
        rank_sum += mid * v[i..j].iter().filter(|(_, a)| *a).count() as f64;
        i = j;
    }
    Some((rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg))
}

/// Average precision (area under the precision-recall curve, step-wise);
/// tied scores enter together. `None` without attacks.
pub fn auprc(scores: &[f64], attack: &[bool]) -> Option<f64> {
    let mut v: Vec<(f64, bool)> = scores.iter().copied().zip(attack.iter().copied()).collect();
    let pos = v.iter().filter(|(_, a)| *a).count() as f64;
    if pos == 0.0 {
        return None;
    }
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut fp, mut ap, mut i) = (0.0, 0.0, 0.0, 0);
    while i < v.len() {
        let mut j = i;
        let mut new_tp = 0.0;
        while j < v.len() && v[j].0.total_cmp(&v[i].0).is_eq() {
            if v[j].1 {
                new_tp += 1.0;
            } else {
                fp += 1.0;
            }
            j += 1;
        }
        tp += new_tp;
        ap += (new_tp / pos) * (tp / (tp + fp));
        i = j;
    }
    Some(ap)
}

/// Highest TPR with FPR at most `max_fpr`, over thresholds between distinct
/// scores (flagged = score >= threshold). `None` without both classes.
pub fn tpr_at_fpr(scores: &[f64], attack: &[bool], max_fpr: f64) -> Option<f64> {
    let mut v: Vec<(f64, bool)> = scores.iter().copied().zip(attack.iter().copied()).collect();
    let pos = v.iter().filter(|(_, a)| *a).count() as f64;
    let neg = v.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return None;
    }
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut fp, mut best, mut i) = (0.0, 0.0, 0.0f64, 0);
    while i < v.len() {
        let mut j = i;
        while j < v.len() && v[j].0.total_cmp(&v[i].0).is_eq() {
            if v[j].1 {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            j += 1;
        }
        if fp / neg <= max_fpr {
            best = best.max(tp / pos);
        } else {
            break;
        }
        i = j;
    }
    Some(best)
}

/// TPR and FPR of a set of decisions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OperatingPoint {
    /// Attacks flagged / attacks (0 without attacks).
    pub tpr: f64,
    /// Normal flagged / normal (0 without normal requests).
    pub fpr: f64,
}

/// Operating point of `flagged` decisions.
pub fn operating_point(flagged: &[bool], attack: &[bool]) -> OperatingPoint {
    let (mut tp, mut fp, mut pos, mut neg) = (0.0, 0.0, 0.0, 0.0);
    for (f, a) in flagged.iter().zip(attack) {
        if *a {
            pos += 1.0;
            tp += f64::from(u8::from(*f));
        } else {
            neg += 1.0;
            fp += f64::from(u8::from(*f));
        }
    }
    OperatingPoint { tpr: if pos > 0.0 { tp / pos } else { 0.0 }, fpr: if neg > 0.0 { fp / neg } else { 0.0 } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_handles_ties_and_perfect_separation() {
        assert_eq!(auroc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]), Some(1.0));
        assert_eq!(auroc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]), Some(0.0));
        assert_eq!(auroc(&[0.5, 0.5], &[false, true]), Some(0.5));
        // One attack tied with one of two normals, above the other: (1 + 0.5) / 2.
        assert_eq!(auroc(&[0.1, 0.5, 0.5], &[false, false, true]), Some(0.75));
        assert_eq!(auroc(&[0.1], &[false]), None);
    }

    #[test]
    fn auprc_and_tpr_at_fpr() {
        let s = [0.9, 0.8, 0.7, 0.1];
        let a = [true, false, true, false];
        // Precision at the two attacks: 1/1 and 2/3.
        let ap = auprc(&s, &a).expect("ap");
        assert!((ap - (0.5 * 1.0 + 0.5 * 2.0 / 3.0)).abs() < 1e-12);
        assert_eq!(tpr_at_fpr(&s, &a, 0.0), Some(0.5));
        assert_eq!(tpr_at_fpr(&s, &a, 0.5), Some(1.0));
        let op = operating_point(&[true, true, false, false], &a);
        assert_eq!(op, OperatingPoint { tpr: 0.5, fpr: 0.5 });
    }
}
