//! Accuracy metrics for the `churnwatch backtest` report: ranking quality (ROC AUC, average
//! precision, precision in the top fraction), probability quality (Brier score, calibration),
//! lead-time summaries (quantiles) and confusion counts at an alert threshold.
//!
//! Everything here is a pure function of slices: no I/O, no allocation beyond a sorted copy.
//!
//! # Conventions
//!
//! - A metric that is *undefined for the data* (no input, only one class, an empty top set)
//!   returns `None`. The report prints such a metric as "n/a" (or `null` in `--json`).
//! - *Caller bugs* panic, and each function says which under `# Panics`: score and label slices of
//!   different lengths, a NaN score or value, a probability outside `[0, 1]`, a fraction or
//!   quantile level outside `[0, 1]`, zero calibration bins.
//! - Scores are compared with `==` for ties (so `-0.0` and `0.0` tie); infinite scores are
//!   allowed where only the ranking matters.
//! - Labels and outcomes are `true` for the positive class (the customer churned).

use serde::Serialize;

/// Panics unless the two slices have the same length.
fn check_lengths(what: &str, a: usize, b: usize) {
    assert_eq!(
        a, b,
        "{what}: the score and label slices must have the same length"
    );
}

/// Panics if any score is NaN.
fn check_not_nan(what: &str, values: &[f64]) {
    assert!(
        values.iter().all(|v| !v.is_nan()),
        "{what}: NaN in the input"
    );
}

/// Panics unless every probability is in `[0, 1]` (which also rules out NaN).
fn check_probabilities(what: &str, probs: &[f64]) {
    if let Some(p) = probs.iter().find(|p| !(0.0..=1.0).contains(*p)) {
        panic!("{what}: probability {p} is outside [0, 1]");
    }
}

/// Panics unless `level` (a fraction or a quantile level) is in `[0, 1]`.
fn check_unit_interval(what: &str, level: f64) {
    assert!(
        (0.0..=1.0).contains(&level),
        "{what}: {level} is outside [0, 1]"
    );
}

/// Counts of positives and negatives sharing one score.
#[derive(Debug, Clone, Copy)]
struct TieGroup {
    positives: u64,
    negatives: u64,
}

/// Groups the examples by equal score, highest score first. O(n log n).
fn tie_groups_descending(scores: &[f64], labels: &[bool]) -> Vec<TieGroup> {
    let mut pairs: Vec<(f64, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    // total_cmp puts -0.0 just below 0.0, so the `==` grouping below still merges them.
    pairs.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
    let mut groups: Vec<TieGroup> = Vec::new();
    let mut last: Option<f64> = None;
    for (score, label) in pairs {
        if last != Some(score) {
            groups.push(TieGroup {
                positives: 0,
                negatives: 0,
            });
            last = Some(score);
        }
        let g = groups.last_mut().expect("a group was just pushed");
        if label {
            g.positives += 1;
        } else {
            g.negatives += 1;
        }
    }
    groups
}

/// Area under the ROC curve: the probability that a random positive scores above a random
/// negative, counting a tie as one half (the Mann-Whitney U statistic over `n₁·n₀`; ties get
/// mid-ranks). A perfect ranker gets 1, an inverted one 0, a constant one 0.5.
///
/// Returns `None` when there are no positives or no negatives. O(n log n); the pair count is
/// accumulated in exact integer arithmetic.
///
/// # Panics
///
/// If `scores` and `labels` differ in length, or a score is NaN.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    check_lengths("roc_auc", scores.len(), labels.len());
    check_not_nan("roc_auc", scores);
    let groups = tie_groups_descending(scores, labels);
    let positives: u64 = groups.iter().map(|g| g.positives).sum();
    let negatives: u64 = groups.iter().map(|g| g.negatives).sum();
    if positives == 0 || negatives == 0 {
        return None;
    }
    // 2U = Σ over tie groups of positives · (2 · negatives strictly below + negatives tied).
    let mut twice_u: u128 = 0;
    let mut negatives_below: u64 = 0;
    for g in groups.iter().rev() {
        twice_u += u128::from(g.positives) * u128::from(2 * negatives_below + g.negatives);
        negatives_below += g.negatives;
    }
    let pairs = u128::from(positives) * u128::from(negatives);
    Some(twice_u as f64 / (2 * pairs) as f64)
}

/// Area under the precision-recall curve as average precision, the step-wise sum
/// `AP = Σₖ (Rₖ − Rₖ₋₁) · Pₖ` over the distinct score thresholds from the highest down, as
/// scikit-learn's `average_precision_score`: examples with equal scores enter together, at one
/// threshold (no interpolation).
///
/// Returns `None` when there are no positives (recall is undefined). With no negatives it is 1.
///
/// # Panics
///
/// If `scores` and `labels` differ in length, or a score is NaN.
pub fn pr_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    check_lengths("pr_auc", scores.len(), labels.len());
    check_not_nan("pr_auc", scores);
    let groups = tie_groups_descending(scores, labels);
    let positives: u64 = groups.iter().map(|g| g.positives).sum();
    if positives == 0 {
        return None;
    }
    let (mut tp, mut fp) = (0_u64, 0_u64);
    let mut ap = 0.0;
    for g in &groups {
        tp += g.positives;
        fp += g.negatives;
        if g.positives > 0 {
            let recall_step = g.positives as f64 / positives as f64;
            let precision = tp as f64 / (tp + fp) as f64;
            ap += recall_step * precision;
        }
    }
    Some(ap)
}

/// Size of the top set for [`precision_at_top`]: `ceil(fraction · n)`, where a product within
/// a relative 1e-9 of an integer counts as that integer (so `0.1 · 30` is 3, not 4, despite
/// floating point).
///
/// # Panics
///
/// If `fraction` is outside `[0, 1]` or NaN.
pub fn top_count(n: usize, fraction: f64) -> usize {
    check_unit_interval("top_count", fraction);
    let x = fraction * n as f64;
    let nearest = x.round();
    let k = if (x - nearest).abs() <= 1e-9 * x.max(1.0) {
        nearest
    } else {
        x.ceil()
    };
    (k as usize).min(n)
}

/// Precision among the `k = ceil(fraction · n)` highest-scored examples (see [`top_count`]):
/// the share of churners among the customers a team with capacity for `k` would contact.
///
/// Ties at the cut-off are not broken by position (which would let the order of the input,
/// e.g. churners listed first, change the result) but averaged: when only `m` of the `g`
/// examples sharing the boundary score fit, they contribute `m · (positives among the g) / g`
/// true positives, the expectation under a random tie-break. The result is deterministic and
/// independent of input order; without ties at the boundary it is the plain precision.
///
/// Returns `None` when `k` is 0 (no input, or `fraction` too small to select anyone).
///
/// # Panics
///
/// If `scores` and `labels` differ in length, a score is NaN, or `fraction` is outside `[0, 1]`.
pub fn precision_at_top(scores: &[f64], labels: &[bool], fraction: f64) -> Option<f64> {
    check_lengths("precision_at_top", scores.len(), labels.len());
    check_not_nan("precision_at_top", scores);
    let k = top_count(scores.len(), fraction);
    if k == 0 {
        return None;
    }
    let mut remaining = k as u64;
    let mut true_positives = 0.0;
    for g in tie_groups_descending(scores, labels) {
        let size = g.positives + g.negatives;
        if size <= remaining {
            true_positives += g.positives as f64;
            remaining -= size;
        } else {
            true_positives += remaining as f64 * g.positives as f64 / size as f64;
            remaining = 0;
        }
        if remaining == 0 {
            break;
        }
    }
    Some(true_positives / k as f64)
}

/// Brier score: the mean squared difference between the predicted probability and the outcome
/// (1 for `true`, 0 for `false`). 0 is perfect; always predicting 0.5 scores 0.25.
///
/// Returns `None` for empty input.
///
/// # Panics
///
/// If `probs` and `outcomes` differ in length, or a probability is outside `[0, 1]` or NaN.
pub fn brier(probs: &[f64], outcomes: &[bool]) -> Option<f64> {
    check_lengths("brier", probs.len(), outcomes.len());
    check_probabilities("brier", probs);
    if probs.is_empty() {
        return None;
    }
    let sum: f64 = probs
        .iter()
        .zip(outcomes)
        .map(|(&p, &y)| {
            let d = p - if y { 1.0 } else { 0.0 };
            d * d
        })
        .sum();
    Some(sum / probs.len() as f64)
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CalibrationBin {
    /// Lower edge of the bin (inclusive).
    pub lower: f64,
    /// Upper edge of the bin (exclusive, except the last bin, which includes 1.0).
    pub upper: f64,
    /// Number of predictions in the bin.
    pub count: usize,
    /// Mean predicted probability in the bin; `None` if the bin is empty.
    pub mean_predicted: Option<f64>,
    /// Observed frequency of the positive outcome in the bin; `None` if the bin is empty.
    pub observed_rate: Option<f64>,
}

impl CalibrationBin {
    /// `|observed_rate − mean_predicted|`, or `None` for an empty bin.
    pub fn gap(&self) -> Option<f64> {
        Some((self.observed_rate? - self.mean_predicted?).abs())
    }
}

/// Reliability of predicted probabilities: equal-width bins over `[0, 1]` with the expected and
/// maximum calibration errors.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    /// Every bin, from `[0, 1/b)` up to `[(b−1)/b, 1]`, including empty ones.
    pub bins: Vec<CalibrationBin>,
    /// Expected calibration error: `Σ (count / n) · |observed − predicted|` over non-empty bins
    /// (0 for empty input).
    pub ece: f64,
    /// Maximum calibration error: the largest `|observed − predicted|` over non-empty bins
    /// (0 for empty input).
    pub mce: f64,
}

/// Index of the equal-width bin of `p` among `bins` over `[0, 1]`, consistent with the edges
/// `i / bins` reported in [`CalibrationBin`] (the product `p · bins` alone can be off by one
/// ulp at an edge). `p = 1.0` goes to the last bin.
fn bin_index(p: f64, bins: usize) -> usize {
    let last = bins - 1;
    let mut i = ((p * bins as f64).floor() as usize).min(last);
    if i < last && p >= (i + 1) as f64 / bins as f64 {
        i += 1;
    } else if i > 0 && p < i as f64 / bins as f64 {
        i -= 1;
    }
    i
}

/// Calibration of predicted probabilities against outcomes, in `bins` equal-width bins over
/// `[0, 1]` (bin `i` is `[i/b, (i+1)/b)`; the last bin also holds `p = 1.0`).
///
/// Empty input gives all bins empty and ECE = MCE = 0.
///
/// # Panics
///
/// If `bins` is 0, `probs` and `outcomes` differ in length, or a probability is outside
/// `[0, 1]` or NaN.
pub fn calibration(probs: &[f64], outcomes: &[bool], bins: usize) -> Calibration {
    assert!(bins > 0, "calibration: the number of bins must be positive");
    check_lengths("calibration", probs.len(), outcomes.len());
    check_probabilities("calibration", probs);

    let mut counts = vec![0_usize; bins];
    let mut sum_predicted = vec![0.0_f64; bins];
    let mut positives = vec![0_usize; bins];
    for (&p, &y) in probs.iter().zip(outcomes) {
        let i = bin_index(p, bins);
        counts[i] += 1;
        sum_predicted[i] += p;
        positives[i] += usize::from(y);
    }

    let n = probs.len();
    let mut ece = 0.0;
    let mut mce: f64 = 0.0;
    let bins: Vec<CalibrationBin> = (0..bins)
        .map(|i| {
            let count = counts[i];
            let (mean_predicted, observed_rate) = if count == 0 {
                (None, None)
            } else {
                (
                    Some(sum_predicted[i] / count as f64),
                    Some(positives[i] as f64 / count as f64),
                )
            };
            let bin = CalibrationBin {
                lower: i as f64 / bins as f64,
                upper: (i + 1) as f64 / bins as f64,
                count,
                mean_predicted,
                observed_rate,
            };
            if let Some(gap) = bin.gap() {
                ece += count as f64 / n as f64 * gap;
                mce = mce.max(gap);
            }
            bin
        })
        .collect();
    Calibration { bins, ece, mce }
}

/// The `q`-quantile of already sorted (ascending) values, by linear interpolation between the
/// closest ranks (Hyndman & Fan type 7, numpy's default and R's default): with `h = (n − 1) · q`,
/// the result is `x[⌊h⌋] + (h − ⌊h⌋) · (x[⌊h⌋ + 1] − x[⌊h⌋])`.
///
/// Returns `None` for empty input. Use [`quantile`] for unsorted values.
///
/// # Panics
///
/// If `q` is outside `[0, 1]` or NaN. In debug builds, also if `sorted` is not sorted.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    check_unit_interval("quantile", q);
    debug_assert!(
        sorted.is_sorted_by(|a, b| a <= b),
        "quantile_sorted: the input is not sorted"
    );
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let h = (n - 1) as f64 * q;
    let lo = (h.floor() as usize).min(n - 1);
    let frac = h - lo as f64;
    if frac == 0.0 || lo + 1 == n {
        return Some(sorted[lo]);
    }
    let (a, b) = (sorted[lo], sorted[lo + 1]);
    Some(a + frac * (b - a))
}

/// The `q`-quantile of `values` by linear interpolation (type 7, as numpy's default; see
/// [`quantile_sorted`]). Sorts a copy; O(n log n).
///
/// Returns `None` for empty input.
///
/// # Panics
///
/// If `q` is outside `[0, 1]` or NaN, or a value is NaN.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    check_unit_interval("quantile", q);
    check_not_nan("quantile", values);
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    quantile_sorted(&sorted, q)
}

/// Summary of a sample such as alert lead times (days between the first alert and the churn).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// Number of values.
    pub count: usize,
    /// Median (type-7 0.5-quantile).
    pub median: f64,
    /// 90th percentile (type-7 0.9-quantile).
    pub p90: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl Summary {
    /// Summarises `values`; `None` for empty input.
    ///
    /// # Panics
    ///
    /// If a value is NaN.
    pub fn of(values: &[f64]) -> Option<Summary> {
        check_not_nan("Summary::of", values);
        if values.is_empty() {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_unstable_by(f64::total_cmp);
        Some(Summary {
            count: sorted.len(),
            median: quantile_sorted(&sorted, 0.5)?,
            p90: quantile_sorted(&sorted, 0.9)?,
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
        })
    }
}

/// Counts of a binary decision (alert or not) against the outcome (churned or not).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ConfusionCounts {
    /// Alerted and churned.
    pub tp: u64,
    /// Alerted but did not churn.
    pub fp: u64,
    /// Churned without an alert (`fn` is a keyword; serialised as `"fn"`).
    #[serde(rename = "fn")]
    pub fn_: u64,
    /// Neither alerted nor churned.
    pub tn: u64,
}

impl ConfusionCounts {
    /// Counts predictions against outcomes, pairwise.
    ///
    /// # Panics
    ///
    /// If `predicted` and `actual` differ in length.
    pub fn from_predictions(predicted: &[bool], actual: &[bool]) -> ConfusionCounts {
        check_lengths(
            "ConfusionCounts::from_predictions",
            predicted.len(),
            actual.len(),
        );
        let mut c = ConfusionCounts::default();
        for (&p, &a) in predicted.iter().zip(actual) {
            c.record(p, a);
        }
        c
    }

    /// Counts the decision `score >= threshold` against the labels.
    ///
    /// # Panics
    ///
    /// If `scores` and `labels` differ in length, or a score is NaN.
    pub fn at_threshold(scores: &[f64], labels: &[bool], threshold: f64) -> ConfusionCounts {
        check_lengths("ConfusionCounts::at_threshold", scores.len(), labels.len());
        check_not_nan("ConfusionCounts::at_threshold", scores);
        let mut c = ConfusionCounts::default();
        for (&s, &a) in scores.iter().zip(labels) {
            c.record(s >= threshold, a);
        }
        c
    }

    /// Adds one decision and its outcome.
    pub fn record(&mut self, predicted: bool, actual: bool) {
        match (predicted, actual) {
            (true, true) => self.tp += 1,
            (true, false) => self.fp += 1,
            (false, true) => self.fn_ += 1,
            (false, false) => self.tn += 1,
        }
    }

    /// Total number of decisions counted.
    pub fn total(&self) -> u64 {
        self.tp + self.fp + self.fn_ + self.tn
    }

    /// `tp / (tp + fp)`: the share of alerts that were churners; `None` without alerts.
    pub fn precision(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fp)
    }

    /// `tp / (tp + fn)`: the share of churners that were alerted; `None` without churners.
    pub fn recall(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// F1, the harmonic mean of precision and recall, computed as `2tp / (2tp + fp + fn)`.
    ///
    /// `None` only when there are neither alerts nor churners. When precision or recall alone is
    /// undefined but the other side is not empty (e.g. churners but no alerts), F1 is 0.
    pub fn f1(&self) -> Option<f64> {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }
}

/// `num / den`, or `None` when `den` is 0.
fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    macro_rules! assert_close {
        ($a:expr, $b:expr) => {{
            let (a, b): (f64, f64) = ($a, $b);
            assert!(close(a, b), "{} = {a}, expected {b}", stringify!($a));
        }};
    }

    fn labels(bits: &[u8]) -> Vec<bool> {
        bits.iter().map(|&b| b == 1).collect()
    }

    /// A small deterministic generator (64-bit LCG) for randomised cross-checks.
    struct Lcg(u64);

    impl Lcg {
        fn next_u64(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 11
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next_u64() % n
        }

        fn unit(&mut self) -> f64 {
            self.next_u64() as f64 / (1_u64 << 53) as f64
        }
    }

    /// O(n²) reference AUC over all positive-negative pairs.
    fn auc_pairwise(scores: &[f64], labels: &[bool]) -> Option<f64> {
        let (mut wins, mut pairs) = (0.0, 0.0);
        for (i, &si) in scores.iter().enumerate() {
            for (j, &sj) in scores.iter().enumerate() {
                if labels[i] && !labels[j] {
                    pairs += 1.0;
                    if si > sj {
                        wins += 1.0;
                    } else if si == sj {
                        wins += 0.5;
                    }
                }
            }
        }
        (pairs > 0.0).then(|| wins / pairs)
    }

    /// Reference AP straight from the definition: for every distinct threshold t, precision and
    /// recall of `score >= t`, summed as Σ (Rₖ − Rₖ₋₁) Pₖ.
    fn ap_by_thresholds(scores: &[f64], labels: &[bool]) -> Option<f64> {
        let mut thresholds = scores.to_vec();
        thresholds.sort_by(|a, b| b.total_cmp(a));
        thresholds.dedup();
        let positives = labels.iter().filter(|&&l| l).count() as f64;
        if positives == 0.0 {
            return None;
        }
        let (mut ap, mut prev_recall) = (0.0, 0.0);
        for t in thresholds {
            let c = ConfusionCounts::at_threshold(scores, labels, t);
            let recall = c.tp as f64 / positives;
            ap += (recall - prev_recall) * c.precision().unwrap();
            prev_recall = recall;
        }
        Some(ap)
    }

    // ---- roc_auc ----

    #[test]
    fn auc_hand_computed() {
        // Pairs (pos, neg): 0.35>0.1 yes, 0.35>0.4 no, 0.8>0.1 yes, 0.8>0.4 yes: 3/4.
        let auc = roc_auc(&[0.1, 0.4, 0.35, 0.8], &labels(&[0, 0, 1, 1])).unwrap();
        assert_close!(auc, 0.75);
    }

    #[test]
    fn auc_perfect_inverted_and_constant() {
        let s = [0.1, 0.2, 0.3, 0.4, 0.5];
        assert_close!(roc_auc(&s, &labels(&[0, 0, 0, 1, 1])).unwrap(), 1.0);
        assert_close!(roc_auc(&s, &labels(&[1, 1, 0, 0, 0])).unwrap(), 0.0);
        assert_close!(roc_auc(&[0.3; 5], &labels(&[1, 0, 1, 0, 0])).unwrap(), 0.5);
    }

    #[test]
    fn auc_ties_count_half() {
        // pos {0.5, 0.9}, neg {0.5, 0.1}: 0.5 vs 0.5 tie (½), 0.5>0.1, 0.9>0.5, 0.9>0.1: 3.5/4.
        let auc = roc_auc(&[0.5, 0.5, 0.9, 0.1], &labels(&[1, 0, 1, 0])).unwrap();
        assert_close!(auc, 0.875);
        // Mid-ranks via Mann-Whitney: ranks 0.1→1, 0.5→2.5, 0.5→2.5, 0.9→4; R₁ = 6.5,
        // U = 6.5 − 3 = 3.5, AUC = 3.5 / 4.
    }

    #[test]
    fn auc_negative_zero_ties_with_zero() {
        let auc = roc_auc(&[-0.0, 0.0], &labels(&[1, 0])).unwrap();
        assert_close!(auc, 0.5);
        let auc = roc_auc(&[0.0, -0.0], &labels(&[1, 0])).unwrap();
        assert_close!(auc, 0.5);
    }

    #[test]
    fn auc_allows_infinite_scores() {
        let s = [f64::NEG_INFINITY, 0.0, f64::INFINITY, f64::INFINITY];
        // pos {0.0, +inf}, neg {-inf, +inf}: 1 + 0 + 1 + ½ = 2.5 of 4.
        assert_close!(roc_auc(&s, &labels(&[0, 1, 1, 0])).unwrap(), 0.625);
    }

    #[test]
    fn auc_none_for_one_class() {
        assert_eq!(roc_auc(&[], &[]), None);
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), None);
        assert_eq!(roc_auc(&[0.1, 0.2], &[false, false]), None);
    }

    #[test]
    fn auc_does_not_depend_on_order() {
        let s = [0.1, 0.4, 0.35, 0.8, 0.4, 0.1];
        let l = labels(&[0, 0, 1, 1, 1, 1]);
        let a = roc_auc(&s, &l).unwrap();
        let mut pairs: Vec<(f64, bool)> = s.iter().copied().zip(l.iter().copied()).collect();
        pairs.reverse();
        let (s2, l2): (Vec<f64>, Vec<bool>) = pairs.into_iter().unzip();
        assert_close!(roc_auc(&s2, &l2).unwrap(), a);
    }

    #[test]
    fn auc_matches_pairwise_reference_on_random_data() {
        let mut rng = Lcg(7);
        for round in 0..200 {
            let n = 1 + rng.below(60) as usize;
            // Few distinct values in even rounds, so ties are frequent.
            let levels = if round % 2 == 0 { 5 } else { 1_000_000 };
            let s: Vec<f64> = (0..n).map(|_| rng.below(levels) as f64 / 10.0).collect();
            let l: Vec<bool> = (0..n).map(|_| rng.below(3) == 0).collect();
            match (roc_auc(&s, &l), auc_pairwise(&s, &l)) {
                (Some(a), Some(b)) => assert!(close(a, b), "{a} vs {b} for {s:?} {l:?}"),
                (a, b) => assert_eq!(a, b),
            }
        }
    }

    #[test]
    #[should_panic(expected = "same length")]
    fn auc_panics_on_length_mismatch() {
        roc_auc(&[0.1, 0.2], &[true]);
    }

    #[test]
    #[should_panic(expected = "NaN")]
    fn auc_panics_on_nan() {
        roc_auc(&[0.1, f64::NAN], &[true, false]);
    }

    // ---- pr_auc ----

    #[test]
    fn ap_hand_computed() {
        // Descending: 0.8 (pos) P=1 R=½; 0.4 (neg); 0.35 (pos) P=⅔ R=1. AP = ½·1 + ½·⅔ = ⅚.
        let ap = pr_auc(&[0.1, 0.4, 0.35, 0.8], &labels(&[0, 0, 1, 1])).unwrap();
        assert_close!(ap, 5.0 / 6.0);
    }

    #[test]
    fn ap_perfect_and_inverted() {
        let s = [0.1, 0.2, 0.3, 0.4, 0.5];
        assert_close!(pr_auc(&s, &labels(&[0, 0, 0, 1, 1])).unwrap(), 1.0);
        // Inverted: positives at ranks 4 and 5 from the top: ½·¼ + ½·⅖ = 0.325.
        assert_close!(pr_auc(&s, &labels(&[1, 1, 0, 0, 0])).unwrap(), 0.325);
    }

    #[test]
    fn ap_groups_ties() {
        // All tied: one threshold, precision = prevalence = 2/5, recall 0 → 1.
        assert_close!(pr_auc(&[0.3; 5], &labels(&[1, 0, 1, 0, 0])).unwrap(), 0.4);
        // 0.9 (pos) P=1 R=⅓; {0.5 pos, 0.5 neg, 0.5 pos} P=¾ R=1: ⅓ + ⅔·¾ = 5/6.
        let ap = pr_auc(&[0.5, 0.9, 0.5, 0.5, 0.1], &labels(&[1, 1, 0, 1, 0])).unwrap();
        assert_close!(ap, 5.0 / 6.0);
    }

    #[test]
    fn ap_edge_cases() {
        assert_eq!(pr_auc(&[], &[]), None);
        assert_eq!(pr_auc(&[0.1, 0.9], &[false, false]), None);
        assert_close!(pr_auc(&[0.1, 0.9], &[true, true]).unwrap(), 1.0);
    }

    #[test]
    fn ap_matches_threshold_reference_on_random_data() {
        let mut rng = Lcg(11);
        for round in 0..200 {
            let n = 1 + rng.below(60) as usize;
            let levels = if round % 2 == 0 { 4 } else { 1_000_000 };
            let s: Vec<f64> = (0..n).map(|_| rng.below(levels) as f64).collect();
            let l: Vec<bool> = (0..n).map(|_| rng.below(4) == 0).collect();
            match (pr_auc(&s, &l), ap_by_thresholds(&s, &l)) {
                (Some(a), Some(b)) => assert!(close(a, b), "{a} vs {b} for {s:?} {l:?}"),
                (a, b) => assert_eq!(a, b),
            }
        }
    }

    // ---- precision_at_top ----

    #[test]
    fn top_count_is_a_careful_ceiling() {
        assert_eq!(top_count(30, 0.1), 3); // 0.1 · 30 = 3.0000000000000004 in f64
        assert_eq!(top_count(10, 0.25), 3);
        assert_eq!(top_count(10, 0.01), 1);
        assert_eq!(top_count(10, 0.0), 0);
        assert_eq!(top_count(10, 1.0), 10);
        assert_eq!(top_count(0, 0.5), 0);
        assert_eq!(top_count(1000, 0.07), 70);
    }

    #[test]
    fn precision_at_top_hand_computed() {
        let s = [0.1, 0.4, 0.35, 0.8];
        let l = labels(&[0, 0, 1, 1]);
        // k = 1: {0.8} → 1. k = 2: {0.8, 0.4} → ½. k = 3: ⅔. k = 4: ½.
        assert_close!(precision_at_top(&s, &l, 0.25).unwrap(), 1.0);
        assert_close!(precision_at_top(&s, &l, 0.5).unwrap(), 0.5);
        assert_close!(precision_at_top(&s, &l, 0.6).unwrap(), 2.0 / 3.0);
        assert_close!(precision_at_top(&s, &l, 1.0).unwrap(), 0.5);
    }

    #[test]
    fn precision_at_top_averages_ties_at_the_cut() {
        // k = 2: 0.9 (pos) fits; one of the three tied at 0.5 (one pos) fits: (1 + ⅓) / 2.
        let s = [0.5, 0.9, 0.5, 0.5];
        let l = labels(&[0, 1, 1, 0]);
        assert_close!(precision_at_top(&s, &l, 0.5).unwrap(), 2.0 / 3.0);
        // Independent of input order.
        let s2 = [0.5, 0.5, 0.5, 0.9];
        let l2 = labels(&[1, 0, 0, 1]);
        assert_close!(precision_at_top(&s2, &l2, 0.5).unwrap(), 2.0 / 3.0);
    }

    #[test]
    fn precision_at_top_none_when_nobody_selected() {
        assert_eq!(precision_at_top(&[], &[], 0.1), None);
        assert_eq!(precision_at_top(&[0.5], &[true], 0.0), None);
    }

    #[test]
    #[should_panic(expected = "outside [0, 1]")]
    fn precision_at_top_panics_on_bad_fraction() {
        precision_at_top(&[0.5], &[true], 1.5);
    }

    // ---- brier ----

    #[test]
    fn brier_hand_computed() {
        // (0.9−1)² + (0.2−0)² + (0.6−1)² + (0.5−0)² = 0.01 + 0.04 + 0.16 + 0.25 = 0.46; /4.
        let b = brier(&[0.9, 0.2, 0.6, 0.5], &labels(&[1, 0, 1, 0])).unwrap();
        assert_close!(b, 0.115);
        assert_close!(brier(&[1.0, 0.0], &[true, false]).unwrap(), 0.0);
        assert_close!(brier(&[0.0, 1.0], &[true, false]).unwrap(), 1.0);
        assert_close!(brier(&[0.5; 3], &labels(&[1, 0, 1])).unwrap(), 0.25);
        assert_eq!(brier(&[], &[]), None);
    }

    #[test]
    #[should_panic(expected = "outside [0, 1]")]
    fn brier_panics_on_bad_probability() {
        brier(&[1.2], &[true]);
    }

    #[test]
    #[should_panic(expected = "outside [0, 1]")]
    fn brier_panics_on_nan_probability() {
        brier(&[f64::NAN], &[true]);
    }

    // ---- calibration ----

    #[test]
    fn calibration_of_a_perfectly_calibrated_set_is_zero() {
        // In bin i, 20 predictions of 0.05 + 0.1·i with exactly 20·p = 1 + 2i positives.
        let (mut probs, mut outcomes) = (Vec::new(), Vec::new());
        for i in 0..10 {
            let p = 0.05 + 0.1 * i as f64;
            for j in 0..20 {
                probs.push(p);
                outcomes.push(j < 1 + 2 * i);
            }
        }
        let c = calibration(&probs, &outcomes, 10);
        assert_eq!(c.bins.len(), 10);
        assert!(c.bins.iter().all(|b| b.count == 20), "{c:?}");
        assert!(c.ece < 1e-12, "{c:?}");
        assert!(c.mce < 1e-12, "{c:?}");
    }

    #[test]
    fn calibration_hand_computed() {
        // 4 bins. Bin 0: 0.1, 0.2 (no positives) → pred 0.15, obs 0, gap 0.15.
        // Bin 2: 0.6 (pos) → gap 0.4. Bin 3: 0.8 (neg), 1.0 (pos) → pred 0.9, obs 0.5, gap 0.4.
        // ECE = 2/5·0.15 + 1/5·0.4 + 2/5·0.4 = 0.06 + 0.08 + 0.16 = 0.30; MCE = 0.4.
        let c = calibration(&[0.1, 0.2, 0.6, 0.8, 1.0], &labels(&[0, 0, 1, 0, 1]), 4);
        let counts: Vec<usize> = c.bins.iter().map(|b| b.count).collect();
        assert_eq!(counts, [2, 0, 1, 2]);
        assert_close!(c.bins[0].mean_predicted.unwrap(), 0.15);
        assert_close!(c.bins[0].observed_rate.unwrap(), 0.0);
        assert_eq!(c.bins[1].mean_predicted, None);
        assert_eq!(c.bins[1].observed_rate, None);
        assert_eq!(c.bins[1].gap(), None);
        assert_close!(c.bins[3].mean_predicted.unwrap(), 0.9);
        assert_close!(c.bins[3].observed_rate.unwrap(), 0.5);
        assert_close!(c.bins[1].lower, 0.25);
        assert_close!(c.bins[1].upper, 0.5);
        assert_close!(c.bins[3].upper, 1.0);
        assert_close!(c.ece, 0.3);
        assert_close!(c.mce, 0.4);
    }

    #[test]
    fn calibration_edges() {
        // Lower edges are inclusive, 1.0 goes to the last bin, 0.0 to the first.
        for bins in 1..=50 {
            for i in 0..bins {
                let edge = i as f64 / bins as f64;
                assert_eq!(bin_index(edge, bins), i, "edge {edge} with {bins} bins");
            }
            assert_eq!(bin_index(1.0, bins), bins - 1);
            assert_eq!(bin_index(0.0, bins), 0);
        }
        let c = calibration(&[0.0, 0.3, 1.0], &[false, false, true], 10);
        assert_eq!(c.bins[0].count, 1);
        assert_eq!(c.bins[3].count, 1);
        assert_eq!(c.bins[9].count, 1);
    }

    #[test]
    fn calibration_of_random_probs_is_consistent() {
        let mut rng = Lcg(3);
        let probs: Vec<f64> = (0..1000).map(|_| rng.unit()).collect();
        let outcomes: Vec<bool> = probs.iter().map(|&p| rng.unit() < p).collect();
        let c = calibration(&probs, &outcomes, 10);
        assert_eq!(c.bins.iter().map(|b| b.count).sum::<usize>(), 1000);
        for b in &c.bins {
            if let Some(m) = b.mean_predicted {
                assert!(b.lower <= m && m <= b.upper, "{b:?}");
            }
        }
        assert!(c.ece <= c.mce + 1e-12);
        assert!(
            c.ece < 0.1,
            "sampled from the predicted probabilities: {c:?}"
        );
    }

    #[test]
    fn calibration_of_empty_input() {
        let c = calibration(&[], &[], 5);
        assert_eq!(c.bins.len(), 5);
        assert!(c.bins.iter().all(|b| b.count == 0));
        assert_eq!((c.ece, c.mce), (0.0, 0.0));
    }

    #[test]
    #[should_panic(expected = "bins must be positive")]
    fn calibration_panics_on_zero_bins() {
        calibration(&[0.5], &[true], 0);
    }

    #[test]
    fn calibration_serialises() {
        let c = calibration(&[0.1, 0.9], &[false, true], 2);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["bins"][0]["count"], 1);
        assert_eq!(v["bins"].as_array().unwrap().len(), 2);
        assert!(v["ece"].is_number());
        let empty = serde_json::to_value(calibration(&[], &[], 1)).unwrap();
        assert!(empty["bins"][0]["mean_predicted"].is_null());
    }

    // ---- quantile / Summary ----

    #[test]
    fn quantiles_match_numpy() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        // numpy.quantile(range(1, 11), [0, .25, .5, .9, 1]) = [1, 3.25, 5.5, 9.1, 10]
        assert_close!(quantile(&v, 0.5).unwrap(), 5.5);
        assert!((quantile(&v, 0.9).unwrap() - 9.1).abs() < 1e-9);
        assert_close!(quantile(&v, 0.25).unwrap(), 3.25);
        assert_close!(quantile(&v, 0.0).unwrap(), 1.0);
        assert_close!(quantile(&v, 1.0).unwrap(), 10.0);
        // Unsorted input and duplicates: numpy.quantile([3, 1, 2, 2], .75) = 2.25
        assert_close!(quantile(&[3.0, 1.0, 2.0, 2.0], 0.75).unwrap(), 2.25);
        assert_close!(quantile(&[4.0], 0.3).unwrap(), 4.0);
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn quantile_sorted_agrees_with_quantile() {
        let v = [0.5, 2.0, 2.0, 7.5, 11.0];
        for q in [0.0, 0.1, 0.33, 0.5, 0.9, 1.0] {
            assert_eq!(quantile_sorted(&v, q), quantile(&v, q));
        }
        // An exact rank does not touch the neighbour, even an infinite one.
        assert_eq!(quantile_sorted(&[1.0, 2.0, f64::INFINITY], 0.5), Some(2.0));
    }

    #[test]
    #[should_panic(expected = "outside [0, 1]")]
    fn quantile_panics_on_bad_level() {
        quantile(&[1.0], 1.1);
    }

    #[test]
    fn summary_of_lead_times() {
        let v: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        let s = Summary::of(&v).unwrap();
        assert_eq!(s.count, 10);
        assert_close!(s.median, 5.5);
        assert!((s.p90 - 9.1).abs() < 1e-9);
        assert_close!(s.mean, 5.5);
        assert_eq!(Summary::of(&[]), None);
        let one = Summary::of(&[3.0]).unwrap();
        assert_eq!(
            (one.count, one.median, one.p90, one.mean),
            (1, 3.0, 3.0, 3.0)
        );
    }

    // ---- ConfusionCounts ----

    #[test]
    fn confusion_counts_hand_computed() {
        let c = ConfusionCounts {
            tp: 6,
            fp: 2,
            fn_: 4,
            tn: 88,
        };
        assert_eq!(c.total(), 100);
        assert_close!(c.precision().unwrap(), 0.75);
        assert_close!(c.recall().unwrap(), 0.6);
        // 2·0.75·0.6 / 1.35 = 2/3 = 12 / (12 + 2 + 4).
        assert_close!(c.f1().unwrap(), 2.0 / 3.0);
    }

    #[test]
    fn confusion_counts_undefined_ratios() {
        let none = ConfusionCounts::default();
        assert_eq!(
            (none.precision(), none.recall(), none.f1()),
            (None, None, None)
        );
        let no_alerts = ConfusionCounts {
            fn_: 3,
            tn: 5,
            ..Default::default()
        };
        assert_eq!(no_alerts.precision(), None);
        assert_eq!(no_alerts.recall(), Some(0.0));
        assert_eq!(no_alerts.f1(), Some(0.0));
        let no_churners = ConfusionCounts {
            fp: 2,
            tn: 5,
            ..Default::default()
        };
        assert_eq!(no_churners.recall(), None);
        assert_eq!(no_churners.precision(), Some(0.0));
    }

    #[test]
    fn confusion_counts_from_predictions_and_threshold() {
        let s = [0.1, 0.4, 0.35, 0.8];
        let l = labels(&[0, 0, 1, 1]);
        let c = ConfusionCounts::at_threshold(&s, &l, 0.4);
        assert_eq!(
            c,
            ConfusionCounts {
                tp: 1,
                fp: 1,
                fn_: 1,
                tn: 1
            }
        );
        let p: Vec<bool> = s.iter().map(|&x| x >= 0.35).collect();
        let c = ConfusionCounts::from_predictions(&p, &l);
        assert_eq!((c.tp, c.fp, c.fn_, c.tn), (2, 1, 0, 1));
    }

    #[test]
    fn confusion_counts_serialise_fn_without_underscore() {
        let v = serde_json::to_value(ConfusionCounts {
            tp: 1,
            fp: 2,
            fn_: 3,
            tn: 4,
        })
        .unwrap();
        assert_eq!(v, serde_json::json!({"tp": 1, "fp": 2, "fn": 3, "tn": 4}));
    }
}
