//! The per-customer alert state machine: one alert per change of state, never a storm.
//!
//! ```text
//!             risk >= enter (and cooldown over)                 risk < exit, after new activity
//!   healthy ─────────────────────────────────────> at_risk ───────────────────────────> healthy
//!      │                                            │  │        (alert: recovered)
//!      │ silent >= lapse_after      silent >= lapse │  │ tier above any alerted in the episode
//!      v                                            v  └──> at_risk (alert: escalated)
//!    lapsed <───────────────────────────────────────┘
//!      │ any new activity (alert: recovered)
//!      └──────────────────────────────────────────> healthy
//! ```
//!
//! Hysteresis: entering needs `risk >= alerting.enter_threshold`, leaving needs
//! `risk < alerting.exit_threshold`, activity after the customer became at risk, *and* recent
//! visit and usage rates back to within `min_drop` of the baseline they had when the episode
//! began. A customer whose baseline merely slides down to a new, lower normal (or ages out of
//! the window while silent) stays at risk ("declining") instead of "recovering".
//! Cooldown: after a `recovered` alert, no new `at_risk` for `alerting.cooldown_secs`.

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::scoring::{Assessment, Tier};
use crate::time::{MaybeStamp, Stamp};

/// Alert kinds (the `kind` field of an alert).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    AtRisk,
    Escalated,
    Recovered,
    Lapsed,
}

impl AlertKind {
    pub const ALL: [AlertKind; 4] = [
        AlertKind::AtRisk,
        AlertKind::Escalated,
        AlertKind::Recovered,
        AlertKind::Lapsed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::AtRisk => "at_risk",
            AlertKind::Escalated => "escalated",
            AlertKind::Recovered => "recovered",
            AlertKind::Lapsed => "lapsed",
        }
    }
}

/// Where the customer is in the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Phase {
    #[default]
    Healthy,
    AtRisk,
    Lapsed,
}

/// Alert state kept per customer: 26 bytes, packed to 2-byte alignment (as are the other parts
/// of [`crate::customer::CustomerState`]).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[repr(Rust, packed(2))]
pub struct AlertState {
    pub phase: Phase,
    /// Highest tier alerted in the current at-risk episode.
    pub alerted_tier: Tier,
    /// Event time the current at-risk episode (or lapse) began.
    pub since: Stamp,
    /// Event time of the last `recovered` alert (start of the cooldown).
    pub recovered: MaybeStamp,
    /// Number of at-risk episodes and lapses so far (part of the alert id; saturating).
    #[serde(with = "crate::compact::u16_as_u32")]
    pub episode: u16,
    /// Whether the current cooldown has already held back an alert (counted once).
    pub cooldown_noted: bool,
    /// The customer's baseline visits and usage units per day when the episode began: a
    /// customer recovers by coming back to (near) this level, not by the baseline sliding down
    /// to a new, lower normal.
    pub ref_visit_rate: f32,
    pub ref_usage_rate: f32,
    /// Since when the risk has stayed at or above the enter threshold while healthy (for the
    /// confirmation period, `alerting.confirm_secs`).
    pub pending_since: MaybeStamp,
    /// Whether the current at-risk episode's win-back outcome has been counted.
    pub winback_noted: bool,
}

/// What became of an at-risk episode (`churnwatch_winback_outcomes_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Winback {
    /// Recovered within `churn.horizon_days` of the `at_risk` alert.
    Returned = 0,
    /// The horizon passed, or the customer lapsed, first.
    NotReturned = 1,
}

impl Winback {
    pub const ALL: [Winback; 2] = [Winback::Returned, Winback::NotReturned];

    pub fn as_str(self) -> &'static str {
        match self {
            Winback::Returned => "returned",
            Winback::NotReturned => "not_returned",
        }
    }
}

/// A change of state that must be announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub kind: AlertKind,
    pub tier: Tier,
    pub previous_tier: Tier,
    pub episode: u32,
}

/// Why a would-be alert was held back (counted in a metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suppressed {
    Cooldown,
}

impl AlertState {
    /// Healthy, never alerted (the default, as a constant).
    pub const HEALTHY: AlertState = AlertState {
        phase: Phase::Healthy,
        alerted_tier: Tier::None,
        since: Stamp::EPOCH,
        recovered: MaybeStamp::NONE,
        episode: 0,
        cooldown_noted: false,
        ref_visit_rate: 0.0,
        ref_usage_rate: 0.0,
        pending_since: MaybeStamp::NONE,
        winback_noted: false,
    };

    /// The start of the at-risk episode in progress, if any (call before [`AlertState::decide`],
    /// for [`AlertState::winback`]).
    pub fn at_risk_since(&self) -> Option<i64> {
        (self.phase == Phase::AtRisk).then_some(self.since.ms())
    }

    /// The win-back outcome that a decision at `now_ms` settles, counted once per episode:
    /// `episode_since` is [`AlertState::at_risk_since`] before the decision, `kind` what it
    /// announced.
    pub fn winback(
        &mut self,
        episode_since: Option<i64>,
        kind: Option<AlertKind>,
        now_ms: i64,
        horizon_ms: i64,
    ) -> Option<Winback> {
        let since = episode_since?;
        if self.winback_noted {
            return None;
        }
        let within = now_ms - since <= horizon_ms;
        let outcome = match kind {
            Some(AlertKind::Recovered) if within => Winback::Returned,
            Some(AlertKind::Recovered | AlertKind::Lapsed) => Winback::NotReturned,
            _ if !within => Winback::NotReturned,
            _ => return None,
        };
        self.winback_noted = true;
        Some(outcome)
    }

    /// The tier that the customer currently has, for gauges (`None` unless at risk).
    pub fn current_tier(&self) -> Option<Tier> {
        (self.phase == Phase::AtRisk).then_some(self.alerted_tier)
    }

    /// Back to healthy; the cooldown starts now.
    fn recover(&mut self, now: i64) -> Transition {
        let previous_tier = self.alerted_tier;
        self.phase = Phase::Healthy;
        self.alerted_tier = Tier::None;
        self.recovered = MaybeStamp::some(now);
        self.cooldown_noted = false;
        Transition {
            kind: AlertKind::Recovered,
            tier: Tier::None,
            previous_tier,
            episode: self.episode.into(),
        }
    }

    /// Whether recent activity is back to (near) the level before the episode.
    fn back_to_level(&self, a: &Assessment, cfg: &Config) -> bool {
        let s = &cfg.signals;
        let ok = |reference: f32, recent: f64, min_drop: f64| {
            reference <= 0.0 || recent >= (1.0 - min_drop) * reference as f64
        };
        ok(self.ref_visit_rate, a.recent_visit_rate, s.visits.min_drop)
            && ok(self.ref_usage_rate, a.recent_usage_rate, s.usage.min_drop)
    }

    /// Advance the state machine with a fresh assessment.
    pub fn decide(
        &mut self,
        a: &Assessment,
        last_seen_ms: i64,
        cfg: &Config,
    ) -> Result<Option<Transition>, Suppressed> {
        let ac = &cfg.alerting;
        let now = a.as_of_ms;
        let silent_ms = now - last_seen_ms;
        // Activity in a later second than the episode (or lapse) began: times in the state are
        // kept to the second.
        let active_since_episode = Stamp::of_ms(last_seen_ms) > { self.since };
        match self.phase {
            Phase::Lapsed => {
                if active_since_episode {
                    return Ok(Some(self.recover(now)));
                }
                Ok(None)
            }
            _ if silent_ms >= cfg.lifecycle.lapse_after_ms => {
                let previous_tier = self.current_tier().unwrap_or(Tier::None);
                self.phase = Phase::Lapsed;
                self.since = Stamp::of_ms(now);
                self.episode = self.episode.saturating_add(1);
                // Keep the tier the customer lapsed from, for the `recovered` alert's context.
                self.alerted_tier = previous_tier;
                Ok(Some(Transition {
                    kind: AlertKind::Lapsed,
                    tier: Tier::High,
                    previous_tier,
                    episode: self.episode.into(),
                }))
            }
            Phase::Healthy => {
                if a.risk < ac.enter_threshold {
                    self.pending_since = MaybeStamp::NONE;
                    return Ok(None);
                }
                // Confirmation: the risk must hold for `confirm_ms` of event time, so that a
                // short dip (a few days off) does not alert.
                let since = self.pending_since.get().unwrap_or(now);
                self.pending_since = MaybeStamp::some(since);
                if now - since < ac.confirm_ms {
                    return Ok(None);
                }
                if let Some(r) = self.recovered.get() {
                    if now - r < ac.cooldown_ms {
                        if self.cooldown_noted {
                            return Ok(None);
                        }
                        self.cooldown_noted = true;
                        return Err(Suppressed::Cooldown);
                    }
                }
                let tier = Tier::of_assessment(a, ac);
                self.pending_since = MaybeStamp::NONE;
                self.phase = Phase::AtRisk;
                self.alerted_tier = tier;
                self.since = Stamp::of_ms(now);
                self.winback_noted = false;
                self.ref_visit_rate = a.signals[0].map_or(0.0, |r| r.baseline as f32);
                self.ref_usage_rate = a.signals[1].map_or(0.0, |r| r.baseline as f32);
                self.episode = self.episode.saturating_add(1);
                Ok(Some(Transition {
                    kind: AlertKind::AtRisk,
                    tier,
                    previous_tier: Tier::None,
                    episode: self.episode.into(),
                }))
            }
            Phase::AtRisk => {
                if a.risk < ac.exit_threshold && active_since_episode && self.back_to_level(a, cfg)
                {
                    return Ok(Some(self.recover(now)));
                }
                if a.risk >= ac.enter_threshold {
                    let tier = Tier::of_assessment(a, ac);
                    if tier > self.alerted_tier {
                        let previous_tier = self.alerted_tier;
                        self.alerted_tier = tier;
                        return Ok(Some(Transition {
                            kind: AlertKind::Escalated,
                            tier,
                            previous_tier,
                            episode: self.episode.into(),
                        }));
                    }
                }
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::DAY_MS;

    fn assessment(as_of_ms: i64, risk: f64) -> Assessment {
        Assessment {
            as_of_ms,
            risk,
            signals: [None; 6],
            p_churn: 0.0,
            customer_value: 0.0,
            days_since_last_active: 0.0,
            recent_visit_rate: 0.0,
            recent_usage_rate: 0.0,
        }
    }

    fn kinds(steps: &[(i64, f64, i64)]) -> Vec<Option<AlertKind>> {
        let cfg = Config::default();
        let mut s = AlertState::default();
        steps
            .iter()
            .map(|&(day, risk, last_seen_day)| {
                s.decide(
                    &assessment(day * DAY_MS, risk),
                    last_seen_day * DAY_MS,
                    &cfg,
                )
                .ok()
                .flatten()
                .map(|t| t.kind)
            })
            .collect()
    }

    #[test]
    fn the_healthy_constant_is_the_default() {
        assert_eq!(AlertState::HEALTHY, AlertState::default());
    }

    #[test]
    fn one_alert_per_state_change_with_hysteresis() {
        use AlertKind::*;
        let k = kinds(&[
            (1, 0.2, 1),
            (2, 0.55, 2),  // enters
            (3, 0.6, 3),   // still at risk: nothing
            (4, 0.45, 4),  // between thresholds: nothing (hysteresis)
            (5, 0.52, 5),  // nothing
            (6, 0.75, 6),  // escalates to medium
            (7, 0.6, 7),   // down a tier: nothing
            (8, 0.72, 8),  // back to medium: already alerted, nothing
            (9, 0.9, 9),   // escalates to high
            (10, 0.1, 10), // recovers
        ]);
        assert_eq!(
            k,
            vec![
                None,
                Some(AtRisk),
                None,
                None,
                None,
                Some(Escalated),
                None,
                None,
                Some(Escalated),
                Some(Recovered)
            ]
        );
    }

    #[test]
    fn recovery_needs_activity_in_a_later_second_than_the_episode_began() {
        let cfg = Config::default();
        let mut s = AlertState::default();
        // At risk on an event at 12:00:00.500 (kept as 12:00:00).
        let at = 10 * DAY_MS + 43_200_500;
        let t = s.decide(&assessment(at, 0.9), at, &cfg).unwrap().unwrap();
        assert_eq!(t.kind, AlertKind::AtRisk);
        assert_eq!(s.at_risk_since(), Some(at - 500));
        // Risk gone, but the latest activity is the event that began the episode (same
        // second): no recovery yet.
        assert_eq!(
            s.decide(&assessment(at + 400, 0.0), at + 400, &cfg),
            Ok(None)
        );
        // Activity in a later second: recovered.
        let later = at + 600;
        let t = s
            .decide(&assessment(later, 0.0), later, &cfg)
            .unwrap()
            .unwrap();
        assert_eq!(t.kind, AlertKind::Recovered);
    }

    #[test]
    fn winback_outcome_once_per_episode() {
        let h = 30 * DAY_MS;
        let mut s = AlertState::default();
        // Not at risk: nothing to settle.
        assert_eq!(s.winback(None, Some(AlertKind::Lapsed), 0, h), None);
        // At risk since day 10: nothing before the horizon, not_returned once past it, and the
        // late recovery is not counted again.
        s.phase = Phase::AtRisk;
        s.since = Stamp::of_ms(10 * DAY_MS);
        let since = s.at_risk_since();
        assert_eq!(s.winback(since, None, 39 * DAY_MS, h), None);
        assert_eq!(
            s.winback(since, None, 41 * DAY_MS, h),
            Some(Winback::NotReturned)
        );
        assert_eq!(s.winback(since, None, 42 * DAY_MS, h), None);
        assert_eq!(
            s.winback(since, Some(AlertKind::Recovered), 45 * DAY_MS, h),
            None
        );
        // A new episode: back within the horizon.
        let cfg = Config::default();
        let mut s = AlertState::default();
        s.decide(&assessment(DAY_MS, 0.9), DAY_MS, &cfg).unwrap();
        let since = s.at_risk_since();
        assert_eq!(since, Some(DAY_MS));
        let t = s.decide(&assessment(5 * DAY_MS, 0.1), 5 * DAY_MS, &cfg);
        let kind = t.unwrap().map(|t| t.kind);
        assert_eq!(kind, Some(AlertKind::Recovered));
        assert_eq!(
            s.winback(since, kind, 5 * DAY_MS, h),
            Some(Winback::Returned)
        );
    }

    #[test]
    fn recovery_needs_new_activity() {
        // Risk falls because the baseline ages out while the customer is silent: not a recovery.
        let k = kinds(&[(10, 0.6, 10), (20, 0.1, 9)]);
        assert_eq!(k, vec![Some(AlertKind::AtRisk), None]);
    }

    #[test]
    fn cooldown_holds_back_a_new_episode() {
        let cfg = Config::default();
        let mut s = AlertState::default();
        let d = DAY_MS;
        assert!(s.decide(&assessment(d, 0.6), d, &cfg).unwrap().is_some());
        assert_eq!(
            s.decide(&assessment(2 * d, 0.1), 2 * d, &cfg)
                .unwrap()
                .unwrap()
                .kind,
            AlertKind::Recovered
        );
        assert_eq!(
            s.decide(&assessment(3 * d, 0.7), 3 * d, &cfg),
            Err(Suppressed::Cooldown)
        );
        // Counted once per cooldown.
        assert_eq!(s.decide(&assessment(4 * d, 0.7), 4 * d, &cfg), Ok(None));
        let t = s
            .decide(&assessment(10 * d, 0.7), 10 * d, &cfg)
            .unwrap()
            .unwrap();
        assert_eq!(t.kind, AlertKind::AtRisk);
        assert_eq!(t.episode, 2);
    }

    #[test]
    fn recovery_means_back_to_the_earlier_level() {
        let cfg = Config::default();
        let mut s = AlertState::default();
        let d = DAY_MS;
        let mut a = assessment(d, 0.7);
        a.signals[0] = Some(crate::scoring::Reason {
            signal: crate::scoring::Signal::Visits,
            baseline: 3.0,
            recent: 0.3,
            change_pct: -90.0,
            statistic: -5.0,
            p_value: 1e-6,
            strength: 1.0,
            weight: 0.7,
            recent_days: 7.0,
            baseline_days: 28.0,
            onset_ms: None,
            posterior: None,
        });
        assert_eq!(
            s.decide(&a, d, &cfg).unwrap().unwrap().kind,
            AlertKind::AtRisk
        );
        // The baseline has slid down to the new, lower normal: low risk, but not recovered.
        let mut low = assessment(40 * d, 0.05);
        low.recent_visit_rate = 1.0;
        assert_eq!(s.decide(&low, 40 * d, &cfg), Ok(None));
        // Back near three visits a day: recovered.
        let mut back = assessment(50 * d, 0.05);
        back.recent_visit_rate = 2.8;
        assert_eq!(
            s.decide(&back, 50 * d, &cfg).unwrap().unwrap().kind,
            AlertKind::Recovered
        );
    }

    #[test]
    fn confirmation_waits_for_the_risk_to_hold() {
        let cfg = Config::from_toml_str("[alerting]\nconfirm_secs = 172800\n").unwrap();
        let mut s = AlertState::default();
        let d = DAY_MS;
        let mut decide = |day: i64, risk: f64| {
            s.decide(&assessment(day * d, risk), day * d, &cfg)
                .unwrap()
                .map(|t| t.kind)
        };
        // A one-day spike: nothing.
        assert_eq!(decide(1, 0.6), None);
        assert_eq!(decide(2, 0.1), None);
        // Held for two days: at risk on the second.
        assert_eq!(decide(3, 0.6), None);
        assert_eq!(decide(4, 0.7), None);
        assert_eq!(decide(5, 0.6), Some(AlertKind::AtRisk));
    }

    #[test]
    fn lapse_and_return() {
        use AlertKind::*;
        let k = kinds(&[
            (10, 0.6, 10),
            (41, 0.6, 10), // 31 days silent: lapsed
            (50, 0.0, 10), // still lapsed: nothing
            (60, 0.0, 59), // came back
        ]);
        assert_eq!(k, vec![Some(AtRisk), Some(Lapsed), None, Some(Recovered)]);
    }
}
