//! Quick accuracy and speed check of the scoring on the simulator (a precursor of `backtest`
//! and `bench`): 5,000 simulated customers, one partition, no Kafka.
//!
//! `cargo run --release --example evaluate -- [DAYS] [CONFIG]`; set `SHOW_FALSE_ALARMS=N` to
//! print the reasons of the first N alerts on steady customers.
use churnwatch::config::Config;
use churnwatch::event::{decode, DecodeLimits};
use churnwatch::metrics::Metrics;
use churnwatch::partition::PartitionState;
use churnwatch::sim::{SimConfig, Simulator};
use std::collections::HashMap;
use std::sync::Arc;

fn main() {
    let days: i64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(120);
    let cfg = Arc::new(match std::env::args().nth(2) {
        Some(p) => Config::load(std::path::Path::new(&p)).unwrap(),
        None => Config::default(),
    });
    let m = Metrics::new();
    let mut p = PartitionState::new(cfg.clone(), &m);
    let start = 1_700_000_000_000i64 / 86_400_000 * 86_400_000;
    let mut sim = Simulator::new(SimConfig {
        customers: 5000,
        seed: 7,
        start_ms: start,
        existing_share: 1.0,
        decline_window_days: Some((50.0, 90.0)),
        ..SimConfig::default()
    });
    let mut buf = Vec::new();
    let t = std::time::Instant::now();
    sim.advance(start + days * 86_400_000, &mut buf);
    let generated = t.elapsed();
    let limits = DecodeLimits {
        max_event_bytes: 1 << 20,
        max_ts_ms: None,
    };
    let mut alerts = Vec::new();
    let t = std::time::Instant::now();
    for e in &buf {
        if let Ok(ev) = decode(&e.payload, &limits) {
            p.on_event(&ev, None, &mut alerts);
        }
    }
    let el = t.elapsed();
    let truth: HashMap<String, _> = sim
        .truth()
        .into_iter()
        .map(|t| (t.customer_id.clone(), t))
        .collect();
    let mut by_seg: HashMap<&str, (usize, usize, usize)> = HashMap::new(); // customers, alerted, early(before onset)
    let mut first_alert: HashMap<&str, i64> = HashMap::new();
    for a in alerts.iter().filter(|a| a.kind.as_str() == "at_risk") {
        let ts = chrono::DateTime::parse_from_rfc3339(&a.event_time)
            .unwrap()
            .timestamp_millis();
        first_alert.entry(a.customer_id.as_str()).or_insert(ts);
    }
    let mut leads = Vec::new();
    for (id, tr) in &truth {
        let e = by_seg.entry(tr.segment.as_str()).or_default();
        e.0 += 1;
        if let Some(&ts) = first_alert.get(id.as_str()) {
            e.1 += 1;
            if let Some(on) = tr.decline_onset_ms {
                if ts < on {
                    e.2 += 1;
                }
            }
            if let Some(ch) = tr.churned_at_ms {
                leads.push((ch - ts) as f64 / 86_400_000.0);
            }
        }
    }
    let show: usize = std::env::var("SHOW_FALSE_ALARMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut shown = 0;
    for a in alerts.iter().filter(|a| a.kind.as_str() == "at_risk") {
        if truth[&a.customer_id].segment.as_str() == "steady" && shown < show {
            shown += 1;
            println!(
                "FP {} {} risk {:.2}: {}",
                a.customer_id,
                a.event_time,
                a.risk_score,
                a.reasons
                    .iter()
                    .map(|r| r.summary.clone())
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
        }
    }
    leads.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{} events in {:?} ({:.0} ev/s), {} alerts; simulated in {:?}",
        buf.len(),
        el,
        buf.len() as f64 / el.as_secs_f64(),
        alerts.len(),
        generated
    );
    let mut kinds: HashMap<&str, usize> = HashMap::new();
    for a in &alerts {
        *kinds.entry(a.kind.as_str()).or_default() += 1;
    }
    println!("kinds {:?}", kinds);
    for (seg, (n, al, early)) in &by_seg {
        println!(
            "{seg:16} customers {n:5} alerted at_risk {al:5} ({:.0}%), before onset {early}",
            100.0 * *al as f64 / *n as f64
        );
    }
    if !leads.is_empty() {
        println!(
            "lead time days (churned_at - first alert): median {:.1}",
            leads[leads.len() / 2]
        );
    }
}
