//! One customer's state: rolling windows, purchase rhythm, engagement level, alert state.
//!
//! Constant size per customer, updated in O(1) per event. Beside [`CustomerState`] itself, a
//! customer holds one allocation, the bucket ring (a slot of [`crate::ring_pool`]; none for a
//! ring of purchase marks), and a second slot of the pool ([`parts`]) for what only some
//! customers need: the engagement levels, once a score has been sent, and the alert state
//! while it is not the default (a risk awaiting confirmation, or an episode, whose count it
//! keeps for good). Most buyers never need it ([`CustomerState::engagement`],
//! [`CustomerState::alert`]).

pub mod parts;

use serde::{Deserialize, Serialize};

use parts::Parts;

use crate::alerting::AlertState;
use crate::config::Config;
use crate::event::{Activity, Event};
use crate::scoring::Lifecycle;
use crate::time::{ms_to_days, MaybeStamp, Stamp, StampMs, DAY_MS};
use crate::window::{Placement, Windows};

/// Days with activity since the customer's first: the summary `(x, t_x, T)` that the
/// customer-base models of the BG/NBD family need, kept in O(1).
///
/// Several events on one calendar day (UTC) are one transaction day: a basket of ten order
/// lines, or a session of many clicks, is one occasion.
///
/// Packed to 2-byte alignment, as are the other parts of [`CustomerState`]: 10 bytes, where
/// the padding after the count would make 12.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[repr(Rust, packed(2))]
pub struct ActiveDays {
    /// First and latest activity (event time, to the second), `None` before any.
    pub first: MaybeStamp,
    pub last: Stamp,
    /// Distinct days with activity after the first one (the models' `x`; saturating: 179
    /// years of days).
    #[serde(with = "crate::compact::u16_as_u32")]
    pub repeat_days: u16,
}

impl ActiveDays {
    /// Fold in one activity. Returns the previous latest activity when this one starts a new,
    /// later day (a gap between days ended).
    pub fn record(&mut self, ts_ms: i64) -> Option<i64> {
        let day = |t: i64| t.div_euclid(DAY_MS);
        let last = self.last.ms();
        match self.first.get() {
            None => {
                self.first = MaybeStamp::some(ts_ms);
                self.last = Stamp::of_ms(ts_ms);
            }
            Some(first) => {
                if ts_ms < first {
                    // Late event from before the first: the earlier day becomes the first.
                    if day(ts_ms) < day(first) {
                        self.repeat_days = self.repeat_days.saturating_add(1);
                    }
                    self.first = MaybeStamp::some(ts_ms);
                } else if day(ts_ms) > day(last) {
                    self.repeat_days = self.repeat_days.saturating_add(1);
                    self.last = Stamp::of_ms(ts_ms);
                    return Some(last);
                } else if ts_ms > last {
                    self.last = Stamp::of_ms(ts_ms);
                }
                // A late event on a day between the first and the latest cannot be told
                // apart from a day already counted: it is not counted (an underestimate of
                // at most the late events' days).
            }
        }
        None
    }

    pub fn last_ms_or(&self, default: i64) -> i64 {
        if self.first.is_some() {
            self.last.ms()
        } else {
            default
        }
    }

    /// `(x, t_x, T)` in days at `as_of_ms`.
    pub fn summary(&self, as_of_ms: i64) -> Option<(f64, f64, f64)> {
        let first = self.first.get()?;
        let t = ms_to_days((as_of_ms - first).max(0));
        let t_x = ms_to_days((self.last.ms() - first).max(0)).min(t);
        Some((self.repeat_days as f64, t_x, t))
    }
}

/// The purchase rhythm: purchase days, total value, and the running mean and variance of the
/// gaps between purchase days (Welford, updated in `f64`, kept in `f32`: seven significant
/// digits of a gap in days), in days. The total value is summed in `f64` and kept in `f32` too
/// (seven significant digits: a gauge's precision), written as `f64` in changelog records.
///
/// Counts in `u16` (saturating) and the rest in `f32`: 26 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[repr(Rust, packed(2))]
pub struct PurchaseRhythm {
    /// Purchase events (all of them, for value; saturating).
    #[serde(with = "crate::compact::u16_as_u32")]
    pub count: u16,
    pub days: ActiveDays,
    /// Gaps between purchase days (at most the repeat days).
    #[serde(with = "crate::compact::u16_as_u32")]
    pub gaps: u16,
    pub gap_mean_days: f32,
    /// Sum of the squared deviations from the mean (Welford's M2).
    pub(crate) gap_m2: f32,
    #[serde(with = "crate::compact::f32_as_f64")]
    pub total_value: f32,
}

impl PurchaseRhythm {
    pub fn record(&mut self, ts_ms: i64, amount: f64) {
        self.count = self.count.saturating_add(1);
        self.total_value = (f64::from(self.total_value) + amount) as f32;
        if let Some(previous) = self.days.record(ts_ms) {
            let gap = (ts_ms - previous) as f64 / DAY_MS as f64;
            self.gaps = self.gaps.saturating_add(1);
            let mean = f64::from(self.gap_mean_days);
            let d = gap - mean;
            let mean = mean + d / self.gaps as f64;
            self.gap_mean_days = mean as f32;
            self.gap_m2 = (f64::from(self.gap_m2) + d * (gap - mean)) as f32;
        }
    }

    /// Days with a purchase.
    pub fn occasions(&self) -> u32 {
        if self.days.first.is_some() {
            u32::from(self.days.repeat_days) + 1
        } else {
            0
        }
    }

    /// Latest purchase.
    pub fn last_ms(&self) -> Option<i64> {
        self.days.first.get().map(|_| self.days.last.ms())
    }

    /// Sample variance of the gaps (days²), when there are at least two.
    pub fn gap_variance(&self) -> Option<f64> {
        (self.gaps >= 2).then(|| f64::from(self.gap_m2) / (self.gaps - 1) as f64)
    }
}

/// The engagement score's recent and baseline levels, exponentially weighted in event time.
///
/// Levels are kept in `f32` (updated in `f64`): seven significant digits are more than a
/// score carries, and they halve this part of every customer's state. The recent level's
/// weight and the CUSUM, which only scale a test or mark a run, are kept in binary16: three
/// significant digits. 28 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[repr(Rust, packed(2))]
pub struct EngagementLevel {
    /// Scores recorded (saturating).
    #[serde(with = "crate::compact::u16_as_u32")]
    pub count: u16,
    /// Latest score's time.
    pub last: Stamp,
    /// Latest score, for the record (the levels below are what scoring reads): three
    /// significant digits.
    #[serde(with = "crate::compact::bf16_as_f32")]
    pub last_score: half::bf16,
    /// Recent level (short half-life).
    pub recent: f32,
    /// Sum of squared normalised weights of the scores in `recent` (1 / effective count: in
    /// (0, 1]).
    #[serde(with = "crate::compact::f16_as_f32")]
    pub recent_weight_sq: half::f16,
    /// Baseline level (long half-life) and the spread of scores around it.
    pub baseline: f32,
    pub baseline_var: f32,
    /// Page's CUSUM of the scores' standardised shortfall below the baseline level (in
    /// standard deviations, minus a slack of half of one), and where its current run began:
    /// the estimated onset of a fall of the score. Saturates at 65,504 (a run of shortfalls
    /// that long is a fall by any measure; it ends as any run does, once the sum is spent).
    #[serde(with = "crate::compact::f16_as_f32")]
    pub drop_cusum: half::f16,
    pub drop_onset: Stamp,
}

/// Slack of the engagement CUSUM, in standard deviations: shortfalls smaller than this are
/// noise.
const ENGAGEMENT_CUSUM_SLACK: f64 = 0.5;

impl EngagementLevel {
    /// Before the first score: what a customer without scores reads.
    pub const NONE: EngagementLevel = EngagementLevel {
        count: 0,
        last: Stamp::EPOCH,
        last_score: half::bf16::ZERO,
        recent: 0.0,
        recent_weight_sq: half::f16::ZERO,
        baseline: 0.0,
        baseline_var: 0.0,
        drop_cusum: half::f16::ZERO,
        drop_onset: Stamp::EPOCH,
    };

    pub fn record(&mut self, ts_ms: i64, score: f64, recent_hl_days: f64, baseline_hl_days: f64) {
        self.count = self.count.saturating_add(1);
        self.last_score = half::bf16::from_f64(score);
        if self.count == 1 {
            self.last = Stamp::of_ms(ts_ms);
            self.recent = score as f32;
            self.recent_weight_sq = half::f16::ONE;
            self.baseline = score as f32;
            self.baseline_var = 0.0;
            return;
        }
        let (recent, recent_weight_sq) = (f64::from(self.recent), self.recent_weight_sq.to_f64());
        let (baseline, baseline_var) = (f64::from(self.baseline), f64::from(self.baseline_var));
        if self.count > 3 && baseline_var > 0.0 {
            let z = (score - baseline) / baseline_var.sqrt();
            let before = self.drop_cusum;
            self.drop_cusum = crate::compact::saturating_f16(
                (before.to_f64() - z - ENGAGEMENT_CUSUM_SLACK).max(0.0),
            );
            if before <= half::f16::ZERO && self.drop_cusum > half::f16::ZERO {
                self.drop_onset = Stamp::of_ms(ts_ms);
            }
        }
        let dt_days = ((ts_ms - self.last.ms()).max(0)) as f64 / DAY_MS as f64;
        let floor = 1.0 / self.count as f64; // behaves like a running mean while data is scarce
        let a_recent = (1.0 - 0.5f64.powf(dt_days / recent_hl_days)).max(floor);
        let a_base = (1.0 - 0.5f64.powf(dt_days / baseline_hl_days)).max(floor);
        self.recent = (recent + a_recent * (score - recent)) as f32;
        self.recent_weight_sq = crate::compact::saturating_f16(
            (1.0 - a_recent).powi(2) * recent_weight_sq + a_recent * a_recent,
        );
        let diff = score - baseline;
        self.baseline = (baseline + a_base * diff) as f32;
        self.baseline_var = ((1.0 - a_base) * (baseline_var + a_base * diff * diff)) as f32;
        self.last = self.last.max(Stamp::of_ms(ts_ms));
    }
}

/// Fingerprints of a customer's last few event ids, to drop redeliveries: a producer retry or
/// a replayed batch repeats an event within moments, among the customer's latest events.
/// Fixed size; persisted with the state, so a duplicate straddling a crash is still caught.
///
/// The last three ids, in 12 bytes. Records hold four slots, as they always have: the fourth
/// is written empty, and dropped when read (a record of an older build's may hold one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "[u32; 4]", into = "[u32; 4]")]
pub struct RecentIds([u32; 3]);

impl RecentIds {
    /// Whether `id` is one of the last ids seen; if not, it becomes the latest.
    pub fn check_and_insert(&mut self, id: &str) -> bool {
        let f = fingerprint(id);
        if self.0.contains(&f) {
            return true;
        }
        let [a, b, _] = self.0;
        self.0 = [f, a, b];
        false
    }
}

impl From<[u32; 4]> for RecentIds {
    fn from([a, b, c, _]: [u32; 4]) -> RecentIds {
        RecentIds([a, b, c])
    }
}

impl From<RecentIds> for [u32; 4] {
    fn from(RecentIds([a, b, c]): RecentIds) -> [u32; 4] {
        [a, b, c, 0]
    }
}

/// FNV-1a, 32 bits: stable across builds and platforms (the fingerprints are persisted);
/// never 0, which marks an empty slot.
fn fingerprint(id: &str) -> u32 {
    let h = id.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    h.max(1)
}

/// Everything churnwatch keeps about one customer: 96 bytes beside the ring's allocation and
/// the parts kept apart.
///
/// A million of these are resident at once, so each part takes the fewest bytes its values
/// need: times in 4 bytes to the second ([`Stamp`]) or 6 to the millisecond ([`StampMs`]),
/// counts in `u16` (saturating), levels in `f32`, and the nested parts packed to 2-byte
/// alignment so that no part pads to 4. What only some customers need (the engagement levels,
/// the alert state and the value at risk) is kept apart ([`CustomerState::engagement`],
/// [`CustomerState::alert`]). Changelog records still hold the wider types, in the order they
/// always held them ([`crate::compact`]; its `Serialize` writes the fields in that order), so
/// none of this changes the record format.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "CustomerStateRecord")]
pub struct CustomerState {
    pub windows: Windows,
    /// First event (to the second).
    pub first_seen: Stamp,
    /// Latest event (to the millisecond: the time the customer is assessed at after it).
    pub last_seen: StampMs,
    /// Events applied (saturating).
    pub events: u32,
    /// Days with activity (visits, usage, purchases; not engagement-score updates, which are
    /// about the customer rather than by them).
    pub activity: ActiveDays,
    /// Whether the customer has ever visited or used the product (else: a purchase-only
    /// customer, scored with the purchase model's priors).
    pub engaged: bool,
    pub purchases: PurchaseRhythm,
    /// Due time of this customer's pending re-score timer, if one is pending (set with
    /// [`CustomerState::arm_check`]).
    pub next_check: MaybeStamp,
    /// The customer's lifecycle stage, as the gauges count it ([`CustomerState::gauge`]).
    pub lifecycle: Lifecycle,
    pub recent_ids: RecentIds,
    /// What only some customers need, in one pooled slot ([`parts`]): the alert state and the
    /// at-risk part of the gauge contribution, for a customer whose are not the defaults
    /// (healthy, never alerted, no risk awaiting confirmation; absent stands for
    /// `AlertPart::NONE`: [`CustomerState::alert`], [`CustomerState::set_alert`]), and the
    /// engagement level, for a customer whose scores are sent (absent stands for
    /// `EngagementLevel::NONE`: [`CustomerState::engagement`]). Customers with neither (most
    /// buyers) pay 12 bytes for them rather than 60.
    parts: Parts<AlertPart, EngagementLevel>,
}

/// What a customer who has been at risk carries beyond the others: the alert state machine's
/// state, and the at-risk part of their contribution to the gauges.
#[derive(Debug, Clone, Copy, PartialEq)]
struct AlertPart {
    alert: AlertState,
    /// The tier while at risk.
    at_risk_tier: Option<crate::scoring::Tier>,
    /// In `f32` (seven significant digits: a gauge's precision).
    value_at_risk: f32,
}

impl AlertPart {
    /// Healthy, never alerted: every customer's at first, and most customers' always.
    const NONE: AlertPart = AlertPart {
        alert: AlertState::HEALTHY,
        at_risk_tier: None,
        value_at_risk: 0.0,
    };
}

/// A customer's state as changelog records hold it: the fields of [`CustomerState`] in the
/// order, and of the types, that records have always held (the alert state between the
/// engagement levels and the re-score timer, the gauge contribution after it).
#[derive(Serialize)]
struct CustomerStateRef<'a> {
    windows: &'a Windows,
    first_seen: Stamp,
    last_seen: StampMs,
    events: u32,
    activity: &'a ActiveDays,
    engaged: bool,
    purchases: &'a PurchaseRhythm,
    engagement: &'a EngagementLevel,
    alert: &'a AlertState,
    next_check: MaybeStamp,
    lifecycle: Lifecycle,
    at_risk_tier: Option<crate::scoring::Tier>,
    value_at_risk: f32,
    recent_ids: &'a RecentIds,
}

/// [`CustomerStateRef`], owned: what a record decodes to (and what the format-4 reader
/// builds), made a [`CustomerState`] by `From`.
#[derive(Deserialize)]
pub(crate) struct CustomerStateRecord {
    pub windows: Windows,
    pub first_seen: Stamp,
    pub last_seen: StampMs,
    pub events: u32,
    pub activity: ActiveDays,
    pub engaged: bool,
    pub purchases: PurchaseRhythm,
    pub engagement: EngagementLevel,
    pub alert: AlertState,
    pub next_check: MaybeStamp,
    pub lifecycle: Lifecycle,
    pub at_risk_tier: Option<crate::scoring::Tier>,
    pub value_at_risk: f32,
    pub recent_ids: RecentIds,
}

impl From<CustomerStateRecord> for CustomerState {
    fn from(r: CustomerStateRecord) -> Self {
        let alert = AlertPart {
            alert: r.alert,
            at_risk_tier: r.at_risk_tier,
            value_at_risk: r.value_at_risk,
        };
        CustomerState {
            windows: r.windows,
            first_seen: r.first_seen,
            last_seen: r.last_seen,
            events: r.events,
            activity: r.activity,
            engaged: r.engaged,
            purchases: r.purchases,
            next_check: r.next_check,
            lifecycle: r.lifecycle,
            recent_ids: r.recent_ids,
            // One slot for both parts, made once (restores make millions of these).
            parts: Parts::of(
                Some(alert).filter(|a| *a != AlertPart::NONE),
                Some(r.engagement).filter(|e| *e != EngagementLevel::NONE),
            ),
        }
    }
}

impl Serialize for CustomerState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let part = self.alert_part();
        CustomerStateRef {
            windows: &self.windows,
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            events: self.events,
            activity: &self.activity,
            engaged: self.engaged,
            purchases: &self.purchases,
            engagement: self.engagement(),
            alert: &part.alert,
            next_check: self.next_check,
            lifecycle: self.lifecycle,
            at_risk_tier: part.at_risk_tier,
            value_at_risk: part.value_at_risk,
            recent_ids: &self.recent_ids,
        }
        .serialize(s)
    }
}

/// The customer's current contribution to the population gauges, so they can be updated
/// incrementally (a change of lifecycle moves one unit from one label to another).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GaugeContribution {
    pub lifecycle: Lifecycle,
    /// The tier while at risk.
    pub at_risk_tier: Option<crate::scoring::Tier>,
    /// In `f32` (seven significant digits: a gauge's precision).
    pub value_at_risk: f32,
}

impl CustomerState {
    pub fn new(cfg: &Config, first_seen_ms: i64) -> Self {
        CustomerState {
            // One more than the windows cover: the current, incomplete bucket.
            windows: Windows::new(cfg.windows.total_buckets() as usize + 1),
            ..CustomerState::without_ring(first_seen_ms)
        }
    }

    fn alert_part(&self) -> &AlertPart {
        self.parts.a().unwrap_or(&AlertPart::NONE)
    }

    /// Make `part` the customer's: kept apart unless it is [`AlertPart::NONE`].
    fn set_alert_part(&mut self, part: AlertPart) {
        self.parts.set_a((part != AlertPart::NONE).then_some(part));
    }

    /// The engagement score's levels ([`EngagementLevel::NONE`] before the first score).
    pub fn engagement(&self) -> &EngagementLevel {
        self.parts.b().unwrap_or(&EngagementLevel::NONE)
    }

    /// The engagement levels, to change them (for tests of what records hold).
    #[cfg(test)]
    pub(crate) fn engagement_mut(&mut self) -> &mut EngagementLevel {
        self.parts.b_or_insert(EngagementLevel::NONE)
    }

    /// Which parts are kept apart (the alert part, the engagement levels), and the bytes
    /// their slot takes in the pool.
    pub fn parts_storage(&self) -> (bool, bool, usize) {
        let p = &self.parts;
        (p.a().is_some(), p.b().is_some(), p.slot_bytes())
    }

    /// Start loading the parts kept apart (a hint: see [`crate::prefetch`]).
    #[inline]
    pub fn prefetch_parts(&self) {
        self.parts.prefetch();
    }

    /// The alert state machine's state. To change it, change a copy and hand it to
    /// [`CustomerState::set_alert`].
    pub fn alert(&self) -> &AlertState {
        &self.alert_part().alert
    }

    pub fn set_alert(&mut self, alert: AlertState) {
        let part = AlertPart {
            alert,
            ..*self.alert_part()
        };
        self.set_alert_part(part);
    }

    /// What this customer currently contributes to the gauges.
    pub fn gauge(&self) -> GaugeContribution {
        let part = self.alert_part();
        GaugeContribution {
            lifecycle: self.lifecycle,
            at_risk_tier: part.at_risk_tier,
            value_at_risk: part.value_at_risk,
        }
    }

    /// Make `g` this customer's contribution to the gauges; returns the previous one.
    pub fn replace_gauge(&mut self, g: GaugeContribution) -> GaugeContribution {
        let old = self.gauge();
        self.lifecycle = g.lifecycle;
        let part = AlertPart {
            at_risk_tier: g.at_risk_tier,
            value_at_risk: g.value_at_risk,
            ..*self.alert_part()
        };
        self.set_alert_part(part);
        old
    }

    /// Set the re-score timer's due time, and return it as kept: to the second (due times are
    /// on the grid of whole seconds, so this is `due_ms`), which is the time to queue it at.
    pub fn arm_check(&mut self, due_ms: i64) -> i64 {
        self.next_check = MaybeStamp::some(due_ms);
        Stamp::of_ms(due_ms).ms()
    }

    fn without_ring(first_seen_ms: i64) -> Self {
        CustomerState {
            windows: Windows::unallocated(),
            first_seen: Stamp::of_ms(first_seen_ms),
            last_seen: StampMs::of_ms(first_seen_ms),
            events: 0,
            activity: ActiveDays::default(),
            engaged: false,
            purchases: PurchaseRhythm::default(),
            next_check: MaybeStamp::NONE,
            lifecycle: Lifecycle::New,
            recent_ids: RecentIds::default(),
            parts: Parts::NONE,
        }
    }

    /// Whether `ev` repeats one of this customer's latest events (same `event_id`); events
    /// without an id are never duplicates.
    pub fn is_duplicate(&mut self, ev: &Event<'_>) -> bool {
        ev.event_id
            .as_deref()
            .is_some_and(|id| self.recent_ids.check_and_insert(id))
    }

    /// The placeholder of a slot whose customer was evicted: no heap allocation.
    pub fn vacant() -> Self {
        CustomerState::without_ring(0)
    }

    /// Latest event, in milliseconds.
    pub fn last_seen_ms(&self) -> i64 {
        self.last_seen.ms()
    }

    /// Latest activity, or the first time the customer was seen when they have had none.
    pub fn last_active_ms(&self) -> i64 {
        self.activity.last_ms_or(self.first_seen.ms())
    }

    /// Fold one event into the state. Returns whether its bucket was still held.
    pub fn apply(&mut self, ev: &Event<'_>, cfg: &Config) -> Placement {
        self.events = self.events.saturating_add(1);
        self.first_seen = self.first_seen.min(Stamp::of_ms(ev.ts_ms));
        if ev.ts_ms > self.last_seen.ms() {
            self.last_seen = StampMs::of_ms(ev.ts_ms);
        }
        let bucket_ms = cfg.windows.bucket_ms;
        if ev.activity.is_customer_activity() {
            self.activity.record(ev.ts_ms);
        }
        match ev.activity {
            Activity::Visit => {
                self.engaged = true;
                self.windows.add(ev.ts_ms, bucket_ms, |b| b.add_visit())
            }
            Activity::Usage { quantity } => {
                self.engaged |= quantity > 0.0;
                let placed = self
                    .windows
                    .add(ev.ts_ms, bucket_ms, |b| b.add_usage(quantity));
                self.windows.record_usage(quantity);
                placed
            }
            Activity::Purchase { amount } => {
                self.purchases.record(ev.ts_ms, amount);
                self.windows.add(ev.ts_ms, bucket_ms, |b| b.add_purchase())
            }
            Activity::Engagement { score } => {
                let e = &cfg.signals.engagement;
                self.parts.b_or_insert(EngagementLevel::NONE).record(
                    ev.ts_ms,
                    score,
                    e.recent_half_life_days,
                    e.baseline_half_life_days,
                );
                // No bucket counter; the ring still moves to the event's time.
                self.windows.add(ev.ts_ms, bucket_ms, |_| {})
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_stays_small() {
        // Per customer, beside the ring's allocation; a million customers hold a million of
        // these (BENCHMARKS.md, "state per customer"). Grow it only knowingly.
        assert_eq!(std::mem::size_of::<CustomerState>(), 96);
        // Apart, for the customers who have been at risk or get engagement scores: a pooled
        // slot of 32, 28 or (both) 60 bytes.
        assert_eq!(std::mem::size_of::<AlertPart>(), 32);
        assert_eq!(std::mem::size_of::<ActiveDays>(), 10);
        assert_eq!(std::mem::size_of::<PurchaseRhythm>(), 26);
        assert_eq!(std::mem::size_of::<EngagementLevel>(), 28);
        assert_eq!(std::mem::size_of::<AlertState>(), 26);
    }

    #[test]
    fn rhythm_mean_and_variance() {
        let mut r = PurchaseRhythm::default();
        for d in [0, 10, 20, 30, 40] {
            r.record(d * DAY_MS, 10.0);
        }
        assert_eq!(r.count, 5);
        assert_eq!(r.occasions(), 5);
        assert_eq!(r.gaps, 4);
        assert!((r.gap_mean_days - 10.0).abs() < 1e-9);
        assert!(r.gap_variance().unwrap().abs() < 1e-9);
        assert!((r.total_value - 50.0).abs() < 1e-9);
        // Out-of-order purchase: value counted, rhythm untouched.
        r.record(5 * DAY_MS, 1.0);
        assert_eq!(r.gaps, 4);
        assert_eq!(r.count, 6);
        // A second order line on the same day: one purchase occasion.
        r.record(40 * DAY_MS + 60_000, 5.0);
        assert_eq!(r.occasions(), 5);
        assert_eq!(r.gaps, 4);
        assert_eq!(r.last_ms(), Some(40 * DAY_MS + 60_000));
    }

    #[test]
    fn narrow_counts_saturate() {
        let mut r = PurchaseRhythm {
            count: u16::MAX,
            gaps: u16::MAX,
            gap_mean_days: 1.0,
            ..PurchaseRhythm::default()
        };
        r.days.repeat_days = u16::MAX;
        r.days.first = MaybeStamp::some(0);
        r.record(DAY_MS, 1.0);
        r.record(2 * DAY_MS, 1.0);
        assert_eq!(
            (r.count, r.gaps, r.days.repeat_days),
            (u16::MAX, u16::MAX, u16::MAX)
        );
        assert!(r.gap_mean_days.is_finite() && r.gap_mean_days > 0.9);
        let mut e = EngagementLevel {
            count: u16::MAX - 1,
            ..EngagementLevel::default()
        };
        for d in 0..3 {
            e.record(d * DAY_MS, 50.0, 3.0, 28.0);
        }
        assert_eq!(e.count, u16::MAX);
        assert!(e.recent.is_finite());
    }

    #[test]
    fn recent_ids_catch_a_redelivery_among_the_latest_events() {
        let mut r = RecentIds::default();
        assert!(!r.check_and_insert("e1"));
        assert!(r.check_and_insert("e1"));
        for id in ["e2", "e3"] {
            assert!(!r.check_and_insert(id));
        }
        assert!(r.check_and_insert("e1"), "still among the last three");
        assert!(!r.check_and_insert("e4"));
        assert!(!r.check_and_insert("e1"), "pushed out by three newer ids");
        // Records hold four slots: the fourth written empty, and dropped when read.
        let wire: [u32; 4] = r.into();
        assert_eq!(wire[3], 0);
        assert_eq!(RecentIds::from(wire), r);
        assert_eq!(RecentIds::from([5, 6, 7, 8]), RecentIds([5, 6, 7]));
        assert_ne!(fingerprint(""), 0);
        // Stable: persisted in the changelog, so it must not change between builds.
        assert_eq!(fingerprint("a"), 0xe40c_292c);
    }

    #[test]
    fn active_days_summary() {
        let mut a = ActiveDays::default();
        assert_eq!(a.summary(0), None);
        for t in [0, 3_600_000, DAY_MS + 5, 10 * DAY_MS] {
            a.record(t);
        }
        assert_eq!(a.repeat_days, 2);
        assert_eq!(a.summary(20 * DAY_MS), Some((2.0, 10.0, 20.0)));
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
        // The CUSUM dates the fall to its first low score (or the slightly low one just
        // before it, where its current run began).
        assert!(e.drop_cusum.to_f64() > 5.0, "{e:?}");
        assert!(
            (38 * DAY_MS..=40 * DAY_MS).contains(&e.drop_onset.ms()),
            "{e:?}"
        );
    }
}
