//! `churnwatch run` as its own process, against a broker in another process: the demo's
//! in-process broker serves as the cluster, `run` joins it with its own consumer group, scores
//! the same traffic, serves its metrics, and stops cleanly on SIGTERM.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::process::{churnwatch, demo_cluster, free_port, http_get, metric_sum, Running};
use common::schema::parse_valid_alert;
use common::topic::read_topic;

const HTTP_TIMEOUT: Duration = Duration::from_secs(3);

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn run_joins_a_cluster_scores_and_stops_on_sigterm() {
    let (demo, bootstrap) = demo_cluster(60, 2000);

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("churnwatch.toml");
    let run_addr = addr(free_port());
    std::fs::write(
        &cfg,
        format!(
            "[kafka]\nbrokers = \"{bootstrap}\"\ngroup_id = \"run-under-test\"\n\
             alerts_topic = \"run-alerts\"\n\n[http]\nlisten = \"{run_addr}\"\n\n\
             [input]\nmax_future_skew_secs = 0\n"
        ),
    )
    .unwrap();
    let mut run_cmd = churnwatch();
    run_cmd.args(["run", "--config"]).arg(&cfg);
    let mut run = Running::spawn(run_cmd);

    // It consumes, scores and alerts (to its own alerts topic, which the broker creates).
    let start = Instant::now();
    let (mut events, mut alerts, mut ready) = (0.0, 0.0, false);
    while start.elapsed() < Duration::from_secs(45) && (events == 0.0 || alerts == 0.0 || !ready) {
        std::thread::sleep(Duration::from_millis(500));
        if let Ok(r) = http_get(run_addr, "/metrics", HTTP_TIMEOUT) {
            events = metric_sum(&r.body, "churnwatch_events_total").unwrap_or(0.0);
            alerts = metric_sum(&r.body, "churnwatch_alerts_total").unwrap_or(0.0);
        }
        ready = http_get(run_addr, "/readyz", HTTP_TIMEOUT).is_ok_and(|r| r.status == 200);
    }
    assert!(events > 0.0, "run consumed no events: {}", run.stderr());
    assert!(alerts > 0.0, "run raised no alerts after {events} events");
    assert!(ready, "/readyz never became ready");
    assert_eq!(
        http_get(run_addr, "/healthz", HTTP_TIMEOUT).unwrap().status,
        200
    );
    // What it alerted is on its alerts topic, keyed by customer, and matches the schema.
    let records = read_topic(&bootstrap, "run-alerts", 1);
    assert!(!records.is_empty(), "no record on run-alerts");
    for r in &records {
        let v = parse_valid_alert(std::str::from_utf8(&r.payload).expect("UTF-8"));
        assert_eq!(r.key.as_deref(), v["customer_id"].as_str());
    }

    // SIGTERM: finish, flush, commit, exit 0.
    run.signal("TERM");
    let out = run.finish(Duration::from_secs(20));
    assert!(
        out.status.success(),
        "run did not exit 0 after SIGTERM: {}",
        out.describe()
    );
    assert!(
        out.stderr.contains("pipeline stopped"),
        "{}",
        out.describe()
    );
    demo.signal("TERM");
}
