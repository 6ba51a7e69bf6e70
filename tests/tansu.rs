//! End-to-end tests against an independent Kafka implementation: tansu (a broker written in
//! Rust, from crates.io, with its in-memory storage), so that churnwatch's client settings,
//! its changelog-topic creation (CreateTopics), its restores and its transactions are proven
//! against a second broker besides librdkafka's mock cluster.
//!
//! Exactly-once is not run here: tansu 0.6 answers `EndTxn` as unsupported (churnwatch then
//! stops with that error after its bounded recoveries); see `tests/faults.rs` for the
//! transactional run on the mock cluster.
//!
//! tansu is installed by `scripts/install-tansu.sh` when missing (CI runs it first; locally
//! the first run of these tests does, which takes several minutes).

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::executor::block_on;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

use common::process::{free_port, manifest_dir, Running};
use common::stream::{
    assert_same_outcome, dataset, group, kill_repeatedly, restart_to_the_end, Group, Lcg, Stream,
    EVENTS, PARTITIONS,
};

/// The tansu binary, installed by the project's script when missing.
fn tansu_bin() -> PathBuf {
    let out = Command::new("bash")
        .arg(manifest_dir().join("scripts/install-tansu.sh"))
        .output()
        .expect("running scripts/install-tansu.sh");
    assert!(
        out.status.success(),
        "scripts/install-tansu.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A tansu broker on a free port, with in-memory storage; stopped when dropped.
struct Tansu {
    _process: Running,
    bootstrap: String,
}

impl Tansu {
    fn start() -> Tansu {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let mut cmd = Command::new(tansu_bin());
        cmd.args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "warn");
        let mut process = Running::spawn(cmd);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let start = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                process.try_status().is_none(),
                "tansu exited: {}",
                process.stderr()
            );
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "tansu did not listen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Tansu {
            _process: process,
            bootstrap: format!("127.0.0.1:{port}"),
        }
    }

    fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .unwrap();
        let spec = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let res = block_on(admin.create_topics([&spec], &AdminOptions::new())).unwrap();
        for r in res {
            r.unwrap_or_else(|(t, e)| panic!("creating {t} on tansu: {e}"));
        }
    }
}

/// tansu with the events topic, and the stream with its reference run.
struct Scenario {
    tansu: Tansu,
    dir: tempfile::TempDir,
    stream: Stream,
}

fn scenario(seed: u64) -> Scenario {
    let tansu = Tansu::start();
    tansu.create_topic(EVENTS, PARTITIONS);
    let dir = tempfile::tempdir().unwrap();
    let reference = tansu_group(&tansu, &dir, "reference");
    let stream = Stream::start(
        reference,
        dataset(150, 120.0, seed),
        40,
        Duration::from_millis(500),
    );
    Scenario { tansu, dir, stream }
}

/// A group whose changelog churnwatch creates itself (tansu has CreateTopics).
fn tansu_group(tansu: &Tansu, dir: &tempfile::TempDir, name: &str) -> Group {
    let create = |t: &str, n: i32| tansu.create_topic(t, n);
    group(&tansu.bootstrap, &create, false, dir.path(), name)
}

#[test]
fn at_least_once_on_tansu_survives_kill_9_with_the_reference_outcome() {
    let mut s = scenario(31);
    let g = tansu_group(&s.tansu, &s.dir, "killed");
    kill_repeatedly(&g, 2, &mut Lcg(31), (500, 2500), &|| {});
    s.stream.finish_reference(Duration::from_secs(180));
    restart_to_the_end(&g, s.stream.total);
    assert_same_outcome(&s.stream.reference, &g);
}
