//! `churnwatch simulate`'s library side: a dataset on disk (events.jsonl + labels.csv) whose
//! events are valid, in arrival order, and consistent with the truth labels; and the same
//! traffic produced to a Kafka-protocol broker (librdkafka's in-process mock cluster).

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader};

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use churnwatch::event::{decode, Activity, DecodeLimits};
use churnwatch::labels::{read_labels, Label};
use churnwatch::sim::Segment;
use churnwatch::simulate::{
    produce, write_dataset, SimulateError, SimulateOptions, EVENTS_FILE, LABELS_FILE,
};
use churnwatch::time::DAY_MS;

const LIMITS: DecodeLimits = DecodeLimits {
    max_event_bytes: 1 << 20,
    max_ts_ms: None,
};

/// One decoded line of events.jsonl.
struct Line {
    customer_id: String,
    ts_ms: i64,
    event_id: String,
    activity: Activity,
}

impl Line {
    fn is_activity(&self) -> bool {
        !matches!(self.activity, Activity::Engagement { .. })
    }
}

fn read_events(path: &std::path::Path) -> Vec<Line> {
    let mut out = Vec::new();
    for (i, line) in BufReader::new(File::open(path).unwrap())
        .lines()
        .enumerate()
    {
        let line = line.unwrap();
        let e = decode(line.as_bytes(), &LIMITS)
            .unwrap_or_else(|e| panic!("line {} does not decode: {e:?}: {line}", i + 1));
        out.push(Line {
            customer_id: e.customer_id.to_string(),
            ts_ms: e.ts_ms,
            event_id: e.event_id.expect("every event has an id").to_string(),
            activity: e.activity,
        });
    }
    out
}

#[test]
fn dataset_is_valid_sorted_and_consistent_with_its_labels() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SimulateOptions {
        customers: 300,
        days: 120.0,
        seed: 7,
        ..SimulateOptions::default()
    };
    let summary = write_dataset(&opts, dir.path()).unwrap();
    let start = opts.start_ms;
    let end = start + 120 * DAY_MS;
    assert_eq!((summary.start_ms, summary.end_ms), (start, end));

    let events = read_events(&dir.path().join(EVENTS_FILE));
    assert_eq!(events.len() as u64, summary.events);
    assert!(events.len() > 10_000, "{} events", events.len());
    assert!(events.iter().all(|e| e.ts_ms >= start && e.ts_ms < end));

    // Arrival order: ts never goes back except for the few late or re-delivered events.
    let mut max_ts = i64::MIN;
    let mut behind = 0u64;
    let mut ids = HashSet::new();
    let mut repeated = 0u64;
    for e in &events {
        if e.ts_ms < max_ts {
            behind += 1;
        }
        max_ts = max_ts.max(e.ts_ms);
        if !ids.insert(e.event_id.as_str()) {
            repeated += 1;
        }
    }
    assert_eq!(repeated, summary.duplicates);
    assert!(summary.late > 0 && summary.duplicates > 0, "{summary:?}");
    assert!(behind <= summary.late + summary.duplicates);
    assert!(
        (summary.late + summary.duplicates) as f64 / (events.len() as f64) < 0.01,
        "{summary:?}"
    );

    // Labels: every customer, once.
    let labels: Vec<Label> = read_labels(BufReader::new(
        File::open(dir.path().join(LABELS_FILE)).unwrap(),
    ))
    .unwrap();
    assert_eq!(labels.len(), 300);
    let ids: BTreeSet<&str> = labels.iter().map(|l| l.customer_id.as_str()).collect();
    assert_eq!(ids.len(), 300);
    assert!(events.iter().all(|e| ids.contains(e.customer_id.as_str())));

    // Each customer's events, without re-deliveries, by time.
    let mut seen = HashSet::new();
    let mut by_customer: HashMap<&str, Vec<&Line>> = HashMap::new();
    for e in &events {
        if seen.insert(e.event_id.as_str()) {
            by_customer.entry(&e.customer_id).or_default().push(e);
        }
    }
    let none = Vec::new();
    let mut segments: HashMap<&str, usize> = HashMap::new();
    for l in &labels {
        *segments.entry(l.segment.as_str()).or_default() += 1;
        let segment =
            Segment::parse(&l.segment).unwrap_or_else(|| panic!("unknown segment {}", l.segment));
        let evs = by_customer.get(l.customer_id.as_str()).unwrap_or(&none);
        let activity: Vec<i64> = evs
            .iter()
            .filter(|e| e.is_activity())
            .map(|e| e.ts_ms)
            .collect();
        let id = &l.customer_id;
        if let Some(churned_at) = l.churned_at_ms {
            assert!(l.churned && segment.churns(), "{id}");
            assert!((start..end).contains(&churned_at), "{id}");
            let onset = l.decline_onset_ms.expect("churners have a decline onset");
            assert!(onset <= churned_at, "{id}");
            assert!(
                activity.iter().all(|&t| t < churned_at),
                "{id} ({}) is active at or after churned_at",
                l.segment
            );
            // Only CRM updates after the churn, and for 30 days at most.
            assert!(evs.iter().all(|e| e.ts_ms < churned_at + 30 * DAY_MS));
        } else {
            assert!(!l.churned);
            if let Some(onset) = l.decline_onset_ms {
                assert!(segment.churns() && onset < end, "{id}");
            }
        }
        match segment {
            Segment::OneTimeBuyer => {
                assert_eq!(activity.len(), 1, "{id}");
                assert_eq!(Some(activity[0] + 1), l.churned_at_ms, "{id}");
            }
            Segment::BuyerDropout => {
                assert_eq!(activity.last().map(|t| t + 1), l.churned_at_ms, "{id}");
            }
            Segment::Steady | Segment::Holiday | Segment::TemporaryDip | Segment::BuyerActive => {
                assert!(l.decline_onset_ms.is_none(), "{id}");
            }
            _ => {}
        }
        if matches!(
            segment,
            Segment::OneTimeBuyer | Segment::BuyerDropout | Segment::BuyerActive
        ) {
            assert!(
                evs.iter()
                    .all(|e| matches!(e.activity, Activity::Purchase { .. })),
                "{id}: purchase-only customers only purchase"
            );
        }
    }
    for s in [
        "steady",
        "one_time_buyer",
        "buyer_dropout",
        "buyer_active",
        "gradual_decline",
    ] {
        assert!(segments.contains_key(s), "no {s}: {segments:?}");
    }
    assert_eq!(
        summary.churners,
        labels.iter().filter(|l| l.churned).count()
    );
}

#[test]
fn invalid_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = write_dataset(
        &SimulateOptions {
            days: -3.0,
            ..SimulateOptions::default()
        },
        dir.path(),
    )
    .unwrap_err();
    assert!(matches!(err, SimulateError::Options(_)), "{err}");
    assert!(!dir.path().join(EVENTS_FILE).exists());
}

#[test]
fn produces_the_dataset_to_kafka_keyed_by_customer() {
    let cluster: MockCluster<'static, DefaultProducerContext> =
        MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("sim-events", 3, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let labels_path = dir.path().join("labels.csv");
    let opts = SimulateOptions {
        customers: 120,
        days: 30.0,
        seed: 11,
        ..SimulateOptions::default()
    };
    // Paced: --rate is a floor on the time it takes.
    let rate = 20_000.0;
    let started = std::time::Instant::now();
    let summary = produce(
        &opts,
        &bootstrap,
        "sim-events",
        &[("compression.type".to_string(), "lz4".to_string())],
        Some(&labels_path),
        Some(rate),
    )
    .unwrap();
    assert!(summary.events > 1000, "{summary:?}");
    let floor = (summary.events - 64) as f64 / rate;
    assert!(
        started.elapsed().as_secs_f64() >= floor,
        "{} messages in {:?} at most {rate}/s",
        summary.events,
        started.elapsed()
    );

    // The same traffic as the file.
    write_dataset(&opts, &dir.path().join("file")).unwrap();
    let file_lines: Vec<String> =
        std::fs::read_to_string(dir.path().join("file").join(EVENTS_FILE))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
    assert_eq!(file_lines.len() as u64, summary.events);

    let want = summary.events as usize;
    let messages: Vec<(Vec<u8>, Vec<u8>)> =
        common::topic::read_topic(&bootstrap, "sim-events", want)
            .into_iter()
            .map(|r| (r.key.unwrap_or_default().into_bytes(), r.payload))
            .collect();
    assert_eq!(messages.len(), want);
    let mut produced: Vec<String> = Vec::new();
    for (key, payload) in &messages {
        let e = decode(payload, &LIMITS).expect("valid event");
        assert_eq!(key.as_slice(), e.customer_id.as_bytes());
        produced.push(String::from_utf8(payload.clone()).unwrap());
    }
    let mut from_file = file_lines.clone();
    from_file.sort();
    produced.sort();
    assert!(
        produced == from_file,
        "the topic holds other messages than the file"
    );

    let labels = read_labels(BufReader::new(File::open(&labels_path).unwrap())).unwrap();
    assert_eq!(labels.len(), 120);
    let file_labels = std::fs::read_to_string(dir.path().join("file").join(LABELS_FILE)).unwrap();
    assert_eq!(std::fs::read_to_string(&labels_path).unwrap(), file_labels);
}

#[test]
fn an_unreachable_broker_fails_cleanly() {
    let opts = SimulateOptions {
        customers: 5,
        days: 2.0,
        ..SimulateOptions::default()
    };
    let err = produce(
        &opts,
        "127.0.0.1:1",
        "nowhere",
        &[("message.timeout.ms".to_string(), "1500".to_string())],
        None,
        None,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            SimulateError::Delivery { .. } | SimulateError::Produce { .. }
        ),
        "{err}"
    );
}
