//! The decoder's fast path: one pass over a flat JSON object of strings and numbers, the shape
//! every producer of the brief's schema sends.
//!
//! Decoding was half of the per-event path's instructions with `serde_json` (derive, borrowed
//! strings: ~320 ns for a 146-byte event); `jiter`'s pull parser and `sonic-rs` measured no
//! faster here (BENCHMARKS.md). The event needs no general JSON: its fields are strings and
//! numbers at the top level. So this scanner reads exactly that subset, and gives up
//! (`None`) on anything else: an escape or control character in a string, a nested value, a
//! number it cannot convert exactly as `serde_json` does, a duplicate or wrongly typed field,
//! a syntax error. [`super::decode`] then decodes the payload with `serde_json`, which
//! produces the same result or the precise error. What the scanner accepts it decodes
//! identically: the tests below compare the two on 20,000 generated payloads and on every
//! simulated event, floats to the bit. (`tests/hostile_input.rs` fuzzes `decode` as a whole.)

use std::borrow::Cow;

use super::Wire;

/// Powers of ten that are exact in an `f64`.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The fields the scanner knows (all that `serde_json`'s wire form has: a type-checked field
/// gives up here the same as there), one bit each in its set of fields seen.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Type,
    CustomerId,
    Ts,
    EventId,
    Quantity,
    Amount,
    Score,
    DurationSecs,
    Page,
    SessionId,
    Feature,
    Currency,
    OrderId,
}

impl Field {
    fn of(key: &str) -> Option<Field> {
        Some(match key {
            "type" => Field::Type,
            "customer_id" => Field::CustomerId,
            "ts" => Field::Ts,
            "event_id" => Field::EventId,
            "quantity" => Field::Quantity,
            "amount" => Field::Amount,
            "score" => Field::Score,
            "duration_secs" => Field::DurationSecs,
            "page" => Field::Page,
            "session_id" => Field::SessionId,
            "feature" => Field::Feature,
            "currency" => Field::Currency,
            "order_id" => Field::OrderId,
            _ => return None,
        })
    }
}

/// Decode `text`, a flat object of string, number and null fields, or `None` when it is
/// anything else (the caller falls back to the full decoder).
///
/// Never inlined: inlined into `decode` it took 12 % more instructions (callgrind, `churnwatch
/// bench --customers 50000`), as the compiler chose once the crate changed around it.
#[inline(never)]
pub(super) fn scan(text: &str) -> Option<Wire<'_>> {
    let mut s = Scanner { text, at: 0 };
    let mut wire = Wire::default();
    let mut seen = 0u16;
    s.ws();
    s.eat(b'{')?;
    s.ws();
    if s.peek() == Some(b'}') {
        s.at += 1;
    } else {
        loop {
            let key = s.string()?;
            s.ws();
            s.eat(b':')?;
            s.ws();
            match Field::of(key) {
                Some(field) => {
                    let bit = 1u16 << field as u16;
                    if seen & bit != 0 {
                        return None;
                    }
                    seen |= bit;
                    s.field(field, &mut wire)?;
                }
                None => s.skip_scalar()?,
            }
            s.ws();
            match s.next()? {
                b',' => s.ws(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    s.ws();
    (s.at == text.len()).then_some(wire)
}

/// Bytes before the first quote, backslash or control character of `b` (all of `b` if none),
/// eight at a time (the bit tricks of `serde_json`'s own string scan: a byte's high bit is set
/// in the mask for each such byte, and any false positives lie after the first true one).
#[inline]
fn special_prefix_len(b: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let mut at = 0;
    while let Some(chunk) = b.get(at..at + 8) {
        let v = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let mask = zero_byte(v ^ (ONES * u64::from(b'"')))
            | zero_byte(v ^ (ONES * u64::from(b'\\')))
            | (v.wrapping_sub(ONES * 0x20) & !v & HIGH);
        if mask != 0 {
            return at + (mask.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    at + b[at..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .unwrap_or(b.len() - at)
}

struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    fn rest(&self) -> &'a [u8] {
        &self.text.as_bytes()[self.at..]
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.at += 1;
        Some(c)
    }

    /// Step over `c` if it is next.
    fn eat_if(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        self.at += usize::from(hit);
        hit
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.eat_if(c).then_some(())
    }

    /// JSON whitespace.
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// A string without escapes or control characters, borrowed from the payload.
    #[inline]
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        self.at += special_prefix_len(self.rest());
        if self.next()? != b'"' {
            return None; // an escape or a control character
        }
        // The payload is valid UTF-8 and a quote is never inside a multi-byte character, so
        // both ends are character boundaries.
        self.text.get(start..self.at - 1)
    }

    /// A number, converted as `serde_json` converts it; `None` for one it might convert
    /// differently (more than 2^53 in the significand, an exponent beyond ±22, a negative
    /// zero) or that is not a JSON number.
    fn number(&mut self) -> Option<f64> {
        let negative = self.eat_if(b'-');
        let leading_zero = self.peek() == Some(b'0');
        let mut significand = 0u64;
        if self.digits(&mut significand)? > 1 && leading_zero {
            return None; // a leading zero is not JSON
        }
        let mut exponent = 0i32;
        if self.eat_if(b'.') {
            exponent -= self.digits(&mut significand)?;
        }
        if self.eat_if(b'e') || self.eat_if(b'E') {
            let negative_exponent = self.eat_if(b'-');
            if !negative_exponent {
                self.eat_if(b'+');
            }
            let mut e = 0u64;
            self.digits(&mut e)?;
            let e = i32::try_from(e).ok()?;
            exponent = exponent.checked_add(if negative_exponent { -e } else { e })?;
        }
        if significand > 1 << 53 || (negative && significand == 0) {
            return None;
        }
        let pow = *POW10.get(exponent.unsigned_abs() as usize)?;
        let magnitude = if exponent >= 0 {
            significand as f64 * pow
        } else {
            significand as f64 / pow
        };
        Some(if negative { -magnitude } else { magnitude })
    }

    /// Decimal digits, at least one, folded into `acc`: how many. `None` for none, or when
    /// `acc` overflows.
    fn digits(&mut self, acc: &mut u64) -> Option<i32> {
        let from = self.at;
        while let Some(c @ b'0'..=b'9') = self.peek() {
            *acc = acc.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
            self.at += 1;
        }
        let n = i32::try_from(self.at - from).ok()?;
        (n > 0).then_some(n)
    }

    /// The value of a known field, when it has the field's type (or is null).
    fn field(&mut self, field: Field, wire: &mut Wire<'a>) -> Option<()> {
        if self.literal(b"null") {
            return Some(());
        }
        match field {
            Field::Quantity | Field::Amount | Field::Score | Field::DurationSecs => {
                let v = Some(self.number()?);
                match field {
                    Field::Quantity => wire.quantity = v,
                    Field::Amount => wire.amount = v,
                    Field::Score => wire.score = v,
                    _ => wire.duration_secs = v,
                }
            }
            _ => {
                let v = Some(Cow::Borrowed(self.string()?));
                match field {
                    Field::Type => wire.kind = v,
                    Field::CustomerId => wire.customer_id = v,
                    Field::Ts => wire.ts = v,
                    Field::EventId => wire.event_id = v,
                    _ => {}
                }
            }
        }
        Some(())
    }

    /// The value of an unknown field: a string, number, boolean or null (a nested value gives
    /// up).
    fn skip_scalar(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'-' | b'0'..=b'9' => self.number().map(drop),
            _ => (self.literal(b"null") || self.literal(b"true") || self.literal(b"false"))
                .then_some(()),
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        let hit = self.rest().starts_with(word);
        if hit {
            self.at += word.len();
        }
        hit
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::{decode_wire, Wire};
    use super::scan;
    use crate::sim::{SimConfig, Simulator};

    /// The two decoders agree, floats to the bit (`==` would take -0.0 for 0.0).
    fn same(a: &Wire, b: &Wire) -> bool {
        let bits = |w: &Wire| {
            [w.quantity, w.amount, w.score, w.duration_secs].map(|v| v.map(f64::to_bits))
        };
        (&a.kind, &a.customer_id, &a.ts, &a.event_id)
            == (&b.kind, &b.customer_id, &b.ts, &b.event_id)
            && bits(a) == bits(b)
    }

    fn check(text: &str) -> bool {
        match scan(text) {
            Some(fast) => {
                let full = decode_wire(text)
                    .unwrap_or_else(|e| panic!("the fast path took {text:?}, serde_json: {e}"));
                assert!(same(&fast, &full), "{text:?}: {fast:?} vs {full:?}");
                true
            }
            None => false,
        }
    }

    #[test]
    fn finds_the_first_special_byte_at_every_position() {
        for len in 0..40 {
            for at in 0..=len {
                for special in [b'"', b'\\', 0x00, 0x1f] {
                    let mut b: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                    // Bytes that are close to special ones but are not: high bits, 0x20, 0x7f.
                    if len > 2 {
                        b[0] = 0x20;
                        b[len - 1] = 0xc3;
                    }
                    let expected = if at < len {
                        b[at] = special;
                        b.iter()
                            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                            .unwrap()
                    } else {
                        len
                    };
                    assert_eq!(super::special_prefix_len(&b), expected, "{b:?}");
                }
            }
        }
    }

    #[test]
    fn every_simulated_event_takes_the_fast_path() {
        let start = 1_700_000_000_000 / crate::time::DAY_MS * crate::time::DAY_MS;
        let mut sim = Simulator::new(SimConfig {
            customers: 300,
            seed: 9,
            start_ms: start,
            days: 10.0,
            existing_share: 1.0,
            ..SimConfig::default()
        });
        let mut events = Vec::new();
        sim.advance(start + 10 * crate::time::DAY_MS, &mut events);
        assert!(events.len() > 1000);
        for e in &events {
            let text = std::str::from_utf8(&e.payload).unwrap();
            assert!(check(text), "fell back on {text}");
        }
    }

    #[test]
    fn gives_up_on_what_it_does_not_read_exactly() {
        for text in [
            r#"{"type":"vi\"sit"}"#,                // an escape
            r#"{"type":"visit","extra":{"a":1}}"#,  // a nested value
            r#"{"type":"visit","extra":[1]}"#,      // an array
            r#"{"quantity":12345678901234567890}"#, // beyond 2^53
            r#"{"quantity":1e300}"#,                // beyond 10^22
            r#"{"score":-0}"#,                      // negative zero
            r#"{"score":-0.0}"#,                    //
            r#"{"quantity":01}"#,                   // not JSON
            r#"{"quantity":1.}"#,                   //
            r#"{"quantity":.5}"#,                   //
            r#"{"type":"visit","type":"usage"}"#,   // a duplicate field
            r#"{"quantity":"3"}"#,                  // a wrongly typed field
            r#"{"type":3}"#,                        //
            r#"{"type":"visit",}"#,                 // a trailing comma
            r#"{"type":"visit"} x"#,                // trailing characters
            r#"[{"type":"visit"}]"#,                // not an object
            "{\"type\":\"vi\u{1}sit\"}",            // a control character
        ] {
            assert!(scan(text).is_none(), "{text}");
        }
        for text in [
            r#"{}"#,
            r#" { "type" : "visit" , "customer_id" : "c1" } "#,
            r#"{"quantity":2,"amount":29.90,"score":-3.5,"duration_secs":1.5e2}"#,
            r#"{"quantity":null,"type":null,"flag":true,"other":false,"n":null,"x":"y"}"#,
            r#"{"customer_id":"ünïcødé ✓"}"#,
            r#"{"amount":9007199254740992,"score":-1E-22,"quantity":0.1e+1}"#,
        ] {
            assert!(check(text), "{text}");
        }
    }

    /// Pieces of an event payload: known and unknown keys, with values of every kind, some
    /// well-formed and some not.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9:T.Z-]{0,12}".prop_map(|s| format!("\"{s}\"")),
            r#"[a-z\\"\x01ü]{0,6}"#.prop_map(|s| format!("\"{s}\"")),
            (any::<i64>()).prop_map(|n| n.to_string()),
            (-1e6f64..1e6).prop_map(|x| format!("{x}")),
            (0u32..100_000, 0u8..4)
                .prop_map(|(n, d)| format!("{}", n as f64 / 10f64.powi(d as i32))),
            "-?(0|[1-9][0-9]{0,17})(\\.[0-9]{1,6})?([eE][+-]?[0-9]{1,3})?",
            "-?0[0-9]{1,3}",
            Just("null".to_string()),
            Just("true".to_string()),
            Just("{\"a\":1}".to_string()),
            Just("[1,2]".to_string()),
            Just("tru".to_string()),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "type",
                "customer_id",
                "ts",
                "event_id",
                "quantity",
                "amount",
                "score",
                "duration_secs",
                "page",
                "session_id",
                "feature",
                "currency",
                "order_id",
                "other",
            ])
            .prop_map(str::to_string),
            "[a-z_]{1,8}",
        ]
    }

    fn payload() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(
                (key(), value(), prop::sample::select(vec!["", " ", "\n\t"])),
                0..8,
            ),
            prop::sample::select(vec!["", "", "", "", ",", " x", "{"]),
        )
            .prop_map(|(fields, tail)| {
                let body: Vec<String> = fields
                    .iter()
                    .map(|(k, v, ws)| format!("{ws}\"{k}\"{ws}:{ws}{v}{ws}"))
                    .collect();
                format!("{{{}}}{}", body.join(","), tail)
            })
    }

    #[test]
    fn what_the_fast_path_accepts_it_decodes_as_serde_json_does() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::{Config, TestRunner};
        let mut runner = TestRunner::new(Config::default());
        let strategy = payload();
        let cases = 20_000;
        let mut accepted = 0;
        for _ in 0..cases {
            let text = strategy.new_tree(&mut runner).unwrap().current();
            accepted += usize::from(check(&text));
        }
        // Not a vacuous comparison: a share of the payloads take the fast path (~11 %).
        assert!(accepted > cases / 20, "{accepted} of {cases} accepted");
    }
}
