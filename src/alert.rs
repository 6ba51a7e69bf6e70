//! The alert as it goes on the wire (JSON, documented in `schema/alert.schema.json`).
//!
//! `schema_version` is bumped on any incompatible change. `alert_id` is deterministic: a
//! UUIDv5 of the customer id, kind, episode and triggering event time, so replaying the same
//! events through the same state yields the same ids, and a record re-sent after a failed
//! delivery keeps its id; consumers deduplicate on it.

use serde::Serialize;
use uuid::Uuid;

use crate::alerting::{AlertKind, Transition};
use crate::config::Config;
use crate::customer::CustomerState;
use crate::scoring::{Assessment, Lifecycle, Reason, Tier};
use crate::time::format_rfc3339_ms;

/// Version of the alert schema.
pub const SCHEMA_VERSION: u32 = 1;

/// Namespace of alert ids (UUIDv5).
const ALERT_NAMESPACE: Uuid = Uuid::from_u128(0x6a1e_27c4_90f3_4c6e_8d1b_5f0c_a4e2_9b17);

/// What made churnwatch look at the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// One of the customer's own events.
    Event,
    /// An event-time timer: the customer was re-scored because time passed (silence).
    Timer,
}

/// One reason on the wire.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReasonOut {
    pub signal: &'static str,
    pub summary: String,
    pub unit: &'static str,
    pub baseline: f64,
    pub recent: f64,
    pub change_pct: f64,
    pub statistic: f64,
    pub p_value: f64,
    pub strength: f64,
    pub weight: f64,
    pub contribution: f64,
    pub recent_days: f64,
    pub baseline_days: f64,
    /// Estimated start of the change (RFC 3339), when the signal locates one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onset: Option<String>,
    /// Posterior probability that the customer is still active (silence signal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub posterior: Option<f64>,
}

impl From<&Reason> for ReasonOut {
    fn from(r: &Reason) -> Self {
        ReasonOut {
            signal: r.signal.as_str(),
            summary: r.summary(),
            unit: r.unit(),
            baseline: round(r.baseline, 4),
            recent: round(r.recent, 4),
            change_pct: round(r.change_pct, 2),
            statistic: round(r.statistic, 4),
            p_value: sig(r.p_value),
            strength: round(r.strength, 4),
            weight: r.weight,
            contribution: round(r.contribution(), 4),
            recent_days: round(r.recent_days, 3),
            baseline_days: round(r.baseline_days, 3),
            onset: r.onset_ms.map(format_rfc3339_ms),
            posterior: r.posterior.map(|p| round(p, 4)),
        }
    }
}

/// Where the triggering event came from (absent for timer-triggered alerts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// Where an event came from, borrowed: what the per-event path passes along, copied into a
/// [`Source`] only when the event raises an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceRef<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

impl SourceRef<'_> {
    pub fn to_source(self) -> Source {
        Source {
            topic: self.topic.to_string(),
            partition: self.partition,
            offset: self.offset,
        }
    }
}

/// An alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub schema_version: u32,
    pub alert_id: String,
    pub kind: AlertKind,
    pub customer_id: String,
    pub tier: Tier,
    pub previous_tier: Tier,
    pub risk_score: f64,
    /// Probability of no activity within `churn_horizon_days`.
    pub p_churn: f64,
    pub churn_horizon_days: f64,
    pub reasons: Vec<ReasonOut>,
    pub customer_value: f64,
    pub value_at_risk: f64,
    pub currency: String,
    pub lifecycle: Lifecycle,
    pub event_time: String,
    pub trigger: Trigger,
    pub first_seen: String,
    pub last_seen: String,
    pub episode: u32,
    pub config_version: String,
    pub emitted_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

impl Alert {
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        customer_id: &str,
        c: &CustomerState,
        a: &Assessment,
        t: &Transition,
        reasons: Vec<Reason>,
        lifecycle: Lifecycle,
        trigger: Trigger,
        source: Option<SourceRef<'_>>,
        cfg: &Config,
    ) -> Alert {
        // The alert's risk is the noisy-OR of the reasons it carries: the assessment's risk,
        // or 1 for a lapse, whose inactivity reason contributes 1 (the risk realised).
        let risk = crate::scoring::combine(&reasons);
        Alert {
            schema_version: SCHEMA_VERSION,
            alert_id: alert_id(customer_id, t.kind, t.episode, a.as_of_ms),
            kind: t.kind,
            customer_id: customer_id.to_string(),
            tier: t.tier,
            previous_tier: t.previous_tier,
            // Rounded down, so the shown score never reaches a tier threshold the risk did not.
            risk_score: (risk * 1e4).floor() / 1e4,
            p_churn: round(a.p_churn, 4),
            churn_horizon_days: cfg.churn.horizon_days,
            reasons: reasons.iter().map(ReasonOut::from).collect(),
            customer_value: round(a.customer_value, 2),
            value_at_risk: round(a.customer_value * risk, 2),
            currency: cfg.value.currency.clone(),
            lifecycle,
            event_time: format_rfc3339_ms(a.as_of_ms),
            trigger,
            first_seen: format_rfc3339_ms(c.first_seen.ms()),
            last_seen: format_rfc3339_ms(c.last_seen_ms()),
            episode: t.episode,
            config_version: cfg.version.clone(),
            emitted_at: format_rfc3339_ms(crate::time::now_ms()),
            source: source.map(SourceRef::to_source),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("alerts serialize")
    }
}

/// The deterministic id of an alert.
pub fn alert_id(customer_id: &str, kind: AlertKind, episode: u32, event_time_ms: i64) -> String {
    let name = format!(
        "{customer_id}\u{1f}{}\u{1f}{episode}\u{1f}{event_time_ms}",
        kind.as_str()
    );
    Uuid::new_v5(&ALERT_NAMESPACE, name.as_bytes()).to_string()
}

fn round(x: f64, digits: i32) -> f64 {
    if !x.is_finite() {
        return 0.0;
    }
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

/// Keep three significant digits (p-values span many orders of magnitude).
fn sig(x: f64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return 0.0;
    }
    format!("{x:.2e}").parse().unwrap_or(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_ids_are_deterministic_and_distinct() {
        let a = alert_id("c1", AlertKind::AtRisk, 1, 1000);
        assert_eq!(a, alert_id("c1", AlertKind::AtRisk, 1, 1000));
        assert_ne!(a, alert_id("c1", AlertKind::AtRisk, 2, 1000));
        assert_ne!(a, alert_id("c1", AlertKind::Recovered, 1, 1000));
        assert_ne!(a, alert_id("c2", AlertKind::AtRisk, 1, 1000));
    }

    #[test]
    fn rounding() {
        assert_eq!(round(0.123456, 2), 0.12);
        assert_eq!(sig(0.000123456), 0.000123);
        assert_eq!(round(f64::NAN, 2), 0.0);
    }
}
