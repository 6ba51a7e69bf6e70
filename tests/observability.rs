//! End-to-end check of the observability files in `deploy/` against a real Prometheus.
//!
//! `promtool` checks the shipped Prometheus config, the rules and their unit tests, and lints the
//! live `/metrics` of `churnwatch demo`; then a real `prometheus` scrapes the demo with the
//! shipped config (only the target address and the intervals rewritten) and every query of the
//! Grafana dashboard, every recording rule and `up{job="churnwatch"}` must return data: at least
//! one finite sample (a KPI ratio that is only NaN, 0/0, has no data yet).
//!
//! Needs Debian's `prometheus` package (`prometheus` and `promtool`); fails without it.
//! Takes about a minute when everything has data (at most about 4 minutes when not).

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{churnwatch, free_port, http_get, manifest_dir, run, tail, Running};
use serde_json::Value;

/// Scrape and rule-evaluation interval of the test's Prometheus (15s in the shipped file).
const INTERVAL: &str = "2s";
/// What `$__rate_interval` and `$__interval`-like ranges become: several scrapes.
const RATE_INTERVAL: &str = "30s";
/// What `$__range` becomes.
const RANGE: &str = "5m";
/// From Prometheus being ready until every query must have returned data.
const DATA_WITHIN: Duration = Duration::from_secs(180);
const READY_WITHIN: Duration = Duration::from_secs(60);
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
const TOOL_LIMIT: Duration = Duration::from_secs(60);
const INSTALL_HINT: &str = "install Debian's prometheus package; .ci/run does";

fn deploy_dir() -> PathBuf {
    manifest_dir().join("deploy")
}

/// Fail (not skip) when a tool of Debian's prometheus package is missing.
fn require_tool(name: &str) {
    match Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("`{name}` is not installed: {INSTALL_HINT}")
        }
        Err(e) => panic!("could not run `{name} --version` ({e}): {INSTALL_HINT}"),
    }
}

/// Run a promtool subcommand; it must succeed.
fn promtool(args: &[&str], cwd: &Path) {
    let mut cmd = Command::new("promtool");
    cmd.args(args).current_dir(cwd);
    let out = run(cmd, TOOL_LIMIT);
    assert!(
        out.status.success() && !out.timed_out,
        "promtool {} failed:\n{}",
        args.join(" "),
        out.describe()
    );
    eprintln!(
        "observability: promtool {}: {}",
        args.join(" "),
        out.stdout.trim().replace('\n', " | ")
    );
}

/// Replace the only occurrence of `from` in `text` by `to`; the shipped file must have exactly one.
fn replace_once(text: &str, from: &str, to: &str, file: &str) -> String {
    let n = text.matches(from).count();
    assert_eq!(
        n, 1,
        "{file} should contain {from:?} exactly once (the test rewrites it), found {n} times"
    );
    text.replacen(from, to, 1)
}

/// The shipped prometheus.yml and rules in `dir`, with the demo as the target and short
/// intervals; nothing else changed.
fn prepare_prometheus_dir(dir: &Path, target: SocketAddr) {
    let src = deploy_dir().join("prometheus");
    let file = "deploy/prometheus/prometheus.yml";
    let config =
        std::fs::read_to_string(src.join("prometheus.yml")).expect("reading prometheus.yml");
    let config = replace_once(
        &config,
        "\"churnwatch:9464\"",
        &format!("\"{target}\""),
        file,
    );
    let config = replace_once(
        &config,
        "scrape_interval: 15s",
        &format!("scrape_interval: {INTERVAL}"),
        file,
    );
    let config = replace_once(
        &config,
        "evaluation_interval: 15s",
        &format!("evaluation_interval: {INTERVAL}"),
        file,
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    std::fs::copy(
        src.join("churnwatch.rules.yml"),
        dir.join("churnwatch.rules.yml"),
    )
    .expect("copying churnwatch.rules.yml");
}

/// `promtool check metrics` on an exposition (stdin): no lint problem.
fn check_metrics(exposition: &str) -> String {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start promtool ({e}): {INSTALL_HINT}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .expect("writing /metrics to promtool");
    let out = child.wait_with_output().expect("waiting for promtool");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics found problems in churnwatch's /metrics ({}):\n{report}",
        out.status
    );
    report
}

/// Poll `path` on `addr` until it answers 200, failing if `process` exits first.
fn wait_for_200(process: &mut Running, what: &str, addr: SocketAddr, path: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut last: String;
    loop {
        if let Some(status) = process.try_status() {
            panic!(
                "{what} exited ({status}) before {path} answered 200; stderr:\n{}",
                tail(&process.stderr(), 8000)
            );
        }
        match http_get(addr, path, HTTP_TIMEOUT) {
            Ok(r) if r.status == 200 => return,
            Ok(r) => last = format!("HTTP {}", r.status),
            Err(e) => last = e.to_string(),
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {path} did not answer 200 within {limit:?} (last: {last}); stderr:\n{}",
            tail(&process.stderr(), 8000)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// GET a Prometheus API path; the parsed JSON body.
fn api(prom: SocketAddr, path: &str) -> Result<Value, String> {
    let r = http_get(prom, path, HTTP_TIMEOUT).map_err(|e| format!("GET {path}: {e}"))?;
    let v: Value = serde_json::from_str(&r.body).map_err(|e| {
        format!(
            "GET {path}: HTTP {} not JSON ({e}): {}",
            r.status,
            tail(&r.body, 500)
        )
    })?;
    if v["status"] != "success" {
        return Err(format!(
            "GET {path}: HTTP {}: {} {}",
            r.status, v["errorType"], v["error"]
        ));
    }
    Ok(v)
}

/// An instant query's result: `Ok(Some(description))` when it has at least one finite sample,
/// `Ok(None)` when it is empty or only NaN/Inf (e.g. 0/0 before a period has customers);
/// `Err` for a query Prometheus rejects. `last` says what the latest answer was.
fn query(prom: SocketAddr, expr: &str, last: &mut String) -> Result<Option<String>, String> {
    let v = api(
        prom,
        &format!(
            "/api/v1/query?query={}",
            churnwatch::status::urlencode(expr)
        ),
    )?;
    let data = &v["data"];
    let samples: Vec<(String, String)> = match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|s| {
                (
                    s["metric"].to_string(),
                    s["value"][1].as_str().unwrap_or("?").to_string(),
                )
            })
            .collect(),
        Some("scalar") => vec![(
            "scalar".into(),
            data["result"][1].as_str().unwrap_or("?").to_string(),
        )],
        other => return Err(format!("unexpected resultType {other:?} for {expr}")),
    };
    let finite = |v: &str| v.parse::<f64>().is_ok_and(f64::is_finite);
    match samples.iter().find(|(_, v)| finite(v)) {
        Some((metric, value)) => Ok(Some(format!(
            "{} series, e.g. {metric} = {value}",
            samples.len()
        ))),
        None => {
            *last = if samples.is_empty() {
                "empty result".into()
            } else {
                let values: Vec<&str> = samples.iter().map(|(_, v)| v.as_str()).collect();
                format!("{} series, none finite: {values:?}", samples.len())
            };
            Ok(None)
        }
    }
}

/// A query the test needs data for.
struct Check {
    /// Where it comes from (panel and refId, recording rule, ...).
    source: String,
    /// As written there.
    original: String,
    /// As sent to Prometheus.
    expr: String,
    /// What it returned, once it returned a finite value.
    got: Option<String>,
    /// The latest answer without a finite value.
    last: String,
}

/// Grafana's variables replaced as Grafana would for "all instances".
fn substitute(expr: &str) -> String {
    let mut e = expr.to_string();
    for (var, value) in [
        ("${__rate_interval}", RATE_INTERVAL),
        ("$__rate_interval", RATE_INTERVAL),
        ("${__interval}", RATE_INTERVAL),
        ("$__interval", RATE_INTERVAL),
        ("${__range}", RANGE),
        ("$__range", RANGE),
        ("${instance:regex}", ".*"),
        ("${instance:pipe}", ".*"),
        ("${instance}", ".*"),
        ("$instance", ".*"),
    ] {
        e = e.replace(var, value);
    }
    e
}

/// Every panel, also those nested in (collapsed) rows.
fn walk_panels<'a>(panels: &'a [Value], out: &mut Vec<&'a Value>) {
    for p in panels {
        out.push(p);
        if let Some(nested) = p["panels"].as_array() {
            walk_panels(nested, out);
        }
    }
}

/// The dashboard's queries; checks on the way that every query panel and target uses the
/// `datasource` variable.
fn dashboard_checks() -> Vec<Check> {
    let path = deploy_dir().join("grafana/dashboards/churnwatch.json");
    let text = std::fs::read_to_string(&path).expect("reading the dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "churnwatch");
    let vars = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    assert!(
        vars.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "the dashboard has no `datasource` variable of type prometheus"
    );
    let mut panels = Vec::new();
    walk_panels(dashboard["panels"].as_array().expect("panels"), &mut panels);
    let mut checks = Vec::new();
    for p in panels {
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap_or("<untitled>");
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "panel {title:?} does not use the datasource variable"
        );
        let targets = p["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for t in targets {
            let ref_id = t["refId"].as_str().unwrap_or("?");
            assert_eq!(
                t["datasource"]["uid"], "${datasource}",
                "panel {title:?} query {ref_id} does not use the datasource variable"
            );
            let original = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {title:?} query {ref_id} has no expr"));
            let expr = substitute(original);
            assert!(
                !expr.contains('$'),
                "panel {title:?} query {ref_id} uses a Grafana variable the test does not know: {original}"
            );
            checks.push(Check {
                source: format!("panel {title:?} {ref_id}"),
                original: original.to_string(),
                expr,
                got: None,
                last: "not queried".into(),
            });
        }
    }
    checks
}

/// The rules Prometheus loaded: (group/name, type, health, last error).
fn loaded_rules(prom: SocketAddr) -> Vec<(String, String, String, String)> {
    let v = api(prom, "/api/v1/rules").unwrap_or_else(|e| panic!("{e}"));
    let mut rules = Vec::new();
    for g in v["data"]["groups"].as_array().cloned().unwrap_or_default() {
        for r in g["rules"].as_array().cloned().unwrap_or_default() {
            rules.push((
                format!(
                    "{}/{}",
                    g["name"].as_str().unwrap_or("?"),
                    r["name"].as_str().unwrap_or("?")
                ),
                r["type"].as_str().unwrap_or("?").to_string(),
                r["health"].as_str().unwrap_or("?").to_string(),
                r["lastError"].as_str().unwrap_or("").to_string(),
            ));
        }
    }
    rules
}

#[test]
fn prometheus_scrapes_the_demo_and_every_dashboard_query_and_rule_has_data() {
    require_tool("promtool");
    require_tool("prometheus");
    let prom_dir = deploy_dir().join("prometheus");

    // Static checks of the shipped files.
    promtool(&["check", "rules", "churnwatch.rules.yml"], &prom_dir);
    promtool(&["test", "rules", "churnwatch.rules.test.yml"], &prom_dir);

    // The demo.
    let demo_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut demo_cmd = churnwatch();
    demo_cmd
        .arg("demo")
        .args(["--listen", &demo_addr.to_string(), "--customers", "2000"]);
    let mut demo = Running::spawn(demo_cmd);
    wait_for_200(
        &mut demo,
        "churnwatch demo",
        demo_addr,
        "/readyz",
        READY_WITHIN,
    );

    // The shipped config, pointed at the demo.
    let tmp = tempfile::tempdir().expect("temp dir");
    prepare_prometheus_dir(tmp.path(), demo_addr);
    promtool(&["check", "config", "prometheus.yml"], tmp.path());

    // Lint of the live exposition.
    let metrics = http_get(demo_addr, "/metrics", HTTP_TIMEOUT).expect("GET /metrics");
    assert_eq!(
        metrics.status,
        200,
        "/metrics: {}",
        tail(&metrics.body, 2000)
    );
    check_metrics(&metrics.body);
    eprintln!(
        "observability: promtool check metrics: no problems in {} lines of /metrics",
        metrics.body.lines().count()
    );

    // A real Prometheus scraping the demo.
    let prom_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut prom_cmd = Command::new("prometheus");
    prom_cmd.current_dir(tmp.path()).args([
        &format!(
            "--config.file={}",
            tmp.path().join("prometheus.yml").display()
        ),
        &format!("--storage.tsdb.path={}", tmp.path().join("data").display()),
        &format!("--web.listen-address={prom_addr}"),
    ]);
    let mut prom = Running::spawn(prom_cmd);
    wait_for_200(&mut prom, "prometheus", prom_addr, "/-/ready", READY_WITHIN);

    // Every dashboard query, every recording rule and the target's health must have data.
    let mut checks = dashboard_checks();
    let dashboard_queries = checks.len();
    let rules = loaded_rules(prom_addr);
    let recording: Vec<&(String, String, String, String)> =
        rules.iter().filter(|r| r.1 == "recording").collect();
    assert!(
        !recording.is_empty() && rules.iter().any(|r| r.1 == "alerting"),
        "Prometheus loaded no recording or no alerting rule: {rules:?}"
    );
    for (name, ..) in &recording {
        let metric = name.split('/').nth(1).unwrap().to_string();
        checks.push(Check {
            source: format!("recording rule {name}"),
            original: metric.clone(),
            expr: metric,
            got: None,
            last: "not queried".into(),
        });
    }
    let up = r#"up{job="churnwatch"} == 1"#;
    checks.push(Check {
        source: "scrape target".into(),
        original: up.into(),
        expr: up.into(),
        got: None,
        last: "not queried".into(),
    });

    let deadline = Instant::now() + DATA_WITHIN;
    let mut rounds = 0;
    loop {
        rounds += 1;
        for c in checks.iter_mut().filter(|c| c.got.is_none()) {
            match query(prom_addr, &c.expr, &mut c.last) {
                Ok(got) => c.got = got,
                Err(e) => panic!(
                    "{}: Prometheus rejected the query\n  {}\n{e}",
                    c.source, c.expr
                ),
            }
        }
        let missing = checks.iter().filter(|c| c.got.is_none()).count();
        if missing == 0 {
            break;
        }
        for p in [&mut demo, &mut prom] {
            if let Some(status) = p.try_status() {
                panic!(
                    "a process exited ({status}) while waiting for data; stderr:\n{}",
                    tail(&p.stderr(), 8000)
                );
            }
        }
        if Instant::now() >= deadline {
            let list: Vec<String> = checks
                .iter()
                .filter(|c| c.got.is_none())
                .map(|c| {
                    format!(
                        "- {}: {}\n    {}\n    sent as: {}",
                        c.source, c.last, c.original, c.expr
                    )
                })
                .collect();
            let targets = api(prom_addr, "/api/v1/targets")
                .map(|v| v["data"]["activeTargets"].to_string())
                .unwrap_or_else(|e| e);
            panic!(
                "{} of {} queries returned no finite value within {DATA_WITHIN:?} ({rounds} rounds):\n{}\n\nscrape targets: {targets}\n\nprometheus stderr:\n{}\n\ndemo stderr:\n{}",
                list.len(),
                checks.len(),
                list.join("\n"),
                tail(&prom.stderr(), 4000),
                tail(&demo.stderr(), 4000)
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    for c in &checks {
        eprintln!(
            "observability: {}: {}",
            c.source,
            c.got.as_deref().unwrap_or("-")
        );
    }

    // Every rule evaluates without error (alerts may be inactive, pending or firing).
    let rules = loaded_rules(prom_addr);
    let broken: Vec<String> = rules
        .iter()
        .filter(|r| r.2 != "ok")
        .map(|r| format!("{} ({}): health {} {}", r.0, r.1, r.2, r.3))
        .collect();
    assert!(
        broken.is_empty(),
        "rules not healthy:\n{}",
        broken.join("\n")
    );
    eprintln!(
        "observability: {dashboard_queries} dashboard queries, {} recording rules and up all have data after {:.0} s; {} rules healthy",
        recording.len(),
        prom.elapsed().as_secs_f64(),
        rules.len()
    );

    // Stop both (Running also kills them on drop if an assertion failed above).
    prom.signal("TERM");
    let out = prom.finish(Duration::from_secs(20));
    assert!(
        !out.timed_out,
        "prometheus did not stop on SIGTERM:\n{}",
        out.describe()
    );
    demo.signal("TERM");
    let out = demo.finish(Duration::from_secs(20));
    assert!(
        !out.timed_out,
        "the demo did not stop on SIGTERM:\n{}",
        out.describe()
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.describe());
    // The alerts it printed (one JSON line each) match the shipped schema.
    let alerts = out
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(common::schema::parse_valid_alert)
        .count();
    assert!(alerts > 0, "the demo printed no alert:\n{}", out.describe());
}
