//! The shipped alert JSON Schema (`schema/alert.schema.json`), for every end-to-end test that
//! reads alerts: each alert a test sees must validate.

use std::sync::OnceLock;

use jsonschema::Validator;
use serde_json::Value;

const SCHEMA_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/alert.schema.json");

/// The compiled schema (draft 2020-12, formats checked), once per test binary.
pub fn alert_validator() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| {
        let text = std::fs::read_to_string(SCHEMA_PATH).expect("schema/alert.schema.json exists");
        let schema: Value = serde_json::from_str(&text).expect("the schema is JSON");
        jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .expect("the schema compiles as draft 2020-12")
    })
}

/// Why `alert` does not validate (empty: it does).
pub fn alert_errors(alert: &Value) -> Vec<String> {
    alert_validator()
        .iter_errors(alert)
        .map(|e| format!("{} (at {})", e, e.instance_path()))
        .collect()
}

/// Panic, showing the alert, unless it validates.
pub fn assert_valid_alert(alert: &Value) {
    let errs = alert_errors(alert);
    assert!(
        errs.is_empty(),
        "alert does not match schema/alert.schema.json:\n  {}\nalert: {alert}",
        errs.join("\n  ")
    );
}

/// Parse one alert (a JSON line or record value) and check it against the schema.
pub fn parse_valid_alert(text: &str) -> Value {
    let v: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("alert is not JSON ({e}): {text}"));
    assert_valid_alert(&v);
    v
}
