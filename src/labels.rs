//! Ground-truth labels of a simulated dataset (`labels.csv`).
//!
//! One row per customer, with the header
//! `customer_id,churned,decline_onset,churned_at,segment`:
//!
//! * `churned`: `1` if the customer churned inside the simulated period, else `0`;
//! * `decline_onset`: when the customer's engagement started to fall (RFC 3339 UTC), empty
//!   if there was no decline inside the period;
//! * `churned_at`: when the customer left: no activity (visit, usage, purchase) at or after
//!   it (RFC 3339 UTC); empty unless `churned` is 1;
//! * `segment`: the simulator's snake_case segment (`steady`, `holiday`, `gradual_decline`,
//!   `one_time_buyer`, ...; see [`crate::sim::Segment`]).
//!
//! The definitions are those of the simulator ([`crate::sim`]). Fields are plain (no CSV
//! quoting): customer ids and segments must not contain commas, quotes or line breaks.

use std::io::{self, BufRead, Write};

use crate::sim::CustomerTruth;
use crate::time::{format_rfc3339_ms, parse_rfc3339_ms};

/// The header line of `labels.csv`.
pub const HEADER: &str = "customer_id,churned,decline_onset,churned_at,segment";

/// Column names, in order.
const COLUMNS: [&str; 5] = [
    "customer_id",
    "churned",
    "decline_onset",
    "churned_at",
    "segment",
];

/// The truth about one customer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    pub customer_id: String,
    /// Churned inside the simulated period.
    pub churned: bool,
    pub decline_onset_ms: Option<i64>,
    /// Set iff `churned`.
    pub churned_at_ms: Option<i64>,
    pub segment: String,
}

impl From<&CustomerTruth> for Label {
    fn from(t: &CustomerTruth) -> Self {
        Label {
            customer_id: t.customer_id.clone(),
            churned: t.churned,
            decline_onset_ms: t.decline_onset_ms,
            churned_at_ms: t.churned_at_ms,
            segment: t.segment.as_str().to_string(),
        }
    }
}

/// Errors reading `labels.csv`. Line numbers start at 1 (the header).
#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    #[error("reading labels: {0}")]
    Io(#[from] io::Error),
    #[error("labels: the input is empty (expected the header {HEADER:?})")]
    Empty,
    #[error("labels line 1: expected the header {HEADER:?}, found {found:?}")]
    Header { found: String },
    #[error("labels line {line}: expected 5 columns ({}), found {found}", COLUMNS.join(","))]
    Columns { line: usize, found: usize },
    #[error("labels line {line}, column {column}: {message} (found {value:?})")]
    Field {
        line: usize,
        column: &'static str,
        value: String,
        message: &'static str,
    },
}

fn check_plain(what: &str, s: &str) -> io::Result<()> {
    if s.is_empty() || s.contains([',', '"', '\n', '\r']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("labels: {what} {s:?} is empty or contains a comma, quote or line break"),
        ));
    }
    Ok(())
}

/// Write `labels` as CSV with the header line.
pub fn write_labels(mut w: impl Write, labels: &[Label]) -> io::Result<()> {
    writeln!(w, "{HEADER}")?;
    let time = |t: Option<i64>| t.map(format_rfc3339_ms).unwrap_or_default();
    for l in labels {
        check_plain("customer id", &l.customer_id)?;
        check_plain("segment", &l.segment)?;
        writeln!(
            w,
            "{},{},{},{},{}",
            l.customer_id,
            u8::from(l.churned),
            time(l.decline_onset_ms),
            time(l.churned_at_ms),
            l.segment
        )?;
    }
    w.flush()
}

/// Read labels written by [`write_labels`]. Blank lines are skipped; `\r\n` line ends are
/// accepted. Every row must have 5 columns, `churned` must be `0` or `1`, times must be RFC
/// 3339, and `churned_at` must be set exactly when `churned` is 1.
pub fn read_labels(r: impl BufRead) -> Result<Vec<Label>, LabelsError> {
    let mut lines = r.lines();
    let header = lines.next().ok_or(LabelsError::Empty)??;
    let header = header.trim_end_matches('\r');
    if header.trim_start_matches('\u{feff}') != HEADER {
        return Err(LabelsError::Header {
            found: header.to_string(),
        });
    }
    let mut out = Vec::new();
    for (i, line) in lines.enumerate() {
        let line_no = i + 2;
        let line = line?;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != COLUMNS.len() {
            return Err(LabelsError::Columns {
                line: line_no,
                found: fields.len(),
            });
        }
        let field_err =
            |column: &'static str, value: &str, message: &'static str| LabelsError::Field {
                line: line_no,
                column,
                value: value.to_string(),
                message,
            };
        let customer_id = fields[0];
        if customer_id.is_empty() {
            return Err(field_err("customer_id", customer_id, "is empty"));
        }
        let churned = match fields[1] {
            "1" => true,
            "0" => false,
            v => return Err(field_err("churned", v, "expected 0 or 1")),
        };
        let time = |column: &'static str, v: &str| -> Result<Option<i64>, LabelsError> {
            if v.is_empty() {
                return Ok(None);
            }
            parse_rfc3339_ms(v)
                .map(Some)
                .ok_or_else(|| field_err(column, v, "expected an RFC 3339 time or nothing"))
        };
        let decline_onset_ms = time("decline_onset", fields[2])?;
        let churned_at_ms = time("churned_at", fields[3])?;
        if churned != churned_at_ms.is_some() {
            return Err(field_err(
                "churned_at",
                fields[3],
                "must be set exactly when churned is 1",
            ));
        }
        let segment = fields[4];
        if segment.is_empty() {
            return Err(field_err("segment", segment, "is empty"));
        }
        out.push(Label {
            customer_id: customer_id.to_string(),
            churned,
            decline_onset_ms,
            churned_at_ms,
            segment: segment.to_string(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Label> {
        vec![
            Label {
                customer_id: "c000001".into(),
                churned: true,
                decline_onset_ms: Some(1_767_225_600_000),
                churned_at_ms: Some(1_770_000_000_123),
                segment: "gradual_decline".into(),
            },
            Label {
                customer_id: "c000002".into(),
                churned: false,
                decline_onset_ms: Some(1_790_000_000_000),
                churned_at_ms: None,
                segment: "abrupt_drop".into(),
            },
            Label {
                customer_id: "c000003".into(),
                churned: false,
                decline_onset_ms: None,
                churned_at_ms: None,
                segment: "steady".into(),
            },
        ]
    }

    fn write(labels: &[Label]) -> String {
        let mut buf = Vec::new();
        write_labels(&mut buf, labels).unwrap();
        String::from_utf8(buf).unwrap()
    }

    fn read(s: &str) -> Result<Vec<Label>, LabelsError> {
        read_labels(s.as_bytes())
    }

    #[test]
    fn round_trip() {
        let text = write(&sample());
        assert_eq!(
            text,
            "customer_id,churned,decline_onset,churned_at,segment\n\
             c000001,1,2026-01-01T00:00:00.000Z,2026-02-02T02:40:00.123Z,gradual_decline\n\
             c000002,0,2026-09-21T14:13:20.000Z,,abrupt_drop\n\
             c000003,0,,,steady\n"
        );
        assert_eq!(read(&text).unwrap(), sample());
        // CRLF, blank lines and seconds without milliseconds are accepted.
        let crlf = "customer_id,churned,decline_onset,churned_at,segment\r\n\r\n\
                    c1,1,2026-01-01T00:00:00Z,2026-01-02T00:00:00+00:00,sudden_stop\r\n";
        let l = read(crlf).unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].churned_at_ms, Some(1_767_225_600_000 + 86_400_000));
        assert!(read(HEADER).unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_line_and_column() {
        let err = |s: &str| read(s).unwrap_err().to_string();
        assert_eq!(
            err(""),
            "labels: the input is empty (expected the header \"customer_id,churned,decline_onset,churned_at,segment\")"
        );
        assert!(err("id,churned\n").starts_with("labels line 1: expected the header"));
        let body = |rows: &str| format!("{HEADER}\n{rows}");
        assert_eq!(
            err(&body("c1,0,,,steady\nc2,0,,steady\n")),
            "labels line 3: expected 5 columns (customer_id,churned,decline_onset,churned_at,segment), found 4"
        );
        assert_eq!(
            err(&body("c1,yes,,,steady\n")),
            "labels line 2, column churned: expected 0 or 1 (found \"yes\")"
        );
        assert_eq!(
            err(&body("c1,0,,,steady\n\nc2,0,2026-13-01,,steady\n")),
            "labels line 4, column decline_onset: expected an RFC 3339 time or nothing (found \"2026-13-01\")"
        );
        assert_eq!(
            err(&body("c1,1,,,sudden_stop\n")),
            "labels line 2, column churned_at: must be set exactly when churned is 1 (found \"\")"
        );
        assert_eq!(
            err(&body("c1,0,,2026-01-01T00:00:00Z,steady\n")),
            "labels line 2, column churned_at: must be set exactly when churned is 1 (found \"2026-01-01T00:00:00Z\")"
        );
        assert_eq!(
            err(&body(",0,,,steady\n")),
            "labels line 2, column customer_id: is empty (found \"\")"
        );
        assert_eq!(
            err(&body("c1,0,,,\n")),
            "labels line 2, column segment: is empty (found \"\")"
        );
    }

    #[test]
    fn refuses_to_write_fields_that_need_quoting() {
        let mut l = sample();
        l[0].customer_id = "a,b".into();
        let e = write_labels(Vec::new(), &l).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn from_truth() {
        use crate::sim::{SimConfig, Simulator};
        let mut sim = Simulator::new(SimConfig {
            customers: 50,
            days: 30.0,
            ..SimConfig::default()
        });
        sim.advance(sim.end_ms(), &mut Vec::new());
        let labels: Vec<Label> = sim.truth().iter().map(Label::from).collect();
        assert_eq!(labels.len(), 50);
        let text = write(&labels);
        assert_eq!(read(&text).unwrap(), labels);
    }
}
