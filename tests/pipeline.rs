//! Integration tests of `churnwatch run`'s pipeline through a real Kafka-protocol broker:
//! librdkafka's in-process mock cluster, spoken to over TCP by rdkafka clients.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use churnwatch::config::{Config, RawConfig};
use churnwatch::event::{decode, DecodeLimits};
use churnwatch::http::Health;
use churnwatch::metrics::Metrics;
use churnwatch::partition::PartitionState;
use churnwatch::pipeline::{self, PipelineError, RunSummary};
use churnwatch::scoring::Lifecycle;
use churnwatch::state::changelog_topic;
use churnwatch::time::{format_rfc3339_ms, now_ms, DAY_MS, HOUR_MS};
use common::schema::parse_valid_alert;
use common::topic::read_topic;

const EVENTS: &str = "customer-events";
const ALERTS: &str = "churn-alerts";
const DLQ: &str = "churnwatch-dead-letter";

fn broker() -> MockCluster<'static, DefaultProducerContext> {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic(EVENTS, 1, 1).unwrap();
    cluster.create_topic(ALERTS, 2, 1).unwrap();
    cluster.create_topic(DLQ, 1, 1).unwrap();
    // The mock cluster has no CreateTopics API: the changelogs of the groups used below.
    for group in [
        "stories",
        "dlq",
        "restart",
        "resume",
        "idle",
        "backpressure",
        "capped",
    ] {
        cluster
            .create_topic(&changelog_topic(group, EVENTS), 1, 1)
            .unwrap();
    }
    cluster
}

fn config(bootstrap: &str, group: &str) -> Config {
    let mut raw = RawConfig::default();
    raw.kafka.brokers = bootstrap.to_string();
    raw.kafka.group_id = group.to_string();
    raw.kafka.commit_interval_ms = 100;
    raw.kafka.delivery_timeout_ms = 2_000;
    raw.http.enabled = false;
    raw.validate().expect("test config is valid")
}

/// A message to produce: key and payload.
type Msg = (String, Vec<u8>);

fn visit(customer: &str, ts_ms: i64) -> Msg {
    (
        customer.to_string(),
        format!(
            r#"{{"type":"visit","customer_id":"{customer}","ts":"{}","page":"/home"}}"#,
            format_rfc3339_ms(ts_ms)
        )
        .into_bytes(),
    )
}

fn produce(bootstrap: &str, msgs: &[Msg]) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for (k, v) in msgs {
        p.send(BaseRecord::to(EVENTS).key(k.as_bytes()).payload(v))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();
}

/// A stream of visits, three a day, over `days` days ending now, for customers whose activity
/// on day `d` is given by `active(d, id)`, in time order.
fn scenario(days: i64, ids: &[&str], active: impl Fn(i64, &str) -> bool) -> Vec<Msg> {
    let start = (now_ms() - days * DAY_MS).div_euclid(DAY_MS) * DAY_MS;
    let mut out = Vec::new();
    for d in 0..days {
        for h in [9, 13, 18] {
            for id in ids {
                if active(d, id) {
                    out.push(visit(id, start + d * DAY_MS + h * HOUR_MS));
                }
            }
        }
    }
    out
}

/// Steady, declining (stays low), silent from day 40, and returning after a 10-day gap.
fn four_customers() -> Vec<Msg> {
    scenario(
        90,
        &["steady", "declining", "silent", "returning"],
        |d, id| match id {
            "steady" => true,
            "declining" => d < 40 || d % 5 == 0,
            "silent" => d < 40,
            "returning" => !(40..50).contains(&d),
            _ => unreachable!(),
        },
    )
}

/// A pipeline running in this process, with its own metrics.
struct Running {
    metrics: Arc<Metrics>,
    token: CancellationToken,
    handle: tokio::task::JoinHandle<Result<RunSummary, PipelineError>>,
    started: Instant,
}

fn start(cfg: Config) -> Running {
    let metrics = Arc::new(Metrics::new());
    let token = CancellationToken::new();
    let handle = tokio::spawn(pipeline::run(
        Arc::new(cfg),
        metrics.clone(),
        Arc::new(Health::default()),
        token.clone(),
    ));
    Running {
        metrics,
        token,
        handle,
        started: Instant::now(),
    }
}

impl Running {
    /// Wait until `done` holds (or the pipeline stops by itself), failing after `limit`.
    async fn wait_for(&self, limit: Duration, what: &str, done: impl Fn(&Metrics) -> bool) {
        while !done(&self.metrics) && !self.handle.is_finished() {
            assert!(
                self.started.elapsed() < limit,
                "{what}: not within {limit:?} ({} messages processed)",
                self.metrics.messages_processed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stop gracefully and return the outcome.
    async fn stop(self) -> (Result<RunSummary, PipelineError>, Arc<Metrics>) {
        self.token.cancel();
        let result = self.handle.await.expect("pipeline task");
        (result, self.metrics)
    }
}

/// Run the pipeline until it has processed `expected` messages (then stop it gracefully), or
/// until it stops by itself.
async fn run_until(
    cfg: Config,
    expected: u64,
    limit: Duration,
) -> (Result<RunSummary, PipelineError>, Arc<Metrics>) {
    let p = start(cfg);
    p.wait_for(limit, "consuming", |m| m.messages_processed() >= expected)
        .await;
    p.stop().await
}

fn alerts(bootstrap: &str) -> Vec<Value> {
    read_topic(bootstrap, ALERTS, 0)
        .into_iter()
        .map(|r| {
            let v: Value = parse_valid_alert(std::str::from_utf8(&r.payload).expect("UTF-8"));
            assert_eq!(
                r.key.as_deref(),
                v["customer_id"].as_str(),
                "alerts are keyed by customer id"
            );
            v
        })
        .collect()
}

fn kinds_of(alerts: &[Value], customer: &str) -> Vec<String> {
    alerts
        .iter()
        .filter(|a| a["customer_id"] == customer)
        .map(|a| a["kind"].as_str().unwrap().to_string())
        .collect()
}

/// The alert ids that the same events yield when fed straight into the scoring code.
fn reference_alert_ids(cfg: &Config, msgs: &[Msg]) -> BTreeSet<String> {
    let metrics = Metrics::new();
    let mut p = PartitionState::new(Arc::new(cfg.clone()), &metrics);
    let limits = DecodeLimits::from_config(&cfg.input, now_ms());
    let mut out = Vec::new();
    for (_, payload) in msgs {
        if let Ok(ev) = decode(payload, &limits) {
            p.on_event(&ev, None, &mut out);
        }
    }
    out.into_iter().map(|a| a.alert_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_follow_each_customers_story() {
    let cluster = broker();
    let bs = cluster.bootstrap_servers();
    let msgs = four_customers();
    produce(&bs, &msgs);
    let (result, metrics) = run_until(
        config(&bs, "stories"),
        msgs.len() as u64,
        Duration::from_secs(60),
    )
    .await;
    let summary = result.expect("pipeline ran cleanly");
    assert_eq!(summary.events, msgs.len() as u64);

    let all = alerts(&bs);
    assert_eq!(
        summary.alerts as usize,
        all.len(),
        "every alert reached the topic"
    );
    // A steady customer yields none.
    assert_eq!(kinds_of(&all, "steady"), Vec::<String>::new());
    // A declining one yields exactly one at_risk (and does not "recover" at its new low level).
    let declining = kinds_of(&all, "declining");
    assert_eq!(
        declining.iter().filter(|k| *k == "at_risk").count(),
        1,
        "{declining:?}"
    );
    assert!(
        !declining.contains(&"recovered".to_string()),
        "{declining:?}"
    );
    // One that goes silent is flagged with no further events of its own, by a timer.
    let silent: Vec<&Value> = all
        .iter()
        .filter(|a| a["customer_id"] == "silent")
        .collect();
    assert_eq!(silent[0]["kind"], "at_risk");
    assert_eq!(silent[0]["trigger"], "timer");
    assert!(!silent[0]["reasons"].as_array().unwrap().is_empty());
    assert_eq!(silent.last().unwrap()["kind"], "lapsed");
    // One that returns yields recovered.
    let returning = kinds_of(&all, "returning");
    assert_eq!(returning.first().map(String::as_str), Some("at_risk"));
    assert_eq!(returning.last().map(String::as_str), Some("recovered"));
    // The alerts carry the config version and are the same as the scoring code's own.
    let cfg = config(&bs, "stories");
    assert!(all
        .iter()
        .all(|a| a["config_version"] == cfg.version.as_str()));
    let ids: BTreeSet<String> = all
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, reference_alert_ids(&cfg, &msgs));
    // Metrics saw it all.
    let text = metrics.render();
    assert!(text.contains("churnwatch_events_total{type=\"visit\"}"));
    assert_eq!(
        metrics.alerts_total.with_label_values(&["at_risk"]).get(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_go_to_the_dead_letter_topic_and_the_pipeline_goes_on() {
    let cluster = broker();
    let bs = cluster.bootstrap_servers();
    let ts = format_rfc3339_ms(now_ms() - DAY_MS);
    let bad: Vec<(&str, String)> = vec![
        ("not_json", "this is not json".to_string()),
        (
            "missing_field",
            r#"{"type":"visit","ts":"TS"}"#.replace("TS", &ts),
        ),
        (
            "unknown_type",
            r#"{"type":"refund","customer_id":"c1","ts":"TS"}"#.replace("TS", &ts),
        ),
        (
            "bad_timestamp",
            r#"{"type":"visit","customer_id":"c1","ts":"yesterday"}"#.to_string(),
        ),
        (
            "invalid_value",
            r#"{"type":"purchase","customer_id":"c1","ts":"TS","amount":-3}"#.replace("TS", &ts),
        ),
        (
            "wrong_type",
            r#"{"type":"visit","customer_id":7,"ts":"TS"}"#.replace("TS", &ts),
        ),
        (
            "timestamp_out_of_range",
            r#"{"type":"visit","customer_id":"c1","ts":"2999-01-01T00:00:00Z"}"#.to_string(),
        ),
        (
            "oversized",
            format!(
                r#"{{"type":"visit","customer_id":"c1","ts":"{ts}","page":"{}"}}"#,
                "x".repeat(20_000)
            ),
        ),
    ];
    let mut msgs: Vec<Msg> = vec![visit("c1", now_ms() - 2 * DAY_MS)];
    for (i, (_, payload)) in bad.iter().enumerate() {
        msgs.push((format!("bad{i}"), payload.clone().into_bytes()));
    }
    msgs.push(visit("c1", now_ms() - DAY_MS));
    msgs.push(visit("c2", now_ms() - DAY_MS));
    produce(&bs, &msgs);

    let (result, metrics) = run_until(
        config(&bs, "dlq"),
        msgs.len() as u64,
        Duration::from_secs(60),
    )
    .await;
    let summary = result.expect("pipeline ran cleanly");
    assert_eq!(summary.invalid, bad.len() as u64);
    assert_eq!(
        summary.events, 3,
        "valid events after the bad ones were processed"
    );

    let dead = read_topic(&bs, DLQ, 0);
    assert_eq!(dead.len(), bad.len());
    for (i, (reason, payload)) in bad.iter().enumerate() {
        let r = dead
            .iter()
            .find(|r| r.key.as_deref() == Some(format!("bad{i}").as_str()))
            .unwrap_or_else(|| panic!("bad{i} ({reason}) not on the dead-letter topic"));
        assert_eq!(r.payload, payload.as_bytes(), "original bytes are kept");
        assert_eq!(r.headers["churnwatch.reason"], *reason);
        assert!(!r.headers["churnwatch.error"].is_empty());
        assert_eq!(r.headers["churnwatch.source.topic"], EVENTS);
        assert_eq!(
            metrics
                .events_invalid_total
                .with_label_values(&[reason])
                .get(),
            1,
            "{reason} counted"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_is_recovered_in_place_and_loses_no_alert() {
    let cluster = broker();
    let bs = cluster.bootstrap_servers();
    let msgs = four_customers();
    produce(&bs, &msgs);
    let cfg = config(&bs, "restart");

    // The broker rejects every produce request: the first alert cannot be delivered within
    // the delivery timeout, so the pipeline rewinds to its last checkpoint, in place.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 500],
    );
    let p = start(cfg.clone());
    p.wait_for(Duration::from_secs(60), "a recovery", |m| {
        m.recoveries_total.get() >= 1
    })
    .await;
    assert!(p.metrics.recoveries_total.get() >= 1, "no recovery");
    assert!(
        !p.handle.is_finished(),
        "the pipeline stopped instead of recovering"
    );
    cluster.clear_request_errors(RDKafkaApiKey::Produce);

    // The broker takes records again: the same pipeline re-reads the uncommitted events and
    // every alert appears.
    let expected = reference_alert_ids(&cfg, &msgs);
    assert!(!expected.is_empty());
    let start_wait = Instant::now();
    let ids = loop {
        let ids: BTreeSet<String> = alerts(&bs)
            .iter()
            .map(|a| a["alert_id"].as_str().unwrap().to_string())
            .collect();
        if ids == expected || start_wait.elapsed() > Duration::from_secs(60) {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        ids, expected,
        "the alerts of an uninterrupted run, none lost"
    );
    let (result, _) = p.stop().await;
    result.expect("the pipeline runs on after recovering");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_broker_pauses_consumption_instead_of_queueing_without_bound() {
    let cluster = broker();
    let bs = cluster.bootstrap_servers();
    // Every message is invalid, so each one becomes a dead-letter record to produce.
    let msgs: Vec<Msg> = (0..3000)
        .map(|i| (format!("k{i}"), format!("not json {i}").into_bytes()))
        .collect();
    produce(&bs, &msgs);
    // Acknowledgements now take 300 ms; rare checkpoints, so that records pile up between them.
    cluster
        .broker_round_trip_time(1, Duration::from_millis(300))
        .unwrap();
    let mut cfg = config(&bs, "backpressure");
    cfg.kafka.max_pending_records = 100;
    cfg.kafka.commit_interval_ms = 10_000;
    let (result, metrics) = run_until(cfg, msgs.len() as u64, Duration::from_secs(120)).await;
    let summary = result.expect("pipeline ran cleanly");
    assert_eq!(summary.invalid, msgs.len() as u64);
    assert!(
        metrics.backpressure_pauses_total.get() >= 1,
        "the partitions were never paused"
    );
    assert_eq!(metrics.partitions_paused.get(), 0, "resumed");
    cluster.broker_round_trip_time(1, Duration::ZERO).unwrap();
    let dead = read_topic(&bs, DLQ, 0);
    let keys: BTreeSet<&str> = dead.iter().filter_map(|r| r.key.as_deref()).collect();
    assert_eq!(
        keys.len(),
        msgs.len(),
        "every message, none skipped by the pauses"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbounded_stream_of_new_customers_stays_within_the_cap() {
    let cluster = broker();
    let bs = cluster.bootstrap_servers();
    let t = now_ms() - DAY_MS;
    let msgs: Vec<Msg> = (0..2500)
        .map(|i| visit(&format!("new-{i}"), t + i))
        .collect();
    produce(&bs, &msgs);
    let mut cfg = config(&bs, "capped");
    cfg.state.max_customers = 1000;
    let p = start(cfg);
    p.wait_for(Duration::from_secs(60), "consuming", |m| {
        m.messages_processed() >= msgs.len() as u64
    })
    .await;
    assert!(!p.handle.is_finished(), "{:?}", p.stop().await.0);
    let m = &p.metrics;
    let tracked: i64 = Lifecycle::ALL
        .iter()
        .map(|l| m.customers.with_label_values(&[l.as_str()]).get())
        .sum();
    let evicted = m
        .customers_evicted_total
        .with_label_values(&["capacity"])
        .get();
    assert!(tracked <= 1000, "{tracked} customers tracked");
    assert_eq!(tracked as u64 + evicted, msgs.len() as u64);
    let (result, _) = p.stop().await;
    result.expect("pipeline ran cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_restart_resumes_from_the_committed_offsets() {
    let cluster = broker();
    let bs = cluster.bootstrap_servers();
    let cfg = config(&bs, "resume");
    let first = scenario(3, &["a", "b"], |_, _| true);
    produce(&bs, &first);
    let (result, _) = run_until(cfg.clone(), first.len() as u64, Duration::from_secs(60)).await;
    assert_eq!(result.unwrap().events, first.len() as u64);

    let second = vec![
        visit("a", now_ms() - HOUR_MS),
        visit("c", now_ms() - HOUR_MS),
    ];
    produce(&bs, &second);
    let (result, _) = run_until(cfg, second.len() as u64, Duration::from_secs(60)).await;
    let summary = result.unwrap();
    // Only the new events: the first run's offsets were committed on shutdown.
    assert_eq!(summary.events, second.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_partition_advances_with_the_wall_clock_and_fires_timers() {
    let cluster = broker();
    let bs = cluster.bootstrap_servers();
    // The last events are two seconds before a midnight, where every customer's daily
    // re-score timer is due; nothing comes after them.
    let midnight = now_ms().div_euclid(DAY_MS) * DAY_MS;
    let msgs: Vec<Msg> = (0..3)
        .flat_map(|d| {
            let t = midnight - (3 - d) * DAY_MS + 12 * HOUR_MS;
            [visit("a", t), visit("b", t)]
        })
        .chain([visit("a", midnight - 2_000), visit("b", midnight - 2_000)])
        .collect();
    produce(&bs, &msgs);
    let mut raw = RawConfig::default();
    raw.kafka.brokers = bs.clone();
    raw.kafka.group_id = "idle".into();
    raw.http.enabled = false;
    raw.input.allowed_lateness_secs = 0;
    raw.input.idle_partition_timeout_secs = 1;
    let cfg = raw.validate().unwrap();

    let p = start(cfg);
    let all = msgs.len() as u64;
    p.wait_for(Duration::from_secs(30), "consuming", |m| {
        m.messages_processed() >= all
    })
    .await;
    let fired_with_events = p.metrics.timers_fired_total.get();
    // No more events: within a few seconds of wall-clock idleness, stream time passes midnight
    // and both customers' timers fire.
    p.wait_for(Duration::from_secs(30), "idle timers", |m| {
        m.timers_fired_total.get() >= fired_with_events + 2
    })
    .await;
    assert!(p.metrics.timers_fired_total.get() >= fired_with_events + 2);
    assert!(p.metrics.watermark_timestamp_seconds.get() * 1000.0 >= midnight as f64);
    let (result, _) = p.stop().await;
    result.unwrap();
}
