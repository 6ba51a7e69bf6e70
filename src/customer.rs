//! One customer's state: rolling windows, purchase rhythm, engagement level, alert state.
//!
//! Constant size per customer (one heap allocation: the bucket ring), updated in O(1) per event.

use crate::alerting::AlertState;
use crate::config::Config;
use crate::event::{Activity, Event};
use crate::scoring::Lifecycle;
use crate::time::DAY_MS;
use crate::window::{Placement, Windows};

/// The purchase rhythm: count, last purchase, and the running mean and variance of the gaps
/// between purchases (Welford), in days.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PurchaseRhythm {
    pub count: u32,
    pub last_ms: Option<i64>,
    pub gaps: u32,
    pub gap_mean_days: f64,
    gap_m2: f64,
    pub total_value: f64,
}

impl PurchaseRhythm {
    pub fn record(&mut self, ts_ms: i64, amount: f64) {
        self.count = self.count.saturating_add(1);
        self.total_value += amount;
        match self.last_ms {
            Some(last) if ts_ms > last => {
                let gap = (ts_ms - last) as f64 / DAY_MS as f64;
                self.gaps += 1;
                let d = gap - self.gap_mean_days;
                self.gap_mean_days += d / self.gaps as f64;
                self.gap_m2 += d * (gap - self.gap_mean_days);
                self.last_ms = Some(ts_ms);
            }
            Some(_) => {} // out of order: counted in value and count, not in the rhythm
            None => self.last_ms = Some(ts_ms),
        }
    }

    /// Sample variance of the gaps (days²), when there are at least two.
    pub fn gap_variance(&self) -> Option<f64> {
        (self.gaps >= 2).then(|| self.gap_m2 / (self.gaps - 1) as f64)
    }
}

/// The engagement score's recent and baseline levels, exponentially weighted in event time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngagementLevel {
    pub count: u32,
    pub last_ms: i64,
    pub last_score: f64,
    /// Recent level (short half-life).
    pub recent: f64,
    /// Sum of squared normalised weights of the scores in `recent` (1 / effective count).
    pub recent_weight_sq: f64,
    /// Baseline level (long half-life) and the spread of scores around it.
    pub baseline: f64,
    pub baseline_var: f64,
}

impl EngagementLevel {
    pub fn record(&mut self, ts_ms: i64, score: f64, recent_hl_days: f64, baseline_hl_days: f64) {
        self.count = self.count.saturating_add(1);
        self.last_score = score;
        if self.count == 1 {
            self.last_ms = ts_ms;
            self.recent = score;
            self.recent_weight_sq = 1.0;
            self.baseline = score;
            self.baseline_var = 0.0;
            return;
        }
        let dt_days = ((ts_ms - self.last_ms).max(0)) as f64 / DAY_MS as f64;
        let floor = 1.0 / self.count as f64; // behaves like a running mean while data is scarce
        let a_recent = (1.0 - 0.5f64.powf(dt_days / recent_hl_days)).max(floor);
        let a_base = (1.0 - 0.5f64.powf(dt_days / baseline_hl_days)).max(floor);
        self.recent += a_recent * (score - self.recent);
        self.recent_weight_sq =
            (1.0 - a_recent).powi(2) * self.recent_weight_sq + a_recent * a_recent;
        let diff = score - self.baseline;
        self.baseline += a_base * diff;
        self.baseline_var = (1.0 - a_base) * (self.baseline_var + a_base * diff * diff);
        self.last_ms = self.last_ms.max(ts_ms);
    }
}

/// Everything churnwatch keeps about one customer.
#[derive(Debug, Clone)]
pub struct CustomerState {
    pub windows: Windows,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub events: u64,
    pub purchases: PurchaseRhythm,
    pub engagement: EngagementLevel,
    pub alert: AlertState,
    /// Due time of this customer's pending re-score timer, if one is pending.
    pub next_check_ms: Option<i64>,
    /// What this customer currently contributes to the gauges.
    pub gauge: GaugeContribution,
}

/// The customer's current contribution to the population gauges, so they can be updated
/// incrementally (a change of lifecycle moves one unit from one label to another).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaugeContribution {
    pub lifecycle: Lifecycle,
    /// The tier while at risk.
    pub at_risk_tier: Option<crate::scoring::Tier>,
    pub value_at_risk: f64,
}

impl CustomerState {
    pub fn new(cfg: &Config, first_seen_ms: i64) -> Self {
        CustomerState {
            windows: Windows::new(cfg.windows.total_buckets() as usize),
            first_seen_ms,
            last_seen_ms: first_seen_ms,
            events: 0,
            purchases: PurchaseRhythm::default(),
            engagement: EngagementLevel::default(),
            alert: AlertState::default(),
            next_check_ms: None,
            gauge: GaugeContribution {
                lifecycle: Lifecycle::New,
                at_risk_tier: None,
                value_at_risk: 0.0,
            },
        }
    }

    /// Fold one event into the state. Returns whether its bucket was still held.
    pub fn apply(&mut self, ev: &Event<'_>, cfg: &Config) -> Placement {
        self.events += 1;
        self.first_seen_ms = self.first_seen_ms.min(ev.ts_ms);
        self.last_seen_ms = self.last_seen_ms.max(ev.ts_ms);
        let bucket_ms = cfg.windows.bucket_ms;
        match ev.activity {
            Activity::Visit => self.windows.add(ev.ts_ms, bucket_ms, |b| b.add_visit()),
            Activity::Usage { quantity } => self
                .windows
                .add(ev.ts_ms, bucket_ms, |b| b.add_usage(quantity)),
            Activity::Purchase { amount } => {
                self.purchases.record(ev.ts_ms, amount);
                self.windows
                    .add(ev.ts_ms, bucket_ms, |b| b.add_purchase(amount))
            }
            Activity::Engagement { score } => {
                let e = &cfg.signals.engagement;
                self.engagement.record(
                    ev.ts_ms,
                    score,
                    e.recent_half_life_days,
                    e.baseline_half_life_days,
                );
                // Engagement updates count as activity but have no bucket counter.
                self.windows.add(ev.ts_ms, bucket_ms, |_| {})
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rhythm_mean_and_variance() {
        let mut r = PurchaseRhythm::default();
        for d in [0, 10, 20, 30, 40] {
            r.record(d * DAY_MS, 10.0);
        }
        assert_eq!(r.count, 5);
        assert_eq!(r.gaps, 4);
        assert!((r.gap_mean_days - 10.0).abs() < 1e-9);
        assert!(r.gap_variance().unwrap().abs() < 1e-9);
        assert!((r.total_value - 50.0).abs() < 1e-9);
        // Out-of-order purchase: value counted, rhythm untouched.
        r.record(5 * DAY_MS, 1.0);
        assert_eq!(r.gaps, 4);
        assert_eq!(r.count, 6);
    }

    #[test]
    fn engagement_levels_follow_a_drop() {
        let mut e = EngagementLevel::default();
        for d in 0..40 {
            e.record(d * DAY_MS, 80.0 + (d % 3) as f64, 3.0, 28.0);
        }
        assert!((e.recent - 81.0).abs() < 2.0);
        for d in 40..47 {
            e.record(d * DAY_MS, 40.0, 3.0, 28.0);
        }
        assert!(e.recent < 50.0, "{e:?}");
        assert!(e.baseline > 65.0, "{e:?}");
        assert!(e.baseline_var > 0.0);
    }
}
