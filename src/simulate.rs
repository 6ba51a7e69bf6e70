//! `churnwatch simulate`: write a dataset (events.jsonl + labels.csv) or produce to Kafka.
//!
//! The events come from the seeded [`Simulator`] (its module documents the model and the
//! label definitions), in arrival order (late events and duplicates included), one JSON
//! payload per line or per Kafka message (key = customer id). Only events with `ts` inside
//! the period `[start, start + days)` are produced; late ones may arrive after its end. The
//! labels ([`crate::labels`]) list every customer, including those acquired late in the
//! period and the few existing ones without any event in it.
//!
//! Nothing is printed: the caller prints the returned [`DatasetSummary`] (its `Display` is
//! a few lines, without a final line end).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use crate::labels::{write_labels, Label};
use crate::sim::{SimConfig, SimEvent, Simulator, DEFAULT_START_MS};
use crate::time::{format_rfc3339_ms, DAY_MS};

/// File names inside the output directory.
pub const EVENTS_FILE: &str = "events.jsonl";
pub const LABELS_FILE: &str = "labels.csv";

/// How long to wait at the end for the broker to acknowledge everything produced.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(300);

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulateOptions {
    pub customers: usize,
    /// Length of the period in days (fractions allowed).
    pub days: f64,
    pub seed: u64,
    /// Start of the period, ms since the Unix epoch (default 2026-01-01T00:00:00Z).
    pub start_ms: i64,
    /// Share of deliberately malformed messages (default 0).
    pub malformed_share: f64,
}

impl Default for SimulateOptions {
    fn default() -> Self {
        SimulateOptions {
            customers: 20_000,
            days: 365.0,
            seed: 1,
            start_ms: DEFAULT_START_MS,
            malformed_share: 0.0,
        }
    }
}

impl SimulateOptions {
    /// The simulator configuration: the defaults of [`SimConfig`] with these options.
    pub fn sim_config(&self) -> SimConfig {
        SimConfig {
            customers: self.customers,
            seed: self.seed,
            start_ms: self.start_ms,
            days: self.days,
            malformed_share: self.malformed_share,
            ..SimConfig::default()
        }
    }

    /// Check the options (the error names the option).
    pub fn validate(&self) -> Result<(), SimulateError> {
        let bad = |m: String| Err(SimulateError::Options(m));
        if self.customers == 0 || self.customers >= 1_000_000_000 {
            return bad(format!(
                "--customers must be between 1 and 999999999, got {}",
                self.customers
            ));
        }
        if !(self.days.is_finite() && self.days > 0.0 && self.days <= 36_500.0) {
            return bad(format!(
                "--days must be a number of days above 0 and at most 36500, got {}",
                self.days
            ));
        }
        if !(0.0..=1.0).contains(&self.malformed_share) {
            return bad(format!(
                "the malformed share must be between 0 and 1, got {}",
                self.malformed_share
            ));
        }
        Ok(())
    }
}

/// Errors of `simulate`.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("invalid options: {0}")]
    Options(String),
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not create the Kafka producer: {0}")]
    Producer(#[source] KafkaError),
    #[error("could not produce to topic {topic}: {source}")]
    Produce {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error(
        "the broker did not acknowledge {failed} of {produced} messages (first error: {first})"
    )]
    Delivery {
        failed: u64,
        produced: u64,
        first: String,
    },
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> SimulateError + 'a {
    move |source| SimulateError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// What was generated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatasetSummary {
    pub seed: u64,
    pub start_ms: i64,
    /// End of the period (exclusive).
    pub end_ms: i64,
    pub customers: usize,
    /// Customers acquired during the period (the others existed at its start).
    pub acquired: usize,
    /// Customers without any event in the period (existing buyers with a very low rate).
    pub silent_customers: usize,
    /// Messages written or produced, including late ones, duplicates and malformed ones.
    pub events: u64,
    /// Total payload bytes (without line ends).
    pub bytes: u64,
    pub late: u64,
    pub duplicates: u64,
    pub malformed: u64,
    /// Customers labelled churned (churned_at inside the period).
    pub churners: usize,
    pub customers_by_kind: BTreeMap<String, usize>,
    pub customers_by_segment: BTreeMap<String, usize>,
    pub churners_by_segment: BTreeMap<String, usize>,
}

impl fmt::Display for DatasetSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = |n: usize| 100.0 * n as f64 / self.customers.max(1) as f64;
        writeln!(
            f,
            "period {} .. {} (seed {})",
            format_rfc3339_ms(self.start_ms),
            format_rfc3339_ms(self.end_ms),
            self.seed
        )?;
        writeln!(
            f,
            "events: {} ({:.1} MB of payload; {} late, {} duplicates, {} malformed)",
            self.events,
            self.bytes as f64 / 1e6,
            self.late,
            self.duplicates,
            self.malformed
        )?;
        let kinds: Vec<String> = self
            .customers_by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        writeln!(
            f,
            "customers: {} ({} existing at the start, {} acquired, {} without events; {})",
            self.customers,
            self.customers - self.acquired,
            self.acquired,
            self.silent_customers,
            kinds.join(", ")
        )?;
        write!(
            f,
            "churned: {} ({:.1} %); segments:",
            self.churners,
            pct(self.churners)
        )?;
        for (seg, n) in &self.customers_by_segment {
            let c = self.churners_by_segment.get(seg).copied().unwrap_or(0);
            write!(f, "\n  {seg:16} {n:7} ({:4.1} %), churned {c}", pct(*n))?;
        }
        Ok(())
    }
}

/// Run the simulation over the whole period, handing every message to `sink` in arrival
/// order; returns the simulator (for the truth) and the summary.
fn generate(
    opts: &SimulateOptions,
    mut sink: impl FnMut(&SimEvent) -> Result<(), SimulateError>,
) -> Result<(Simulator, DatasetSummary), SimulateError> {
    opts.validate()?;
    let mut sim = Simulator::new(opts.sim_config());
    let end = sim.end_ms();
    let mut buf: Vec<SimEvent> = Vec::new();
    let mut bytes = 0u64;
    let mut t = sim.start_ms();
    loop {
        // An hour at a time: a paced producer then sends evenly, not a day's burst at once.
        t = (t + DAY_MS / 24).min(end);
        sim.advance(t, &mut buf);
        if t >= end {
            sim.flush(&mut buf);
        }
        for e in buf.drain(..) {
            bytes += e.payload.len() as u64;
            sink(&e)?;
        }
        if t >= end {
            break;
        }
    }
    let truth = sim.truth();
    let mut s = DatasetSummary {
        seed: opts.seed,
        start_ms: sim.start_ms(),
        end_ms: end,
        customers: truth.len(),
        acquired: truth.iter().filter(|t| t.acquired_ms.is_some()).count(),
        silent_customers: sim.silent_customers(),
        events: sim.events_emitted(),
        bytes,
        late: sim.late_emitted(),
        duplicates: sim.duplicates_emitted(),
        malformed: sim.malformed_emitted(),
        churners: truth.iter().filter(|t| t.churned).count(),
        ..DatasetSummary::default()
    };
    for t in &truth {
        *s.customers_by_kind
            .entry(t.kind.as_str().to_string())
            .or_default() += 1;
        *s.customers_by_segment
            .entry(t.segment.as_str().to_string())
            .or_default() += 1;
        if t.churned {
            *s.churners_by_segment
                .entry(t.segment.as_str().to_string())
                .or_default() += 1;
        }
    }
    Ok((sim, s))
}

fn labels_of(sim: &Simulator) -> Vec<Label> {
    sim.truth().iter().map(Label::from).collect()
}

fn write_labels_file(sim: &Simulator, path: &Path) -> Result<(), SimulateError> {
    let f = File::create(path).map_err(io_err("create", path))?;
    write_labels(BufWriter::new(f), &labels_of(sim)).map_err(io_err("write", path))
}

/// Write `dir/events.jsonl` (one payload per line, in arrival order) and `dir/labels.csv`
/// (every customer), creating `dir` if needed.
pub fn write_dataset(opts: &SimulateOptions, dir: &Path) -> Result<DatasetSummary, SimulateError> {
    opts.validate()?;
    std::fs::create_dir_all(dir).map_err(io_err("create the directory", dir))?;
    let events_path = dir.join(EVENTS_FILE);
    let file = File::create(&events_path).map_err(io_err("create", &events_path))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let (sim, summary) = generate(opts, |e| {
        w.write_all(&e.payload)
            .and_then(|()| w.write_all(b"\n"))
            .map_err(io_err("write", &events_path))
    })?;
    w.flush().map_err(io_err("write", &events_path))?;
    drop(w);
    write_labels_file(&sim, &dir.join(LABELS_FILE))?;
    Ok(summary)
}

/// Counts failed deliveries.
#[derive(Default)]
struct DeliveryCounter {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut first) = self.first_error.lock() {
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// A producer tuned for simulated traffic (large batches, a deep local queue): what `simulate`
/// and the demo produce with.
pub fn producer_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "200000");
    config
}

/// Produce every event to `topic` on `brokers` (key = customer id), in arrival order, with
/// `properties` passed to librdkafka last (security settings, compression, ...); at most
/// `rate` messages per second of wall-clock time when given (a load test at a steady rate),
/// else as fast as the broker takes them. Wait until the broker has acknowledged every
/// message, then write the labels to `labels_path` if given. Blocks the calling thread.
pub fn produce(
    opts: &SimulateOptions,
    brokers: &str,
    topic: &str,
    properties: &[(String, String)],
    labels_path: Option<&Path>,
    rate: Option<f64>,
) -> Result<DatasetSummary, SimulateError> {
    opts.validate()?;
    let mut config = producer_config(brokers);
    config
        .set("client.id", "churnwatch-simulate")
        .set("enable.idempotence", "true");
    for (k, v) in properties {
        config.set(k, v);
    }
    let producer: ThreadedProducer<DeliveryCounter> = config
        .create_with_context(DeliveryCounter::default())
        .map_err(SimulateError::Producer)?;
    let started = std::time::Instant::now();
    let mut sent = 0u64;
    let (sim, summary) = generate(opts, |e| {
        if let Some(rate) = rate.filter(|r| *r > 0.0) {
            // Checked every 64 messages: a sleep per message would cap the rate by itself.
            if sent % 64 == 0 {
                let due = Duration::from_secs_f64(sent as f64 / rate);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            sent += 1;
        }
        let mut record = BaseRecord::to(topic)
            .key(e.customer_id.as_bytes())
            .payload(&e.payload);
        loop {
            match producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((source, _)) => {
                    return Err(SimulateError::Produce {
                        topic: topic.to_string(),
                        source,
                    })
                }
            }
        }
    })?;
    producer
        .flush(FLUSH_TIMEOUT)
        .map_err(|source| SimulateError::Produce {
            topic: topic.to_string(),
            source,
        })?;
    let ctx = producer.context();
    let failed = ctx.failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = ctx
            .first_error
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_default();
        return Err(SimulateError::Delivery {
            failed,
            produced: summary.events,
            first,
        });
    }
    if let Some(path) = labels_path {
        write_labels_file(&sim, path)?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_validated() {
        let ok = SimulateOptions::default();
        assert!(ok.validate().is_ok());
        let e = |o: SimulateOptions| o.validate().unwrap_err().to_string();
        assert!(e(SimulateOptions {
            customers: 0,
            ..ok.clone()
        })
        .contains("--customers"));
        assert!(e(SimulateOptions {
            days: f64::NAN,
            ..ok.clone()
        })
        .contains("--days"));
        assert!(e(SimulateOptions {
            days: 0.0,
            ..ok.clone()
        })
        .contains("--days"));
        assert!(e(SimulateOptions {
            malformed_share: 1.5,
            ..ok.clone()
        })
        .contains("malformed"));
    }

    #[test]
    fn dataset_and_summary() {
        let dir = tempfile::tempdir().unwrap();
        let opts = SimulateOptions {
            customers: 200,
            days: 60.0,
            seed: 3,
            ..SimulateOptions::default()
        };
        let s = write_dataset(&opts, &dir.path().join("out")).unwrap();
        let events = std::fs::read_to_string(dir.path().join("out").join(EVENTS_FILE)).unwrap();
        assert_eq!(events.lines().count() as u64, s.events);
        assert_eq!(events.len() as u64, s.bytes + s.events);
        let labels = std::fs::read(dir.path().join("out").join(LABELS_FILE)).unwrap();
        let labels = crate::labels::read_labels(labels.as_slice()).unwrap();
        assert_eq!(labels.len(), 200);
        assert_eq!(s.customers, 200);
        assert_eq!(s.churners, labels.iter().filter(|l| l.churned).count());
        assert_eq!(s.customers_by_segment.values().sum::<usize>(), 200);
        assert_eq!(s.churners_by_segment.values().sum::<usize>(), s.churners);
        let text = s.to_string();
        assert!(text.contains("customers: 200"), "{text}");
        // Same seed, same bytes.
        let again = write_dataset(&opts, &dir.path().join("again")).unwrap();
        assert_eq!(again, s);
        let events2 = std::fs::read_to_string(dir.path().join("again").join(EVENTS_FILE)).unwrap();
        assert!(events == events2);
    }

    #[test]
    fn unwritable_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let e = write_dataset(
            &SimulateOptions {
                customers: 5,
                days: 1.0,
                ..SimulateOptions::default()
            },
            &file.join("sub"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("plain-file"), "{e}");
    }
}
