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

/// An optional event time in 8 bytes, where `Option<i64>` takes 16: a customer's state keeps
/// several, and each is 8 MB of padding per million customers. `i64::MIN` (long before any
/// valid event time) stands for none. Serialized as an `Option<i64>`.
#[derive(Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "Option<i64>", into = "Option<i64>")]
pub struct MaybeMs(i64);

impl MaybeMs {
    pub const NONE: MaybeMs = MaybeMs(i64::MIN);

    /// `ms` (which must not be `i64::MIN`).
    pub fn some(ms: i64) -> MaybeMs {
        debug_assert_ne!(ms, i64::MIN);
        MaybeMs(ms)
    }

    pub fn get(self) -> Option<i64> {
        (self.0 != i64::MIN).then_some(self.0)
    }

    pub fn is_some(self) -> bool {
        self.0 != i64::MIN
    }

    pub fn is_none(self) -> bool {
        self.0 == i64::MIN
    }
}

impl Default for MaybeMs {
    fn default() -> Self {
        MaybeMs::NONE
    }
}

impl From<Option<i64>> for MaybeMs {
    fn from(v: Option<i64>) -> Self {
        v.map_or(MaybeMs::NONE, MaybeMs)
    }
}

impl From<MaybeMs> for Option<i64> {
    fn from(v: MaybeMs) -> Self {
        v.get()
    }
}

impl std::fmt::Debug for MaybeMs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maybe_ms_is_eight_bytes_and_stored_as_an_option() {
        assert_eq!(std::mem::size_of::<MaybeMs>(), 8);
        for v in [None, Some(0), Some(-5), Some(1_700_000_000_000)] {
            let m = MaybeMs::from(v);
            assert_eq!(m.get(), v);
            assert_eq!(m.is_some(), v.is_some());
            let bytes = postcard::to_allocvec(&m).unwrap();
            assert_eq!(bytes, postcard::to_allocvec(&v).unwrap());
            assert_eq!(postcard::from_bytes::<MaybeMs>(&bytes).unwrap(), m);
        }
        assert_eq!(MaybeMs::default(), MaybeMs::NONE);
        assert_eq!(format!("{:?}", MaybeMs::some(3)), "Some(3)");
    }

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
