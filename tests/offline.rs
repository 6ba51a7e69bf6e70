//! The analysts' tools end to end, through the real binary: `simulate` writes a dataset with
//! ground truth, `fit` estimates priors from it, `score` ranks the customers at a date and
//! `backtest` (with `--json` and `--sweep`) measures the scorer against the labels.

mod common;

use std::path::Path;
use std::time::Duration;

use common::process::{churnwatch, run, Output};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(300);

fn ok(args: &[&str]) -> Output {
    let mut cmd = churnwatch();
    cmd.args(args);
    let out = run(cmd, LIMIT);
    assert!(
        out.status.success() && !out.timed_out,
        "failed:\n{}",
        out.describe()
    );
    out
}

/// Run churnwatch with `args`; it must fail with a message naming each of `named`.
fn fails_naming(args: &[&str], named: &[&str]) {
    let mut cmd = churnwatch();
    cmd.args(args);
    let out = run(cmd, LIMIT);
    assert!(!out.status.success(), "succeeded:\n{}", out.describe());
    assert!(
        named.iter().all(|n| out.stderr.contains(n)),
        "{named:?} not all named:\n{}",
        out.describe()
    );
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn simulate_fit_score_and_backtest() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&[
        "simulate",
        "--customers",
        "600",
        "--days",
        "200",
        "--seed",
        "7",
        "--out",
        path(&data),
    ]);
    let events = data.join("events.jsonl");
    let labels = data.join("labels.csv");
    let labels_text = std::fs::read_to_string(&labels).unwrap();
    assert!(labels_text.starts_with("customer_id,churned,decline_onset,churned_at,segment\n"));
    assert_eq!(labels_text.lines().count(), 601);

    // Priors fitted by maximum likelihood, written as a file the config can reference.
    let priors = dir.path().join("priors.toml");
    let fit = ok(&["fit", "--input", path(&events), "--out", path(&priors)]);
    assert!(fit.stdout.contains("MBG/NBD fit"), "{}", fit.describe());
    assert!(fit.stdout.contains("log-likelihood"), "{}", fit.describe());
    let parsed =
        churnwatch::model::Priors::from_toml_str(&std::fs::read_to_string(&priors).unwrap())
            .expect("fit writes a valid priors file");
    assert!(parsed.purchases.is_some(), "{parsed:?}");
    // Each fitted model's history discount was checked on held-out history and is written.
    assert!(
        fit.stdout.contains("history discount: "),
        "{}",
        fit.describe()
    );
    for spec in [parsed.activity, parsed.purchases].into_iter().flatten() {
        assert!(spec.discount > 0.0 && spec.discount <= 1.0, "{spec:?}");
    }
    let config = dir.path().join("churnwatch.toml");
    std::fs::write(&config, "[churn]\npriors = \"priors.toml\"\n").unwrap();
    let check = ok(&["check-config", path(&config)]);
    assert!(check.stdout.contains("OK"), "{}", check.describe());
    assert!(
        check.stdout.contains("churn priors ") && check.stdout.contains("priors.toml"),
        "{}",
        check.describe()
    );

    // Scores at a cut-off: one row per customer seen before it, highest risk first.
    let scores = dir.path().join("scores.csv");
    ok(&[
        "score",
        "--input",
        path(&events),
        "--as-of",
        "2026-05-01T00:00:00Z",
        "--config",
        path(&config),
        "--horizon-days",
        "60",
        "--out",
        path(&scores),
    ]);
    let mut rdr = csv::Reader::from_path(&scores).unwrap();
    assert_eq!(
        rdr.headers().unwrap(),
        vec![
            "customer_id",
            "risk_score",
            "p_churn",
            "tier",
            "lifecycle",
            "top_reason"
        ]
    );
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    assert!(rows.len() > 100 && rows.len() < 600, "{}", rows.len());
    let risks: Vec<f64> = rows.iter().map(|r| r[1].parse().unwrap()).collect();
    assert!(risks.windows(2).all(|w| w[0] >= w[1]), "sorted by risk");
    for r in &rows {
        let p: f64 = r[2].parse().unwrap();
        assert!((0.0..=1.0).contains(&p), "{r:?}");
        assert!(["none", "low", "medium", "high"].contains(&&r[3]), "{r:?}");
        assert!(
            ["new", "active", "declining", "lapsed"].contains(&&r[4]),
            "{r:?}"
        );
    }
    assert!(
        rows.iter().any(|r| !r[5].is_empty()),
        "some reason is given"
    );

    // The backtest as JSON, with a small sweep.
    let bt = ok(&[
        "backtest",
        "--input",
        path(&events),
        "--labels",
        path(&labels),
        "--config",
        path(&config),
        "--json",
        "--sweep",
        "--grid",
        "0.4,0.6,0.8",
        "--min-precision",
        "0.5",
    ]);
    let v: Value = serde_json::from_str(&bt.stdout).expect("--json prints JSON");
    let report = &v["report"];
    let num = |p: &str| {
        report
            .pointer(p)
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("{p} in {report}"))
    };
    assert!(num("/events") > 50_000.0);
    // The risk score ranks churners above the others, better than chance.
    assert!(num("/ranking/roc_auc_risk") > 0.6, "{report}");
    // p_churn with fitted priors is calibrated against what happened next.
    assert!(num("/calibration/table/ece") < 0.08, "{report}");
    assert!(num("/alerts/at_risk_alerts") > 0.0);
    assert!(num("/alerts/false_alarm_rate") < 0.5, "{report}");
    let rows = v["sweep"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    // A higher threshold never raises more alerts.
    let per_day: Vec<f64> = rows
        .iter()
        .map(|r| {
            r["at_risk_alerts_per_1000_customers_per_day"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert!(per_day.windows(2).all(|w| w[0] >= w[1]), "{per_day:?}");

    // The human-readable report is a table.
    let text = ok(&[
        "backtest",
        "--input",
        path(&events),
        "--labels",
        path(&labels),
    ]);
    for needle in [
        "ROC AUC",
        "lead time",
        "Calibration of p_churn",
        "By segment",
    ] {
        assert!(text.stdout.contains(needle), "{needle}:\n{}", text.stdout);
    }
}

#[test]
fn bad_offline_arguments_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let scores = dir.path().join("s.csv");
    let args = [
        "score",
        "--input",
        "/nonexistent/events.jsonl",
        "--as-of",
        "yesterday",
        "--out",
        path(&scores),
    ];
    fails_naming(&args, &["--as-of"]);

    // fit reads its input twice (the held-out check): a missing one is named once, up front.
    let priors_out = dir.path().join("p.toml");
    let args = [
        "fit",
        "--input",
        "/nonexistent/events.jsonl",
        "--out",
        path(&priors_out),
    ];
    fails_naming(&args, &["/nonexistent/events.jsonl", "opening"]);

    let priors = dir.path().join("bad-priors.toml");
    std::fs::write(
        &priors,
        "[activity]\nr = -1.0\nalpha = 1.0\na = 1.0\nb = 1.0\n",
    )
    .unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[churn]\npriors = \"bad-priors.toml\"\n").unwrap();
    fails_naming(
        &["check-config", path(&config)],
        &["churn.priors", "activity.r"],
    );
}

/// `score` (and `fit`) keep every customer of a long history: the live pipeline's eviction of
/// customers lapsed for `state.evict_lapsed_after_days` (365) does not apply offline.
#[test]
fn score_keeps_customers_quiet_for_over_a_year() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let mut lines = String::new();
    for (id, ts) in [
        ("c-old", "2024-01-10T10:00:00Z"),
        ("c-new", "2025-05-01T10:00:00Z"),
        ("c-new", "2025-06-01T10:00:00Z"),
    ] {
        lines.push_str(&format!(
            "{{\"type\":\"purchase\",\"customer_id\":\"{id}\",\"ts\":\"{ts}\",\"amount\":10}}\n"
        ));
    }
    std::fs::write(&events, lines).unwrap();
    let scores = dir.path().join("scores.csv");
    ok(&[
        "score",
        "--input",
        path(&events),
        "--as-of",
        "2025-07-01T00:00:00Z",
        "--out",
        path(&scores),
    ]);
    let text = std::fs::read_to_string(&scores).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    let old = text.lines().find(|l| l.starts_with("c-old,")).expect(&text);
    let p_churn: f64 = old.split(',').nth(2).unwrap().parse().unwrap();
    assert!(p_churn > 0.9, "{old}");
}
