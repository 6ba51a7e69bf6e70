//! Event-time helpers. Times are milliseconds since the Unix epoch (UTC) as `i64`.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

/// One hour / day in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

/// Parse an RFC 3339 timestamp into milliseconds since the epoch.
///
/// The form producers send (`2026-01-01T00:02:54.304Z`: milliseconds or none, `Z` or a
/// `±HH:MM` offset) is read by position (`canonical_rfc3339_ms`, a fifth of the cost);
/// anything else (other fractions, a lower-case `t`, a leap second, a malformed string) is
/// left to chrono's parser, which decides. Both give the same result wherever the first one
/// answers (tested against each other).
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    canonical_rfc3339_ms(s.as_bytes()).or_else(|| {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_millis())
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.mmm](Z|±HH:MM)` by position, or `None` for anything else (not
/// necessarily invalid: see [`parse_rfc3339_ms`]).
fn canonical_rfc3339_ms(b: &[u8]) -> Option<i64> {
    let digits = |from: usize, n: usize| -> Option<u32> {
        b.get(from..from + n)?.iter().try_fold(0u32, |v, &c| {
            c.is_ascii_digit().then(|| v * 10 + u32::from(c - b'0'))
        })
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(at(4, b'-') && at(7, b'-') && at(10, b'T') && at(13, b':') && at(16, b':')) {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (hour, minute, second) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    let (milli, zone) = if at(19, b'.') {
        (digits(20, 3)?, 23)
    } else {
        (0, 19)
    };
    let offset_secs = match b.get(zone..)? {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (digits(zone + 1, 2)?, digits(zone + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let secs = i64::from(h * 3600 + m * 60);
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let local = NaiveDate::from_ymd_opt(year as i32, month, day)?
        .and_hms_opt(hour, minute, second)?
        .and_utc()
        .timestamp();
    Some((local - offset_secs) * 1000 + i64::from(milli))
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
    /// The epoch, the default.
    pub const EPOCH: Stamp = Stamp(0);

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

/// An event time to the millisecond in 6 bytes (`i64` takes 8, and 8-byte alignment): the
/// low 48 bits of the milliseconds since the epoch, which hold every valid event time
/// ([`crate::event::MAX_TS_MS`]) exactly. Times outside 0..2^48 ms are clamped. Serialized as
/// `i64` milliseconds, so changelog records keep their layout.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(from = "i64", into = "i64")]
#[repr(Rust, packed(2))]
pub struct StampMs {
    low: u32,
    high: u16,
}

impl StampMs {
    const MAX: i64 = (1 << 48) - 1;

    #[inline]
    pub fn of_ms(ms: i64) -> StampMs {
        let v = ms.clamp(0, Self::MAX) as u64;
        StampMs {
            low: v as u32,
            high: (v >> 32) as u16,
        }
    }

    #[inline]
    pub fn ms(self) -> i64 {
        i64::from(self.high) << 32 | i64::from(self.low)
    }
}

impl PartialOrd for StampMs {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for StampMs {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.ms().cmp(&other.ms())
    }
}

impl From<i64> for StampMs {
    fn from(ms: i64) -> Self {
        StampMs::of_ms(ms)
    }
}

impl From<StampMs> for i64 {
    fn from(s: StampMs) -> Self {
        s.ms()
    }
}

impl std::fmt::Debug for StampMs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.ms().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chrono_ms(s: &str) -> Option<i64> {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_millis())
    }

    #[test]
    fn timestamps_in_the_producers_form_are_read_by_position() {
        for (s, ms) in [
            ("2026-01-01T00:02:54.304Z", Some(1_767_225_774_304)),
            ("2026-01-01T00:02:54Z", Some(1_767_225_774_000)),
            ("2026-01-01T01:02:54.304+01:00", Some(1_767_225_774_304)),
            ("2025-12-31T23:02:54.304-01:00", Some(1_767_225_774_304)),
            ("1970-01-01T00:00:00.000Z", Some(0)),
            ("2024-02-29T12:00:00Z", Some(1_709_208_000_000)),
        ] {
            assert_eq!(canonical_rfc3339_ms(s.as_bytes()), ms, "{s}");
            assert_eq!(chrono_ms(s), ms, "{s}");
        }
        // Left to chrono: valid in other forms, or invalid.
        for s in [
            "2026-01-01t00:02:54Z",
            "2026-01-01T00:02:54.3Z",
            "2026-01-01T00:02:54.304123Z",
            "2016-12-31T23:59:60Z",
            "2025-02-29T12:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:02:54",
            "2026-01-01T00:02:54.304Zx",
            "2026-01-01T00:02:54+24:00",
            "2026-1-01T00:02:54Z",
            "",
        ] {
            assert_eq!(canonical_rfc3339_ms(s.as_bytes()), None, "{s}");
        }
        assert_eq!(
            parse_rfc3339_ms("2026-01-01T00:02:54.3Z"),
            Some(1_767_225_774_300)
        );
        assert_eq!(parse_rfc3339_ms("2025-02-29T12:00:00Z"), None);
    }

    proptest! {
        /// Wherever the positional reader answers, chrono agrees; and the producers' form
        /// is always answered.
        #[test]
        fn the_positional_reader_agrees_with_chrono(
            year in 0u32..10_000, month in 0u32..14, day in 0u32..33,
            hour in 0u32..26, minute in 0u32..62, second in 0u32..62,
            milli in proptest::option::of(0u32..1000),
            offset in proptest::option::of((any::<bool>(), 0u32..26, 0u32..62)),
        ) {
            let mut s = format!(
                "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}"
            );
            if let Some(m) = milli {
                s += &format!(".{m:03}");
            }
            match offset {
                None => s.push('Z'),
                Some((minus, h, m)) => {
                    s += &format!("{}{h:02}:{m:02}", if minus { '-' } else { '+' })
                }
            }
            let fast = canonical_rfc3339_ms(s.as_bytes());
            if fast.is_some() {
                prop_assert_eq!(fast, chrono_ms(&s), "{}", s);
            } else {
                prop_assert!(
                    chrono_ms(&s).is_none() || second == 60,
                    "{} is valid but was not read by position", s
                );
            }
        }
    }

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
    fn millisecond_stamps_are_six_bytes_exact_and_ordered() {
        assert_eq!(std::mem::size_of::<StampMs>(), 6);
        assert_eq!(std::mem::align_of::<StampMs>(), 2);
        for ms in [0, 1, 65_535, 65_536, 1_700_000_123_456, MAX_STAMP_MS] {
            let s = StampMs::of_ms(ms);
            assert_eq!(s.ms(), ms);
            let bytes = postcard::to_allocvec(&s).unwrap();
            assert_eq!(bytes, postcard::to_allocvec(&ms).unwrap());
            assert_eq!(postcard::from_bytes::<StampMs>(&bytes).unwrap(), s);
        }
        assert_eq!(StampMs::of_ms(-5).ms(), 0);
        assert!(StampMs::of_ms(65_535) < StampMs::of_ms(65_536));
        assert!(StampMs::of_ms(1 << 40) > StampMs::of_ms((1 << 40) - 1));
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
