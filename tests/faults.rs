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

use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use common::process::{http_get, metric_sum};
use common::stream::{
    assert_same_outcome, dataset, group, kill_repeatedly, restart_to_the_end, show_recovery, stop,
    wait_caught_up, wait_ready, Group, Lcg, Stream, EVENTS, HTTP_TIMEOUT, PARTITIONS,
};

type Cluster = MockCluster<'static, DefaultProducerContext>;

/// A group on the mock cluster, which has no CreateTopics API: its topics are made here.
fn mock_group(cluster: &Cluster, dir: &std::path::Path, name: &str) -> Group {
    let create = |t: &str, n: i32| cluster.create_topic(t, n, 1).unwrap();
    group(&cluster.bootstrap_servers(), &create, true, dir, name)
}

/// The mock cluster with the events topic, and the stream with its reference run.
struct Scenario {
    cluster: Cluster,
    dir: tempfile::TempDir,
    stream: Stream,
}

fn scenario(seed: u64, slices: usize, pause: Duration) -> Scenario {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(EVENTS, PARTITIONS, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let reference = mock_group(&cluster, dir.path(), "reference");
    let stream = Stream::start(reference, dataset(250, 150.0, seed), slices, pause);
    Scenario {
        cluster,
        dir,
        stream,
    }
}

/// Kill -9 at random points, restart each time; the final alerts and state equal the
/// uninterrupted run's, and a restart restores every customer instead of starting over.
fn kill_and_restart(kills: usize, seed: u64) {
    let mut s = scenario(seed, 60, Duration::from_millis(600));
    let g = mock_group(&s.cluster, s.dir.path(), "killed");
    let cluster = &s.cluster;
    // Commits fail for a while before each kill, so the changelog runs ahead of the committed
    // offsets when the kill comes: the restart re-reads events its restored customers hold.
    let failing_commits = || {
        cluster.request_errors(
            RDKafkaApiKey::OffsetCommit,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE; 12],
        )
    };
    let restored_any = kill_repeatedly(&g, kills, &mut Lcg(seed), (200, 1500), &failing_commits);
    s.stream.finish_reference(Duration::from_secs(120));
    restart_to_the_end(&g, s.stream.total);
    assert!(
        restored_any,
        "no restart before the last one restored a customer"
    );
    assert_same_outcome(&s.stream.reference, &g);
}

#[test]
fn kill_9_at_random_points_then_restart_loses_and_double_counts_nothing() {
    // scripts/soak.sh sets more kills and other seeds.
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    kill_and_restart(
        env("CHURNWATCH_SOAK_KILLS", 4) as usize,
        env("CHURNWATCH_SOAK_SEED", 17),
    );
}

#[test]
fn the_survivor_of_two_instances_takes_over_and_completes_the_alerts() {
    let mut s = scenario(23, 60, Duration::from_millis(250));
    let g = mock_group(&s.cluster, s.dir.path(), "pair");
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
    s.stream.finish_reference(Duration::from_secs(120));
    wait_caught_up(&g, s.stream.total, &mut [&mut a], Duration::from_secs(120));
    assert_eq!(
        assigned(addr_a),
        PARTITIONS as f64,
        "the survivor holds every partition"
    );
    stop(a);
    assert_same_outcome(&s.stream.reference, &g);
}

#[test]
fn a_broker_outage_and_request_errors_are_survived_without_restart_or_loss() {
    let mut s = scenario(29, 60, Duration::from_millis(250));
    let g = mock_group(&s.cluster, s.dir.path(), "outage");
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
    s.stream.finish_reference(Duration::from_secs(120));
    wait_caught_up(
        &g,
        s.stream.total,
        &mut [&mut run],
        Duration::from_secs(120),
    );
    show_recovery(&stop(run));
    assert_same_outcome(&s.stream.reference, &g);
}
