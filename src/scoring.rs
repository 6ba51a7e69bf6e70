//! Scoring: the early signals, each a statistical test against the customer's own baseline,
//! and the churn probability, combined into a risk score in [0, 1] with a tier and ranked,
//! quantified reasons.
//!
//! - Visits and usage: the online change detector of [`crate::change`] (a CUSUM for the onset
//!   of a drop against the customer's weekday-adjusted baseline, the exact conditional Poisson
//!   test for its significance).
//! - Purchases: the time since the last purchase day against the customer's own gamma model
//!   of the gaps, shrunk towards a population prior.
//! - Engagement score: the recent level against the baseline level, a one-sided z-test.
//! - Silence: `p_churn`, the probability of no activity within `churn.horizon_days`, from the
//!   customer-base model of [`crate::model`] with the population priors; the signal is how far
//!   it has risen above what it was right after the customer's latest activity.
//!
//! Each signal yields a [`Reason`] with a *strength* in [0, 1]: the test's confidence
//! (1 - p) times the severity of the change (relative to the config's `full_drop` or
//! `full_overdue_cycles`), and zero unless the change passes the signal's minimum and the
//! p-value is at most `signals.max_p_value`. The risk is a noisy-OR of the weighted strengths,
//! `risk = 1 - Π (1 - weight_i · strength_i)`: one strong signal can raise an alert, several
//! moderate ones reinforce each other, and each reason's `contribution = weight · strength`
//! says how much it pushed.
//!
//! The [`Scorer`] trait is the seam where a different model can be swapped in.

use serde::{Deserialize, Serialize};

use crate::change::{detect_drop, Series};
use crate::config::Config;
use crate::customer::CustomerState;
use crate::stats::{gamma_survival, normal_cdf, poisson_rate_drop};
use crate::time::{bucket_index, ms_to_days, DAY_MS};
use crate::window::{Bucket, BucketRun, Moments, Totals};

/// The signals churnwatch watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    Visits,
    Usage,
    Purchases,
    Engagement,
    /// Days with any activity recently against the customer's whole history.
    Activity,
    /// Silence judged against the customer's own rhythm of active days (the churn model).
    Silence,
    /// Days without any activity (explains `lapsed` alerts).
    Inactivity,
}

impl Signal {
    /// Every signal, in declaration order (`Signal as usize` indexes it).
    pub const ALL: [Signal; 7] = [
        Signal::Visits,
        Signal::Usage,
        Signal::Purchases,
        Signal::Engagement,
        Signal::Activity,
        Signal::Silence,
        Signal::Inactivity,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Visits => "visits",
            Signal::Usage => "usage",
            Signal::Purchases => "purchases",
            Signal::Engagement => "engagement",
            Signal::Activity => "activity",
            Signal::Silence => "silence",
            Signal::Inactivity => "inactivity",
        }
    }
}

/// Risk tier. `None` is "not at risk".
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    #[default]
    None,
    Low,
    Medium,
    High,
}

impl Tier {
    pub const AT_RISK: [Tier; 3] = [Tier::Low, Tier::Medium, Tier::High];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::None => "none",
            Tier::Low => "low",
            Tier::Medium => "medium",
            Tier::High => "high",
        }
    }

    /// Tier of an at-risk customer with this risk (at least `Low`).
    pub fn of_at_risk(risk: f64, cfg: &crate::config::AlertingConfig) -> Tier {
        if risk >= cfg.high_threshold {
            Tier::High
        } else if risk >= cfg.medium_threshold {
            Tier::Medium
        } else {
            Tier::Low
        }
    }

    /// The tier of an at-risk customer: from the risk, raised one step when the value at
    /// risk reaches `alerting.high_value_at_risk`.
    pub fn of_assessment(a: &Assessment, cfg: &crate::config::AlertingConfig) -> Tier {
        let tier = Tier::of_at_risk(a.risk, cfg);
        if cfg.high_value_at_risk > 0.0 && a.value_at_risk() >= cfg.high_value_at_risk {
            match tier {
                Tier::None => Tier::None,
                Tier::Low => Tier::Medium,
                Tier::Medium | Tier::High => Tier::High,
            }
        } else {
            tier
        }
    }
}

/// Lifecycle stage, as retention platforms use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    New,
    Active,
    Declining,
    Lapsed,
}

impl Lifecycle {
    pub const ALL: [Lifecycle; 4] = [
        Lifecycle::New,
        Lifecycle::Active,
        Lifecycle::Declining,
        Lifecycle::Lapsed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::New => "new",
            Lifecycle::Active => "active",
            Lifecycle::Declining => "declining",
            Lifecycle::Lapsed => "lapsed",
        }
    }
}

/// One signal's evidence, with its numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reason {
    pub signal: Signal,
    /// Baseline level (rate per day, expected gap in days, or score level).
    pub baseline: f64,
    /// Recent level, in the same unit.
    pub recent: f64,
    /// Relative change in percent (negative = drop; for purchases, positive = overdue).
    pub change_pct: f64,
    /// The test statistic (z-score, or cycles overdue for purchases).
    pub statistic: f64,
    pub p_value: f64,
    /// Confidence times severity, 0..1 (0: the signal does not count).
    pub strength: f64,
    pub weight: f64,
    /// Length of the recent and baseline windows the numbers cover, in days.
    pub recent_days: f64,
    pub baseline_days: f64,
    /// Estimated start of the change (event time).
    pub onset_ms: Option<i64>,
    /// Posterior probability that the customer is still active (silence signal).
    pub posterior: Option<f64>,
}

impl Reason {
    pub fn contribution(&self) -> f64 {
        self.weight * self.strength
    }

    pub fn unit(&self) -> &'static str {
        match self.signal {
            Signal::Visits => "visits_per_day",
            Signal::Usage => "units_per_day",
            Signal::Purchases => "days_between_purchases",
            Signal::Engagement => "score",
            Signal::Activity => "active_days_per_week",
            Signal::Silence => "days_between_active_days",
            Signal::Inactivity => "days",
        }
    }

    /// A one-line explanation, e.g. "visits -62% vs 28-day baseline (2.10 -> 0.80 per day), p=0.003".
    pub fn summary(&self) -> String {
        let p = format_p(self.p_value);
        match self.signal {
            Signal::Visits | Signal::Usage => format!(
                "{} {:+.0}% vs {:.0}-day baseline ({:.2} -> {:.2} per day over the last {:.0} days), p={}",
                if self.signal == Signal::Visits {
                    "visits"
                } else {
                    "usage"
                },
                self.change_pct,
                self.baseline_days,
                self.baseline,
                self.recent,
                self.recent_days,
                p
            ),
            Signal::Purchases if self.statistic > 0.0 => format!(
                "purchase {:.1} cycles overdue ({:.0} days since last purchase, usual gap {:.1} days), p={}",
                self.statistic, self.recent, self.baseline, p
            ),
            Signal::Purchases => format!(
                "next purchase not yet due ({:.0} days since last purchase, usual gap {:.1} days)",
                self.recent, self.baseline
            ),
            Signal::Engagement => format!(
                "engagement score {:+.0}% vs baseline ({:.1} -> {:.1}, z={:.1}), p={}",
                self.change_pct, self.baseline, self.recent, self.statistic, p
            ),
            Signal::Activity => format!(
                "active {:.1} days a week over the last {:.0} days vs {:.1} before ({:+.0}%), p={}",
                self.recent, self.recent_days, self.baseline, self.change_pct, p
            ),
            Signal::Silence => format!(
                "no activity for {:.1} days (usually every {:.1} days): P(still active) {:.0}%, churn within {:.0} days {:.0}%",
                self.recent,
                self.baseline,
                self.posterior.unwrap_or(1.0) * 100.0,
                self.recent_days,
                self.statistic * 100.0
            ),
            Signal::Inactivity if self.strength > 0.0 => format!(
                "no activity for {:.1} days (lapse threshold {:.0} days)",
                self.recent, self.baseline
            ),
            Signal::Inactivity => format!(
                "active again (last activity {:.1} days ago)",
                self.recent
            ),
        }
    }
}

fn format_p(p: f64) -> String {
    if p < 0.001 {
        format!("{p:.1e}")
    } else {
        format!("{p:.3}")
    }
}

/// A customer's assessment at one point in event time.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    pub as_of_ms: i64,
    pub risk: f64,
    /// Evidence of every signal that could be evaluated (no heap allocation), in the order
    /// visits, usage, purchases, engagement, silence, activity.
    pub signals: [Option<Reason>; 6],
    /// Probability of no activity within `churn.horizon_days`.
    pub p_churn: f64,
    /// Expected revenue over the value horizon if the customer stays.
    pub customer_value: f64,
    pub days_since_last_active: f64,
    /// Visits and usage units per day in the recent window (whether or not a signal could be
    /// tested): what recovery is judged on.
    pub recent_visit_rate: f64,
    pub recent_usage_rate: f64,
}

impl Assessment {
    /// Evaluated signals ranked by contribution (largest first), then by p-value.
    pub fn ranked_reasons(&self) -> Vec<Reason> {
        let mut v: Vec<Reason> = self.signals.iter().flatten().copied().collect();
        v.sort_by(|a, b| {
            b.contribution()
                .total_cmp(&a.contribution())
                .then(a.p_value.total_cmp(&b.p_value))
        });
        v
    }

    pub fn value_at_risk(&self) -> f64 {
        self.customer_value * self.risk
    }
}

/// A scoring model: a pure function of a customer's state and a time.
pub trait Scorer: Send + Sync {
    fn assess(&self, c: &CustomerState, as_of_ms: i64, cfg: &Config) -> Assessment;

    /// Whether a customer's own activity (a visit, usage or a purchase) that lands in the
    /// bucket of their latest assessment can raise their risk. When it cannot, a healthy
    /// customer's activity later in that bucket is not re-assessed; their next timer assesses
    /// them (see [`crate::partition`], "Assessments"). The default, `true`, assesses every
    /// event.
    fn activity_may_raise_risk(&self) -> bool {
        true
    }
}

/// The default model: the signal tests and the churn model combined by a weighted noisy-OR.
#[derive(Debug, Clone, Copy, Default)]
pub struct SignalScorer;

impl Scorer for SignalScorer {
    fn assess(&self, c: &CustomerState, as_of_ms: i64, cfg: &Config) -> Assessment {
        let s = &cfg.signals;
        let win = RateWindows::new(c, as_of_ms, cfg);
        let visits = s.visits.enabled.then(|| win.visits(cfg)).flatten();
        let usage = s.usage.enabled.then(|| win.usage(cfg)).flatten();
        let purchases = s
            .purchases
            .enabled
            .then(|| purchase_signal(c, as_of_ms, cfg))
            .flatten();
        let engagement = s
            .engagement
            .enabled
            .then(|| engagement_signal(c, cfg))
            .flatten();
        let churn = churn_estimate(c, as_of_ms, cfg);
        let silence = churn.and_then(|e| silence_signal(c, &e, cfg));
        let activity = match churn {
            Some(e) if s.activity.enabled => activity_signal(c, &win, e.repeat_days, cfg),
            _ => None,
        };
        let signals = [visits, usage, purchases, engagement, silence, activity];
        Assessment {
            as_of_ms,
            risk: combine(signals.iter().flatten()),
            signals,
            p_churn: churn.map_or(1.0, |e| e.p_churn),
            customer_value: customer_value(c, as_of_ms, cfg),
            days_since_last_active: ms_to_days((as_of_ms - c.last_active_ms()).max(0)),
            recent_visit_rate: win.recent.visits as f64 / win.recent_days,
            recent_usage_rate: win.recent.usage_qty / win.recent_days,
        }
    }

    /// Activity in the current bucket lowers this model's risk or leaves it as it was:
    /// - the windowed tests (visits, usage, active days) read complete buckets only (the
    ///   active-day test leaves the current bucket's day out of its history too);
    /// - activity ends the silence, and a purchase ends the purchase rhythm's wait;
    /// - the engagement score moves only with engagement events.
    ///
    /// What time alone raises within the bucket (the purchase rhythm's overdue share) is left
    /// to the next timer, at most one bucket later.
    fn activity_may_raise_risk(&self) -> bool {
        false
    }
}

/// What the customer-base model says about one customer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChurnEstimate {
    /// P(no activity within the horizon).
    pub p_churn: f64,
    /// P(no activity within the horizon) as it was right after the latest activity.
    pub p_churn_after_last: f64,
    /// Posterior probability that the customer is still active.
    pub p_alive: f64,
    /// Posterior predictive probability of a silence at least this long if still active.
    pub p_silence: f64,
    /// Repeat active days, days since the latest activity, and the usual gap (days).
    pub repeat_days: f64,
    pub days_silent: f64,
    pub usual_gap_days: f64,
}

/// `p_churn` and its parts, from the customer's active days and the population priors: the
/// purchase model for customers who only ever bought, the activity model otherwise.
pub fn churn_estimate(c: &CustomerState, as_of_ms: i64, cfg: &Config) -> Option<ChurnEstimate> {
    let (x, t_x, t) = c.activity.summary(as_of_ms)?;
    let m = if c.engaged {
        &cfg.churn.activity_model
    } else {
        &cfg.churn.purchase_model
    };
    let p = m.params;
    let o = m.outlook(x, t_x, t, cfg.churn.horizon_days);
    Some(ChurnEstimate {
        p_churn: o.p_churn,
        p_churn_after_last: o.p_churn_after_last,
        p_alive: o.p_alive,
        p_silence: o.p_silence,
        repeat_days: x,
        days_silent: t - t_x,
        usual_gap_days: (p.alpha + t) / (p.r + x),
    })
}

/// Active days recently (the last two recent windows of complete buckets) against the rate of
/// active days over the customer's history before them: an exact conditional Poisson test.
fn activity_signal(
    c: &CustomerState,
    win: &RateWindows,
    repeat_days: f64,
    cfg: &Config,
) -> Option<Reason> {
    let sc = &cfg.signals.activity;
    let w = &cfg.windows;
    let b = w.bucket_ms;
    let first = c.activity.first.get()?;
    let span = (2 * w.recent_buckets as i64).min(w.total_buckets() as i64);
    let from = win.now_idx - span;
    let before_days = ms_to_days(from * b - first);
    // A whole baseline window of history before the recent period.
    if before_days < (w.baseline_buckets as i64 * b) as f64 / DAY_MS as f64 {
        return None;
    }
    let recent = win
        .slice(from, win.now_idx)
        .iter()
        .filter(|k| k.is_active())
        .count() as f64;
    // The current bucket is not complete: a day of activity in it is neither recent nor
    // before (counting it before would make a customer's first visit of the day look like a
    // higher baseline, so a larger drop).
    let current = win
        .slice(win.now_idx, win.now_idx + 1)
        .iter()
        .filter(|k| k.is_active())
        .count() as f64;
    let before = (repeat_days + 1.0 - recent - current).max(0.0);
    if before < sc.min_baseline_events as f64 {
        return None;
    }
    let recent_days = span as f64 * b as f64 / DAY_MS as f64;
    let base_rate = before / before_days;
    let recent_rate = recent / recent_days;
    let change = recent_rate / base_rate - 1.0;
    let drop = -change;
    // A drop below the signal's minimum cannot count: it is not tested (p = 1, z = 0).
    let t = if drop >= sc.min_drop {
        poisson_rate_drop(recent as u64, recent_days, before as u64, before_days)?
    } else {
        crate::stats::RateTest {
            z: 0.0,
            p_value: 1.0,
        }
    };
    let strength = if drop >= sc.min_drop {
        confidence(t.p_value, cfg) * (drop / sc.full_drop).min(1.0)
    } else {
        0.0
    };
    Some(Reason {
        signal: Signal::Activity,
        baseline: base_rate * 7.0,
        recent: recent_rate * 7.0,
        change_pct: change * 100.0,
        statistic: t.z,
        p_value: t.p_value,
        strength,
        weight: sc.weight,
        recent_days,
        baseline_days: before_days,
        onset_ms: None,
        posterior: None,
    })
}

/// The silence signal: how far `p_churn` has risen above the customer's own normal.
fn silence_signal(c: &CustomerState, e: &ChurnEstimate, cfg: &Config) -> Option<Reason> {
    let ch = &cfg.churn;
    let excess = if e.p_churn_after_last < 1.0 {
        ((e.p_churn - e.p_churn_after_last) / (1.0 - e.p_churn_after_last)).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let strength = if e.repeat_days >= ch.min_repeat_days as f64 {
        excess
    } else {
        0.0
    };
    Some(Reason {
        signal: Signal::Silence,
        baseline: e.usual_gap_days,
        recent: e.days_silent,
        change_pct: (e.days_silent / e.usual_gap_days.max(1e-9) - 1.0) * 100.0,
        statistic: e.p_churn,
        p_value: e.p_silence,
        strength,
        weight: ch.weight,
        recent_days: ch.horizon_days,
        baseline_days: ms_to_days((c.activity.last.ms() - c.activity.first.get()?).max(0)),
        onset_ms: Some(c.activity.last.ms()),
        posterior: Some(e.p_alive),
    })
}

/// The noisy-OR of the reasons' contributions: `1 - Π(1 - weight · strength)`.
///
/// Visits, usage and active days are views of the same sessions, so they are one piece of
/// evidence: only the largest of their contributions counts.
pub fn combine<'a>(reasons: impl IntoIterator<Item = &'a Reason>) -> f64 {
    let mut sessions = 0.0f64;
    let mut survive = 1.0f64;
    for r in reasons {
        match r.signal {
            Signal::Visits | Signal::Usage | Signal::Activity => {
                sessions = sessions.max(r.contribution())
            }
            _ => survive *= 1.0 - r.contribution(),
        }
    }
    (1.0 - survive * (1.0 - sessions)).clamp(0.0, 1.0)
}

/// Expected revenue over `value.horizon_days` from the customer's own purchase rate.
pub fn customer_value(c: &CustomerState, as_of_ms: i64, cfg: &Config) -> f64 {
    if c.purchases.total_value <= 0.0 {
        return 0.0;
    }
    let tenure = ms_to_days((as_of_ms - c.first_seen.ms()).max(0)).max(cfg.value.min_tenure_days);
    f64::from(c.purchases.total_value) / tenure * cfg.value.horizon_days
}

/// The customer's buckets for one assessment, copied from the ring in one pass: from the start
/// of the baseline window (or the customer's first bucket) to the current, incomplete bucket.
/// Every windowed signal reads its slice of this.
#[derive(Debug, Clone)]
struct RateWindows {
    /// The customer's typical usage report (0 when none).
    usage_unit: f64,
    buckets: BucketRun,
    /// Absolute index of `buckets[0]` and of the current bucket (the last one).
    from: i64,
    now_idx: i64,
    /// Totals of the recent window including the current, incomplete bucket (recovery is
    /// judged on these).
    recent: Totals,
    recent_days: f64,
    baseline: Option<Baseline>,
}

#[derive(Debug, Clone, Copy)]
struct Baseline {
    m: Moments,
    days: f64,
    /// Buckets since the customer's first one (the spread of per-bucket counts is over these).
    buckets: f64,
    /// Absolute indices of the first baseline and the first recent complete bucket.
    base_from: i64,
    recent_from: i64,
}

impl RateWindows {
    fn new(c: &CustomerState, as_of_ms: i64, cfg: &Config) -> RateWindows {
        let w = &cfg.windows;
        let b = w.bucket_ms;
        let now_idx = bucket_index(as_of_ms, b);
        let first_idx = bucket_index(c.first_seen.ms(), b);
        // Change detection reads complete buckets only: the recent window is the
        // `recent_buckets` before the current one, the baseline the `baseline_buckets` before
        // that, starting no earlier than the customer's first bucket.
        let recent_from = now_idx - w.recent_buckets as i64;
        let base_from = (recent_from - w.baseline_buckets as i64).max(first_idx);
        let from = base_from.min(recent_from);
        let mut buckets = BucketRun::new();
        c.windows.copy_range(from, now_idx, &mut buckets);
        // Recent window for levels: the last `recent_buckets` buckets, the current one counting
        // only for the part of it that has elapsed.
        let level_from = now_idx - w.recent_buckets as i64 + 1;
        let recent_days =
            ms_to_days(as_of_ms - (level_from * b).max(c.first_seen.ms())).max(1.0 / 24.0);
        let recent = Moments::of(&buckets[(level_from - from) as usize..]).totals;
        let baseline_ms = recent_from * b - (base_from * b).max(c.first_seen.ms());
        let baseline = (baseline_ms >= w.min_baseline_buckets as i64 * b).then(|| Baseline {
            m: Moments::of(&buckets[(base_from - from) as usize..(recent_from - from) as usize]),
            days: ms_to_days(baseline_ms),
            buckets: (recent_from - base_from) as f64,
            base_from,
            recent_from,
        });
        RateWindows {
            usage_unit: c.windows.usage_unit().map_or(0.0, |u| f64::from(u.mean)),
            buckets,
            from,
            now_idx,
            recent,
            recent_days,
            baseline,
        }
    }

    /// The buckets of absolute indices `from..to` (clamped to what was copied).
    fn slice(&self, from: i64, to: i64) -> &[Bucket] {
        let lo = (from - self.from).clamp(0, self.buckets.len() as i64) as usize;
        let hi = (to - self.from).clamp(lo as i64, self.buckets.len() as i64) as usize;
        &self.buckets[lo..hi]
    }

    fn visits(&self, cfg: &Config) -> Option<Reason> {
        let sc = &cfg.signals.visits;
        let base = self.baseline.as_ref()?;
        let total = base.m.totals.visits;
        if total < sc.min_baseline_events as u64 {
            return None;
        }
        let phi = dispersion(total as f64, base.m.visits_sq, base.buckets);
        self.rate_reason(Signal::Visits, sc, cfg, phi, 1.0, |b| b.visits as f64)
    }

    fn usage(&self, cfg: &Config) -> Option<Reason> {
        let sc = &cfg.signals.usage;
        let base = self.baseline.as_ref()?;
        let t = base.m.totals;
        // Usage in units of the customer's typical report ([`crate::window::UsageUnit`]):
        // fewer and smaller reports both count, and the baseline must hold about
        // `min_baseline_events` reports' worth. The dispersion is that of the units per bucket.
        let unit = self.usage_unit;
        if t.usage_qty <= 0.0
            || unit <= 0.0
            || t.usage_qty / unit < sc.min_baseline_events as f64 - 0.5
        {
            return None;
        }
        let phi = dispersion(
            t.usage_qty / unit,
            base.m.usage_qty_sq / (unit * unit),
            base.buckets,
        );
        self.rate_reason(Signal::Usage, sc, cfg, phi, unit, move |b| {
            b.usage_qty as f64 / unit
        })
    }

    /// Run the change detector on one per-bucket count (in test units); levels are reported
    /// per day in test units times `per_unit`.
    fn rate_reason(
        &self,
        signal: Signal,
        sc: &crate::config::RateSignalConfig,
        cfg: &Config,
        phi: f64,
        per_unit: f64,
        count: impl Fn(&Bucket) -> f64,
    ) -> Option<Reason> {
        let base = self.baseline.as_ref()?;
        let b = cfg.windows.bucket_ms;
        let period = season_period(b);
        let phase = |idx: i64| idx.rem_euclid(period as i64) as usize;
        let ch = detect_drop(
            &Series {
                baseline: self.slice(base.base_from, base.recent_from),
                baseline_phase: phase(base.base_from),
                recent: self.slice(base.recent_from, self.now_idx),
                recent_phase: phase(base.recent_from),
                period,
                dispersion: phi,
            },
            count,
        )?;
        let bucket_days = b as f64 / DAY_MS as f64;
        let seg_days = ch.buckets as f64 * bucket_days;
        let baseline_level = ch.baseline_total * per_unit / base.days;
        let recent_level = ch.observed * per_unit / seg_days;
        let change = ch.change();
        let drop = -change;
        // A drop counts fully once it has lasted `signals.full_evidence_days`: short dips
        // (a long weekend, a few days off) count in proportion.
        let persistence = (seg_days / cfg.signals.full_evidence_days).min(1.0);
        let strength = if ch.in_progress && drop >= sc.min_drop {
            confidence(ch.p_value, cfg) * (drop / sc.full_drop).min(1.0) * persistence
        } else {
            0.0
        };
        Some(Reason {
            signal,
            baseline: baseline_level,
            recent: recent_level,
            change_pct: change * 100.0,
            statistic: ch.cusum,
            p_value: ch.p_value,
            strength,
            weight: sc.weight,
            recent_days: seg_days,
            baseline_days: base.days,
            onset_ms: ch
                .in_progress
                .then(|| (base.recent_from + ch.onset as i64) * b),
            posterior: None,
        })
    }
}

/// How sure a test is of a change, 0..1: the evidence `ln(NO_EVIDENCE_P / p)` relative to
/// that of `signals.max_p_value`, clamped to [0, 1]. A p-value at the configured level counts
/// fully, one of 0.1 or more not at all, and those between in proportion, so scores rank
/// smoothly while alerts still need strong evidence (or several signals together) to reach
/// the thresholds. Every customer is tested every day: weak evidence is common by chance.
pub fn confidence(p_value: f64, cfg: &Config) -> f64 {
    const NO_EVIDENCE_P: f64 = 0.1;
    if p_value.is_nan() {
        return 0.0;
    }
    if p_value <= 0.0 {
        return 1.0;
    }
    let full = (NO_EVIDENCE_P / cfg.signals.max_p_value.min(NO_EVIDENCE_P / 2.0)).ln();
    ((NO_EVIDENCE_P / p_value).ln() / full).clamp(0.0, 1.0)
}

/// Buckets per week when a week is a whole number of at most seven buckets (daily buckets: a
/// weekday pattern), else 1 (no seasonal adjustment).
fn season_period(bucket_ms: i64) -> usize {
    let week = 7 * DAY_MS;
    if week % bucket_ms == 0 && week / bucket_ms <= 7 {
        (week / bucket_ms) as usize
    } else {
        1
    }
}

/// Over-dispersion of a per-bucket count from its sum and sum of squares over `n` buckets:
/// variance / mean, at least 1. Activity comes in bursts (sessions, busy weeks), so the plain
/// Poisson test would be far too confident; dividing the counts by this factor is the
/// quasi-Poisson correction.
fn dispersion(sum: f64, sum_sq: f64, n: f64) -> f64 {
    if n < 2.0 || sum <= 0.0 {
        return 1.0;
    }
    let mean = sum / n;
    let var = (sum_sq - n * mean * mean) / (n - 1.0);
    (var / mean).clamp(1.0, 100.0)
}

/// Purchase rhythm: how surprising is the time since the last purchase, given the customer's
/// own gaps (gamma model, mean and shape shrunk towards the population prior)?
fn purchase_signal(c: &CustomerState, as_of_ms: i64, cfg: &Config) -> Option<Reason> {
    let sc = &cfg.signals.purchases;
    let r = &c.purchases;
    if r.occasions() < sc.min_purchases || r.gaps == 0 {
        return None;
    }
    let last = r.last_ms()?;
    let g = r.gaps as f64;
    let k0 = sc.prior_strength;
    let gap_mean = f64::from(r.gap_mean_days);
    let mean = ((g * gap_mean + k0 * sc.prior_mean_gap_days) / (g + k0)).max(1.0 / 24.0);
    let shape_hat = match r.gap_variance() {
        Some(v) if v > 1e-9 => (gap_mean * gap_mean / v).clamp(0.2, 50.0),
        Some(_) => 50.0,
        None => 1.0,
    };
    let shape = ((g * shape_hat + k0 * 1.0) / (g + k0)).clamp(0.5, 20.0);
    let since = ms_to_days((as_of_ms - last).max(0));
    let p = gamma_survival(since, shape, mean);
    let cycles_overdue = since / mean - 1.0;
    let strength = if cycles_overdue >= sc.min_overdue_cycles {
        confidence(p, cfg) * (cycles_overdue / sc.full_overdue_cycles).min(1.0)
    } else {
        0.0
    };
    Some(Reason {
        signal: Signal::Purchases,
        baseline: mean,
        recent: since,
        change_pct: cycles_overdue * 100.0,
        statistic: cycles_overdue,
        p_value: p,
        strength,
        weight: sc.weight,
        recent_days: since,
        baseline_days: ms_to_days((last - c.first_seen.ms()).max(0)),
        // The rhythm broke when the next purchase was due.
        onset_ms: (cycles_overdue > 0.0).then(|| last + (mean * DAY_MS as f64) as i64),
        posterior: None,
    })
}

/// Engagement score: recent level vs. baseline level, one-sided z-test against the spread.
fn engagement_signal(c: &CustomerState, cfg: &Config) -> Option<Reason> {
    let sc = &cfg.signals.engagement;
    let e = c.engagement();
    if u32::from(e.count) < sc.min_events {
        return None;
    }
    let (recent, baseline) = (f64::from(e.recent), f64::from(e.baseline));
    let scale = baseline.abs().max(1e-9);
    let sd = f64::from(e.baseline_var).sqrt().max(0.01 * scale).max(1e-9);
    // The recent level is a weighted mean of several scores: test it with its standard error.
    let se = sd * e.recent_weight_sq.to_f64().sqrt();
    let z = (recent - baseline) / se;
    let p = normal_cdf(z);
    let drop = (baseline - recent) / scale;
    let strength = if drop >= sc.min_drop {
        confidence(p, cfg) * (drop / sc.full_drop).min(1.0)
    } else {
        0.0
    };
    Some(Reason {
        signal: Signal::Engagement,
        baseline,
        recent,
        change_pct: -drop * 100.0,
        statistic: z,
        p_value: p,
        strength,
        weight: sc.weight,
        recent_days: sc.recent_half_life_days,
        baseline_days: sc.baseline_half_life_days,
        onset_ms: (e.drop_cusum > half::f16::ZERO).then_some(e.drop_onset.ms()),
        posterior: None,
    })
}

/// The inactivity reason: on a `lapsed` alert it carries the whole risk (`lapsed = true`); on a
/// `recovered` alert with no testable signal it just says the customer is active again.
pub fn inactivity_reason(days_silent: f64, lapsed: bool, cfg: &Config) -> Reason {
    let lapse_days = cfg.lifecycle.lapse_after_ms as f64 / DAY_MS as f64;
    let strength = if lapsed { 1.0 } else { 0.0 };
    Reason {
        signal: Signal::Inactivity,
        baseline: lapse_days,
        recent: days_silent,
        change_pct: if lapsed { -100.0 } else { 0.0 },
        statistic: days_silent,
        p_value: if lapsed { 0.0 } else { 1.0 },
        strength,
        weight: 1.0,
        recent_days: days_silent,
        baseline_days: lapse_days,
        onset_ms: None,
        posterior: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Activity, Event};
    use std::borrow::Cow;

    fn ev(day: f64, activity: Activity) -> Event<'static> {
        Event {
            customer_id: Cow::Borrowed("c1"),
            ts_ms: (day * DAY_MS as f64) as i64 + 1_000 * DAY_MS,
            activity,
            event_id: None,
        }
    }

    fn customer(cfg: &Config, events: &[Event<'_>]) -> CustomerState {
        let mut c = CustomerState::new(cfg, events[0].ts_ms);
        for e in events {
            c.apply(e, cfg);
        }
        c
    }

    fn at(day: f64) -> i64 {
        (day * DAY_MS as f64) as i64 + 1_000 * DAY_MS
    }

    #[test]
    fn a_first_visit_of_the_day_does_not_raise_the_risk() {
        // Daily visits for 50 days, then every fourth day: the active-day test has evidence.
        let cfg = Config::default();
        let mut evs: Vec<_> = (0..50)
            .map(|d| ev(d as f64 + 0.3, Activity::Visit))
            .collect();
        evs.extend(
            (50..70)
                .step_by(4)
                .map(|d| ev(d as f64 + 0.3, Activity::Visit)),
        );
        let mut c = customer(&cfg, &evs);
        let before = SignalScorer.assess(&c, at(72.0), &cfg);
        let activity = |a: &Assessment| a.signals[5].expect("the active-day test");
        assert!(activity(&before).strength > 0.0, "{:?}", activity(&before));
        // The day's first visit: in the current bucket, neither recent nor before.
        let visit = ev(72.4, Activity::Visit);
        c.apply(&visit, &cfg);
        let after = SignalScorer.assess(&c, visit.ts_ms, &cfg);
        assert_eq!(activity(&after).baseline, activity(&before).baseline);
        assert_eq!(activity(&after).strength, activity(&before).strength);
        assert!(
            after.risk <= before.risk,
            "{} > {}",
            after.risk,
            before.risk
        );
    }

    #[test]
    fn steady_visitor_is_not_at_risk() {
        let cfg = Config::default();
        let evs: Vec<_> = (0..60)
            .flat_map(|d| {
                [
                    ev(d as f64 + 0.3, Activity::Visit),
                    ev(d as f64 + 0.6, Activity::Visit),
                ]
            })
            .collect();
        let c = customer(&cfg, &evs);
        let a = SignalScorer.assess(&c, at(60.0), &cfg);
        assert!(a.risk < 0.1, "{a:?}");
        let v = a.signals[0].unwrap();
        assert!((v.baseline - 2.0).abs() < 0.2, "{v:?}");
    }

    #[test]
    fn visit_drop_is_detected_and_explained() {
        let cfg = Config::default();
        let mut evs: Vec<_> = (0..40)
            .flat_map(|d| {
                [
                    ev(d as f64 + 0.3, Activity::Visit),
                    ev(d as f64 + 0.6, Activity::Visit),
                    ev(d as f64 + 0.7, Activity::Usage { quantity: 3.0 }),
                ]
            })
            .collect();
        evs.push(ev(42.5, Activity::Visit));
        let c = customer(&cfg, &evs);
        let a = SignalScorer.assess(&c, at(47.0), &cfg);
        assert!(a.risk >= cfg.alerting.enter_threshold, "{a:?}");
        let reasons = a.ranked_reasons();
        assert!(reasons[0].strength > 0.5);
        let v = a.signals[0].unwrap();
        assert!(v.change_pct < -80.0 && v.p_value < 1e-3, "{v:?}");
        let u = a.signals[1].unwrap();
        assert!((u.change_pct + 100.0).abs() < 1e-9, "usage stopped: {u:?}");
        assert!(v.summary().starts_with("visits -"), "{}", v.summary());
    }

    #[test]
    fn too_little_history_yields_no_signal() {
        let cfg = Config::from_toml_str("[churn]\nmin_repeat_days = 4\n").unwrap();
        let evs: Vec<_> = (0..4)
            .map(|d| ev(d as f64 + 0.5, Activity::Visit))
            .collect();
        let c = customer(&cfg, &evs);
        let a = SignalScorer.assess(&c, at(9.0), &cfg);
        assert!(a.signals[0].is_none());
        // Three repeat days are too few to judge silence against a rhythm, but p_churn is
        // there.
        let silence = a.signals[4].unwrap();
        assert_eq!(silence.strength, 0.0);
        assert!(a.p_churn > 0.0 && a.p_churn < 1.0);
        assert_eq!(a.risk, 0.0);
    }

    #[test]
    fn overdue_regular_buyer() {
        let cfg = Config::default();
        let evs: Vec<_> = (0..8)
            .map(|i| ev(i as f64 * 7.0, Activity::Purchase { amount: 20.0 }))
            .collect();
        let c = customer(&cfg, &evs);
        // On rhythm: last purchase on day 49, asked on day 53.
        let on_time = SignalScorer.assess(&c, at(53.0), &cfg);
        assert_eq!(on_time.signals[2].unwrap().strength, 0.0);
        // Five weeks later: far overdue.
        let late = SignalScorer.assess(&c, at(49.0 + 35.0), &cfg);
        let p = late.signals[2].unwrap();
        assert!(p.strength > 0.9 && p.statistic > 1.5, "{p:?}");
        assert!(late.customer_value > 0.0);
        assert!(p.summary().contains("cycles overdue"));
    }

    #[test]
    fn engagement_drop() {
        let cfg = Config::default();
        let mut evs: Vec<_> = (0..30)
            .map(|d| {
                ev(
                    d as f64,
                    Activity::Engagement {
                        score: 70.0 + (d % 4) as f64,
                    },
                )
            })
            .collect();
        evs.extend((30..36).map(|d| ev(d as f64, Activity::Engagement { score: 30.0 })));
        let c = customer(&cfg, &evs);
        let a = SignalScorer.assess(&c, at(36.0), &cfg);
        let e = a.signals[3].unwrap();
        assert!(e.strength > 0.5 && e.change_pct < -20.0, "{e:?}");
    }

    #[test]
    fn dispersion_of_steady_and_bursty_counts() {
        // Three a day every day: no extra spread.
        assert_eq!(dispersion(3.0 * 14.0, 9.0 * 14.0, 14.0), 1.0);
        // Twenty-one once a week over two weeks: far more spread than Poisson.
        let phi = dispersion(42.0, 2.0 * 441.0, 14.0);
        assert!(phi > 15.0, "{phi}");
        assert_eq!(dispersion(0.0, 0.0, 14.0), 1.0);
    }

    #[test]
    fn tiers_follow_thresholds() {
        let a = Config::default().alerting;
        assert_eq!(Tier::of_at_risk(0.55, &a), Tier::Low);
        assert_eq!(Tier::of_at_risk(0.75, &a), Tier::Medium);
        assert_eq!(Tier::of_at_risk(0.95, &a), Tier::High);
        assert!(Tier::High > Tier::Medium && Tier::Low > Tier::None);
    }
}
