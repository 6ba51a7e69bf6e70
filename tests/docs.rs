//! The README documents every metric and every config key: a metric or key added without a
//! line in its table fails here.

use churnwatch::config::RawConfig;
use churnwatch::metrics::Metrics;

/// Fail, listing them, if some of `names` open no row of the README's tables (a row opens
/// with `| `name``).
fn assert_documented(names: &[String], table: &str) {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md exists");
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !readme.contains(&format!("| `{n}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "not in the README's {table} table: {missing:?}"
    );
}

#[test]
fn every_metric_is_in_the_readme_metrics_table() {
    let text = Metrics::new().render();
    // A histogram's row names its series, the first being `<name>_bucket`.
    let names: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [name, "histogram"] => Some(format!("{name}_bucket")),
            [name, _] => Some(name.to_string()),
            _ => None,
        })
        .collect();
    assert!(names.len() > 20, "{names:?}");
    assert_documented(&names, "metrics");
}

/// Dotted paths of every leaf of `v` (`section.key`, `section.sub.key`).
fn leaves(prefix: &str, v: &toml::Value, out: &mut Vec<String>) {
    match v {
        toml::Value::Table(t) if !t.is_empty() => {
            for (k, v) in t {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&p, v, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn every_config_key_is_in_the_readme_configuration_table() {
    let defaults = toml::Value::try_from(RawConfig::default()).expect("defaults serialize");
    let mut keys = Vec::new();
    leaves("", &defaults, &mut keys);
    assert!(keys.len() > 40, "{keys:?}");
    assert_documented(&keys, "configuration");
}
