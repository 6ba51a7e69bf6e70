//! A simulated stream produced gradually into a broker, consumer groups of `churnwatch run`
//! processes over it, and the comparison of their outcomes (alerts by id, final per-customer
//! state from the changelog): shared by the fault tests on the mock cluster and on tansu.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use churnwatch::config::Config;
use churnwatch::customer::CustomerState;
use churnwatch::simulate::{write_dataset, SimulateOptions};
use churnwatch::state::changelog_topic;
use churnwatch::state::record::{decode, Record as StateRecord};
use churnwatch::timers::rearmed;

use super::process::{churnwatch, free_port, http_get, tail, Running};
use super::topic::read_topic;

pub const EVENTS: &str = "events";
pub const PARTITIONS: i32 = 3;
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(2);

/// The simulated input: (key, payload) in production order.
pub fn dataset(customers: usize, days: f64, seed: u64) -> Vec<(String, Vec<u8>)> {
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
pub fn produce_gradually(
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
pub struct Group {
    pub name: String,
    config: PathBuf,
    alerts: String,
    changelog: String,
    bootstrap: String,
}

pub fn alerts_topic(group: &str) -> String {
    format!("alerts-{group}")
}

/// How a test makes topics on its broker: `(name, partitions)`.
pub type CreateTopic<'a> = &'a dyn Fn(&str, i32);

/// Create a group's alerts and dead-letter topics (and its changelog when
/// `create_changelog`; else churnwatch creates it) and write its config file.
pub fn group(
    bootstrap: &str,
    create: CreateTopic<'_>,
    create_changelog: bool,
    dir: &Path,
    name: &str,
) -> Group {
    let bootstrap = bootstrap.to_string();
    let alerts = alerts_topic(name);
    let changelog = changelog_topic(name, EVENTS);
    create(&alerts, PARTITIONS);
    if create_changelog {
        create(&changelog, PARTITIONS);
    }
    create(&format!("dlq-{name}"), 1);
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
             [state]\nevict_lapsed_after_days = 20\nwrite_changed_after = 8\n"
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
    pub fn spawn(&self, instance: &str) -> (Running, SocketAddr) {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut cmd = churnwatch();
        cmd.args(["run", "--config"])
            .arg(&self.config)
            .env("CHURNWATCH_HTTP__ENABLED", "true")
            .env("CHURNWATCH_HTTP__LISTEN", addr.to_string())
            .env(
                "CHURNWATCH_KAFKA__CLIENT_ID",
                format!("{}-{instance}", self.name),
            );
        (Running::spawn(cmd), addr)
    }

    /// Whether the group has committed every offset of the events topic, whose message
    /// count is `total`.
    pub fn caught_up(&self, total: i64) -> bool {
        // Offsets are dense from 0 (the test producer is not transactional), so the committed
        // offsets add up to the messages consumed. (tansu 0.6 reports the high watermark as
        // the last batch's base offset: it may be below the end, hence `>=`.)
        self.progress().is_some_and(|parts| {
            parts.iter().all(|(c, hi)| c >= hi)
                && parts.iter().map(|(c, _)| c).sum::<i64>() == total
        })
    }

    /// Per partition of the events topic: (committed offset, high watermark).
    pub fn progress(&self) -> Option<Vec<(i64, i64)>> {
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
        let committed = c.committed_offsets(tpl, Duration::from_secs(5)).ok()?;
        let mut out = Vec::new();
        for p in 0..PARTITIONS {
            let o = match committed.find_partition(EVENTS, p)?.offset() {
                Offset::Offset(o) => o,
                _ => -1,
            };
            let (_, hi) = c.fetch_watermarks(EVENTS, p, Duration::from_secs(5)).ok()?;
            out.push((o, hi));
        }
        Some(out)
    }

    /// The set of alert ids produced, and how many alert records there were.
    pub fn alert_ids(&self) -> (BTreeSet<String>, usize) {
        let alerts = self.alerts();
        let n = alerts.len();
        let ids = alerts
            .into_iter()
            .map(|v| v["alert_id"].as_str().unwrap().to_string())
            .collect();
        (ids, n)
    }

    /// Every alert record (each validated against the schema).
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        read_topic(&self.bootstrap, &self.alerts, 0)
            .iter()
            .map(|r| {
                let text = std::str::from_utf8(&r.payload).expect("alerts are UTF-8");
                super::schema::parse_valid_alert(text)
            })
            .collect()
    }

    /// The final state of every customer, from the changelog, with each re-score timer moved
    /// past its partition's final watermark (what a restore does), so that states written at
    /// different checkpoints compare equal when they describe the same customer. Also: how
    /// many customers the state no longer holds (evicted: their last record is a tombstone).
    pub fn final_state(&self) -> (BTreeMap<String, CustomerState>, usize) {
        let cfg = Config::default();
        let mut customers: BTreeMap<String, (i32, CustomerState)> = BTreeMap::new();
        let mut evicted = BTreeSet::new();
        let mut stream_time: BTreeMap<i32, i64> = BTreeMap::new();
        for r in read_topic(&self.bootstrap, &self.changelog, 0) {
            let value = (!r.tombstone).then_some(r.payload.as_slice());
            match decode(r.raw_key.as_deref(), value).expect("changelog records decode") {
                StateRecord::Customer(id, c) => {
                    evicted.remove(&id);
                    customers.insert(id, (r.partition, c.state));
                }
                StateRecord::Removed(id) => {
                    customers.remove(&id);
                    evicted.insert(id);
                }
                StateRecord::Partition(p) => {
                    if let Some(t) = p.stream_time_ms {
                        stream_time.insert(r.partition, t);
                    }
                }
            }
        }
        let state = customers
            .into_iter()
            .map(|(id, (partition, mut c))| {
                let wm = stream_time[&partition] - cfg.input.allowed_lateness_ms;
                c.next_check = c
                    .next_check
                    .get()
                    .map(|due| rearmed(due, wm, cfg.windows.check_interval_ms))
                    .into();
                (id, c)
            })
            .collect();
        (state, evicted.len())
    }
}

pub fn wait_ready(run: &mut Running, addr: SocketAddr, limit: Duration) {
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

pub fn wait_caught_up(g: &Group, total: i64, runs: &mut [&mut Running], limit: Duration) {
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
            "group {} did not catch up within {limit:?} ({:?} of {total}): {}",
            g.name,
            g.progress(),
            runs.iter()
                .map(|r| tail(&r.stderr(), 3000).to_string())
                .collect::<Vec<_>>()
                .join("\n---\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn stop(mut run: Running) -> String {
    run.signal("TERM");
    let out = run.finish(Duration::from_secs(30));
    assert!(out.status.success(), "{}", out.describe());
    out.stderr
}

/// Print what a run's log says about failures and recoveries.
pub fn show_recovery(log: &str) {
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
        eprintln!("{}", tail(l, 300));
    }
}

/// Compare a group's outcome with the reference's.
pub fn assert_same_outcome(reference: &Group, g: &Group) {
    let (want, _) = reference.alert_ids();
    let (got, records) = g.alert_ids();
    assert!(
        want.len() >= 20,
        "the reference raised only {} alerts",
        want.len()
    );
    let missing: Vec<_> = want.difference(&got).take(5).collect();
    let extra: Vec<_> = got.difference(&want).take(5).collect();
    if !(missing.is_empty() && extra.is_empty()) {
        // The customers concerned, as each run alerted them.
        let all_got = g.alerts();
        let all_want = reference.alerts();
        let id_of = |a: &serde_json::Value| a["alert_id"].as_str().unwrap().to_string();
        let customers: BTreeSet<String> = all_got
            .iter()
            .chain(&all_want)
            .filter(|a| {
                let id = id_of(a);
                missing.contains(&&id) || extra.contains(&&id)
            })
            .map(|a| a["customer_id"].as_str().unwrap().to_string())
            .collect();
        let show = |alerts: &[serde_json::Value]| -> String {
            alerts
                .iter()
                .filter(|a| customers.contains(a["customer_id"].as_str().unwrap()))
                .map(|a| {
                    format!(
                        "  {} {} {} at {} trigger {}\n",
                        a["customer_id"], a["kind"], a["alert_id"], a["event_time"], a["trigger"]
                    )
                })
                .collect()
        };
        panic!(
            "group {}: {} alerts missing (e.g. {missing:?}), {} unexpected (e.g. {extra:?})\n\
             reference:\n{}run under test:\n{}",
            g.name,
            want.difference(&got).count(),
            got.difference(&want).count(),
            show(&all_want),
            show(&all_got)
        );
    }
    eprintln!(
        "group {}: {} distinct alerts as the reference, in {records} records",
        g.name,
        got.len()
    );
    let (want, want_evicted) = reference.final_state();
    let (got, got_evicted) = g.final_state();
    assert!(want_evicted > 0, "the reference evicted no lapsed customer");
    assert_eq!(
        want_evicted, got_evicted,
        "group {}: evicted customers",
        g.name
    );
    assert_eq!(want.len(), got.len(), "group {}: customers", g.name);
    for (id, w) in &want {
        assert_eq!(Some(w), got.get(id), "group {}: customer {id}", g.name);
    }
}

/// Random but reproducible pauses.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        Duration::from_millis(lo + (self.0 >> 33) % (hi - lo))
    }
}

/// Start `g`, let it work for a random pause within `pause_ms` (after `before_kill`), then
/// kill it with SIGKILL; `kills` times. Returns whether any of those runs had restored
/// customers from the changelog.
pub fn kill_repeatedly(
    g: &Group,
    kills: usize,
    rng: &mut Lcg,
    pause_ms: (u64, u64),
    before_kill: &dyn Fn(),
) -> bool {
    let mut restored_any = false;
    for i in 0..kills {
        let (mut run, addr) = g.spawn("a");
        wait_ready(&mut run, addr, Duration::from_secs(90));
        before_kill();
        std::thread::sleep(rng.millis(pause_ms.0, pause_ms.1));
        restored_any |= restored_customers(addr) > 0.0;
        run.signal("KILL");
        let out = run.finish(Duration::from_secs(10));
        assert!(!out.status.success(), "kill {i}: {}", out.describe());
    }
    restored_any
}

/// Start `g` once more and let it reach the end of the `total` messages: it must restore
/// customers first. Stops it and returns its log.
pub fn restart_to_the_end(g: &Group, total: i64) -> String {
    let (mut run, addr) = g.spawn("a");
    wait_ready(&mut run, addr, Duration::from_secs(90));
    wait_caught_up(g, total, &mut [&mut run], Duration::from_secs(180));
    assert!(
        restored_customers(addr) > 0.0,
        "the last restart restored no customer"
    );
    let log = stop(run);
    assert!(log.contains("partition state restored"), "{log}");
    log
}

fn restored_customers(addr: SocketAddr) -> f64 {
    http_get(addr, "/metrics", HTTP_TIMEOUT)
        .ok()
        .and_then(|r| super::process::metric_sum(&r.body, "churnwatch_restored_customers_total"))
        .unwrap_or(0.0)
}

/// A stream being produced gradually, and the uninterrupted reference run consuming it.
pub struct Stream {
    /// Messages in the stream.
    pub total: i64,
    producer: Option<JoinHandle<()>>,
    pub reference: Group,
    reference_run: Option<Running>,
}

impl Stream {
    /// Start `reference` and, once it is ready, produce `msgs` in `slices` slices `pause`
    /// apart.
    pub fn start(
        reference: Group,
        msgs: Vec<(String, Vec<u8>)>,
        slices: usize,
        pause: Duration,
    ) -> Stream {
        let total = msgs.len() as i64;
        let (mut run, addr) = reference.spawn("a");
        wait_ready(&mut run, addr, Duration::from_secs(60));
        let producer = produce_gradually(reference.bootstrap.clone(), msgs, slices, pause);
        Stream {
            total,
            producer: Some(producer),
            reference,
            reference_run: Some(run),
        }
    }

    /// Wait for the producer and the reference run to finish; stop the reference.
    pub fn finish_reference(&mut self, limit: Duration) {
        let t = Instant::now();
        self.producer.take().unwrap().join().unwrap();
        eprintln!("input produced after {:?} more", t.elapsed());
        let mut run = self.reference_run.take().unwrap();
        wait_caught_up(&self.reference, self.total, &mut [&mut run], limit);
        eprintln!("reference caught up after {:?} more", t.elapsed());
        show_recovery(&stop(run));
    }
}
