//! The alert schema (`schema/alert.schema.json`) against real alerts.
//!
//! Alerts are produced by the library's own per-partition entry point (no Kafka): events are
//! decoded from JSON payloads with `churnwatch::event::decode` and fed to a
//! `churnwatch::partition::PartitionState` with the default config, for customers who are
//! steady, decline, go silent (only other customers' events move time on) and come back. Every
//! alert must validate, and every alert kind must appear. Mutated alerts must not validate, so
//! the schema really constrains something. The README's "Alert schema" example must validate
//! too, and agree with the code on field order and arithmetic.

use std::collections::BTreeSet;
use std::sync::Arc;

use churnwatch::alert::{Alert, ReasonOut, SourceRef, Trigger};
use churnwatch::alerting::AlertKind;
use churnwatch::config::Config;
use churnwatch::event::{decode, DecodeLimits};
use churnwatch::metrics::Metrics;
use churnwatch::partition::PartitionState;
use churnwatch::scoring::{Lifecycle, Reason, Signal, Tier};
use churnwatch::time::{format_rfc3339_ms, parse_rfc3339_ms, DAY_MS, HOUR_MS};
use jsonschema::Validator;
use serde_json::{json, Value};

const SCHEMA_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/alert.schema.json");
const README_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");

/// Monday 2025-01-06T00:00:00Z: the scenario's day 0.
const T0: i64 = 1_736_121_600_000;

fn schema() -> Value {
    let text = std::fs::read_to_string(SCHEMA_PATH).expect("schema/alert.schema.json exists");
    serde_json::from_str(&text).expect("the schema is JSON")
}

fn validator() -> Validator {
    let schema = schema();
    jsonschema::meta::validate(&schema).expect("the schema is a valid JSON Schema");
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the schema compiles as draft 2020-12")
}

fn errors(v: &Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{} (at {})", e, e.instance_path()))
        .collect()
}

fn assert_valid(v: &Validator, instance: &Value) {
    let errs = errors(v, instance);
    assert!(
        errs.is_empty(),
        "alert does not match the schema:\n  {}\nalert: {}",
        errs.join("\n  "),
        serde_json::to_string_pretty(instance).unwrap()
    );
}

fn to_value(a: &Alert) -> Value {
    serde_json::from_slice(&a.to_json()).expect("alerts are JSON")
}

// ---------------------------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------------------------

/// One event as its JSON payload, the way producers write them.
fn payload(kind: &str, id: &str, ts_ms: i64, extra: &str) -> String {
    format!(
        r#"{{"type":"{kind}","customer_id":"{id}","ts":"{}"{extra}}}"#,
        format_rfc3339_ms(ts_ms)
    )
}

/// What each customer does on `day`: (hour, payload) pairs.
fn day_of(id: &str, day: i64) -> Vec<(i64, String)> {
    let at = |h: i64| T0 + day * DAY_MS + h * HOUR_MS;
    let visits = |out: &mut Vec<(i64, String)>| {
        for h in [9, 13, 18] {
            out.push((
                h,
                payload("visit", id, at(h), r#","page":"/home","duration_secs":42"#),
            ));
        }
    };
    let mut out = Vec::new();
    match id {
        // Visits, usage, weekly purchases and a stable engagement score, all the time.
        "c-steady" => {
            visits(&mut out);
            out.push((
                10,
                payload("usage", id, at(10), r#","feature":"export","quantity":4"#),
            ));
            if day % 7 == 0 {
                out.push((
                    11,
                    payload("purchase", id, at(11), r#","amount":35.5,"currency":"EUR""#),
                ));
            }
            out.push((
                12,
                payload(
                    "engagement",
                    id,
                    at(12),
                    &format!(r#","score":{}"#, 70 + day % 3),
                ),
            ));
        }
        // Stops everything on day 40: flagged by timers alone, then lapses.
        "c-silent" if day < 40 => visits(&mut out),
        // Pauses on days 40-49, then comes back.
        "c-returning" if !(40..50).contains(&day) => visits(&mut out),
        // Stops on day 30, lapses, comes back on day 75.
        "c-lapse-return" if !(30..75).contains(&day) => visits(&mut out),
        // Usage stops on day 40 (at risk, low: one signal of weight 0.7), then visits, purchases
        // and the engagement score fall on day 50 (several signals: escalated).
        "c-decliner" => {
            if day < 50 {
                visits(&mut out);
            } else if day % 3 == 0 {
                out.push((9, payload("visit", id, at(9), "")));
            }
            if day < 40 {
                for h in [10, 14] {
                    out.push((h, payload("usage", id, at(h), r#","quantity":4"#)));
                }
            }
            if day < 50 && day % 7 == 3 {
                out.push((
                    15,
                    payload("purchase", id, at(15), r#","amount":120,"quantity":2"#),
                ));
            }
            let score = if day < 50 { 80 + day % 4 } else { 30 };
            out.push((
                16,
                payload("engagement", id, at(16), &format!(r#","score":{score}"#)),
            ));
        }
        _ => {}
    }
    out
}

const CUSTOMERS: [&str; 5] = [
    "c-steady",
    "c-silent",
    "c-returning",
    "c-lapse-return",
    "c-decliner",
];

/// Run the scenario for `days` through one partition; every alert it produces, in order.
fn scenario_alerts(days: i64) -> Vec<Alert> {
    let metrics = Metrics::new();
    let mut p = PartitionState::new(Arc::new(Config::default()), &metrics);
    let limits = DecodeLimits {
        max_event_bytes: 16 * 1024,
        max_ts_ms: None,
    };
    let mut out = Vec::new();
    let mut offset = 0i64;
    for day in 0..days {
        let mut events: Vec<(i64, String)> =
            CUSTOMERS.iter().flat_map(|id| day_of(id, day)).collect();
        events.sort_by_key(|(h, _)| *h);
        for (_, json) in events {
            let ev = decode(json.as_bytes(), &limits).expect("scenario events are valid");
            let source = SourceRef {
                topic: "customer-events",
                partition: 0,
                offset,
            };
            offset += 1;
            p.on_event(&ev, Some(source), &mut out);
        }
    }
    out
}

fn kinds_of<'a>(alerts: &'a [Alert], id: &str) -> Vec<&'a str> {
    alerts
        .iter()
        .filter(|a| a.customer_id == id)
        .map(|a| a.kind.as_str())
        .collect()
}

/// Arithmetic the README promises consumers: contribution = weight * strength, risk_score =
/// 1 - Π(1 - contribution) over the reasons (a lapse's inactivity reason contributes 1), value_at_risk = customer_value * risk_score.
fn check_consistency(alert: &Value) {
    let num = |v: &Value, k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} is a number"));
    // Visits, usage and activity are one piece of evidence (the largest counts); the other
    // reasons combine by noisy-OR.
    let mut survive = 1.0;
    let mut sessions = 0.0f64;
    for r in alert["reasons"].as_array().unwrap() {
        let c = num(r, "contribution");
        assert!(
            (c - num(r, "weight") * num(r, "strength")).abs() < 1e-3,
            "contribution != weight * strength in {r}"
        );
        match r["signal"].as_str().unwrap() {
            "visits" | "usage" | "activity" => sessions = sessions.max(c),
            _ => survive *= 1.0 - c,
        }
    }
    survive *= 1.0 - sessions;
    let risk = num(alert, "risk_score");
    assert!(
        (risk - (1.0 - survive)).abs() < 2e-3,
        "risk_score {risk} is not the noisy-OR of the contributions ({}) in {alert}",
        1.0 - survive
    );
    let value = num(alert, "customer_value");
    let var = num(alert, "value_at_risk");
    assert!(
        (var - value * risk).abs() <= 0.011 + value * 1e-4,
        "value_at_risk {var} != customer_value {value} * risk_score {risk}"
    );
    let ts = |k: &str| parse_rfc3339_ms(alert[k].as_str().unwrap()).unwrap();
    assert!(
        ts("first_seen") <= ts("last_seen"),
        "first_seen after last_seen"
    );
    assert!(
        ts("last_seen") <= ts("event_time"),
        "last_seen after event_time"
    );
}

#[test]
fn real_alerts_validate_and_every_kind_appears() {
    let v = validator();
    let alerts = scenario_alerts(100);
    assert!(!alerts.is_empty());
    let mut kinds = BTreeSet::new();
    let mut triggers = BTreeSet::new();
    let mut signals = BTreeSet::new();
    for a in &alerts {
        let value = to_value(a);
        assert_valid(&v, &value);
        check_consistency(&value);
        kinds.insert(a.kind.as_str());
        triggers.insert(value["trigger"].as_str().unwrap().to_string());
        for r in &a.reasons {
            signals.insert(r.signal);
        }
    }
    for k in AlertKind::ALL {
        assert!(
            kinds.contains(k.as_str()),
            "no {} alert in {kinds:?}",
            k.as_str()
        );
    }
    assert_eq!(
        triggers,
        BTreeSet::from(["event".to_string(), "timer".to_string()])
    );
    for s in ["visits", "usage", "purchases", "engagement", "inactivity"] {
        assert!(
            signals.contains(s),
            "no {s} reason in any alert: {signals:?}"
        );
    }
    // Both with and without `source`.
    assert!(alerts.iter().any(|a| a.source.is_some()));
    assert!(alerts.iter().any(|a| a.source.is_none()));

    assert_eq!(kinds_of(&alerts, "c-steady"), Vec::<&str>::new());
    let silent = kinds_of(&alerts, "c-silent");
    assert_eq!(silent.first(), Some(&"at_risk"), "{silent:?}");
    assert_eq!(silent.last(), Some(&"lapsed"), "{silent:?}");
    let returning = kinds_of(&alerts, "c-returning");
    assert_eq!(returning.first(), Some(&"at_risk"), "{returning:?}");
    assert_eq!(returning.last(), Some(&"recovered"), "{returning:?}");
    let lapse_return = kinds_of(&alerts, "c-lapse-return");
    assert!(
        lapse_return.ends_with(&["lapsed", "recovered"]),
        "{lapse_return:?}"
    );
    let decliner = kinds_of(&alerts, "c-decliner");
    assert_eq!(decliner.first(), Some(&"at_risk"), "{decliner:?}");
    assert!(decliner.contains(&"escalated"), "{decliner:?}");
}

#[test]
fn mutated_alerts_fail_validation() {
    let v = validator();
    let alerts = scenario_alerts(100);
    let with_source = alerts
        .iter()
        .find(|a| a.source.is_some() && a.reasons.len() >= 2)
        .expect("an event-triggered alert with two reasons");
    let base = to_value(with_source);
    assert_valid(&v, &base);

    // `source` is optional.
    let mut no_source = base.clone();
    no_source.as_object_mut().unwrap().remove("source");
    assert_valid(&v, &no_source);

    type Mutation = (&'static str, fn(&mut Value));
    let mutations: Vec<Mutation> = vec![
        ("unknown kind", |a| a["kind"] = json!("churned")),
        ("empty reasons", |a| a["reasons"] = json!([])),
        ("extra top-level property", |a| a["extra"] = json!(1)),
        ("extra reason property", |a| {
            a["reasons"][0]["extra"] = json!(1)
        }),
        ("extra source property", |a| a["source"]["extra"] = json!(1)),
        ("missing alert_id", |a| {
            a.as_object_mut().unwrap().remove("alert_id");
        }),
        ("missing reason summary", |a| {
            a["reasons"][1].as_object_mut().unwrap().remove("summary");
        }),
        ("alert_id not a UUID", |a| a["alert_id"] = json!("alert-1")),
        ("event_time not RFC 3339", |a| {
            a["event_time"] = json!("yesterday")
        }),
        ("emitted_at as a number", |a| {
            a["emitted_at"] = json!(1_736_121_600)
        }),
        ("schema_version 2", |a| a["schema_version"] = json!(2)),
        ("risk_score above 1", |a| a["risk_score"] = json!(1.5)),
        ("unknown tier", |a| a["tier"] = json!("critical")),
        ("unknown lifecycle", |a| a["lifecycle"] = json!("churned")),
        ("unknown trigger", |a| a["trigger"] = json!("manual")),
        ("unknown signal", |a| {
            a["reasons"][0]["signal"] = json!("mood")
        }),
        ("unit not matching the signal", |a| {
            let unit = if a["reasons"][0]["signal"] == "engagement" {
                "days"
            } else {
                "score"
            };
            a["reasons"][0]["unit"] = json!(unit);
        }),
        ("p_value above 1", |a| {
            a["reasons"][0]["p_value"] = json!(3.0)
        }),
        ("negative episode", |a| a["episode"] = json!(-1)),
        ("null currency", |a| a["currency"] = Value::Null),
        ("timer alert with a source", |a| {
            a["trigger"] = json!("timer")
        }),
        ("recovered alert with a tier", |a| {
            a["kind"] = json!("recovered");
            a["tier"] = json!("high");
        }),
    ];
    for (what, mutate) in mutations {
        let mut bad = base.clone();
        mutate(&mut bad);
        assert!(
            !v.is_valid(&bad),
            "{what}: the mutated alert still validates: {bad}"
        );
    }
}

/// The schema's enums list exactly what the Rust types serialize to.
#[test]
fn schema_enums_match_the_code() {
    let s = schema();
    let enum_of = |ptr: &str| -> BTreeSet<String> {
        s.pointer(ptr)
            .unwrap_or_else(|| panic!("{ptr} in the schema"))
            .as_array()
            .unwrap_or_else(|| panic!("{ptr} is an array"))
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let ser = |v: Value| v.as_str().unwrap().to_string();

    let kinds: BTreeSet<_> = AlertKind::ALL
        .iter()
        .map(|k| ser(serde_json::to_value(k).unwrap()))
        .collect();
    assert_eq!(enum_of("/properties/kind/enum"), kinds);

    let tiers: BTreeSet<_> = [Tier::None, Tier::Low, Tier::Medium, Tier::High]
        .iter()
        .inspect(|t| match t {
            // A new tier must be added to the schema (and to this list).
            Tier::None | Tier::Low | Tier::Medium | Tier::High => {}
        })
        .map(|t| ser(serde_json::to_value(t).unwrap()))
        .collect();
    assert_eq!(enum_of("/properties/tier/enum"), tiers);
    assert_eq!(enum_of("/properties/previous_tier/enum"), tiers);

    let stages: BTreeSet<_> = Lifecycle::ALL
        .iter()
        .map(|l| ser(serde_json::to_value(l).unwrap()))
        .collect();
    assert_eq!(enum_of("/properties/lifecycle/enum"), stages);

    let triggers: BTreeSet<_> = [Trigger::Event, Trigger::Timer]
        .iter()
        .inspect(|t| match t {
            Trigger::Event | Trigger::Timer => {}
        })
        .map(|t| ser(serde_json::to_value(t).unwrap()))
        .collect();
    assert_eq!(enum_of("/properties/trigger/enum"), triggers);

    let signals = all_signals();
    let names: BTreeSet<_> = signals.iter().map(|s| s.as_str().to_string()).collect();
    assert_eq!(enum_of("/$defs/reason/properties/signal/enum"), names);
    let units: BTreeSet<_> = signals
        .iter()
        .map(|&s| reason(s).unit().to_string())
        .collect();
    assert_eq!(enum_of("/$defs/reason/properties/unit/enum"), units);

    // Required: every property except `source`.
    let props: BTreeSet<String> = s["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let required: BTreeSet<String> = s["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let optional: Vec<_> = props.difference(&required).collect();
    assert_eq!(optional, vec!["source"]);
    let reason_props: BTreeSet<String> = s["$defs"]["reason"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let reason_required: BTreeSet<String> = s["$defs"]["reason"]["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let reason_optional: Vec<_> = reason_props.difference(&reason_required).collect();
    assert_eq!(reason_optional, vec!["onset", "posterior"]);
}

fn all_signals() -> Vec<Signal> {
    use Signal::*;
    let all = vec![
        Visits, Usage, Activity, Purchases, Engagement, Silence, Inactivity,
    ];
    for s in &all {
        // Exhaustive: a new signal fails to compile here until it is added to the list.
        match s {
            Visits | Usage | Activity | Purchases | Engagement | Silence | Inactivity => {}
        }
    }
    all
}

fn reason(signal: Signal) -> Reason {
    Reason {
        signal,
        baseline: 2.5,
        recent: 0.5,
        change_pct: -80.0,
        statistic: -4.2,
        p_value: 0.0004,
        strength: 0.9996,
        weight: 0.7,
        recent_days: 7.0,
        baseline_days: 28.0,
        onset_ms: Some(1_767_225_600_000),
        posterior: (signal == Signal::Silence).then_some(0.12),
    }
}

/// A reason of every signal, as `ReasonOut` serializes it, fits the schema.
#[test]
fn every_signal_serializes_to_a_valid_reason() {
    let v = validator();
    let alerts = scenario_alerts(60);
    let mut alert = to_value(alerts.first().expect("an alert"));
    for s in all_signals() {
        let r = serde_json::to_value(ReasonOut::from(&reason(s))).unwrap();
        alert["reasons"] = json!([r]);
        let errs = errors(&v, &alert);
        assert!(errs.is_empty(), "{s:?}: {errs:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The README example
// ---------------------------------------------------------------------------------------------

/// The single ```json block of the README's `## Alert schema` section.
fn readme_example() -> String {
    let readme = std::fs::read_to_string(README_PATH).expect("README.md exists");
    let start = readme
        .lines()
        .position(|l| l.trim_end() == "## Alert schema")
        .expect("README.md has a `## Alert schema` heading");
    let section: Vec<&str> = readme
        .lines()
        .skip(start + 1)
        .take_while(|l| !l.starts_with("## "))
        .collect();
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in section {
        match current.as_mut() {
            None if line.trim_end() == "```json" => current = Some(Vec::new()),
            None => {}
            Some(b) if line.trim_end() == "```" => {
                blocks.push(b.join("\n"));
                current = None;
            }
            Some(b) => b.push(line),
        }
    }
    assert!(current.is_none(), "unterminated ```json block");
    assert_eq!(
        blocks.len(),
        1,
        "the `## Alert schema` section must hold exactly one ```json block"
    );
    blocks.pop().unwrap()
}

/// Positions of `"key":` in a JSON text, for the keys that occur.
fn key_order(text: &str, keys: &[String]) -> Vec<String> {
    let mut found: Vec<(usize, String)> = keys
        .iter()
        .filter_map(|k| text.find(&format!("\"{k}\":")).map(|i| (i, k.clone())))
        .collect();
    found.sort();
    found.into_iter().map(|(_, k)| k).collect()
}

#[test]
fn readme_alert_example_validates() {
    let v = validator();
    let text = readme_example();
    let example: Value = serde_json::from_str(&text).expect("the README example is JSON");
    assert_valid(&v, &example);
    check_consistency(&example);

    // Same field order as the code serializes (top level and reasons).
    let real = alerts_with_source();
    let real_text = String::from_utf8(real.to_json()).unwrap();
    let s = schema();
    let top: Vec<String> = s["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let in_example = key_order(&text, &top);
    let in_code: Vec<String> = key_order(&real_text, &top)
        .into_iter()
        .filter(|k| in_example.contains(k))
        .collect();
    assert_eq!(
        in_example, in_code,
        "README example field order differs from alert.rs"
    );
    let reason_keys: Vec<String> = s["$defs"]["reason"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let first_reason = |t: &str| -> String {
        let from = t.find("\"reasons\":").unwrap();
        let to = t[from..].find('}').unwrap();
        t[from..from + to].to_string()
    };
    // Optional reason fields (onset, posterior) may be in one and not the other.
    let ex = key_order(&first_reason(&text), &reason_keys);
    let real_keys = key_order(&first_reason(&real_text), &reason_keys);
    let common = |a: &[String], b: &[String]| -> Vec<String> {
        a.iter().filter(|k| b.contains(k)).cloned().collect()
    };
    assert_eq!(
        common(&ex, &real_keys),
        common(&real_keys, &ex),
        "README example reason field order differs from alert.rs"
    );

    // Reasons are ranked by contribution.
    let contributions: Vec<f64> = example["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["contribution"].as_f64().unwrap())
        .collect();
    assert!(
        contributions.windows(2).all(|w| w[0] >= w[1]),
        "README example reasons are not ranked by contribution: {contributions:?}"
    );
}

fn alerts_with_source() -> Alert {
    scenario_alerts(100)
        .into_iter()
        .find(|a| a.source.is_some())
        .expect("an event-triggered alert")
}
