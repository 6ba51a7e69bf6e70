//! Changelog records of format 4, read and converted, so that an upgrade restores the state
//! its predecessor wrote.
//!
//! Format 5 packed the ring's buckets into 4 bytes, and format 6 into 3 (the 8-byte buckets of
//! format 4 and the 4-byte ones of format 5 are packed when read, in [`crate::window`]); from 5
//! on the state keeps the engagement levels, the purchase gaps' statistics
//! and the value at risk in `f32`. (Times are read to the second, as format 5's are: both
//! formats store them as `i64` milliseconds.)
//! Everything else is laid out as before: postcard is positional, so these mirrors list the
//! fields of [`crate::customer::CustomerState`] in its order.

use serde::Deserialize;

use crate::alerting::AlertState;
use crate::compact::saturating_u16;
use crate::customer::{
    ActiveDays, CustomerStateRecord, EngagementLevel, PurchaseRhythm, RecentIds,
};
use crate::scoring::{Lifecycle, Tier};
use crate::time::{MaybeStamp, Stamp};
use crate::window::Windows;

use super::record::StoredCustomer;

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct StoredCustomer4 {
    applied_offset: i64,
    state: CustomerState4,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct CustomerState4 {
    windows: Windows,
    first_seen: Stamp,
    last_seen_ms: i64,
    /// A varint like format 5's `u32`: the same bytes below 2^32.
    events: u64,
    activity: ActiveDays,
    engaged: bool,
    purchases: PurchaseRhythm4,
    engagement: EngagementLevel4,
    alert: AlertState,
    next_check: MaybeStamp,
    gauge: GaugeContribution4,
    recent_ids: RecentIds,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct PurchaseRhythm4 {
    count: u32,
    days: ActiveDays,
    gaps: u32,
    gap_mean_days: f64,
    gap_m2: f64,
    total_value: f64,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct EngagementLevel4 {
    count: u32,
    last: Stamp,
    last_score: f64,
    recent: f64,
    recent_weight_sq: f64,
    baseline: f64,
    baseline_var: f64,
    drop_cusum: f64,
    drop_onset: Stamp,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct GaugeContribution4 {
    lifecycle: Lifecycle,
    at_risk_tier: Option<Tier>,
    value_at_risk: f64,
}

impl From<StoredCustomer4> for StoredCustomer {
    fn from(r: StoredCustomer4) -> StoredCustomer {
        let c = r.state;
        let e = c.engagement;
        StoredCustomer {
            applied_offset: r.applied_offset,
            state: CustomerStateRecord {
                windows: c.windows,
                first_seen: c.first_seen,
                last_seen: c.last_seen_ms.into(),
                events: u32::try_from(c.events).unwrap_or(u32::MAX),
                activity: c.activity,
                engaged: c.engaged,
                purchases: PurchaseRhythm {
                    count: saturating_u16(c.purchases.count),
                    days: c.purchases.days,
                    gaps: saturating_u16(c.purchases.gaps),
                    gap_mean_days: c.purchases.gap_mean_days as f32,
                    gap_m2: c.purchases.gap_m2 as f32,
                    total_value: c.purchases.total_value as f32,
                },
                engagement: EngagementLevel {
                    count: saturating_u16(e.count),
                    last: e.last,
                    last_score: half::bf16::from_f64(e.last_score),
                    recent: e.recent as f32,
                    recent_weight_sq: crate::compact::saturating_f16(e.recent_weight_sq),
                    baseline: e.baseline as f32,
                    baseline_var: e.baseline_var as f32,
                    drop_cusum: crate::compact::saturating_f16(e.drop_cusum),
                    drop_onset: e.drop_onset,
                },
                alert: c.alert,
                next_check: c.next_check,
                lifecycle: c.gauge.lifecycle,
                at_risk_tier: c.gauge.at_risk_tier,
                value_at_risk: c.gauge.value_at_risk as f32,
                recent_ids: c.recent_ids,
            }
            .into(),
        }
    }
}

#[cfg(test)]
impl From<&StoredCustomer> for StoredCustomer4 {
    /// The record a format-4 build would have written (but for the ring, written packed, which
    /// the format-4 reader takes too: its 8-byte buckets are tested in [`crate::window`]).
    fn from(r: &StoredCustomer) -> StoredCustomer4 {
        let c = r.state.clone();
        let e = *c.engagement();
        let last_seen_ms = c.last_seen_ms();
        let (alert, gauge) = (*c.alert(), c.gauge());
        StoredCustomer4 {
            applied_offset: r.applied_offset,
            state: CustomerState4 {
                windows: c.windows,
                first_seen: c.first_seen,
                last_seen_ms,
                events: c.events.into(),
                activity: c.activity,
                engaged: c.engaged,
                purchases: PurchaseRhythm4 {
                    count: c.purchases.count.into(),
                    days: c.purchases.days,
                    gaps: c.purchases.gaps.into(),
                    gap_mean_days: c.purchases.gap_mean_days.into(),
                    gap_m2: c.purchases.gap_m2.into(),
                    total_value: c.purchases.total_value.into(),
                },
                engagement: EngagementLevel4 {
                    count: e.count.into(),
                    last: e.last,
                    last_score: e.last_score.into(),
                    recent: e.recent.into(),
                    recent_weight_sq: e.recent_weight_sq.to_f64(),
                    baseline: e.baseline.into(),
                    baseline_var: e.baseline_var.into(),
                    drop_cusum: e.drop_cusum.to_f64(),
                    drop_onset: e.drop_onset,
                },
                alert,
                next_check: c.next_check,
                gauge: GaugeContribution4 {
                    lifecycle: gauge.lifecycle,
                    at_risk_tier: gauge.at_risk_tier,
                    value_at_risk: gauge.value_at_risk.into(),
                },
                recent_ids: c.recent_ids,
            },
        }
    }
}
