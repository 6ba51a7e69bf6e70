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

/// An event time kept to the second in 4 bytes: what a customer's state stores (a dozen of
/// them per customer, so `i64` milliseconds would cost 48 bytes per customer more). Whole
/// seconds since the Unix epoch as `u32`, which covers 1970 to 2106: events outside that are
/// invalid ([`crate::event::MAX_TS_MS`]), and derived times beyond it saturate. Read back as
/// milliseconds (a multiple of 1,000), and serialized as `i64` milliseconds, so changelog
/// records keep their layout.
#[derive(
    Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(from = "i64", into = "i64")]
pub struct Stamp(u32);

/// The latest time a [`Stamp`] holds, in milliseconds (`u32::MAX` seconds is
/// [`MaybeStamp::NONE`]).
pub const MAX_STAMP_MS: i64 = (u32::MAX as i64 - 1) * 1000;

impl Stamp {
    /// `ms` to the second (rounded down; clamped to 1970..[`MAX_STAMP_MS`]).
    pub fn of_ms(ms: i64) -> Stamp {
        Stamp((ms.clamp(0, MAX_STAMP_MS) / 1000) as u32)
    }

    /// In milliseconds since the epoch.
    pub fn ms(self) -> i64 {
        i64::from(self.0) * 1000
    }
}

impl From<i64> for Stamp {
    fn from(ms: i64) -> Self {
        Stamp::of_ms(ms)
    }
}

impl From<Stamp> for i64 {
    fn from(s: Stamp) -> Self {
        s.ms()
    }
}

impl std::fmt::Debug for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.ms().fmt(f)
    }
}

/// An optional [`Stamp`] in 4 bytes (`Option<Stamp>` takes 8): `u32::MAX` stands for none.
/// Serialized as an `Option<i64>` of milliseconds.
#[derive(Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "Option<i64>", into = "Option<i64>")]
pub struct MaybeStamp(u32);

impl MaybeStamp {
    pub const NONE: MaybeStamp = MaybeStamp(u32::MAX);

    /// `ms`, to the second.
    pub fn some(ms: i64) -> MaybeStamp {
        MaybeStamp(Stamp::of_ms(ms).0)
    }

    /// In milliseconds since the epoch.
    pub fn get(self) -> Option<i64> {
        self.is_some().then(|| Stamp(self.0).ms())
    }

    pub fn is_some(self) -> bool {
        self.0 != u32::MAX
    }

    pub fn is_none(self) -> bool {
        self.0 == u32::MAX
    }
}

impl Default for MaybeStamp {
    fn default() -> Self {
        MaybeStamp::NONE
    }
}

impl From<Option<i64>> for MaybeStamp {
    fn from(v: Option<i64>) -> Self {
        v.map_or(MaybeStamp::NONE, MaybeStamp::some)
    }
}

impl From<MaybeStamp> for Option<i64> {
    fn from(v: MaybeStamp) -> Self {
        v.get()
    }
}

impl std::fmt::Debug for MaybeStamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_four_bytes_to_the_second_and_stored_as_milliseconds() {
        assert_eq!(std::mem::size_of::<Stamp>(), 4);
        assert_eq!(std::mem::size_of::<MaybeStamp>(), 4);
        let ms = 1_700_000_123_456;
        assert_eq!(Stamp::of_ms(ms).ms(), 1_700_000_123_000, "rounded down");
        assert_eq!(Stamp::of_ms(-5).ms(), 0);
        assert_eq!(Stamp::of_ms(i64::MAX).ms(), MAX_STAMP_MS);
        assert!(
            MaybeStamp::some(i64::MAX).is_some(),
            "saturates short of none"
        );
        for v in [None, Some(0), Some(1_700_000_000_000), Some(MAX_STAMP_MS)] {
            let m = MaybeStamp::from(v);
            assert_eq!(m.get(), v);
            assert_eq!(m.is_some(), v.is_some());
            let bytes = postcard::to_allocvec(&m).unwrap();
            assert_eq!(bytes, postcard::to_allocvec(&v).unwrap());
            assert_eq!(postcard::from_bytes::<MaybeStamp>(&bytes).unwrap(), m);
        }
        let s = Stamp::of_ms(ms);
        let bytes = postcard::to_allocvec(&s).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&1_700_000_123_000i64).unwrap());
        assert_eq!(postcard::from_bytes::<Stamp>(&bytes).unwrap(), s);
        assert_eq!(MaybeStamp::default(), MaybeStamp::NONE);
        assert_eq!(format!("{:?}", MaybeStamp::some(3_000)), "Some(3000)");
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
