//! Hostile input: the event decoder and the config parser never panic, whatever the bytes, and
//! the decoder's fast path decides every mutated event as `serde_json` alone does.
//!
//! Property-based fuzzing (proptest): arbitrary bytes, and random mutations (flips, inserts,
//! deletions, splices) of the seed corpus kept in `tests/fuzz-corpus/{decode,config}/`
//! (absurd timestamps, huge and negative numbers, invalid UTF-8, deeply nested and oversized
//! JSON, duplicate keys, ...). The number of cases is bounded so that CI time is too; raise it
//! with `PROPTEST_CASES=100000 cargo test --release --test hostile_input` for a longer run.
//! Every seed is also checked as is, with the outcome it must have.

use std::path::PathBuf;

use proptest::prelude::*;

use churnwatch::config::{Config, RawConfig};
use churnwatch::event::{decode, decode_without_fast_path, DecodeLimits};
use churnwatch::time::now_ms;

fn corpus(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-corpus")
        .join(kind);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(out.len() >= 5, "the {kind} corpus is missing");
    out
}

fn limits() -> DecodeLimits {
    DecodeLimits::from_config(&Config::default().input, now_ms())
}

fn parse_config(bytes: &[u8]) -> Result<Config, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    Config::from_toml_str(text).map_err(|e| e.to_string())
}

#[test]
fn decode_seeds_have_the_expected_outcome() {
    let l = limits();
    for (name, bytes) in corpus("decode") {
        let r = decode(&bytes, &l);
        let valid = matches!(
            name.as_str(),
            "visit.json" | "purchase.json" | "engagement_tiny.json"
        );
        assert_eq!(r.is_ok(), valid, "{name}: {r:?}");
        if let Ok(ev) = r {
            assert!(!ev.customer_id.is_empty());
        }
    }
}

#[test]
fn config_seeds_have_the_expected_outcome() {
    for (name, bytes) in corpus("config") {
        let r = parse_config(&bytes);
        assert_eq!(r.is_ok(), name == "shipped.toml", "{name}: {r:?}");
        if let Err(e) = r {
            // Errors name the key, and never echo a secret.
            assert!(!e.contains("hunter2"), "{name}: {e}");
            assert!(e.contains('`') || e.contains("line"), "{name}: {e}");
        }
    }
}

/// A random edit of one seed.
fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (
        0..seeds.len(),
        proptest::collection::vec((any::<u8>(), any::<u16>(), 0u8..4), 1..8),
    )
        .prop_map(move |(i, edits)| {
            let mut b = seeds[i].clone();
            for (byte, at, op) in edits {
                let at = if b.is_empty() {
                    0
                } else {
                    at as usize % b.len()
                };
                match op {
                    0 if !b.is_empty() => b[at] = byte,
                    1 => b.insert(at, byte),
                    2 if !b.is_empty() => {
                        b.remove(at);
                    }
                    _ => {
                        // Splice a copy of a slice of itself (nesting, repetition).
                        let end = (at + byte as usize).min(b.len());
                        let piece = b[at..end].to_vec();
                        b.splice(at..at, piece);
                    }
                }
            }
            b
        })
}

fn seeds(kind: &str) -> Vec<Vec<u8>> {
    corpus(kind).into_iter().map(|(_, b)| b).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(3000)
    ))]

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode(&bytes, &limits());
    }

    #[test]
    fn decode_never_panics_on_mutated_events(bytes in mutated(seeds("decode"))) {
        let l = limits();
        let decoded = decode(&bytes, &l);
        // The decoder's fast path changes nothing: the same event, or the same error.
        prop_assert_eq!(&decoded, &decode_without_fast_path(&bytes, &l));
        if let Ok(ev) = decoded {
            prop_assert!(!ev.customer_id.is_empty());
        }
    }

    #[test]
    fn config_never_panics_on_arbitrary_text(text in "\\PC{0,512}") {
        let _ = Config::from_toml_str(&text);
    }

    #[test]
    fn config_never_panics_on_mutated_configs(bytes in mutated(seeds("config"))) {
        if let Ok(cfg) = parse_config(&bytes) {
            // What validates is usable: re-validating the defaults-plus-file still works.
            prop_assert!(!cfg.version.is_empty());
        }
    }

    #[test]
    fn raw_config_values_out_of_range_are_errors_not_panics(
        bucket in any::<u64>(), recent in any::<u32>(), enter in any::<f64>(), lateness in any::<u64>()
    ) {
        let mut raw = RawConfig::default();
        raw.windows.bucket_secs = bucket;
        raw.windows.recent_buckets = recent;
        raw.alerting.enter_threshold = enter;
        raw.input.allowed_lateness_secs = lateness;
        let _ = raw.validate();
    }
}
