//! Thresholds tuned live: a running `churnwatch run` has its config file edited. The new
//! thresholds must be in force without a restart (alerts after the reload obey them and carry
//! the new `config_version`); a broken edit must be rejected, counted, and leave the config in
//! force working. The demo's in-process broker serves as the cluster and its traffic as input.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::process::{
    churnwatch, demo_cluster, free_port, http_get, metric_lines, metric_sum, Running,
};
use common::schema::parse_valid_alert;
use common::topic::read_topic;

const HTTP_TIMEOUT: Duration = Duration::from_secs(3);
const ALERTS: &str = "reload-alerts";

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The config under test: the demo's broker, our own group and alerts topic, and the
/// thresholds given.
fn write_config(path: &Path, bootstrap: &str, listen: SocketAddr, version: &str, alerting: &str) {
    std::fs::write(
        path,
        format!(
            "config_version = \"{version}\"\n\n\
             [kafka]\nbrokers = \"{bootstrap}\"\ngroup_id = \"reload-under-test\"\n\
             alerts_topic = \"{ALERTS}\"\n\n[http]\nlisten = \"{listen}\"\n\n\
             [input]\nmax_future_skew_secs = 0\n\n[alerting]\n{alerting}"
        ),
    )
    .unwrap();
}

fn metrics(run: &Running, at: SocketAddr) -> String {
    http_get(at, "/metrics", HTTP_TIMEOUT)
        .unwrap_or_else(|e| panic!("/metrics: {e}\n{}", run.stderr()))
        .body
}

/// Every alert so far (each validated against the schema).
fn alerts(bootstrap: &str) -> Vec<Value> {
    read_topic(bootstrap, ALERTS, 0)
        .iter()
        .map(|r| parse_valid_alert(std::str::from_utf8(&r.payload).expect("UTF-8")))
        .collect()
}

fn raised_with(alerts: &[Value], version: &str) -> Vec<Value> {
    alerts
        .iter()
        .filter(|a| a["config_version"] == version)
        .filter(|a| a["kind"] == "at_risk" || a["kind"] == "escalated")
        .cloned()
        .collect()
}

/// Poll until `done` holds (with a message for the failure).
fn wait_until(limit: Duration, what: &str, run: &Running, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}\n{}",
            run.stderr()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn thresholds_change_live_and_a_broken_edit_is_rejected() {
    let (mut demo, bootstrap) = demo_cluster(150, 3000);

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("churnwatch.toml");
    let at = addr(free_port());
    let before = "enter_threshold = 0.5\nexit_threshold = 0.3\n\
                  medium_threshold = 0.7\nhigh_threshold = 0.85\n";
    write_config(&cfg, &bootstrap, at, "thresholds-v0", before);
    let mut run_cmd = churnwatch();
    run_cmd.args(["run", "--config"]).arg(&cfg);
    let run = Running::spawn(run_cmd);

    // Under the first thresholds: alerts from risk 0.5 on, some of them below 0.8.
    wait_until(
        Duration::from_secs(60),
        "at-risk alerts under the first config, some with a risk below 0.8",
        &run,
        || {
            let a = raised_with(&alerts(&bootstrap), "thresholds-v0");
            a.len() >= 10 && a.iter().any(|a| a["risk_score"].as_f64().unwrap() < 0.8)
        },
    );
    let m = metrics(&run, at);
    assert!(
        m.contains("churnwatch_config_info{version=\"thresholds-v0\"} 1"),
        "{}",
        metric_lines(&m, "churnwatch_config_info")
    );

    // Raise them in the file: in force within seconds, without a restart.
    let after = "enter_threshold = 0.8\nexit_threshold = 0.6\n\
                 medium_threshold = 0.85\nhigh_threshold = 0.9\n";
    write_config(&cfg, &bootstrap, at, "thresholds-v1", after);
    wait_until(Duration::from_secs(15), "the reload", &run, || {
        metrics(&run, at).contains("churnwatch_config_info{version=\"thresholds-v1\"} 1")
    });
    let m = metrics(&run, at);
    assert_eq!(
        metric_sum(&m, "churnwatch_config_reloads_total"),
        Some(1.0),
        "{}",
        metric_lines(&m, "churnwatch_config_reloads_total")
    );
    assert!(run.stderr().contains("config reloaded"), "{}", run.stderr());

    // Alerts raised since carry the new version and obey the new thresholds and tiers.
    wait_until(
        Duration::from_secs(60),
        "at-risk alerts under the new config",
        &run,
        || raised_with(&alerts(&bootstrap), "thresholds-v1").len() >= 5,
    );
    let tier_of = |risk: f64| {
        if risk >= 0.9 {
            "high"
        } else if risk >= 0.85 {
            "medium"
        } else {
            "low"
        }
    };
    for a in raised_with(&alerts(&bootstrap), "thresholds-v1") {
        let risk = a["risk_score"].as_f64().unwrap();
        assert!(risk >= 0.8, "alert under enter_threshold 0.8: {a}");
        assert_eq!(a["tier"], tier_of(risk), "tier by the new thresholds: {a}");
    }

    // A broken edit: rejected with the key named, the config in force stays and keeps working.
    let broken = "enter_threshold = 0.8\nexit_threshold = 0.6\n\
                  medium_threshold = 0.85\nhigh_threshold = 1.9\n";
    write_config(&cfg, &bootstrap, at, "thresholds-v2", broken);
    wait_until(Duration::from_secs(15), "the rejection", &run, || {
        metrics(&run, at).contains("churnwatch_config_reloads_total{result=\"rejected\"} 1")
    });
    assert!(
        run.stderr().contains("alerting.high_threshold"),
        "the rejection names the key: {}",
        run.stderr()
    );
    let m = metrics(&run, at);
    assert!(
        m.contains("churnwatch_config_info{version=\"thresholds-v1\"} 1"),
        "{}",
        metric_lines(&m, "churnwatch_config_info")
    );
    let events_then = metric_sum(&m, "churnwatch_events_total").unwrap();
    let raised_then = raised_with(&alerts(&bootstrap), "thresholds-v1").len();
    wait_until(
        Duration::from_secs(60),
        "more events and alerts after the rejected edit",
        &run,
        || {
            metric_sum(&metrics(&run, at), "churnwatch_events_total").unwrap() > events_then
                && raised_with(&alerts(&bootstrap), "thresholds-v1").len() > raised_then
        },
    );
    let all = alerts(&bootstrap);
    assert!(
        all.iter().all(|a| a["config_version"] != "thresholds-v2"),
        "an alert carries the rejected config's version"
    );
    assert!(
        http_get(at, "/readyz", HTTP_TIMEOUT).is_ok_and(|r| r.status == 200),
        "still ready"
    );

    // A restart-only change is reported, not applied.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("thresholds-v2", "thresholds-v3")
        .replace("high_threshold = 1.9", "high_threshold = 0.9")
        .replace("reload-under-test", "another-group");
    std::fs::write(&cfg, text).unwrap();
    wait_until(
        Duration::from_secs(15),
        "the restart-only report",
        &run,
        || {
            metrics(&run, at).contains("churnwatch_config_restart_required 1")
                && run.stderr().contains("only a restart applies")
        },
    );

    run.signal("TERM");
    demo.signal("TERM");
    let _ = demo.finish(Duration::from_secs(20));
}
