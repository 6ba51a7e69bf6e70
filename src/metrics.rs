//! The Prometheus registry and every `churnwatch_` metric.
//!
//! Metrics never carry a customer id. Population gauges are maintained incrementally: a
//! customer moving from one lifecycle stage or tier to another moves one unit between labels.

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::alerting::{AlertKind, Winback};
use crate::event::{EventType, InvalidReason};
use crate::kpi::PeriodCounts;
use crate::scoring::{Lifecycle, Signal, Tier};

/// All metrics of one churnwatch process (or one test).
pub struct Metrics {
    pub registry: Registry,
    pub events_total: IntCounterVec,
    pub events_invalid_total: IntCounterVec,
    pub events_late_total: IntCounter,
    pub events_outside_window_total: IntCounter,
    pub alerts_total: IntCounterVec,
    pub alerts_suppressed_total: IntCounterVec,
    pub customers: IntGaugeVec,
    pub at_risk_customers: IntGaugeVec,
    pub revenue_at_risk: GaugeVec,
    pub period_customers: IntGaugeVec,
    pub period_revenue: GaugeVec,
    pub winback_outcomes_total: IntCounterVec,
    pub alert_top_reasons_total: IntCounterVec,
    pub decision_latency_seconds: Histogram,
    pub poll_latency_seconds: Histogram,
    pub consumer_lag: IntGaugeVec,
    pub last_event_timestamp_seconds: Gauge,
    pub watermark_timestamp_seconds: Gauge,
    pub timers_fired_total: IntCounter,
    pub partitions_assigned: IntGauge,
    pub offsets_committed_total: IntCounter,
    pub delivery_errors_total: IntCounter,
    pub checkpoints_total: IntCounterVec,
    pub checkpoint_duration_seconds: Histogram,
    pub changelog_records_total: IntCounter,
    pub restore_duration_seconds: Histogram,
    pub restore_records_total: IntCounter,
    pub restored_customers_total: IntCounter,
    pub restoring_partitions: IntGauge,
    pub recoveries_total: IntCounter,
    pub events_duplicate_total: IntCounter,
    pub customers_evicted_total: IntCounterVec,
    pub partitions_paused: IntGauge,
    pub backpressure_pauses_total: IntCounter,
    pub config_info: IntGaugeVec,
    pub config_reloads_total: IntCounterVec,
    pub config_restart_required: IntGauge,
    pub build_info: IntGaugeVec,
    pub ready: IntGauge,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("churnwatch")
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::with_opts(opts(name, help)).unwrap()
}

fn int_gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::with_opts(opts(name, help)).unwrap()
}

fn gauge(name: &str, help: &str) -> Gauge {
    Gauge::with_opts(opts(name, help)).unwrap()
}

fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    Histogram::with_opts(
        HistogramOpts::new(name, help)
            .namespace("churnwatch")
            .buckets(buckets.to_vec()),
    )
    .unwrap()
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m;
                registry
                    .register(Box::new(m.clone()))
                    .expect("metric names are unique");
                m
            }};
        }
        let m = Metrics {
            events_total: reg!(IntCounterVec::new(
                opts("events_total", "Valid events processed, by event type."),
                &["type"]
            )
            .unwrap()),
            events_invalid_total: reg!(IntCounterVec::new(
                opts(
                    "events_invalid_total",
                    "Invalid messages sent to the dead-letter topic, by reason."
                ),
                &["reason"]
            )
            .unwrap()),
            events_late_total: reg!(counter("events_late_total", "Valid events older than their partition's watermark (newest event time minus the allowed lateness).")),
            events_outside_window_total: reg!(counter("events_outside_window_total", "Late events so old that their bucket had left the customer's windows (not counted in the windows).")),
            alerts_total: reg!(IntCounterVec::new(
                opts("alerts_total", "Alerts emitted, by kind."),
                &["kind"]
            )
            .unwrap()),
            alerts_suppressed_total: reg!(IntCounterVec::new(
                opts(
                    "alerts_suppressed_total",
                    "State changes not alerted, by reason (cooldown)."
                ),
                &["reason"]
            )
            .unwrap()),
            customers: reg!(IntGaugeVec::new(
                opts("customers", "Tracked customers, by lifecycle stage."),
                &["lifecycle"]
            )
            .unwrap()),
            at_risk_customers: reg!(IntGaugeVec::new(
                opts("at_risk_customers", "Customers currently at risk, by tier."),
                &["tier"]
            )
            .unwrap()),
            revenue_at_risk: reg!(GaugeVec::new(
                opts(
                    "revenue_at_risk",
                    "Sum of value_at_risk (expected revenue over the value horizon times risk) of customers currently at risk, by tier, in the configured currency."
                ),
                &["tier"]
            )
            .unwrap()),
            period_customers: reg!(IntGaugeVec::new(
                opts(
                    "period_customers",
                    "Customers per event-time KPI period (lifecycle.kpi_period_days): not lapsed at its start, new in it, lost (lapsed) in it, not lapsed at its end (current period: now)."
                ),
                &["period", "count"]
            )
            .unwrap()),
            period_revenue: reg!(GaugeVec::new(
                opts(
                    "period_revenue",
                    "Purchase revenue per KPI period of the customers not lapsed at the period's start, and of those lost in it (revenue churn = lost / start), in the configured currency."
                ),
                &["period", "count"]
            )
            .unwrap()),
            winback_outcomes_total: reg!(IntCounterVec::new(
                opts(
                    "winback_outcomes_total",
                    "At-risk episodes by outcome: returned (recovered within churn.horizon_days of the at_risk alert) or not_returned (the horizon passed, or the customer lapsed, first)."
                ),
                &["outcome"]
            )
            .unwrap()),
            alert_top_reasons_total: reg!(IntCounterVec::new(
                opts(
                    "alert_top_reasons_total",
                    "at_risk and escalated alerts by the signal of their first (strongest) reason."
                ),
                &["signal"]
            )
            .unwrap()),
            decision_latency_seconds: reg!(histogram(
                "decision_latency_seconds",
                "Time from an event's Kafka timestamp to the decision on it (scored, alert handed to the producer).",
                &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
            )),
            poll_latency_seconds: reg!(histogram(
                "poll_latency_seconds",
                "Time from an event's Kafka timestamp to the poll that handed it to churnwatch: the producer's, the broker's and the fetch's share of decision_latency_seconds, with the wait in the consumer's queue behind earlier messages (the rest is the handling of its chunk).",
                &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
            )),
            consumer_lag: reg!(IntGaugeVec::new(
                opts(
                    "consumer_lag",
                    "Messages between the consumer's position and the partition's high watermark (from librdkafka statistics)."
                ),
                &["topic", "partition"]
            )
            .unwrap()),
            last_event_timestamp_seconds: reg!(gauge("last_event_timestamp_seconds", "Event time of the newest event processed, as a Unix timestamp.")),
            watermark_timestamp_seconds: reg!(gauge("watermark_timestamp_seconds", "Lowest watermark (event time up to which timers have fired) over the assigned partitions.")),
            timers_fired_total: reg!(counter("timers_fired_total", "Event-time timers fired (customers re-scored without an event of their own).")),
            partitions_assigned: reg!(int_gauge("partitions_assigned", "Events-topic partitions currently assigned to this instance.")),
            offsets_committed_total: reg!(counter("offsets_committed_total", "Offset commits that succeeded.")),
            delivery_errors_total: reg!(counter("delivery_errors_total", "Alert or dead-letter records the broker did not acknowledge.")),
            checkpoints_total: reg!(IntCounterVec::new(
                opts(
                    "checkpoints_total",
                    "Checkpoints (alerts acknowledged, changed customers written to the changelog, offsets committed; one transaction under exactly-once), by result."
                ),
                &["result"]
            )
            .unwrap()),
            checkpoint_duration_seconds: reg!(histogram(
                "checkpoint_duration_seconds",
                "Wall-clock time of one checkpoint (processing pauses meanwhile).",
                &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
            )),
            changelog_records_total: reg!(counter("changelog_records_total", "Customer and partition records written to the changelog topics.")),
            restore_duration_seconds: reg!(histogram(
                "restore_duration_seconds",
                "Wall-clock time to restore the partitions of one assignment from their changelog.",
                &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]
            )),
            restore_records_total: reg!(counter("restore_records_total", "Changelog records read while restoring (progress of a restore).")),
            restored_customers_total: reg!(counter("restored_customers_total", "Customers whose state was restored from a changelog.")),
            restoring_partitions: reg!(int_gauge("restoring_partitions", "Partitions being restored from their changelog right now (not yet processing).")),
            recoveries_total: reg!(counter("recoveries_total", "Rewinds to the last checkpoint after a transient failure (a record the broker did not take, a failed transaction), without a restart.")),
            events_duplicate_total: reg!(counter("events_duplicate_total", "Events dropped as redeliveries: their event_id equals one of the customer's last three (also counted in events_total).")),
            customers_evicted_total: reg!(IntCounterVec::new(
                opts(
                    "customers_evicted_total",
                    "Customers forgotten, by reason: lapsed (inactive for state.evict_lapsed_after_days) or capacity (state.max_customers reached; the least recently active go first)."
                ),
                &["reason"]
            )
            .unwrap()),
            partitions_paused: reg!(int_gauge("partitions_paused", "Assigned partitions paused by back-pressure (the producer has too many records in flight).")),
            backpressure_pauses_total: reg!(counter("backpressure_pauses_total", "Times consumption was paused because the producer had too many records in flight.")),
            config_info: reg!(IntGaugeVec::new(
                opts("config_info", "The active config's version (always 1)."),
                &["version"]
            )
            .unwrap()),
            config_reloads_total: reg!(IntCounterVec::new(
                opts(
                    "config_reloads_total",
                    "Config reloads (SIGHUP or a change of the config file), by result: ok (in force) or rejected (invalid; the previous config stays)."
                ),
                &["result"]
            )
            .unwrap()),
            config_restart_required: reg!(int_gauge("config_restart_required", "1 when the config file changes settings that only a restart applies (brokers, topics, ...); those keep their old values meanwhile.")),
            build_info: reg!(IntGaugeVec::new(
                opts("build_info", "Build information (always 1)."),
                &["version"]
            )
            .unwrap()),
            ready: reg!(int_gauge("ready", "1 when the pipeline is consuming, 0 while starting or stopping.")),
            registry,
        };
        // Every labelled series exists from the start, so dashboards show zeros, not gaps.
        for t in EventType::ALL {
            m.events_total.with_label_values(&[t.as_str()]);
        }
        for r in InvalidReason::ALL {
            m.events_invalid_total.with_label_values(&[r.as_str()]);
        }
        for k in AlertKind::ALL {
            m.alerts_total.with_label_values(&[k.as_str()]);
        }
        m.alerts_suppressed_total.with_label_values(&["cooldown"]);
        for r in ["ok", "failed"] {
            m.checkpoints_total.with_label_values(&[r]);
        }
        for r in EvictReason::ALL {
            m.customers_evicted_total.with_label_values(&[r.as_str()]);
        }
        for l in Lifecycle::ALL {
            m.customers.with_label_values(&[l.as_str()]);
        }
        for t in Tier::AT_RISK {
            m.at_risk_customers.with_label_values(&[t.as_str()]);
            m.revenue_at_risk.with_label_values(&[t.as_str()]);
        }
        for p in PERIODS {
            for c in PERIOD_COUNTS {
                m.period_customers.with_label_values(&[p, c]);
            }
            for c in &PERIOD_COUNTS[..2] {
                m.period_revenue.with_label_values(&[p, c]);
            }
        }
        for w in Winback::ALL {
            m.winback_outcomes_total.with_label_values(&[w.as_str()]);
        }
        for s in Signal::ALL {
            m.alert_top_reasons_total.with_label_values(&[s.as_str()]);
        }
        for r in ["ok", "rejected"] {
            m.config_reloads_total.with_label_values(&[r]);
        }
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        m
    }

    /// Mark `version` as the active config.
    pub fn set_config_version(&self, version: &str) {
        self.config_info.reset();
        self.config_info.with_label_values(&[version]).set(1);
    }

    /// Messages processed so far (valid and invalid).
    pub fn messages_processed(&self) -> u64 {
        let valid: u64 = EventType::ALL
            .iter()
            .map(|t| self.events_total.with_label_values(&[t.as_str()]).get())
            .sum();
        let invalid: u64 = InvalidReason::ALL
            .iter()
            .map(|r| {
                self.events_invalid_total
                    .with_label_values(&[r.as_str()])
                    .get()
            })
            .sum();
        valid + invalid
    }

    /// The registry in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("exposition is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The `period` label of the KPI gauges, in [`PeriodGauges`] order.
const PERIODS: [&str; 2] = ["current", "previous"];
/// The `count` label of the KPI gauges (the revenue gauge has the first two).
const PERIOD_COUNTS: [&str; 4] = ["start", "lost", "new", "end"];

/// The KPI period gauges, resolved: `[current, previous]`.
#[derive(Clone)]
pub struct PeriodGauges {
    /// Per period: start, lost, new, end.
    customers: [[IntGauge; 4]; 2],
    /// Per period: start, lost.
    revenue: [[Gauge; 2]; 2],
}

impl PeriodGauges {
    fn new(m: &Metrics) -> Self {
        PeriodGauges {
            customers: PERIODS
                .map(|p| PERIOD_COUNTS.map(|c| m.period_customers.with_label_values(&[p, c]))),
            revenue: PERIODS.map(|p| {
                [PERIOD_COUNTS[0], PERIOD_COUNTS[1]]
                    .map(|c| m.period_revenue.with_label_values(&[p, c]))
            }),
        }
    }

    /// Move one partition's contribution to period `which` (0 current, 1 previous) from `old`
    /// to `new`.
    pub fn apply(&self, old: &PeriodCounts, new: &PeriodCounts, which: usize) {
        let counts = self.customers[which]
            .iter()
            .zip(old.counts().into_iter().zip(new.counts()));
        for (g, (o, n)) in counts {
            if o != n {
                g.add(n - o);
            }
        }
        let revenue = self.revenue[which]
            .iter()
            .zip(old.revenue().into_iter().zip(new.revenue()));
        for (g, (o, n)) in revenue {
            if o != n {
                g.add(n - o);
            }
        }
    }
}

/// Why a customer was forgotten (the `reason` of `churnwatch_customers_evicted_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictReason {
    /// Inactive for `state.evict_lapsed_after_days`.
    Lapsed = 0,
    /// `state.max_customers` reached: the least recently active went first.
    Capacity = 1,
}

impl EvictReason {
    pub const ALL: [EvictReason; 2] = [EvictReason::Lapsed, EvictReason::Capacity];

    pub fn as_str(self) -> &'static str {
        match self {
            EvictReason::Lapsed => "lapsed",
            EvictReason::Capacity => "capacity",
        }
    }
}

/// Label handles resolved once, for the per-event path.
#[derive(Clone)]
pub struct HotMetrics {
    pub events: [IntCounter; 4],
    pub customers: [IntGauge; 4],
    /// Indexed by `Tier as usize - 1` (Low, Medium, High).
    pub at_risk: [IntGauge; 3],
    pub alerts: [IntCounter; 4],
    pub suppressed_cooldown: IntCounter,
    pub late: IntCounter,
    pub outside_window: IntCounter,
    pub duplicate: IntCounter,
    /// Indexed by [`EvictReason`].
    pub evicted: [IntCounter; 2],
    pub timers_fired: IntCounter,
    /// Indexed like `at_risk`.
    pub revenue_at_risk: [Gauge; 3],
    pub period: PeriodGauges,
    /// Indexed by [`Winback`].
    pub winback: [IntCounter; 2],
    /// Indexed by [`Signal`].
    pub top_reason: [IntCounter; 7],
}

impl HotMetrics {
    pub fn new(m: &Metrics) -> Self {
        HotMetrics {
            events: EventType::ALL.map(|t| m.events_total.with_label_values(&[t.as_str()])),
            customers: Lifecycle::ALL.map(|l| m.customers.with_label_values(&[l.as_str()])),
            at_risk: Tier::AT_RISK.map(|t| m.at_risk_customers.with_label_values(&[t.as_str()])),
            alerts: AlertKind::ALL.map(|k| m.alerts_total.with_label_values(&[k.as_str()])),
            suppressed_cooldown: m.alerts_suppressed_total.with_label_values(&["cooldown"]),
            late: m.events_late_total.clone(),
            outside_window: m.events_outside_window_total.clone(),
            duplicate: m.events_duplicate_total.clone(),
            evicted: EvictReason::ALL
                .map(|r| m.customers_evicted_total.with_label_values(&[r.as_str()])),
            timers_fired: m.timers_fired_total.clone(),
            revenue_at_risk: Tier::AT_RISK
                .map(|t| m.revenue_at_risk.with_label_values(&[t.as_str()])),
            period: PeriodGauges::new(m),
            winback: Winback::ALL
                .map(|w| m.winback_outcomes_total.with_label_values(&[w.as_str()])),
            top_reason: Signal::ALL
                .map(|s| m.alert_top_reasons_total.with_label_values(&[s.as_str()])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_metrics_with_zero_series() {
        let m = Metrics::new();
        m.set_config_version("cfg-1");
        let text = m.render();
        for name in [
            "churnwatch_events_total{type=\"visit\"} 0",
            "churnwatch_events_invalid_total{reason=\"not_json\"} 0",
            "churnwatch_at_risk_customers{tier=\"high\"} 0",
            "churnwatch_customers{lifecycle=\"lapsed\"} 0",
            "churnwatch_revenue_at_risk{tier=\"medium\"} 0",
            "churnwatch_period_customers{count=\"lost\",period=\"previous\"} 0",
            "churnwatch_period_revenue{count=\"start\",period=\"current\"} 0",
            "churnwatch_winback_outcomes_total{outcome=\"not_returned\"} 0",
            "churnwatch_alert_top_reasons_total{signal=\"silence\"} 0",
            "churnwatch_config_reloads_total{result=\"rejected\"} 0",
            "churnwatch_config_info{version=\"cfg-1\"} 1",
            "churnwatch_decision_latency_seconds_bucket",
            "churnwatch_poll_latency_seconds_bucket",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
        HotMetrics::new(&m);
        assert!(!m.render().contains("tier=\"none\""));
    }
}
