//! Online change detection on one customer's per-bucket counts (visits, usage units).
//!
//! A drop is searched for in the recent window against the customer's own baseline window:
//!
//! 1. **Seasonal baseline.** The expected count of a bucket is the baseline's mean for the
//!    bucket's position in the week (Monday, Tuesday, ... when buckets are days), shrunk
//!    towards the overall mean by `SEASON_SHRINK` buckets' worth of evidence. A customer who
//!    is only ever active on weekdays therefore expects nothing on Saturdays, and a quiet
//!    weekend is not a decline.
//! 2. **CUSUM for the onset.** Page's cumulative sum of the Poisson log-likelihood ratio of
//!    "rate fell to `DESIGN_RATIO` of normal" against "rate as usual", run over the recent
//!    window's complete buckets (oldest first) and reset at zero. When the sum is positive
//!    at the end, the drop in progress began where the current run began: that bucket is the
//!    estimated onset (the maximum-likelihood change point of the run).
//! 3. **Significance.** The segment from the onset to now is tested with the exact
//!    conditional Poisson test against the baseline, with both exposures weighted by the
//!    seasonal profile, on counts divided by the customer's over-dispersion. The onset was
//!    chosen by looking at the data, so the p-value is Bonferroni-adjusted by the number of
//!    candidate onsets.
//!
//! Every step is O(window length), independent of the customer's history: the windows are
//! the fixed-size bucket ring.

use crate::stats::poisson_rate_drop;

/// The drop the CUSUM is tuned to detect: the rate falling to half of normal.
pub const DESIGN_RATIO: f64 = 0.5;

/// How many buckets' worth of evidence the overall mean counts for in each seasonal position.
const SEASON_SHRINK: f64 = 2.0;

/// A customer's buckets; the count under test is read from each by the detector's `count`.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a, T> {
    /// Baseline buckets, oldest first (only buckets since the customer's first).
    pub baseline: &'a [T],
    /// Position in the season of `baseline[0]` (0..period).
    pub baseline_phase: usize,
    /// Recent complete buckets, oldest first.
    pub recent: &'a [T],
    /// Position in the season of `recent[0]`.
    pub recent_phase: usize,
    /// Buckets per season (7 for daily buckets and a weekly pattern; 1 for none).
    pub period: usize,
    /// Over-dispersion of the counts (variance / mean, at least 1).
    pub dispersion: f64,
}

/// What the detector found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Change {
    /// Index into `recent` where the drop began (0 when there is no drop in progress: the
    /// numbers then describe the whole recent window).
    pub onset: usize,
    /// Whether a drop is in progress (the CUSUM is positive).
    pub in_progress: bool,
    /// Total count of the baseline.
    pub baseline_total: f64,
    /// Observed and expected (from the seasonal baseline) counts since the onset.
    pub observed: f64,
    pub expected: f64,
    /// Buckets since the onset.
    pub buckets: usize,
    /// The CUSUM statistic at the end of the window (log-likelihood ratio, 0 = no evidence).
    pub cusum: f64,
    /// One-sided p-value of the segment, adjusted for the candidate onsets; 1 when no drop is
    /// in progress (nothing to test).
    pub p_value: f64,
}

impl Change {
    /// Relative change of the rate since the onset (-1 = stopped).
    pub fn change(&self) -> f64 {
        if self.expected > 0.0 {
            self.observed / self.expected - 1.0
        } else {
            0.0
        }
    }
}

/// Run the detector on the counts `count` reads from each bucket. `None` when the baseline is
/// empty or has no activity.
pub fn detect_drop<T>(s: &Series<'_, T>, count: impl Fn(&T) -> f64) -> Option<Change> {
    let period = s.period.max(1);
    if s.baseline.is_empty() || s.recent.is_empty() {
        return None;
    }
    let (profile, total) = seasonal_profile(s.baseline, &count, s.baseline_phase, period);
    if total <= 0.0 {
        return None;
    }
    let expected_at = |phase0: usize, i: usize| profile[(phase0 + i) % period];
    // Exposure of the baseline under its own profile, and the scale that turns profile units
    // into expected counts.
    let base_exposure: f64 = (0..s.baseline.len())
        .map(|i| expected_at(s.baseline_phase, i))
        .sum();
    if base_exposure <= 0.0 {
        return None;
    }
    let scale = total / base_exposure;
    let phi = s.dispersion.max(1.0);

    let ln_rho = DESIGN_RATIO.ln();
    let mut cusum = 0.0f64;
    let mut run_start = 0usize;
    for (i, bucket) in s.recent.iter().enumerate() {
        let x = count(bucket);
        let lambda = expected_at(s.recent_phase, i) * scale;
        let llr = (x * ln_rho + lambda * (1.0 - DESIGN_RATIO)) / phi;
        if cusum <= 0.0 {
            run_start = i;
        }
        cusum = (cusum + llr).max(0.0);
    }
    let in_progress = cusum > 0.0;
    let onset = if in_progress { run_start } else { 0 };
    let observed: f64 = s.recent[onset..].iter().map(&count).sum();
    let seg_exposure: f64 = (onset..s.recent.len())
        .map(|i| expected_at(s.recent_phase, i))
        .sum();
    let scaled = |x: f64| (x / phi).round().max(0.0) as u64;
    // With the CUSUM at zero the data favour "no drop" over "halved": nothing to test.
    let p = if in_progress && seg_exposure > 0.0 {
        poisson_rate_drop(scaled(observed), seg_exposure, scaled(total), base_exposure)
            .map_or(1.0, |t| t.p_value)
    } else {
        1.0
    };
    let candidates = if in_progress {
        s.recent.len() as f64
    } else {
        1.0
    };
    Some(Change {
        onset,
        in_progress,
        baseline_total: total,
        observed,
        expected: seg_exposure * scale,
        buckets: s.recent.len() - onset,
        cusum,
        p_value: (p * candidates).min(1.0),
    })
}

/// Mean count per seasonal position, shrunk towards the overall mean, and the total; at most 7
/// positions are supported (longer periods fall back to no season).
fn seasonal_profile<T>(
    baseline: &[T],
    count: impl Fn(&T) -> f64,
    phase: usize,
    period: usize,
) -> ([f64; 7], f64) {
    let seasonal = (2..=7).contains(&period);
    let mut sum = [0.0; 7];
    let mut n = [0.0; 7];
    let mut total = 0.0;
    for (i, b) in baseline.iter().enumerate() {
        let x = count(b);
        total += x;
        if seasonal {
            let k = (phase + i) % period;
            sum[k] += x;
            n[k] += 1.0;
        }
    }
    let mean = total / baseline.len() as f64;
    let mut out = [mean; 7];
    if seasonal {
        for k in 0..period {
            out[k] = (sum[k] + SEASON_SHRINK * mean) / (n[k] + SEASON_SHRINK);
        }
    }
    (out, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(x: &f64) -> f64 {
        *x
    }

    fn detect(baseline: &[f64], recent: &[f64], period: usize) -> Change {
        detect_drop(
            &Series {
                baseline,
                baseline_phase: 0,
                recent,
                recent_phase: baseline.len() % period.max(1),
                period,
                dispersion: 1.0,
            },
            count,
        )
        .unwrap()
    }

    #[test]
    fn steady_counts_show_no_drop() {
        let base = [3.0; 28];
        let c = detect(&base, &[3.0, 4.0, 2.0, 3.0, 3.0, 4.0, 3.0], 7);
        assert!(!c.in_progress || c.p_value > 0.5, "{c:?}");
        assert!(c.change().abs() < 0.2, "{c:?}");
    }

    #[test]
    fn the_onset_of_a_constructed_drop_is_found() {
        // Four a day, then from recent day 5 on, none.
        let base = [4.0; 28];
        let mut recent = [4.0; 14];
        for x in &mut recent[5..] {
            *x = 0.0;
        }
        let c = detect(&base, &recent, 7);
        assert!(c.in_progress);
        assert_eq!(c.onset, 5, "{c:?}");
        assert_eq!(c.buckets, 9);
        assert!((c.change() + 1.0).abs() < 1e-9);
        assert!((c.expected - 36.0).abs() < 1e-6, "{c:?}");
        assert_eq!(c.baseline_total, 112.0);
        assert!(c.p_value < 1e-6, "{c:?}");
    }

    #[test]
    fn a_halving_is_found_and_sized() {
        let base = [6.0; 28];
        let mut recent = [6.0; 14];
        for x in &mut recent[4..] {
            *x = 3.0;
        }
        let c = detect(&base, &recent, 7);
        assert!(c.in_progress && (3..=5).contains(&c.onset), "{c:?}");
        assert!(c.change() < -0.4 && c.change() > -0.6, "{c:?}");
        // Strong, even after the adjustment for the 14 candidate onsets.
        assert!(c.p_value < 1e-2, "{c:?}");
    }

    #[test]
    fn weekday_only_customer_is_not_declining_on_weekends() {
        // Mon-Fri: 3 a day; Sat, Sun: nothing. Recent window ends with a weekend.
        let week = [3.0, 3.0, 3.0, 3.0, 3.0, 0.0, 0.0];
        let base: Vec<f64> = week.iter().cycle().take(28).copied().collect();
        let recent = [3.0, 3.0, 3.0, 3.0, 3.0, 0.0, 0.0];
        let c = detect(&base, &recent, 7);
        assert!(c.p_value > 0.5, "{c:?}");
        // Without the seasonal profile the empty weekend looks like the start of a drop.
        let flat = detect(&base, &recent, 1);
        assert!(flat.in_progress && flat.onset == 5, "{flat:?}");
    }

    #[test]
    fn dispersion_weakens_the_evidence() {
        let base = [4.0; 28];
        let recent = [4.0, 4.0, 4.0, 1.0, 1.0, 1.0, 1.0];
        let plain = detect(&base, &recent, 7);
        let bursty = detect_drop(
            &Series {
                baseline: &base,
                baseline_phase: 0,
                recent: &recent,
                recent_phase: 0,
                period: 7,
                dispersion: 4.0,
            },
            count,
        )
        .unwrap();
        assert!(
            bursty.p_value > plain.p_value * 10.0,
            "{plain:?} {bursty:?}"
        );
    }

    #[test]
    fn no_baseline_activity_gives_nothing() {
        assert!(detect_drop(
            &Series {
                baseline: &[0.0; 28],
                baseline_phase: 0,
                recent: &[0.0; 7],
                recent_phase: 0,
                period: 7,
                dispersion: 1.0,
            },
            count,
        )
        .is_none());
    }
}
