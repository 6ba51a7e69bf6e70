//! Statistical tests behind the signals, on statrs distributions.

use statrs::distribution::{Binomial, ContinuousCDF, DiscreteCDF, Gamma, Normal};

/// Result of testing a recent count against a baseline count for a drop of the rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateTest {
    /// Standardised difference of the recent count from its expectation under the baseline rate.
    pub z: f64,
    /// One-sided p-value of a drop at least this large if the rate had not changed.
    pub p_value: f64,
}

/// Exact conditional test for a drop of a Poisson rate (the "C-test").
///
/// Under H0 (same rate in both windows), given `n = recent + baseline` events, the recent count is
/// Binomial(n, t_recent / (t_recent + t_baseline)). The p-value is P(X <= recent).
pub fn poisson_rate_drop(
    recent: u64,
    recent_days: f64,
    baseline: u64,
    baseline_days: f64,
) -> Option<RateTest> {
    if !(recent_days > 0.0 && baseline_days > 0.0) {
        return None;
    }
    let n = recent + baseline;
    if n == 0 {
        return Some(RateTest {
            z: 0.0,
            p_value: 1.0,
        });
    }
    let p0 = recent_days / (recent_days + baseline_days);
    let expected = n as f64 * p0;
    let sd = (n as f64 * p0 * (1.0 - p0)).sqrt();
    let z = if sd > 0.0 {
        (recent as f64 - expected) / sd
    } else {
        0.0
    };
    let p_value = Binomial::new(p0, n)
        .map(|b| b.cdf(recent))
        .unwrap_or(1.0)
        .clamp(0.0, 1.0);
    Some(RateTest { z, p_value })
}

/// P(gap > t) for gamma-distributed gaps with the given shape and mean (same unit as `t`).
pub fn gamma_survival(t: f64, shape: f64, mean: f64) -> f64 {
    if t <= 0.0 {
        return 1.0;
    }
    match Gamma::new(shape, shape / mean) {
        Ok(g) => g.sf(t).clamp(0.0, 1.0),
        Err(_) => 1.0,
    }
}

/// Standard normal CDF.
pub fn normal_cdf(z: f64) -> f64 {
    if z.is_nan() {
        return 1.0;
    }
    Normal::standard().cdf(z)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_change_is_not_significant() {
        let t = poisson_rate_drop(70, 7.0, 280, 28.0).unwrap();
        assert!(t.z.abs() < 1e-9);
        assert!(t.p_value > 0.4, "{t:?}");
    }

    #[test]
    fn a_stop_is_significant() {
        let t = poisson_rate_drop(0, 7.0, 56, 28.0).unwrap();
        // (28/35)^56 = P(all 56 events in the baseline) ~ 3.7e-6
        assert!((t.p_value - (0.8f64).powi(56)).abs() < 1e-9, "{t:?}");
        assert!(t.z < -3.0);
    }

    #[test]
    fn a_small_sample_drop_is_not_significant() {
        let t = poisson_rate_drop(0, 7.0, 3, 28.0).unwrap();
        assert!(t.p_value > 0.4, "{t:?}");
    }

    #[test]
    fn p_value_is_monotone_in_recent_count() {
        let mut last = 0.0;
        for r in 0..20 {
            let t = poisson_rate_drop(r, 7.0, 80, 28.0).unwrap();
            assert!(t.p_value >= last);
            last = t.p_value;
        }
    }

    #[test]
    fn gamma_survival_matches_exponential_at_shape_one() {
        let s = gamma_survival(30.0, 1.0, 15.0);
        assert!((s - (-2.0f64).exp()).abs() < 1e-9);
        assert_eq!(gamma_survival(0.0, 3.0, 10.0), 1.0);
        // Regular buyers (high shape) are much more surprising when late.
        assert!(gamma_survival(30.0, 10.0, 15.0) < s / 10.0);
    }

    #[test]
    fn normal_cdf_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-12);
        assert!(normal_cdf(-3.0) < 0.002);
    }
}
