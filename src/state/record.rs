//! The changelog's records: what one customer's state, or one partition's progress, looks like
//! on the wire.
//!
//! - Key: the customer id's UTF-8 bytes; or [`META_KEY`] (not valid UTF-8, so no customer id
//!   can collide with it) for the partition's own record.
//! - Value: one format byte ([`FORMAT`]) then the state in `postcard` (compact, varint
//!   integers). A null value (tombstone) is a customer removed from the state.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::format4::StoredCustomer4;
use crate::customer::CustomerState;

/// Key of the partition's progress record.
pub const META_KEY: &[u8] = b"\xff__churnwatch_partition__";
/// Version of the value encoding; bumped when the state's layout changes.
pub const FORMAT: u8 = 7;
/// The formats this build reads: 4 is converted when read ([`super::format4`]); 5 and 6 differ
/// from 7 only in how a ring's buckets are written, which [`crate::window::Windows`] converts
/// (5: 4-byte buckets; 6: every ring of visits or slim ring as 3-byte counters; 7: each ring
/// as it is kept, half a byte to three a bucket).
const READS: [u8; 4] = [4, 5, 6, FORMAT];

/// A customer's state as of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredCustomer {
    /// Offset of the last input record of the partition whose effects the state holds: on
    /// restore, re-read input up to it is not applied to this customer again.
    pub applied_offset: i64,
    pub state: CustomerState,
}

/// A partition's progress as of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StoredPartition {
    pub applied_offset: i64,
    pub stream_time_ms: Option<i64>,
    /// Event time up to which every timer has fired (due timers fire a few at a time, so this
    /// can be behind the watermark): a restore takes a stored due time up to it for one that
    /// has fired, and fires the later ones.
    pub timers_fired_to_ms: Option<i64>,
    /// The business KPIs' current and previous periods.
    pub periods: crate::kpi::Periods,
}

/// One decoded changelog record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Customer(String, Box<StoredCustomer>),
    /// A tombstone: the customer is no longer part of the state.
    Removed(String),
    Partition(StoredPartition),
}

#[derive(Debug, Error)]
pub enum RecordError {
    #[error("changelog record without a key")]
    NoKey,
    #[error("changelog key is not a customer id (not UTF-8)")]
    BadKey,
    #[error("changelog record of format {0}, this build reads formats {READS:?}")]
    Format(u8),
    #[error("changelog record is empty")]
    Empty,
    #[error("changelog record does not decode: {0}")]
    Decode(#[from] postcard::Error),
}

/// [`StoredCustomer`] as written: the same bytes, from a borrowed state.
#[derive(Serialize)]
struct StoredCustomerRef<'a> {
    applied_offset: i64,
    state: &'a CustomerState,
}

/// Encode a customer's record value into `out` (cleared first, reused between records).
pub fn encode_customer(out: &mut Vec<u8>, applied_offset: i64, state: &CustomerState) {
    out.clear();
    append_customer(out, applied_offset, state);
}

/// Append a customer's record value to `out`.
pub fn append_customer(out: &mut Vec<u8>, applied_offset: i64, state: &CustomerState) {
    out.push(FORMAT);
    // `to_extend` appends byte by byte to the Vec: a third faster than `to_io`, whose every
    // field goes through `io::Write` (the changelog bench).
    *out = postcard::to_extend(
        &StoredCustomerRef {
            applied_offset,
            state,
        },
        std::mem::take(out),
    )
    .expect("a Vec takes any write");
}

pub fn encode_partition(p: &StoredPartition) -> Vec<u8> {
    let mut out = vec![FORMAT];
    postcard::to_io(p, &mut out).expect("a Vec takes any write");
    out
}

/// The value's format and what follows it.
fn body(v: &[u8]) -> Result<(u8, &[u8]), RecordError> {
    match v.split_first() {
        None => Err(RecordError::Empty),
        Some((&f, rest)) if READS.contains(&f) => Ok((f, rest)),
        Some((&f, _)) => Err(RecordError::Format(f)),
    }
}

pub fn decode(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Record, RecordError> {
    let key = key.ok_or(RecordError::NoKey)?;
    if key == META_KEY {
        let v = value.ok_or(RecordError::Empty)?;
        // The same layout in both formats.
        return Ok(Record::Partition(postcard::from_bytes(body(v)?.1)?));
    }
    let id = std::str::from_utf8(key)
        .map_err(|_| RecordError::BadKey)?
        .to_string();
    let Some(v) = value else {
        return Ok(Record::Removed(id));
    };
    let stored = match body(v)? {
        (4, rest) => postcard::from_bytes::<StoredCustomer4>(rest)?.into(),
        (_, rest) => postcard::from_bytes(rest)?,
    };
    Ok(Record::Customer(id, Box::new(stored)))
}

#[cfg(test)]
mod tests {
    use super::super::format4::StoredCustomer4;
    use super::*;
    use crate::config::Config;
    use crate::event::{Activity, Event};
    use std::borrow::Cow;

    /// A customer with every part of the state in use, built the same way by every build.
    fn rich_customer() -> CustomerState {
        let cfg = Config::default();
        let t0 = 1_700_000_000_000i64;
        let mut c = CustomerState::new(&cfg, t0);
        for i in 0..120i64 {
            let activity = match i % 6 {
                // Scores a bfloat16 holds exactly: the state keeps the last one as one.
                0 => Activity::Engagement {
                    score: 80.0 - (i % 20) as f64 * 1.5,
                },
                1 | 4 => Activity::Usage {
                    quantity: 1.25 + (i % 7) as f64 * 0.5,
                },
                2 => Activity::Purchase {
                    amount: 19.99 + i as f64,
                },
                _ => Activity::Visit,
            };
            c.apply(
                &Event {
                    customer_id: Cow::Borrowed("golden"),
                    ts_ms: t0 + i * 9_000_123,
                    activity,
                    event_id: None,
                },
                &cfg,
            );
        }
        let mut alert = *c.alert();
        alert.episode = 3;
        alert.since = crate::time::Stamp::of_ms(t0 + 5 * 86_400_000);
        alert.recovered = crate::time::MaybeStamp::some(t0 + 9 * 86_400_000);
        alert.ref_visit_rate = 1.75;
        alert.ref_usage_rate = 4.5;
        alert.cooldown_noted = true;
        c.set_alert(alert);
        c.next_check = crate::time::MaybeStamp::some(t0 + 12 * 86_400_000);
        c.replace_gauge(crate::customer::GaugeContribution {
            value_at_risk: 321.5,
            ..c.gauge()
        });
        c
    }

    /// The record of [`rich_customer`] as the first build to write format 7 wrote it: a later
    /// build must not change a byte of it.
    const GOLDEN_FORMAT_7: &[u8] = include_bytes!("golden-format-7.bin");
    /// Its record in format 6, as the build that narrowed the engagement level's weight and
    /// CUSUM to binary16 (adb73d3) wrote it.
    const GOLDEN_FORMAT_6: &[u8] = include_bytes!("golden-format-6.bin");
    /// The same customer's record as the build before the state's fields were narrowed
    /// (a5e7114) wrote it.
    const GOLDEN_FORMAT_6_A5E7114: &[u8] = include_bytes!("golden-format-6-a5e7114.bin");

    #[test]
    fn records_are_the_bytes_format_7_always_had() {
        let c = rich_customer();
        assert!(c.engagement().count > 3 && c.purchases.gaps > 3 && c.alert().episode == 3);
        let mut buf = Vec::new();
        encode_customer(&mut buf, 4242, &c);
        assert_eq!(buf, GOLDEN_FORMAT_7);
        // Format 6's record of the same customer: the same state, in more bytes (its ring as
        // 3-byte counters).
        assert!(GOLDEN_FORMAT_6.len() > GOLDEN_FORMAT_7.len());
        for record in [GOLDEN_FORMAT_7, GOLDEN_FORMAT_6] {
            match decode(Some(b"golden"), Some(record)).unwrap() {
                Record::Customer(_, back) => {
                    assert_eq!(back.applied_offset, 4242);
                    assert_eq!(back.state, c);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn records_of_the_wider_state_differ_only_in_the_narrowed_values() {
        // The layout is the same: the two records differ only inside two 4-byte floats (the
        // weight and the CUSUM, written as the `f32` they were kept in, and now as the
        // binary16 values they are kept in).
        let (old, new) = (GOLDEN_FORMAT_6_A5E7114, GOLDEN_FORMAT_6);
        assert_eq!(old.len(), new.len());
        let mut spans: Vec<usize> = Vec::new();
        for i in (0..old.len()).filter(|&i| old[i] != new[i]) {
            if spans.last().is_none_or(|&start| i >= start + 4) {
                spans.push(i);
            }
        }
        assert!(!spans.is_empty() && spans.len() <= 2, "{spans:?}");
        // And the older record restores the same customer, to binary16's precision.
        let c = rich_customer();
        match decode(Some(b"golden"), Some(old)).unwrap() {
            Record::Customer(_, back) => {
                let mut s = back.state;
                let (e, want) = (*s.engagement(), *c.engagement());
                for (got, want) in [
                    (e.recent_weight_sq, want.recent_weight_sq),
                    (e.drop_cusum, want.drop_cusum),
                ] {
                    let (got, want) = (got.to_f64(), want.to_f64());
                    assert!((got - want).abs() <= 2e-3 * want.abs(), "{got} {want}");
                }
                s.engagement_mut().recent_weight_sq = want.recent_weight_sq;
                s.engagement_mut().drop_cusum = want.drop_cusum;
                assert_eq!(s, c);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn customer_and_partition_records_round_trip() {
        let cfg = Config::default();
        let mut c = CustomerState::new(&cfg, 1_700_000_000_000);
        for i in 0..40 {
            c.apply(
                &Event {
                    customer_id: Cow::Borrowed("c1"),
                    ts_ms: 1_700_000_000_000 + i * 7_200_000,
                    activity: if i % 5 == 0 {
                        Activity::Purchase { amount: 12.5 }
                    } else {
                        Activity::Visit
                    },
                    event_id: None,
                },
                &cfg,
            );
        }
        c.next_check = crate::time::MaybeStamp::some(1_700_100_000_000);
        let stored = StoredCustomer {
            applied_offset: 41,
            state: c,
        };
        let mut buf = Vec::new();
        encode_customer(&mut buf, stored.applied_offset, &stored.state);
        assert_eq!(buf[0], FORMAT);
        match decode(Some(b"c1"), Some(&buf)).unwrap() {
            Record::Customer(id, back) => {
                assert_eq!(id, "c1");
                assert_eq!(*back, stored);
            }
            other => panic!("{other:?}"),
        }
        // Format 5 differs only in the buckets of a ring of counters: a purchase-only
        // customer's record reads the same under it.
        let mut buyer = CustomerState::new(&cfg, 1_700_000_000_000);
        buyer.apply(
            &Event {
                customer_id: Cow::Borrowed("b1"),
                ts_ms: 1_700_000_000_000,
                activity: Activity::Purchase { amount: 3.0 },
                event_id: None,
            },
            &cfg,
        );
        encode_customer(&mut buf, 9, &buyer);
        buf[0] = 5;
        match decode(Some(b"b1"), Some(&buf)).unwrap() {
            Record::Customer(_, back) => assert_eq!(back.state, buyer),
            other => panic!("{other:?}"),
        }
        let p = StoredPartition {
            applied_offset: 7,
            stream_time_ms: Some(5),
            timers_fired_to_ms: Some(4),
            periods: crate::kpi::Periods {
                index: Some(3),
                current: crate::kpi::PeriodCounts {
                    start: 10,
                    new: 2,
                    lost_revenue: 12.5,
                    ..Default::default()
                },
                previous: None,
            },
        };
        assert_eq!(
            decode(Some(META_KEY), Some(&encode_partition(&p))).unwrap(),
            Record::Partition(p)
        );
        assert_eq!(
            decode(Some(b"gone"), None).unwrap(),
            Record::Removed("gone".into())
        );
    }

    #[test]
    fn a_format_4_record_reads_as_the_state_it_held() {
        let cfg = Config::default();
        let mut c = CustomerState::new(&cfg, 1_700_000_000_000);
        for i in 0..30 {
            let activity = match i % 3 {
                0 => Activity::Engagement {
                    score: 70.0 - i as f64,
                },
                1 => Activity::Usage { quantity: 2.5 },
                _ => Activity::Visit,
            };
            let ev = Event {
                customer_id: Cow::Borrowed("c1"),
                ts_ms: 1_700_000_000_000 + i * 20_000_000,
                activity,
                event_id: None,
            };
            c.apply(&ev, &cfg);
        }
        c.replace_gauge(crate::customer::GaugeContribution {
            value_at_risk: 123.25,
            ..c.gauge()
        });
        let stored = StoredCustomer {
            applied_offset: 12,
            state: c,
        };
        assert!(stored.state.engagement().count >= 10);
        let mut v4 = vec![4];
        v4.extend(postcard::to_allocvec(&StoredCustomer4::from(&stored)).unwrap());
        match decode(Some(b"c1"), Some(&v4)).unwrap() {
            Record::Customer(id, back) => {
                assert_eq!(id, "c1");
                assert_eq!(*back, stored);
            }
            other => panic!("{other:?}"),
        }
        // The same state as format 5 is smaller: f32 levels.
        let mut v5 = Vec::new();
        encode_customer(&mut v5, 12, &stored.state);
        assert!(v5.len() < v4.len(), "{} {}", v5.len(), v4.len());
    }

    #[test]
    fn foreign_records_are_errors_not_panics() {
        assert!(matches!(
            decode(None, Some(b"\x01")),
            Err(RecordError::NoKey)
        ));
        assert!(matches!(
            decode(Some(b"\xfe"), Some(b"\x01")),
            Err(RecordError::BadKey)
        ));
        assert!(matches!(
            decode(Some(b"c"), Some(b"\x09abc")),
            Err(RecordError::Format(9))
        ));
        assert!(matches!(
            decode(Some(b"c"), Some(&[FORMAT, 0xff])),
            Err(RecordError::Decode(_))
        ));
        // A record of a previous layout is refused, not misread.
        assert!(matches!(
            decode(Some(b"c"), Some(b"\x02\x00")),
            Err(RecordError::Format(2))
        ));
        assert!(matches!(
            decode(Some(b"c"), Some(b"")),
            Err(RecordError::Empty)
        ));
    }
}
