//! A bare consumer that times each message from its Kafka timestamp to its arrival, and does
//! nothing else: the floor under churnwatch's event-to-decision latency on a given machine,
//! broker and load (`scripts/bench-e2e.sh --probe`, BENCHMARKS.md).
//!
//! `cargo run --release --example latency_probe -- CONFIG TOPIC` reads every partition of TOPIC
//! from its end with the consumer settings churnwatch would use under the config file CONFIG
//! (`churnwatch::kafka::consumer_config`: its brokers, prefetch, Nagle off and the config's
//! `[kafka.properties]`), assigned rather than joined to churnwatch's group, without
//! statistics. It prints `ready` once the partitions are assigned, and when no
//! message has come for 3 s after the first one, the count and the quantiles of the latency in
//! milliseconds (exact, from every sample), then exits.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use churnwatch::config::Config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, topic] = args.as_slice() else {
        panic!("usage: latency_probe CONFIG TOPIC");
    };
    let cfg = Config::load(path.as_ref()).expect("a valid churnwatch config");
    let mut config = churnwatch::kafka::consumer_config(&cfg);
    config
        .set("group.id", "churnwatch-latency-probe")
        .set("statistics.interval.ms", "0");
    let consumer: BaseConsumer = config.create().expect("the consumer is created");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("the topic's metadata");
    let mut assignment = TopicPartitionList::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        assignment
            .add_partition_offset(topic, p.id(), Offset::End)
            .expect("a valid offset");
    }
    consumer
        .assign(&assignment)
        .expect("the partitions are assigned");
    println!("ready: {} partitions", assignment.count());

    let mut latencies: Vec<i64> = Vec::with_capacity(1 << 20);
    let mut last = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                if let Some(ts) = m.timestamp().to_millis() {
                    latencies.push((now_ms() - ts).max(0));
                }
                last = Instant::now();
            }
            Some(Err(e)) => eprintln!("consumer error: {e}"),
            None if !latencies.is_empty() && last.elapsed() > Duration::from_secs(3) => break,
            None => {}
        }
    }
    latencies.sort_unstable();
    let q = |p: f64| latencies[((p * latencies.len() as f64) as usize).min(latencies.len() - 1)];
    println!(
        "messages: {}, latency ms: p50 {} p90 {} p99 {} p99.9 {} max {}",
        latencies.len(),
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        latencies[latencies.len() - 1]
    );
}
