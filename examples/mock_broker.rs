//! librdkafka's in-process mock cluster as a process of its own, for scripts that need "the
//! in-process broker" between separate processes (`scripts/bench-e2e.sh`).
//!
//! `cargo run --release --example mock_broker -- TOPIC:PARTITIONS ...` creates the topics
//! (the mock cluster has no CreateTopics API), prints the bootstrap servers on one line of
//! stdout, and serves until stdin closes or the process is signalled.
//!
//! Mind the mock cluster's own limits: each partition keeps its newest 5 MiB or 100,000
//! messages and drops older ones (no compaction), so spread large preloads over partitions.

use std::io::{Read, Write};

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

fn main() {
    let topics: Vec<(String, i32)> = std::env::args()
        .skip(1)
        .map(|a| {
            let (name, n) = a
                .rsplit_once(':')
                .unwrap_or_else(|| panic!("{a}: expected TOPIC:PARTITIONS"));
            (name.to_string(), n.parse().expect("a partition count"))
        })
        .collect();
    let cluster: MockCluster<'static, DefaultProducerContext> =
        MockCluster::new(1).expect("the mock cluster starts");
    for (name, partitions) in &topics {
        cluster
            .create_topic(name, *partitions, 1)
            .unwrap_or_else(|e| panic!("creating {name}: {e}"));
    }
    println!("{}", cluster.bootstrap_servers());
    std::io::stdout().flush().unwrap();
    // Serve until stdin reaches its end (the script closes it, or dies).
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}
