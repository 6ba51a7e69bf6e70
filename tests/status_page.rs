//! The status page in a real browser: headless Chromium (Debian's `chromium` package) loads
//! `/` of the running demo, which must render its health and list at-risk customers; a
//! customer's page must show their reasons; a screenshot of each is saved under
//! `target/tmp/` (the test's output names the files). The JSON views are checked beside.
//!
//! Needs `chromium` (`bash .ci/run` installs it); the test fails, with that message, without it.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::process::{churnwatch, free_port, http_get, Running};

const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

fn chromium() -> PathBuf {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new(c).arg("--version").output() {
            if out.status.success() {
                return PathBuf::from(c);
            }
        }
    }
    panic!(
        "headless Chromium is needed: install Debian's `chromium` package \
         (apt-get install chromium; bash .ci/run does)"
    );
}

/// Run headless Chromium on `url` with `args` (a fresh profile, no background networking:
/// this machine has no network).
fn headless(browser: &Path, profile: &Path, url: &str, args: &[&str]) -> String {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed on {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn screenshot(browser: &Path, profile: &Path, url: &str, name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_file(&path);
    headless(
        browser,
        profile,
        url,
        &[
            &format!("--screenshot={}", path.display()),
            "--window-size=1280,1400",
        ],
    );
    let png = std::fs::read(&path).unwrap_or_else(|e| panic!("no screenshot {path:?}: {e}"));
    assert!(png.starts_with(b"\x89PNG"), "{path:?} is not a PNG");
    // A blank page compresses to a few kilobytes; a rendered table does not.
    assert!(
        png.len() > 20_000,
        "{path:?} looks blank ({} bytes)",
        png.len()
    );
    eprintln!("status page: screenshot saved to {}", path.display());
    path
}

#[test]
fn the_status_page_renders_in_chromium_and_lists_at_risk_customers() {
    let browser = chromium();
    let at = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut cmd = churnwatch();
    cmd.args(["demo", "--duration", "90", "--customers", "2000"])
        .args(["--listen", &at.to_string()]);
    let mut demo = Running::spawn(cmd);

    // Wait for at-risk customers (the demo replays weeks of history within seconds).
    let start = Instant::now();
    let status: Value = loop {
        if let Ok(r) = http_get(at, "/status.json", HTTP_TIMEOUT) {
            if r.status == 200 {
                let v: Value = serde_json::from_str(&r.body).expect("/status.json is JSON");
                if v["at_risk"]["total"].as_u64().unwrap_or(0) >= 5 {
                    break v;
                }
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no at-risk customers on /status.json within 60 s\n{}",
            demo.stderr()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(status["health"]["ready"], true);
    let listed = status["at_risk"]["customers"].as_array().unwrap();
    let values: Vec<f64> = listed
        .iter()
        .map(|c| c["value_at_risk"].as_f64().unwrap())
        .collect();
    assert!(!values.is_empty());
    for c in listed {
        assert_ne!(c["tier"], "none", "{c}");
        assert!(c["p_churn"].as_f64().is_some(), "{c}");
    }

    // The page as Chromium renders it: health, the at-risk table with links, the lookup form.
    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{at}/");
    let dom = headless(&browser, profile.path(), &url, &["--dump-dom"]);
    assert!(dom.contains("id=\"health\""), "{dom}");
    assert!(dom.contains(">READY<"), "{dom}");
    assert!(dom.contains("id=\"at-risk\""), "no at-risk table:\n{dom}");
    let rows = dom.matches("<a href=\"/customers/").count();
    assert!(rows >= 5, "{rows} at-risk rows:\n{dom}");
    assert!(dom.contains("name=\"id\""), "no lookup form:\n{dom}");
    screenshot(&browser, profile.path(), &url, "status-page.png");

    // A customer's page: found through the link, with their reasons.
    let first = &listed[0]["customer_id"].as_str().unwrap();
    let page = format!("http://{at}/customers/{first}");
    let dom = headless(&browser, profile.path(), &page, &["--dump-dom"]);
    assert!(dom.contains(first), "{dom}");
    assert!(dom.contains("id=\"customer\""), "{dom}");
    assert!(dom.contains("Reasons"), "{dom}");
    screenshot(&browser, profile.path(), &page, "customer-page.png");

    // The same customer as JSON; an unknown one is a 404.
    let json = http_get(at, &format!("/customers/{first}?format=json"), HTTP_TIMEOUT).unwrap();
    assert_eq!(json.status, 200);
    let v: Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(v["customer_id"], *first);
    assert!(!v["reasons"].as_array().unwrap().is_empty(), "{v}");
    let missing = http_get(at, "/customers/no-such-customer", HTTP_TIMEOUT).unwrap();
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("not found"));

    demo.signal("TERM");
    let out = demo.finish(Duration::from_secs(20));
    assert!(!out.timed_out, "the demo did not stop on SIGTERM");
    // The alerts it printed (one JSON line each) match the shipped schema.
    for line in out.stdout.lines().filter(|l| !l.trim().is_empty()) {
        common::schema::parse_valid_alert(line);
    }
}
