//! The acceptance check of `churnwatch demo`: with nothing installed, it produces simulated
//! customer traffic to an in-process Kafka-protocol broker, scores it, and within seconds
//! reports at-risk customers on `/metrics`, as JSON alerts on stdout and on the alerts topic
//! (readable by any Kafka client); it stops by itself after `--duration` and on SIGTERM.
//!
//! Bounded in time (the long test takes about 45 s); no performance assertions.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::process::{churnwatch, free_port, http_get, metric_lines, metric_sum, tail, Running};
use common::schema::parse_valid_alert;
use serde_json::Value;

const DEMO_SECONDS: u64 = 40;
/// How long the metrics may take to show events and at-risk customers (from spawning).
const METRICS_WITHIN: Duration = Duration::from_secs(35);
/// The demo must have exited by itself this long after it was spawned.
const EXIT_WITHIN: Duration = Duration::from_secs(DEMO_SECONDS + 20);
const KCAT_WITHIN: Duration = Duration::from_secs(20);
const HTTP_TIMEOUT: Duration = Duration::from_secs(3);
const BOOTSTRAP_MARKER: &str = "in-process Kafka broker:";
const ALERTS_TOPIC: &str = "churn-alerts";

fn demo_command(listen: SocketAddr, extra: &[&str]) -> Command {
    let mut cmd = churnwatch();
    cmd.arg("demo")
        .args(["--listen", &listen.to_string()])
        .args(extra);
    cmd
}

fn bootstrap_of(line: &str) -> String {
    line.split(BOOTSTRAP_MARKER)
        .nth(1)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| panic!("no address on the bootstrap line {line:?}"))
        .to_string()
}

enum Kcat {
    NotInstalled,
    /// The first line kcat printed.
    Read(String),
    Failed(String),
}

/// Read one alert from the beginning of the alerts topic with kcat, retrying until `limit`:
/// with `-e` kcat stops at the end of the (possibly still empty) partitions.
fn kcat_first_alert(bootstrap: &str, limit: Duration) -> Kcat {
    match Command::new("kcat").arg("-V").output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Kcat::NotInstalled,
        _ => {}
    }
    let deadline = Instant::now() + limit;
    let mut attempts = 0;
    let mut last = String::new();
    while Instant::now() < deadline {
        attempts += 1;
        let mut cmd = Command::new("kcat");
        cmd.args(["-C", "-b", bootstrap, "-t", ALERTS_TOPIC]).args([
            "-o",
            "beginning",
            "-c",
            "1",
            "-e",
            "-q",
        ]);
        let out = Running::spawn(cmd).finish(deadline.saturating_duration_since(Instant::now()));
        if let Some(line) = out.stdout.lines().find(|l| !l.trim().is_empty()) {
            return Kcat::Read(line.to_string());
        }
        last = out.describe();
        std::thread::sleep(Duration::from_millis(500));
    }
    Kcat::Failed(format!(
        "kcat read nothing from {ALERTS_TOPIC} on {bootstrap} in {} attempts over {:?}; last attempt:\n{last}",
        attempts, limit
    ))
}

/// What the HTTP endpoints showed while the demo ran.
#[derive(Default, Debug)]
struct Observed {
    healthz: Option<u16>,
    readyz_ok_after: Option<Duration>,
    events: Option<f64>,
    at_risk: Option<f64>,
    both_after: Option<Duration>,
    polls: u32,
    last_metrics: String,
    last_error: Option<String>,
}

#[test]
fn demo_reports_at_risk_customers_and_stops_by_itself() {
    let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut demo = Running::spawn(demo_command(
        listen,
        &[
            "--duration",
            &DEMO_SECONDS.to_string(),
            "--customers",
            "3000",
        ],
    ));

    let line = demo
        .wait_for_stderr_line(BOOTSTRAP_MARKER, Duration::from_secs(20))
        .unwrap_or_else(|| {
            panic!(
                "no {BOOTSTRAP_MARKER:?} line within 20 s; stderr:\n{}",
                tail(&demo.stderr(), 8000)
            )
        });
    let bootstrap = bootstrap_of(&line);

    // An external Kafka client reads the alerts topic while the demo runs.
    let kcat = {
        let bootstrap = bootstrap.clone();
        std::thread::spawn(move || kcat_first_alert(&bootstrap, KCAT_WITHIN))
    };

    // Poll the HTTP endpoints until events and at-risk customers show up.
    let mut seen = Observed::default();
    while demo.elapsed() < METRICS_WITHIN {
        if let Some(status) = demo.try_status() {
            panic!(
                "the demo exited early ({status}) after {:.1} s; observed {seen:?}\nstderr:\n{}",
                demo.elapsed().as_secs_f64(),
                tail(&demo.stderr(), 8000)
            );
        }
        seen.polls += 1;
        if seen.healthz != Some(200) {
            match http_get(listen, "/healthz", HTTP_TIMEOUT) {
                Ok(r) => seen.healthz = Some(r.status),
                Err(e) => seen.last_error = Some(format!("/healthz: {e}")),
            }
        }
        if seen.readyz_ok_after.is_none() {
            match http_get(listen, "/readyz", HTTP_TIMEOUT) {
                Ok(r) if r.status == 200 => seen.readyz_ok_after = Some(demo.elapsed()),
                Ok(_) => {}
                Err(e) => seen.last_error = Some(format!("/readyz: {e}")),
            }
        }
        match http_get(listen, "/metrics", HTTP_TIMEOUT) {
            Ok(r) if r.status == 200 => {
                seen.events = metric_sum(&r.body, "churnwatch_events_total");
                seen.at_risk = metric_sum(&r.body, "churnwatch_at_risk_customers");
                seen.last_metrics = r.body;
            }
            Ok(r) => seen.last_error = Some(format!("/metrics: HTTP {}", r.status)),
            Err(e) => seen.last_error = Some(format!("/metrics: {e}")),
        }
        let metrics_ok = seen.events.unwrap_or(0.0) > 0.0 && seen.at_risk.unwrap_or(0.0) > 0.0;
        if metrics_ok && seen.both_after.is_none() {
            seen.both_after = Some(demo.elapsed());
        }
        if metrics_ok && seen.healthz == Some(200) && seen.readyz_ok_after.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let describe_seen = |seen: &Observed| {
        format!(
            "after {:.1} s and {} polls: /healthz {:?}, /readyz 200 after {:?}, events_total sum {:?}, at_risk_customers sum {:?}, last error {:?}\n{}\n{}",
            demo.elapsed().as_secs_f64(),
            seen.polls,
            seen.healthz,
            seen.readyz_ok_after,
            seen.events,
            seen.at_risk,
            seen.last_error,
            metric_lines(&seen.last_metrics, "churnwatch_events_total"),
            metric_lines(&seen.last_metrics, "churnwatch_at_risk_customers"),
        )
    };
    assert_eq!(seen.healthz, Some(200), "{}", describe_seen(&seen));
    assert!(
        seen.readyz_ok_after.is_some(),
        "/readyz never returned 200; {}",
        describe_seen(&seen)
    );
    assert!(
        seen.events.unwrap_or(0.0) > 0.0,
        "no events counted; {}",
        describe_seen(&seen)
    );
    assert!(
        seen.at_risk.unwrap_or(0.0) > 0.0,
        "no at-risk customers; {}",
        describe_seen(&seen)
    );
    eprintln!(
        "demo: {}",
        describe_seen(&seen).lines().next().unwrap_or("")
    );
    eprintln!(
        "demo: events and at-risk customers both non-zero after {:?}",
        seen.both_after
    );

    let kcat_alert = match kcat.join().expect("the kcat thread does not panic") {
        Kcat::NotInstalled => {
            eprintln!("\n**********************************************************");
            eprintln!("SKIPPED: kcat not installed: the external-consumer check did not run");
            eprintln!("**********************************************************\n");
            None
        }
        Kcat::Failed(why) => panic!("{why}"),
        Kcat::Read(line) => {
            let v: Value = parse_valid_alert(&line);
            let id = v["alert_id"].as_str().unwrap_or_default().to_string();
            assert!(!id.is_empty(), "kcat's alert has no alert_id: {line}");
            assert!(v["kind"].is_string(), "kcat's alert has no kind: {line}");
            eprintln!("demo: kcat read alert {id} ({})", v["kind"]);
            Some(id)
        }
    };

    // It stops by itself, cleanly.
    let out = demo.finish(EXIT_WITHIN.saturating_sub(demo.elapsed()));
    assert!(
        !out.timed_out,
        "the demo did not stop by itself within {EXIT_WITHIN:?} of starting (--duration {DEMO_SECONDS}):\n{}",
        out.describe()
    );
    assert!(out.status.success(), "the demo failed:\n{}", out.describe());
    assert!(!out.stderr.contains("panicked"), "{}", out.describe());
    let bootstrap_lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains(BOOTSTRAP_MARKER))
        .collect();
    assert_eq!(bootstrap_lines.len(), 1, "{}", out.describe());
    assert_eq!(bootstrap_of(bootstrap_lines[0]), bootstrap);

    // Every stdout line is an alert; at least one at-risk alert with its reasons.
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut ids = std::collections::HashSet::new();
    let mut lines = 0;
    let mut at_risk_with_reasons = 0;
    for (n, line) in out.stdout.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        lines += 1;
        // Every alert validates against the shipped schema.
        let v: Value = parse_valid_alert(line);
        let id = v["alert_id"].as_str().unwrap_or_default();
        assert!(
            !id.is_empty(),
            "stdout line {} has no alert_id: {line}",
            n + 1
        );
        ids.insert(id.to_string());
        let kind = v["kind"].as_str().unwrap_or("<none>").to_string();
        if kind == "at_risk" {
            let reasons = v["reasons"].as_array().map_or(0, Vec::len);
            if reasons > 0 {
                at_risk_with_reasons += 1;
            }
        }
        *kinds.entry(kind).or_default() += 1;
    }
    let summary = out
        .stderr
        .lines()
        .find(|l| l.contains("churnwatch demo: produced"))
        .unwrap_or("<no summary line>");
    eprintln!(
        "demo: exited {} after {:.1} s; {lines} alert lines ({} distinct ids), by kind {kinds:?}; {summary}",
        out.status,
        out.elapsed.as_secs_f64(),
        ids.len()
    );
    assert!(
        at_risk_with_reasons > 0,
        "no at_risk alert with reasons on stdout ({lines} lines, by kind {kinds:?}):\n{}",
        out.describe()
    );
    if let Some(id) = kcat_alert {
        assert!(
            ids.contains(&id),
            "the alert kcat read ({id}) is not among the {} alerts the demo printed",
            ids.len()
        );
    }
}

#[test]
fn demo_exits_cleanly_on_sigterm() {
    let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut demo = Running::spawn(demo_command(listen, &["--customers", "1000"]));

    // Wait until it is consuming: ready and counting events.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut state;
    loop {
        if let Some(status) = demo.try_status() {
            panic!(
                "the demo exited before SIGTERM ({status}); stderr:\n{}",
                tail(&demo.stderr(), 8000)
            );
        }
        let ready = http_get(listen, "/readyz", HTTP_TIMEOUT).map(|r| r.status);
        let events = http_get(listen, "/metrics", HTTP_TIMEOUT)
            .ok()
            .and_then(|r| metric_sum(&r.body, "churnwatch_events_total"));
        state = format!("/readyz {ready:?}, events_total {events:?}");
        if matches!(ready, Ok(200)) && events.unwrap_or(0.0) > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not consuming within 30 s ({state}); stderr:\n{}",
            tail(&demo.stderr(), 8000)
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    let signalled_at = demo.elapsed();
    demo.signal("TERM");
    let out = demo.finish(Duration::from_secs(15));
    let stop = out.elapsed.saturating_sub(signalled_at);
    assert!(
        !out.timed_out,
        "still running 15 s after SIGTERM (sent when {state}):\n{}",
        out.describe()
    );
    assert!(
        out.status.success(),
        "SIGTERM did not lead to a clean exit (stopped after {:.1} s):\n{}",
        stop.as_secs_f64(),
        out.describe()
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.describe());
    assert!(
        out.stderr.contains("SIGTERM"),
        "the shutdown was not logged as caused by SIGTERM:\n{}",
        out.describe()
    );
    eprintln!(
        "demo: stopped {:.1} s after SIGTERM (sent when {state})",
        stop.as_secs_f64()
    );
}
