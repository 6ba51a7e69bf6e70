//! Black-box tests of the `churnwatch` command line: config validation through `check-config`
//! and `run`, including environment overrides.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::process::{churnwatch, run, Output};

/// No config check should take anywhere near this long; it only bounds a hang.
const LIMIT: Duration = Duration::from_secs(30);
const SHIPPED: &str = "config/churnwatch.toml";

fn check_config(path: impl AsRef<Path>, env: &[(&str, &str)]) -> Output {
    let mut cmd = churnwatch();
    cmd.arg("check-config").arg(path.as_ref());
    cmd.envs(env.iter().copied());
    run(cmd, LIMIT)
}

fn write_config(dir: &tempfile::TempDir, name: &str, contents: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).expect("writing a test config");
    path
}

/// A clean refusal: a normal non-zero exit (no crash, no hang), every needle on stderr, and no
/// "OK" line.
fn assert_rejected(out: &Output, needles: &[&str]) {
    assert!(!out.timed_out, "hung:\n{}", out.describe());
    assert!(
        !out.status.success(),
        "expected failure:\n{}",
        out.describe()
    );
    assert!(
        out.status.code().is_some(),
        "killed by a signal instead of exiting:\n{}",
        out.describe()
    );
    assert!(
        !out.stderr.contains("panicked"),
        "panicked:\n{}",
        out.describe()
    );
    assert!(
        !out.stdout.contains(": OK"),
        "printed OK although it failed:\n{}",
        out.describe()
    );
    for n in needles {
        assert!(
            out.stderr.contains(n),
            "stderr does not mention {n:?}:\n{}",
            out.describe()
        );
    }
}

fn assert_ok(out: &Output) -> String {
    assert!(
        !out.timed_out && out.status.success(),
        "expected success:\n{}",
        out.describe()
    );
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains(": OK"))
        .unwrap_or_else(|| panic!("no OK line:\n{}", out.describe()))
        .to_string();
    line
}

/// The version printed on the OK line (`... OK (config_version <version>, ...`).
fn printed_version(ok_line: &str) -> String {
    let rest = ok_line
        .split("config_version ")
        .nth(1)
        .unwrap_or_else(|| panic!("no config_version on {ok_line:?}"));
    rest.split([',', ')', ' ']).next().unwrap_or("").to_string()
}

#[test]
fn check_config_accepts_the_shipped_config() {
    let out = check_config(SHIPPED, &[]);
    let line = assert_ok(&out);
    assert!(line.starts_with(SHIPPED), "{line}");
    // config_version = "" in the shipped file: a content hash, "cfg-" + 12 hex digits.
    let version = printed_version(&line);
    let hex = version
        .strip_prefix("cfg-")
        .unwrap_or_else(|| panic!("version {version:?} is not a content hash; line: {line}"));
    assert!(
        hex.len() == 12 && hex.chars().all(|c| c.is_ascii_hexdigit()),
        "version {version:?} is not cfg-<12 hex digits>; line: {line}"
    );
    assert!(line.contains("localhost:9092"), "{line}");

    // The hash is stable, and `check-config` without a path checks the shipped file.
    let mut cmd = churnwatch();
    cmd.arg("check-config");
    let again = run(cmd, LIMIT);
    let line2 = assert_ok(&again);
    assert_eq!(printed_version(&line2), version, "{line} vs {line2}");
}

#[test]
fn check_config_prints_a_labelled_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        "labelled.toml",
        "config_version = \"prod-7\"\n[alerting]\nenter_threshold = 0.6\n",
    );
    let line = assert_ok(&check_config(&path, &[]));
    assert_eq!(printed_version(&line), "prod-7", "{line}");
}

#[test]
fn check_config_rejects_an_unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, "typo.toml", "[alerting]\nenter_treshold = 0.5\n");
    assert_rejected(&check_config(&path, &[]), &["enter_treshold"]);
}

#[test]
fn check_config_rejects_an_out_of_range_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, "range.toml", "[alerting]\nenter_threshold = 1.5\n");
    assert_rejected(
        &check_config(&path, &[]),
        &["alerting.enter_threshold", "1.5"],
    );
}

#[test]
fn check_config_requires_exit_threshold_below_enter_threshold() {
    let dir = tempfile::tempdir().unwrap();
    for (name, toml) in [
        (
            "equal.toml",
            "[alerting]\nenter_threshold = 0.5\nexit_threshold = 0.5\n",
        ),
        (
            "above.toml",
            "[alerting]\nenter_threshold = 0.5\nexit_threshold = 0.6\n",
        ),
    ] {
        let path = write_config(&dir, name, toml);
        assert_rejected(&check_config(&path, &[]), &["alerting.exit_threshold"]);
    }
}

#[test]
fn check_config_rejects_a_wrong_type() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, "type.toml", "[windows]\nrecent_buckets = \"seven\"\n");
    assert_rejected(&check_config(&path, &[]), &["windows.recent_buckets"]);
}

#[test]
fn check_config_reports_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-config.toml");
    let out = check_config(&path, &[]);
    assert_rejected(&out, &[&path.display().to_string()]);
    let lower = out.stderr.to_lowercase();
    assert!(
        ["does not exist", "not found", "no such file"]
            .iter()
            .any(|m| lower.contains(m)),
        "the message does not say the file is missing:\n{}",
        out.describe()
    );
}

#[test]
fn run_refuses_to_start_with_an_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, "typo.toml", "[alerting]\nenter_treshold = 0.5\n");
    let mut cmd = churnwatch();
    cmd.arg("run").arg("--config").arg(&path);
    let out = run(cmd, LIMIT);
    assert_rejected(&out, &["enter_treshold"]);
    assert!(
        out.elapsed < Duration::from_secs(10),
        "took {:.1} s to refuse:\n{}",
        out.elapsed.as_secs_f64(),
        out.describe()
    );
}

#[test]
fn run_refuses_to_start_with_an_invalid_environment_override() {
    let mut cmd: Command = churnwatch();
    cmd.args(["run", "--config", SHIPPED])
        .env("CHURNWATCH_ALERTING__ENTER_THRESHOLD", "1.5");
    let out = run(cmd, LIMIT);
    assert_rejected(&out, &["alerting.enter_threshold", "1.5"]);
    assert!(
        out.elapsed < Duration::from_secs(10),
        "took {:.1} s to refuse:\n{}",
        out.elapsed.as_secs_f64(),
        out.describe()
    );
}

#[test]
fn environment_overrides_are_validated() {
    let out = check_config(SHIPPED, &[("CHURNWATCH_ALERTING__ENTER_THRESHOLD", "1.5")]);
    assert_rejected(&out, &["alerting.enter_threshold", "1.5"]);
}

#[test]
fn environment_overrides_are_applied() {
    let out = check_config(SHIPPED, &[("CHURNWATCH_KAFKA__BROKERS", "b1:9092")]);
    let line = assert_ok(&out);
    assert!(line.contains("b1:9092"), "{line}");
    assert!(!line.contains("localhost:9092"), "{line}");
}
