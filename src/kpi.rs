//! Business KPIs of one partition, in event time: churn, retention and revenue churn per period.
//!
//! Time is cut into periods of `lifecycle.kpi_period_days`, aligned to the Unix epoch, on the
//! partition's watermark. Per period:
//! - `start`: customers not lapsed when the period began;
//! - `new`: customers first seen during it;
//! - `lost`: customers who became lapsed during it;
//! - `end`: customers not lapsed when it ended (for the current period: now);
//! - revenue at the start and revenue lost: each customer's purchase revenue per period over
//!   their tenure (at least `value.min_tenure_days`), summed.
//!
//! From these, churn rate = lost / start, retention rate = (end - new) / start and revenue churn
//! = revenue lost / revenue at the start (the brief's formulas). Ratios are computed by
//! Prometheus from the counts summed over partitions and instances (a ratio per partition
//! cannot be summed). The counts are kept with the partition's progress in the changelog, so a
//! restart continues the period rather than starting a partial one; the first period after the
//! stream starts is partial (its `start` is 0).

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::customer::CustomerState;
use crate::metrics::PeriodGauges;
use crate::time::DAY_MS;

/// One period's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PeriodCounts {
    pub start: i64,
    pub new: i64,
    pub lost: i64,
    pub end: i64,
    pub start_revenue: f64,
    pub lost_revenue: f64,
}

impl PeriodCounts {
    /// The customer counts in the order of the gauges' `count` label: start, lost, new, end.
    pub fn counts(&self) -> [i64; 4] {
        [self.start, self.lost, self.new, self.end]
    }

    /// The revenues in the order of the gauges' `count` label: start, lost.
    pub fn revenue(&self) -> [f64; 2] {
        [self.start_revenue, self.lost_revenue]
    }
}

/// The current and the previous period of one partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Periods {
    /// Index of the current period (watermark / period length); `None` before any event.
    pub index: Option<i64>,
    pub current: PeriodCounts,
    pub previous: Option<PeriodCounts>,
}

impl Periods {
    /// The boundary the watermark `wm` has passed, if the current period is over.
    pub fn boundary_passed(&self, wm: i64, period_ms: i64) -> Option<i64> {
        let index = self.index?;
        let boundary = (index + 1).saturating_mul(period_ms);
        (wm >= boundary).then_some(boundary)
    }

    /// Close the current period; the next one starts with its customers (its `end`), worth
    /// `revenue`.
    pub fn roll(&mut self, revenue: f64) {
        let finished = self.current;
        self.previous = Some(finished);
        self.current = PeriodCounts {
            start: finished.end,
            end: finished.end,
            start_revenue: revenue,
            ..PeriodCounts::default()
        };
        self.index = self.index.map(|i| i + 1);
    }
}

/// A customer's purchase revenue per KPI period, over their tenure at `as_of_ms` (at least
/// `value.min_tenure_days`).
pub fn revenue_per_period(c: &CustomerState, as_of_ms: i64, cfg: &Config) -> f64 {
    let total = f64::from(c.purchases.total_value);
    if total <= 0.0 {
        return 0.0;
    }
    let tenure_days = ((as_of_ms - c.first_seen.ms()).max(0) as f64 / DAY_MS as f64)
        .max(cfg.value.min_tenure_days);
    total / tenure_days * (cfg.lifecycle.kpi_period_ms as f64 / DAY_MS as f64)
}

/// A partition's periods as published in the gauges: the partition moves its own contribution
/// when its counts change, so the gauges are the sums over partitions. The current period's
/// `end` is kept up to date as customers lapse and come and go: it is the partition's count
/// of customers not lapsed.
pub struct PeriodKpis {
    pub periods: Periods,
    published: Periods,
    gauges: PeriodGauges,
}

impl PeriodKpis {
    pub fn new(gauges: PeriodGauges) -> Self {
        PeriodKpis {
            periods: Periods::default(),
            published: Periods::default(),
            gauges,
        }
    }

    /// Bring the gauges up to date with this partition's counts.
    pub fn publish(&mut self) {
        let (old, new) = (&self.published, &self.periods);
        if old == new {
            return;
        }
        self.gauges.apply(&old.current, &new.current, 0);
        self.gauges.apply(
            &old.previous.unwrap_or_default(),
            &new.previous.unwrap_or_default(),
            1,
        );
        self.published = self.periods;
    }

    /// Withdraw this partition's contribution (revoke, shutdown) and start over.
    pub fn clear(&mut self) {
        self.periods = Periods::default();
        self.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_briefs_example_and_a_roll() {
        // 200 customers at the start, 10 lost, 20 new: churn 5 %, retention (210 - 20) / 200.
        let mut p = Periods {
            index: Some(3),
            current: PeriodCounts {
                start: 200,
                start_revenue: 10_000.0,
                ..Default::default()
            },
            previous: None,
        };
        p.current.new = 20;
        p.current.lost = 10;
        p.current.end = 210;
        p.current.lost_revenue = 800.0;
        let period = 30 * DAY_MS;
        assert_eq!(p.boundary_passed(4 * period - 1, period), None);
        assert_eq!(p.boundary_passed(4 * period, period), Some(4 * period));
        p.roll(11_000.0);
        let prev = p.previous.unwrap();
        assert_eq!(prev.lost as f64 / prev.start as f64, 0.05);
        assert_eq!((prev.end - prev.new) as f64 / prev.start as f64, 0.95);
        assert_eq!(prev.lost_revenue / prev.start_revenue, 0.08);
        assert_eq!(p.index, Some(4));
        assert_eq!(p.current.start, 210);
        assert_eq!(p.current.new, 0);
        assert_eq!(p.current.start_revenue, 11_000.0);
    }

    #[test]
    fn revenue_is_per_period_over_tenure() {
        let mut cfg = Config::default();
        cfg.lifecycle.kpi_period_ms = 30 * DAY_MS;
        cfg.value.min_tenure_days = 30.0;
        let mut c = CustomerState::new(&cfg, 0);
        assert_eq!(revenue_per_period(&c, 10 * DAY_MS, &cfg), 0.0);
        c.purchases.record(DAY_MS, 60.0);
        c.purchases.record(50 * DAY_MS, 60.0);
        // 120 over 60 days of tenure: 60 per 30-day period.
        assert!((revenue_per_period(&c, 60 * DAY_MS, &cfg) - 60.0).abs() < 1e-9);
        // A short tenure counts as min_tenure_days.
        assert!((revenue_per_period(&c, 10 * DAY_MS, &cfg) - 120.0).abs() < 1e-9);
    }
}
