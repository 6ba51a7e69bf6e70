//! The event schema (brief, section 5) and the decoder that validates one message.
//!
//! A message decodes into an [`Event`] (borrowing the customer id from the payload where it
//! can) or into an [`InvalidEvent`] whose [`InvalidReason`] is a stable, machine-readable code:
//! it labels `churnwatch_events_invalid_total{reason}` and the dead-letter record's header.

use std::borrow::Cow;

use serde::Deserialize;

use crate::time::parse_rfc3339_ms;

mod scan;

/// Longest accepted customer id, in bytes.
pub const MAX_CUSTOMER_ID_BYTES: usize = 256;
/// Largest accepted magnitude for any number in an event (amounts, quantities, scores).
pub const MAX_ABS_NUMBER: f64 = 1e12;
/// Earliest accepted event time: 1970-01-01T00:00:00Z.
pub const MIN_TS_MS: i64 = 0;
/// Latest accepted event time, 2106-02-07T06:28:14Z: customer state keeps times to the second
/// in 32 bits ([`crate::time::Stamp`]).
pub const MAX_TS_MS: i64 = crate::time::MAX_STAMP_MS;

/// The kind of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Visit,
    Usage,
    Purchase,
    Engagement,
}

impl EventType {
    pub const ALL: [EventType; 4] = [
        EventType::Visit,
        EventType::Usage,
        EventType::Purchase,
        EventType::Engagement,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Visit => "visit",
            EventType::Usage => "usage",
            EventType::Purchase => "purchase",
            EventType::Engagement => "engagement",
        }
    }

    fn parse(s: &str) -> Option<EventType> {
        match s {
            "visit" => Some(EventType::Visit),
            "usage" => Some(EventType::Usage),
            "purchase" => Some(EventType::Purchase),
            "engagement" => Some(EventType::Engagement),
            _ => None,
        }
    }
}

/// What the event says about the customer's activity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activity {
    Visit,
    /// Usage of `quantity` units (>= 0, default 1).
    Usage {
        quantity: f64,
    },
    /// A purchase worth `amount` (>= 0).
    Purchase {
        amount: f64,
    },
    /// A new engagement score.
    Engagement {
        score: f64,
    },
}

impl Activity {
    /// Whether this is something the customer did (a visit, some usage, a purchase): what
    /// `p_churn` predicts and the active days count. An engagement-score update is about the
    /// customer, not by them; usage of zero units is nothing done.
    pub fn is_customer_activity(&self) -> bool {
        match *self {
            Activity::Visit | Activity::Purchase { .. } => true,
            Activity::Usage { quantity } => quantity > 0.0,
            Activity::Engagement { .. } => false,
        }
    }

    pub fn event_type(&self) -> EventType {
        match self {
            Activity::Visit => EventType::Visit,
            Activity::Usage { .. } => EventType::Usage,
            Activity::Purchase { .. } => EventType::Purchase,
            Activity::Engagement { .. } => EventType::Engagement,
        }
    }
}

/// A validated event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    pub customer_id: Cow<'a, str>,
    /// Event time, ms since the epoch.
    pub ts_ms: i64,
    pub activity: Activity,
    pub event_id: Option<Cow<'a, str>>,
}

/// Why a message was rejected. The string forms are stable (metric labels, dead-letter headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvalidReason {
    /// Larger than `input.max_event_bytes`.
    Oversized,
    /// Not valid UTF-8.
    InvalidUtf8,
    /// Not parseable as JSON (a JSON value that is not an object is `WrongType`).
    NotJson,
    /// A required field is absent or null.
    MissingField,
    /// A field has the wrong JSON type.
    WrongType,
    /// `type` is not one of visit, usage, purchase, engagement.
    UnknownType,
    /// `ts` is not an RFC 3339 timestamp.
    BadTimestamp,
    /// `ts` is before 1970 or too far in the future.
    TimestampOutOfRange,
    /// A number is negative where it must not be, not finite, or absurdly large; or the
    /// customer id is empty or too long.
    InvalidValue,
}

impl InvalidReason {
    pub const ALL: [InvalidReason; 9] = [
        InvalidReason::Oversized,
        InvalidReason::InvalidUtf8,
        InvalidReason::NotJson,
        InvalidReason::MissingField,
        InvalidReason::WrongType,
        InvalidReason::UnknownType,
        InvalidReason::BadTimestamp,
        InvalidReason::TimestampOutOfRange,
        InvalidReason::InvalidValue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InvalidReason::Oversized => "oversized",
            InvalidReason::InvalidUtf8 => "invalid_utf8",
            InvalidReason::NotJson => "not_json",
            InvalidReason::MissingField => "missing_field",
            InvalidReason::WrongType => "wrong_type",
            InvalidReason::UnknownType => "unknown_type",
            InvalidReason::BadTimestamp => "bad_timestamp",
            InvalidReason::TimestampOutOfRange => "timestamp_out_of_range",
            InvalidReason::InvalidValue => "invalid_value",
        }
    }
}

/// A rejected message: the reason code and a human-readable detail (never the payload itself).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}: {detail}", reason = reason.as_str())]
pub struct InvalidEvent {
    pub reason: InvalidReason,
    pub detail: String,
}

impl InvalidEvent {
    fn new(reason: InvalidReason, detail: impl Into<String>) -> Self {
        InvalidEvent {
            reason,
            detail: detail.into(),
        }
    }
}

/// Limits applied while decoding.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    pub max_event_bytes: usize,
    /// Events later than `now_ms + max_future_skew_ms` are rejected; `None` disables the check.
    pub max_ts_ms: Option<i64>,
}

impl DecodeLimits {
    pub fn from_config(input: &crate::config::InputConfig, now_ms: i64) -> Self {
        DecodeLimits {
            max_event_bytes: input.max_event_bytes,
            max_ts_ms: (input.max_future_skew_ms > 0)
                .then(|| now_ms.saturating_add(input.max_future_skew_ms)),
        }
    }
}

/// A string borrowed from the payload when it has no escapes (no allocation on the hot path).
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// The fields of one message, each `None` when absent or null, so that a missing field and a
/// wrongly typed one can be told apart.
#[derive(Debug, Default)]
struct Wire<'a> {
    kind: Option<Cow<'a, str>>,
    customer_id: Option<Cow<'a, str>>,
    ts: Option<Cow<'a, str>>,
    event_id: Option<Cow<'a, str>>,
    quantity: Option<f64>,
    amount: Option<f64>,
    score: Option<f64>,
    duration_secs: Option<f64>,
}

/// The wire form for `serde_json`, every field optional. Unknown fields are ignored (the
/// brief's schema allows extra fields).
#[derive(Deserialize)]
struct SerdeWire<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Str<'a>>,
    #[serde(borrow)]
    customer_id: Option<Str<'a>>,
    #[serde(borrow)]
    ts: Option<Str<'a>>,
    #[serde(borrow)]
    event_id: Option<Str<'a>>,
    quantity: Option<f64>,
    amount: Option<f64>,
    score: Option<f64>,
    // Optional descriptive fields: not used for scoring, but their types are checked.
    #[serde(borrow)]
    #[allow(dead_code)]
    page: Option<Str<'a>>,
    #[serde(borrow)]
    #[allow(dead_code)]
    session_id: Option<Str<'a>>,
    #[allow(dead_code)]
    duration_secs: Option<f64>,
    #[serde(borrow)]
    #[allow(dead_code)]
    feature: Option<Str<'a>>,
    #[serde(borrow)]
    #[allow(dead_code)]
    currency: Option<Str<'a>>,
    #[serde(borrow)]
    #[allow(dead_code)]
    order_id: Option<Str<'a>>,
}

/// Decode and validate one message payload.
pub fn decode<'a>(payload: &'a [u8], limits: &DecodeLimits) -> Result<Event<'a>, InvalidEvent> {
    let text = check_payload(payload, limits)?;
    let wire = match scan::scan(text) {
        Some(wire) => wire,
        None => decode_wire(text)?,
    };
    validate(wire, limits)
}

/// The full decoder: any JSON, with `serde_json`'s precise errors.
fn decode_wire(text: &str) -> Result<Wire<'_>, InvalidEvent> {
    use serde_json::error::Category;
    let w: SerdeWire = serde_json::from_str(text).map_err(|e| match e.classify() {
        Category::Data => InvalidEvent::new(InvalidReason::WrongType, e.to_string()),
        Category::Syntax | Category::Eof | Category::Io => {
            InvalidEvent::new(InvalidReason::NotJson, e.to_string())
        }
    })?;
    Ok(Wire {
        kind: w.kind.map(|s| s.0),
        customer_id: w.customer_id.map(|s| s.0),
        ts: w.ts.map(|s| s.0),
        event_id: w.event_id.map(|s| s.0),
        quantity: w.quantity,
        amount: w.amount,
        score: w.score,
        duration_secs: w.duration_secs,
    })
}

/// [`decode`] with the full decoder only: what the fast path must agree with
/// (`tests/hostile_input.rs`), and what it saves (`cargo bench --bench hot_path -- decode`).
#[doc(hidden)]
pub fn decode_without_fast_path<'a>(
    payload: &'a [u8],
    limits: &DecodeLimits,
) -> Result<Event<'a>, InvalidEvent> {
    let text = check_payload(payload, limits)?;
    validate(decode_wire(text)?, limits)
}

fn check_payload<'a>(payload: &'a [u8], limits: &DecodeLimits) -> Result<&'a str, InvalidEvent> {
    use InvalidReason::*;
    if payload.len() > limits.max_event_bytes {
        return Err(InvalidEvent::new(
            Oversized,
            format!(
                "{} bytes exceeds the limit of {}",
                payload.len(),
                limits.max_event_bytes
            ),
        ));
    }
    std::str::from_utf8(payload)
        .map_err(|e| InvalidEvent::new(InvalidUtf8, format!("payload is not UTF-8: {e}")))
}

/// Check the fields and build the event.
fn validate<'a>(wire: Wire<'a>, limits: &DecodeLimits) -> Result<Event<'a>, InvalidEvent> {
    use InvalidReason::*;

    let kind = wire
        .kind
        .ok_or_else(|| InvalidEvent::new(MissingField, "field `type` is required"))?;
    let event_type = EventType::parse(&kind).ok_or_else(|| {
        InvalidEvent::new(
            UnknownType,
            format!(
                "type {:?} is not one of visit, usage, purchase, engagement",
                truncate(&kind, 64)
            ),
        )
    })?;
    let customer_id = wire
        .customer_id
        .ok_or_else(|| InvalidEvent::new(MissingField, "field `customer_id` is required"))?;
    if customer_id.is_empty() || customer_id.len() > MAX_CUSTOMER_ID_BYTES {
        return Err(InvalidEvent::new(
            InvalidValue,
            format!(
                "customer_id must be 1-{MAX_CUSTOMER_ID_BYTES} bytes, got {}",
                customer_id.len()
            ),
        ));
    }
    let ts = wire
        .ts
        .ok_or_else(|| InvalidEvent::new(MissingField, "field `ts` is required"))?;
    let ts_ms = parse_rfc3339_ms(&ts).ok_or_else(|| {
        InvalidEvent::new(
            BadTimestamp,
            format!("ts {:?} is not an RFC 3339 timestamp", truncate(&ts, 64)),
        )
    })?;
    if !(MIN_TS_MS..=MAX_TS_MS).contains(&ts_ms) || limits.max_ts_ms.is_some_and(|max| ts_ms > max)
    {
        return Err(InvalidEvent::new(
            TimestampOutOfRange,
            format!("ts {ts} is before 1970 or too far in the future"),
        ));
    }

    let activity = match event_type {
        EventType::Visit => Activity::Visit,
        EventType::Usage => Activity::Usage {
            quantity: non_negative("quantity", wire.quantity.unwrap_or(1.0))?,
        },
        EventType::Purchase => {
            let amount = wire.amount.ok_or_else(|| {
                InvalidEvent::new(MissingField, "field `amount` is required for a purchase")
            })?;
            if let Some(q) = wire.quantity {
                non_negative("quantity", q)?;
            }
            Activity::Purchase {
                amount: non_negative("amount", amount)?,
            }
        }
        EventType::Engagement => {
            let score = wire.score.ok_or_else(|| {
                InvalidEvent::new(
                    MissingField,
                    "field `score` is required for an engagement event",
                )
            })?;
            if !score.is_finite() || score.abs() > MAX_ABS_NUMBER {
                return Err(InvalidEvent::new(
                    InvalidValue,
                    format!("score {score} is out of range"),
                ));
            }
            Activity::Engagement { score }
        }
    };
    if let Some(d) = wire.duration_secs {
        non_negative("duration_secs", d)?;
    }
    Ok(Event {
        customer_id,
        ts_ms,
        activity,
        event_id: wire.event_id,
    })
}

fn non_negative(field: &str, v: f64) -> Result<f64, InvalidEvent> {
    if !v.is_finite() || !(0.0..=MAX_ABS_NUMBER).contains(&v) {
        return Err(InvalidEvent::new(
            InvalidReason::InvalidValue,
            format!("{field} must be between 0 and {MAX_ABS_NUMBER:e}, got {v}"),
        ));
    }
    Ok(v)
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> DecodeLimits {
        DecodeLimits {
            max_event_bytes: 1024,
            max_ts_ms: Some(parse_rfc3339_ms("2030-01-01T00:00:00Z").unwrap()),
        }
    }

    fn reason(payload: &str) -> InvalidReason {
        decode(payload.as_bytes(), &limits()).unwrap_err().reason
    }

    #[test]
    fn decodes_the_brief_example() {
        let e = decode(
            br#"{"type":"purchase","customer_id":"c00042","ts":"2026-03-01T10:15:00Z","amount":29.90,"quantity":2}"#,
            &limits(),
        )
        .unwrap();
        assert_eq!(e.customer_id, "c00042");
        assert_eq!(e.activity, Activity::Purchase { amount: 29.90 });
        assert_eq!(e.ts_ms, parse_rfc3339_ms("2026-03-01T10:15:00Z").unwrap());
        assert!(
            matches!(e.customer_id, Cow::Borrowed(_)),
            "no allocation for plain ids"
        );
    }

    #[test]
    fn defaults_and_extra_fields() {
        let e = decode(
            br#"{"type":"usage","customer_id":"c1","ts":"2026-03-01T10:15:00Z","feature":"export","extra":{"a":[1,2]}}"#,
            &limits(),
        )
        .unwrap();
        assert_eq!(e.activity, Activity::Usage { quantity: 1.0 });
        let v = decode(
            br#"{"type":"visit","customer_id":"c1","ts":"2026-03-01T10:15:00Z","page":"/pricing","duration_secs":12,"event_id":"e1"}"#,
            &limits(),
        )
        .unwrap();
        assert_eq!(v.activity, Activity::Visit);
        assert_eq!(v.event_id.as_deref(), Some("e1"));
        let s = decode(
            br#"{"type":"engagement","customer_id":"c1","ts":"2026-03-01T10:15:00Z","score":-3.5}"#,
            &limits(),
        )
        .unwrap();
        assert_eq!(s.activity, Activity::Engagement { score: -3.5 });
    }

    #[test]
    fn invalid_inputs_have_reasons() {
        use InvalidReason::*;
        assert_eq!(reason("not json"), NotJson);
        assert_eq!(reason("{\"type\":\"visit\""), NotJson);
        assert_eq!(reason("[1,2]"), WrongType);
        assert_eq!(
            reason(r#"{"customer_id":"c","ts":"2026-03-01T10:15:00Z"}"#),
            MissingField
        );
        assert_eq!(
            reason(r#"{"type":"visit","ts":"2026-03-01T10:15:00Z"}"#),
            MissingField
        );
        assert_eq!(
            reason(r#"{"type":"visit","customer_id":"c"}"#),
            MissingField
        );
        assert_eq!(
            reason(r#"{"type":"refund","customer_id":"c","ts":"2026-03-01T10:15:00Z"}"#),
            UnknownType
        );
        assert_eq!(
            reason(r#"{"type":"visit","customer_id":42,"ts":"2026-03-01T10:15:00Z"}"#),
            WrongType
        );
        assert_eq!(
            reason(r#"{"type":"visit","customer_id":"c","ts":"yesterday"}"#),
            BadTimestamp
        );
        assert_eq!(
            reason(r#"{"type":"visit","customer_id":"c","ts":"2099-01-01T00:00:00Z"}"#),
            TimestampOutOfRange
        );
        assert_eq!(
            reason(r#"{"type":"visit","customer_id":"c","ts":"1960-01-01T00:00:00Z"}"#),
            TimestampOutOfRange
        );
        // Past what customer state keeps (seconds in 32 bits), even with no future limit.
        let unlimited = DecodeLimits {
            max_ts_ms: None,
            ..limits()
        };
        let last = r#"{"type":"visit","customer_id":"c","ts":"2106-02-07T06:28:14Z"}"#;
        assert!(decode(last.as_bytes(), &unlimited).is_ok());
        let after = r#"{"type":"visit","customer_id":"c","ts":"2106-02-07T06:28:15Z"}"#;
        assert_eq!(
            decode(after.as_bytes(), &unlimited).unwrap_err().reason,
            TimestampOutOfRange
        );
        assert_eq!(
            reason(
                r#"{"type":"purchase","customer_id":"c","ts":"2026-03-01T10:15:00Z","amount":-5}"#
            ),
            InvalidValue
        );
        assert_eq!(
            reason(r#"{"type":"purchase","customer_id":"c","ts":"2026-03-01T10:15:00Z"}"#),
            MissingField
        );
        assert_eq!(
            reason(
                r#"{"type":"purchase","customer_id":"c","ts":"2026-03-01T10:15:00Z","amount":"5"}"#
            ),
            WrongType
        );
        assert_eq!(
            reason(
                r#"{"type":"usage","customer_id":"c","ts":"2026-03-01T10:15:00Z","quantity":1e300}"#
            ),
            InvalidValue
        );
        assert_eq!(
            reason(r#"{"type":"visit","customer_id":"","ts":"2026-03-01T10:15:00Z"}"#),
            InvalidValue
        );
        assert_eq!(
            reason(r#"{"type":"engagement","customer_id":"c","ts":"2026-03-01T10:15:00Z"}"#),
            MissingField
        );
        assert_eq!(
            decode(&[0xff, 0xfe, b'{'], &limits()).unwrap_err().reason,
            InvalidUtf8
        );
        let big = format!(
            r#"{{"type":"visit","customer_id":"c","ts":"2026-03-01T10:15:00Z","page":"{}"}}"#,
            "x".repeat(2000)
        );
        assert_eq!(reason(&big), Oversized);
    }

    #[test]
    fn reason_codes_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in InvalidReason::ALL {
            assert!(seen.insert(r.as_str()));
        }
    }
}
