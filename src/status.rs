//! The status page: what an operator or a support agent sees at `/` and `/customers/{id}`.
//!
//! - `/`: pipeline health (from the metrics), the KPIs, and this instance's at-risk customers
//!   ranked by value at risk, with tier, `p_churn` and reasons; a customer lookup form. The
//!   page refreshes itself every 10 seconds.
//! - `/customers/{id}`: one customer, as HTML, or as JSON with `?format=json` or
//!   `Accept: application/json`. 404 when this instance does not hold the customer (another
//!   instance of the group may own their partition).
//! - `/status.json`: the page's data, for scripts.
//!
//! Pages are rendered by the binary itself (with `maud`, which escapes every value), with no
//! front-end build step and no external assets.

use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Serialize;

use crate::alert::ReasonOut;
use crate::metrics::Metrics;
use crate::partition::Inspection;
use crate::time::format_rfc3339_ms;

/// How many at-risk customers the page lists.
pub const AT_RISK_LIMIT: usize = 50;

/// What the pipeline lets the HTTP server see of its customers.
pub trait CustomerSource: Send + Sync {
    /// The at-risk customers held by this instance, most value at risk first (at most
    /// `limit`), and how many there are in all.
    fn at_risk(&self, limit: usize) -> AtRisk;
    /// One customer, if this instance holds them.
    fn customer(&self, id: &str) -> Option<CustomerView>;
}

/// The at-risk list.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AtRisk {
    pub total: usize,
    pub customers: Vec<CustomerView>,
}

/// One customer, scored now.
#[derive(Debug, Clone, Serialize)]
pub struct CustomerView {
    pub customer_id: String,
    pub topic: String,
    pub partition: i32,
    /// Event time the customer was scored at (the partition's stream time).
    pub as_of: String,
    pub lifecycle: &'static str,
    /// The alerted tier (`none` unless at risk).
    pub tier: &'static str,
    pub risk_score: f64,
    pub p_churn: f64,
    pub churn_horizon_days: f64,
    pub customer_value: f64,
    pub value_at_risk: f64,
    pub currency: String,
    pub first_seen: String,
    pub last_seen: String,
    pub days_since_last_active: f64,
    pub events: u64,
    /// Start of the at-risk episode (or lapse) in progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    pub episodes: u32,
    pub config_version: String,
    /// Every signal that could be evaluated, strongest contribution first.
    pub reasons: Vec<ReasonOut>,
}

impl CustomerView {
    pub fn new(id: &str, topic: &str, partition: i32, i: &Inspection<'_>) -> Self {
        let (c, a, cfg) = (i.customer, &i.assessment, i.cfg);
        let alert = c.alert();
        let in_episode = alert.phase != crate::alerting::Phase::Healthy;
        CustomerView {
            customer_id: id.to_string(),
            topic: topic.to_string(),
            partition,
            as_of: format_rfc3339_ms(a.as_of_ms),
            lifecycle: i.lifecycle.as_str(),
            tier: alert
                .current_tier()
                .unwrap_or(crate::scoring::Tier::None)
                .as_str(),
            risk_score: a.risk,
            p_churn: a.p_churn,
            churn_horizon_days: cfg.churn.horizon_days,
            customer_value: a.customer_value,
            value_at_risk: a.value_at_risk(),
            currency: cfg.value.currency.clone(),
            first_seen: format_rfc3339_ms(c.first_seen.ms()),
            last_seen: format_rfc3339_ms(c.last_seen_ms()),
            days_since_last_active: a.days_since_last_active,
            events: c.events.into(),
            since: in_episode.then(|| format_rfc3339_ms(alert.since.ms())),
            episodes: alert.episode.into(),
            config_version: cfg.version.clone(),
            reasons: a.ranked_reasons().iter().map(ReasonOut::from).collect(),
        }
    }
}

/// Pipeline health and KPIs, read from the metrics.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineHealth {
    pub ready: bool,
    pub version: &'static str,
    pub config_version: String,
    pub config_restart_required: bool,
    pub partitions_assigned: i64,
    pub restoring_partitions: i64,
    pub events: u64,
    pub invalid_events: u64,
    pub late_events: u64,
    pub consumer_lag: i64,
    pub last_event_time: Option<String>,
    pub alerts: Vec<(&'static str, u64)>,
    pub customers: Vec<(&'static str, i64)>,
    pub at_risk_by_tier: Vec<(&'static str, i64)>,
    pub revenue_at_risk: f64,
    /// Previous KPI period: churn rate, retention rate, revenue churn (when it had customers).
    pub churn_rate: Option<f64>,
    pub retention_rate: Option<f64>,
    pub revenue_churn: Option<f64>,
}

impl PipelineHealth {
    pub fn read(m: &Metrics, ready: bool) -> Self {
        use crate::alerting::AlertKind;
        use crate::scoring::{Lifecycle, Tier};
        let sum_counter = |v: &prometheus::IntCounterVec| -> u64 {
            samples(v)
                .iter()
                .map(|s| s.get_counter().get_value() as u64)
                .sum()
        };
        let config_version = samples(&m.config_info)
            .iter()
            .flat_map(|s| s.get_label())
            .map(|l| l.value().to_string())
            .next()
            .unwrap_or_default();
        let lag = samples(&m.consumer_lag)
            .iter()
            .map(|s| s.get_gauge().get_value() as i64)
            .sum();
        let prev = |count: &str| {
            m.period_customers
                .with_label_values(&["previous", count])
                .get()
        };
        let prev_rev = |count: &str| {
            m.period_revenue
                .with_label_values(&["previous", count])
                .get()
        };
        let start = prev("start");
        let ratio = |num: f64, den: f64| (den > 0.0).then(|| num / den);
        let last = m.last_event_timestamp_seconds.get();
        PipelineHealth {
            ready,
            version: env!("CARGO_PKG_VERSION"),
            config_version,
            config_restart_required: m.config_restart_required.get() != 0,
            partitions_assigned: m.partitions_assigned.get(),
            restoring_partitions: m.restoring_partitions.get(),
            events: sum_counter(&m.events_total),
            invalid_events: sum_counter(&m.events_invalid_total),
            late_events: m.events_late_total.get(),
            consumer_lag: lag,
            last_event_time: (last > 0.0).then(|| format_rfc3339_ms((last * 1000.0) as i64)),
            alerts: AlertKind::ALL
                .iter()
                .map(|k| {
                    (
                        k.as_str(),
                        m.alerts_total.with_label_values(&[k.as_str()]).get(),
                    )
                })
                .collect(),
            customers: Lifecycle::ALL
                .iter()
                .map(|l| {
                    (
                        l.as_str(),
                        m.customers.with_label_values(&[l.as_str()]).get(),
                    )
                })
                .collect(),
            at_risk_by_tier: Tier::AT_RISK
                .iter()
                .rev()
                .map(|t| {
                    let n = m.at_risk_customers.with_label_values(&[t.as_str()]).get();
                    (t.as_str(), n)
                })
                .collect(),
            revenue_at_risk: Tier::AT_RISK
                .iter()
                .map(|t| m.revenue_at_risk.with_label_values(&[t.as_str()]).get())
                .sum(),
            churn_rate: ratio(prev("lost") as f64, start as f64),
            retention_rate: ratio((prev("end") - prev("new")) as f64, start as f64),
            revenue_churn: ratio(prev_rev("lost"), prev_rev("start")),
        }
    }
}

/// Every series of a labelled metric, as gathered.
fn samples(v: &impl prometheus::core::Collector) -> Vec<prometheus::proto::Metric> {
    v.collect()
        .into_iter()
        .flat_map(|mut f| f.take_metric())
        .collect()
}

/// Everything on the status page.
#[derive(Debug, Clone, Serialize)]
pub struct StatusPage {
    pub health: PipelineHealth,
    pub at_risk: AtRisk,
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}\
table{border-collapse:collapse}td,th{padding:.25em .6em;border-bottom:1px solid #ddd;\
text-align:left;vertical-align:top}th{background:#f4f4f4}.num{text-align:right}\
.ok{color:#1a7f37;font-weight:bold}.bad{color:#c62828;font-weight:bold}\
.high{background:#fde2e1}.medium{background:#fff1d6}.low{background:#fffbe6}\
.cards{display:flex;flex-wrap:wrap;gap:.8em}.card{border:1px solid #ddd;border-radius:6px;\
padding:.5em .9em;min-width:9em}.card b{display:block;font-size:1.3em}small{color:#666}";

fn page(title: &str, body: Markup, refresh: bool) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                @if refresh { meta http-equiv="refresh" content="10"; }
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body { (body) }
        }
    }
    .into_string()
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_string(), |v| format!("{:.1} %", v * 100.0))
}

/// An RFC 3339 time as `YYYY-MM-DD HH:MM` (UTC), for reading at a glance.
fn short(ts: &str) -> String {
    ts.get(..16)
        .map_or_else(|| ts.to_string(), |t| t.replacen('T', " ", 1))
}

fn lookup_form() -> Markup {
    html! {
        form action="/customers" method="get" {
            label { "Look up a customer: " input name="id" placeholder="customer id" required; }
            " " button type="submit" { "Show" }
        }
    }
}

/// The status page as HTML.
pub fn render_status(s: &StatusPage) -> String {
    let h = &s.health;
    let body = html! {
        h1 { "churnwatch" }
        p {
            @if h.ready { span.ok id="health" { "READY" } } @else { span.bad id="health" { "NOT READY" } }
            " · version " (h.version) " · config " code { (h.config_version) }
            @if h.config_restart_required { " · " span.bad { "config changes wait for a restart" } }
        }
        div.cards {
            div.card { "partitions" b { (h.partitions_assigned) } small { (h.restoring_partitions) " restoring" } }
            div.card { "events" b { (h.events) } small { (h.invalid_events) " invalid, " (h.late_events) " late" } }
            div.card { "consumer lag" b { (h.consumer_lag) } small { "messages" } }
            div.card { "newest event" b { (h.last_event_time.as_deref().map_or_else(|| "none yet".to_string(), short)) } small { "UTC, event time" } }
            div.card { "revenue at risk" b { (format!("{:.0}", h.revenue_at_risk)) } }
            div.card { "churn rate" b { (pct(h.churn_rate)) } small { "previous period" } }
            div.card { "retention rate" b { (pct(h.retention_rate)) } small { "previous period" } }
            div.card { "revenue churn" b { (pct(h.revenue_churn)) } small { "previous period" } }
        }
        h2 { "Customers" }
        table {
            tr { @for (l, _) in &h.customers { th { (l) } } @for (t, _) in &h.at_risk_by_tier { th { "at risk: " (t) } } }
            tr { @for (_, n) in &h.customers { td.num { (n) } } @for (_, n) in &h.at_risk_by_tier { td.num { (n) } } }
        }
        h2 { "Alerts" }
        table {
            tr { @for (k, _) in &h.alerts { th { (k) } } }
            tr { @for (_, n) in &h.alerts { td.num { (n) } } }
        }
        h2 { "At-risk customers of this instance (" (s.at_risk.total) "), by value at risk" }
        (lookup_form())
        @if s.at_risk.customers.is_empty() {
            p id="no-at-risk" { "No customer is at risk right now." }
        } @else {
            table id="at-risk" {
                tr {
                    th { "customer" } th { "tier" } th.num { "value at risk" } th.num { "risk" }
                    th.num { "p_churn" } th { "lifecycle" } th { "at risk since" } th { "top reasons" }
                }
                @for c in &s.at_risk.customers {
                    tr class=(c.tier) {
                        td { a href={ "/customers/" (urlencode(&c.customer_id)) } { (c.customer_id) } }
                        td { (c.tier) }
                        td.num { (format!("{:.2}", c.value_at_risk)) " " (c.currency) }
                        td.num { (format!("{:.2}", c.risk_score)) }
                        td.num { (format!("{:.0} %", c.p_churn * 100.0)) " / " (c.churn_horizon_days) " d" }
                        td { (c.lifecycle) }
                        td { (c.since.as_deref().map(short).unwrap_or_default()) }
                        td { @for r in c.reasons.iter().filter(|r| r.contribution > 0.0).take(2) { div { (r.summary) } } }
                    }
                }
            }
            @if s.at_risk.total > s.at_risk.customers.len() {
                p { small { "showing the " (s.at_risk.customers.len()) " with the most value at risk" } }
            }
        }
        p { small { a href="/metrics" { "/metrics" } " · " a href="/status.json" { "/status.json" } " · refreshes every 10 s" } }
    };
    page("churnwatch status", body, true)
}

/// One customer as HTML.
pub fn render_customer(c: &CustomerView) -> String {
    let body = html! {
        p { a href="/" { "← status" } }
        h1 { "Customer " code { (c.customer_id) } }
        table id="customer" {
            tr { th { "tier" } td class=(c.tier) { (c.tier) } }
            tr { th { "lifecycle" } td { (c.lifecycle) } }
            tr { th { "risk score" } td { (format!("{:.3}", c.risk_score)) } }
            tr { th { "p_churn" } td { (format!("{:.1} %", c.p_churn * 100.0)) " within " (c.churn_horizon_days) " days" } }
            tr { th { "value" } td { (format!("{:.2}", c.customer_value)) " " (c.currency) " (at risk: " (format!("{:.2}", c.value_at_risk)) ")" } }
            tr { th { "first seen" } td { (c.first_seen) } }
            tr { th { "last seen" } td { (c.last_seen) " (" (format!("{:.1}", c.days_since_last_active)) " days since last activity)" } }
            tr { th { "events" } td { (c.events) } }
            @if let Some(s) = &c.since { tr { th { "episode since" } td { (s) } } }
            tr { th { "episodes" } td { (c.episodes) } }
            tr { th { "scored as of" } td { (c.as_of) " · config " code { (c.config_version) } } }
            tr { th { "partition" } td { (c.topic) " / " (c.partition) } }
        }
        h2 { "Reasons" }
        @if c.reasons.is_empty() {
            p { "No signal could be evaluated yet (too little history)." }
        } @else {
            table id="reasons" {
                tr { th { "signal" } th { "summary" } th.num { "contribution" } th.num { "p-value" } }
                @for r in &c.reasons {
                    tr {
                        td { (r.signal) } td { (r.summary) }
                        td.num { (format!("{:.3}", r.contribution)) }
                        td.num { (format!("{:.4}", r.p_value)) }
                    }
                }
            }
        }
        p { small { a href={ "/customers/" (urlencode(&c.customer_id)) "?format=json" } { "as JSON" } } }
        (lookup_form())
    };
    page(
        &format!("churnwatch: customer {}", c.customer_id),
        body,
        false,
    )
}

/// The page for a customer this instance does not hold.
pub fn render_not_found(id: &str) -> String {
    let body = html! {
        p { a href="/" { "← status" } }
        h1 { "Customer " code { (id) } " not found" }
        p { "This instance holds no state for this customer. Another instance of the consumer group may own their partition, or the customer was never seen (or was forgotten after a long lapse)." }
        (lookup_form())
    };
    page("churnwatch: customer not found", body, false)
}

/// What a URL component keeps as is: RFC 3986's unreserved characters.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encode a customer id for a URL path segment (or any query value).
pub fn urlencode(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_ids_encoded() {
        let m = Metrics::new();
        let mut s = StatusPage {
            health: PipelineHealth::read(&m, true),
            at_risk: AtRisk::default(),
        };
        assert!(render_status(&s).contains("No customer is at risk"));
        s.at_risk.total = 1;
        s.at_risk.customers.push(CustomerView {
            customer_id: "<b>x/y</b>".into(),
            topic: "t".into(),
            partition: 0,
            as_of: String::new(),
            lifecycle: "declining",
            tier: "high",
            risk_score: 0.9,
            p_churn: 0.5,
            churn_horizon_days: 30.0,
            customer_value: 100.0,
            value_at_risk: 90.0,
            currency: "EUR".into(),
            first_seen: String::new(),
            last_seen: String::new(),
            days_since_last_active: 3.0,
            events: 10,
            since: None,
            episodes: 1,
            config_version: "v".into(),
            reasons: vec![],
        });
        let html = render_status(&s);
        assert!(html.contains("&lt;b&gt;x/y&lt;/b&gt;"), "{html}");
        assert!(!html.contains("<b>x/y"));
        assert!(html.contains("/customers/%3Cb%3Ex%2Fy%3C%2Fb%3E"));
        assert!(render_customer(&s.at_risk.customers[0]).contains("&lt;b&gt;"));
    }
}
