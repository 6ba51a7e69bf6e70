//! Event-time helpers. Times are milliseconds since the Unix epoch (UTC) as `i64`.

use chrono::{DateTime, SecondsFormat, Utc};

/// One hour / day in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

/// Parse an RFC 3339 timestamp into milliseconds since the epoch.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Format milliseconds since the epoch as RFC 3339 UTC with millisecond precision.
pub fn format_rfc3339_ms(ms: i64) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => "1970-01-01T00:00:00.000Z".to_string(),
    }
}

/// The wall clock in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Index of the bucket of width `bucket_ms` that holds `ts_ms` (floor division).
pub fn bucket_index(ts_ms: i64, bucket_ms: i64) -> i64 {
    ts_ms.div_euclid(bucket_ms)
}

/// Milliseconds expressed in days.
pub fn ms_to_days(ms: i64) -> f64 {
    ms as f64 / DAY_MS as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let ms = parse_rfc3339_ms("2026-03-01T10:15:00Z").unwrap();
        assert_eq!(format_rfc3339_ms(ms), "2026-03-01T10:15:00.000Z");
        assert_eq!(
            parse_rfc3339_ms("2026-03-01T11:15:00+01:00").unwrap(),
            ms,
            "offsets are honoured"
        );
        assert!(parse_rfc3339_ms("yesterday").is_none());
    }

    #[test]
    fn buckets_floor_before_epoch() {
        assert_eq!(bucket_index(0, DAY_MS), 0);
        assert_eq!(bucket_index(DAY_MS - 1, DAY_MS), 0);
        assert_eq!(bucket_index(-1, DAY_MS), -1);
    }
}
