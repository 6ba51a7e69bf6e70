//! Fault tests of `churnwatch run` as a real process against a real Kafka-protocol broker
//! (librdkafka's mock cluster, in this test process, so it outlives the processes it serves).
//!
//! A simulated stream is produced gradually while an uninterrupted reference run (its own
//! consumer group, alerts topic and changelog) consumes it next to the run under test. At the
//! end, the run under test must have produced the same set of alerts (by `alert_id`) and hold
//! the same per-customer state (read back from its changelog) as the reference:
//! - killed with SIGKILL at random points, many times, and restarted;
//! - two instances in one group, one of them killed mid-stream;
//! - the broker taken down and brought back mid-stream, with injected request errors.
//!
//! The longer soak run is `scripts/soak.sh`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use churnwatch::config::Config;
use churnwatch::customer::CustomerState;
use churnwatch::simulate::{write_dataset, SimulateOptions};
use churnwatch::state::changelog_topic;
use churnwatch::state::record::{decode, Record as StateRecord};
use churnwatch::timers::rearmed;
use common::process::{churnwatch, free_port, http_get, metric_sum, Running};
use common::topic::read_topic;

const EVENTS: &str = "events";
const PARTITIONS: i32 = 3;
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);

/// The simulated input: (key, payload) in production order.
fn dataset(customers: usize, days: f64, seed: u64) -> Vec<(String, Vec<u8>)> {
    let dir = tempfile::tempdir().unwrap();
    let opts = SimulateOptions {
        customers,
        days,
        seed,
        // Start far enough back that no event is in the future.
        start_ms: churnwatch::time::parse_rfc3339_ms("2025-01-01T00:00:00Z").unwrap(),
        malformed_share: 0.002,
    };
    write_dataset(&opts, dir.path()).unwrap();
    // Malformed messages may not even be UTF-8.
    let bytes = std::fs::read(dir.path().join("events.jsonl")).unwrap();
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let key = serde_json::from_slice::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["customer_id"].as_str().map(str::to_string))
                .unwrap_or_else(|| "malformed".into());
            (key, l.to_vec())
        })
        .collect()
}

/// Produce `msgs` to the events topic in `slices` slices, `pause` apart, on a thread.
fn produce_gradually(
    bootstrap: String,
    msgs: Vec<(String, Vec<u8>)>,
    slices: usize,
    pause: Duration,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("linger.ms", "5")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "120000")
            .create()
            .unwrap();
        let per = msgs.len().div_ceil(slices);
        for chunk in msgs.chunks(per) {
            for (k, v) in chunk {
                let mut rec = BaseRecord::to(EVENTS).key(k.as_bytes()).payload(v);
                loop {
                    match p.send(rec) {
                        Ok(()) => break,
                        Err((_, r)) => {
                            rec = r;
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                }
            }
            std::thread::sleep(pause);
        }
        p.flush(Duration::from_secs(120)).unwrap();
    })
}

/// One consumer group under test: its config file, topics and HTTP port.
struct Group {
    name: String,
    config: PathBuf,
    alerts: String,
    changelog: String,
    bootstrap: String,
}

fn alerts_topic(group: &str) -> String {
    format!("alerts-{group}")
}

/// Create a group's topics on the mock cluster (which has no CreateTopics API) and write its
/// config file. `extra` is appended to the config.
fn group(
    cluster: &MockCluster<'static, DefaultProducerContext>,
    dir: &Path,
    name: &str,
    extra: &str,
) -> Group {
    let bootstrap = cluster.bootstrap_servers();
    let alerts = alerts_topic(name);
    let changelog = changelog_topic(name, EVENTS);
    cluster.create_topic(&alerts, PARTITIONS, 1).unwrap();
    cluster.create_topic(&changelog, PARTITIONS, 1).unwrap();
    cluster.create_topic(&format!("dlq-{name}"), 1, 1).unwrap();
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{bootstrap}\"\ngroup_id = \"{name}\"\n\
             events_topics = [\"{EVENTS}\"]\nalerts_topic = \"{alerts}\"\n\
             dead_letter_topic = \"dlq-{name}\"\ncommit_interval_ms = 200\n\
             delivery_timeout_ms = 15000\n\n\
             [kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\
             \"heartbeat.interval.ms\" = \"500\"\n\n\
             [http]\nenabled = false\n\n\
             [input]\nmax_future_skew_secs = 0\nidle_partition_timeout_secs = 86400\n\n\
             {extra}"
        ),
    )
    .unwrap();
    Group {
        name: name.to_string(),
        config,
        alerts,
        changelog,
        bootstrap,
    }
}

impl Group {
    /// Start one `churnwatch run` of this group, serving HTTP on a free port.
    fn spawn(&self, instance: &str) -> (Running, SocketAddr) {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut cmd = churnwatch();
        cmd.args(["run", "--config"])
            .arg(&self.config)
            .env("CHURNWATCH_HTTP__ENABLED", "true")
            .env("CHURNWATCH_HTTP__LISTEN", addr.to_string())
            .env(
                "CHURNWATCH_KAFKA__CLIENT_ID",
                format!("{}-{instance}", self.name),
            )
            .env(
                "CHURNWATCH_PROCESSING__TRANSACTIONAL_ID",
                format!("{}-{instance}", self.name),
            );
        (Running::spawn(cmd), addr)
    }

    /// Whether the group has committed every offset of the events topic, whose message
    /// count is `total`.
    fn caught_up(&self, total: i64) -> bool {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", &self.name)
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition(EVENTS, p);
        }
        let Ok(committed) = c.committed_offsets(tpl, Duration::from_secs(5)) else {
            return false;
        };
        let mut sum = 0;
        for p in 0..PARTITIONS {
            let Some(e) = committed.find_partition(EVENTS, p) else {
                return false;
            };
            let Offset::Offset(o) = e.offset() else {
                return false;
            };
            let Ok((_, hi)) = c.fetch_watermarks(EVENTS, p, Duration::from_secs(5)) else {
                return false;
            };
            if o < hi {
                return false;
            }
            sum += hi;
        }
        sum == total
    }

    /// The set of alert ids produced, and how many alert records there were.
    fn alert_ids(&self) -> (BTreeSet<String>, usize) {
        let recs = read_topic(&self.bootstrap, &self.alerts, 0);
        let ids = recs
            .iter()
            .map(|r| {
                let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
                v["alert_id"].as_str().unwrap().to_string()
            })
            .collect();
        (ids, recs.len())
    }

    /// The final state of every customer, from the changelog, with each re-score timer moved
    /// past its partition's final watermark (what a restore does), so that states written at
    /// different checkpoints compare equal when they describe the same customer.
    fn final_state(&self) -> BTreeMap<String, CustomerState> {
        let cfg = Config::default();
        let mut customers: BTreeMap<String, (i32, CustomerState)> = BTreeMap::new();
        let mut stream_time: BTreeMap<i32, i64> = BTreeMap::new();
        for r in read_topic(&self.bootstrap, &self.changelog, 0) {
            let value = (!r.tombstone).then_some(r.payload.as_slice());
            match decode(r.raw_key.as_deref(), value).expect("changelog records decode") {
                StateRecord::Customer(id, c) => {
                    customers.insert(id, (r.partition, c.state));
                }
                StateRecord::Removed(id) => {
                    customers.remove(&id);
                }
                StateRecord::Partition(p) => {
                    if let Some(t) = p.stream_time_ms {
                        stream_time.insert(r.partition, t);
                    }
                }
            }
        }
        customers
            .into_iter()
            .map(|(id, (partition, mut c))| {
                let wm = stream_time[&partition] - cfg.input.allowed_lateness_ms;
                c.next_check_ms = c
                    .next_check_ms
                    .map(|due| rearmed(due, wm, cfg.windows.check_interval_ms));
                (id, c)
            })
            .collect()
    }
}

fn wait_ready(run: &mut Running, addr: SocketAddr, limit: Duration) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if http_get(addr, "/readyz", HTTP_TIMEOUT).is_ok_and(|r| r.status == 200) {
            return;
        }
        assert!(
            run.try_status().is_none(),
            "churnwatch exited before it was ready: {}",
            run.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("not ready within {limit:?}: {}", run.stderr());
}

fn wait_caught_up(g: &Group, total: i64, runs: &mut [&mut Running], limit: Duration) {
    let start = Instant::now();
    while !g.caught_up(total) {
        for r in runs.iter_mut() {
            assert!(
                r.try_status().is_none(),
                "group {}: churnwatch exited: {}",
                g.name,
                r.stderr()
            );
        }
        assert!(
            start.elapsed() < limit,
            "group {} did not catch up within {limit:?}: {}",
            g.name,
            runs.iter()
                .map(|r| common::process::tail(&r.stderr(), 3000).to_string())
                .collect::<Vec<_>>()
                .join("\n---\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn stop(mut run: Running) -> String {
    run.signal("TERM");
    let out = run.finish(Duration::from_secs(30));
    assert!(out.status.success(), "{}", out.describe());
    out.stderr
}

/// Print what a run's log says about failures and recoveries.
fn show_recovery(log: &str) {
    let words = [
        "rewinding",
        "recovered",
        "assignment lost",
        "retrying",
        "assigned",
        "revoked",
        "commit failed",
        "pipeline stopped",
    ];
    for l in log.lines().filter(|l| words.iter().any(|w| l.contains(w))) {
        eprintln!("{}", common::process::tail(l, 300));
    }
}

/// Compare a group's outcome with the reference's.
fn assert_same_outcome(reference: &Group, g: &Group) {
    let (want, _) = reference.alert_ids();
    let (got, records) = g.alert_ids();
    assert!(
        want.len() >= 20,
        "the reference raised only {} alerts",
        want.len()
    );
    let missing: Vec<_> = want.difference(&got).take(5).collect();
    let extra: Vec<_> = got.difference(&want).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "group {}: {} alerts missing (e.g. {missing:?}), {} unexpected (e.g. {extra:?})",
        g.name,
        want.difference(&got).count(),
        got.difference(&want).count()
    );
    eprintln!(
        "group {}: {} distinct alerts as the reference, in {records} records",
        g.name,
        got.len()
    );
    let want = reference.final_state();
    let got = g.final_state();
    assert_eq!(want.len(), got.len(), "group {}: customers", g.name);
    for (id, w) in &want {
        assert_eq!(Some(w), got.get(id), "group {}: customer {id}", g.name);
    }
}

/// A scenario: the cluster, the reference group, and the stream being produced.
struct Scenario {
    cluster: MockCluster<'static, DefaultProducerContext>,
    dir: tempfile::TempDir,
    total: i64,
    producer: Option<JoinHandle<()>>,
    reference: Group,
    reference_run: Option<Running>,
}

fn scenario(seed: u64, slices: usize, pause: Duration) -> Scenario {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(EVENTS, PARTITIONS, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let reference = group(&cluster, dir.path(), "reference", "");
    let msgs = dataset(250, 150.0, seed);
    let total = msgs.len() as i64;
    let (mut run, addr) = reference.spawn("a");
    wait_ready(&mut run, addr, Duration::from_secs(30));
    let producer = produce_gradually(cluster.bootstrap_servers(), msgs, slices, pause);
    Scenario {
        cluster,
        dir,
        total,
        producer: Some(producer),
        reference,
        reference_run: Some(run),
    }
}

impl Scenario {
    /// Wait for the producer and the reference run to finish; stop the reference.
    fn finish_reference(&mut self) {
        let t = Instant::now();
        self.producer.take().unwrap().join().unwrap();
        eprintln!("input produced after {:?} more", t.elapsed());
        let mut run = self.reference_run.take().unwrap();
        wait_caught_up(
            &self.reference,
            self.total,
            &mut [&mut run],
            Duration::from_secs(120),
        );
        eprintln!("reference caught up after {:?} more", t.elapsed());
        show_recovery(&stop(run));
    }
}

/// Random but reproducible pauses.
struct Lcg(u64);

impl Lcg {
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        Duration::from_millis(lo + (self.0 >> 33) % (hi - lo))
    }
}

/// Kill -9 at random points, restart each time; the final alerts and state equal the
/// uninterrupted run's, and a restart restores every customer instead of starting over.
fn kill_and_restart(kills: usize, seed: u64) {
    let mut s = scenario(seed, 60, Duration::from_millis(600));
    let g = group(&s.cluster, s.dir.path(), "killed", "");
    let mut rng = Lcg(seed);
    let mut restored_any = false;
    for i in 0..kills {
        let (mut run, addr) = g.spawn("a");
        wait_ready(&mut run, addr, Duration::from_secs(60));
        // Commits fail for a while, so the changelog runs ahead of the committed offsets
        // when the kill comes: the restart re-reads events its restored customers hold.
        s.cluster.request_errors(
            RDKafkaApiKey::OffsetCommit,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE; 12],
        );
        std::thread::sleep(rng.millis(200, 1500));
        if let Ok(r) = http_get(addr, "/metrics", HTTP_TIMEOUT) {
            restored_any |=
                metric_sum(&r.body, "churnwatch_restored_customers_total").unwrap_or(0.0) > 0.0;
        }
        run.signal("KILL");
        let out = run.finish(Duration::from_secs(10));
        assert!(!out.status.success(), "kill {i}: {}", out.describe());
    }
    s.finish_reference();
    let (mut run, addr) = g.spawn("a");
    wait_ready(&mut run, addr, Duration::from_secs(60));
    wait_caught_up(&g, s.total, &mut [&mut run], Duration::from_secs(120));
    let body = http_get(addr, "/metrics", HTTP_TIMEOUT).unwrap().body;
    let restored = metric_sum(&body, "churnwatch_restored_customers_total").unwrap_or(0.0);
    assert!(restored > 0.0, "the last restart restored no customer");
    let log = stop(run);
    assert!(log.contains("partition state restored"), "{log}");
    assert!(
        restored_any,
        "no restart before the last one restored a customer"
    );
    assert_same_outcome(&s.reference, &g);
}

#[test]
fn kill_9_at_random_points_then_restart_loses_and_double_counts_nothing() {
    kill_and_restart(4, 17);
}

#[test]
fn the_survivor_of_two_instances_takes_over_and_completes_the_alerts() {
    let mut s = scenario(23, 60, Duration::from_millis(250));
    let g = group(&s.cluster, s.dir.path(), "pair", "");
    let (mut a, addr_a) = g.spawn("a");
    let (mut b, addr_b) = g.spawn("b");
    wait_ready(&mut a, addr_a, Duration::from_secs(60));
    wait_ready(&mut b, addr_b, Duration::from_secs(60));
    // Both hold partitions and are processing.
    let assigned = |addr| {
        http_get(addr, "/metrics", HTTP_TIMEOUT)
            .ok()
            .and_then(|r| metric_sum(&r.body, "churnwatch_partitions_assigned"))
            .unwrap_or(0.0)
    };
    let start = Instant::now();
    while assigned(addr_a) == 0.0 || assigned(addr_b) == 0.0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the two instances never shared"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    b.signal("KILL");
    b.finish(Duration::from_secs(10));
    s.finish_reference();
    wait_caught_up(&g, s.total, &mut [&mut a], Duration::from_secs(120));
    assert_eq!(
        assigned(addr_a),
        PARTITIONS as f64,
        "the survivor holds every partition"
    );
    stop(a);
    assert_same_outcome(&s.reference, &g);
}

#[test]
fn a_broker_outage_and_request_errors_are_survived_without_restart_or_loss() {
    let mut s = scenario(29, 60, Duration::from_millis(250));
    let g = group(&s.cluster, s.dir.path(), "outage", "");
    let (mut run, addr) = g.spawn("a");
    wait_ready(&mut run, addr, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(3));
    // Transient errors on produce, fetch and commit, then the broker is gone for 5 s.
    s.cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 3],
    );
    s.cluster.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT; 2],
    );
    std::thread::sleep(Duration::from_secs(1));
    s.cluster.broker_down(1).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    s.cluster.broker_up(1).unwrap();
    s.finish_reference();
    wait_caught_up(&g, s.total, &mut [&mut run], Duration::from_secs(120));
    show_recovery(&stop(run));
    assert_same_outcome(&s.reference, &g);
}
