//! The changelog's producing thread.
//!
//! A checkpoint copies the changed customers' states on the consumer thread into one
//! [`ChangelogBatch`] (~30 ns per customer: a copy of the state and of its ring) and hands it
//! to the [`ChangelogWriter`], whose thread encodes them (~130 ns each) and gives each record
//! to librdkafka (about a microsecond each: the copy of the message, the queue's locks, a
//! delivery future). Processing pauses for the copies only. With the producing inline, a
//! checkpoint of 50,000 changed customers held the consumer up for ~70 ms; with the encoding
//! on the consumer thread, ~10 ms, which set the tail of the decision latency.
//!
//! Batches are produced in the order they were written, each record in the order it was
//! pushed: a customer's newer record always follows the older one, and a partition's progress
//! record the customers it accounts for.

use std::ops::Range;
use std::sync::mpsc;
use std::thread::JoinHandle;

use futures::channel::oneshot;
use futures::executor::block_on;
use futures::FutureExt;
use rdkafka::error::KafkaError;

use super::sink::{PendingAck, Sink, SinkError};
use crate::customer::CustomerState;
use crate::state::record::append_customer;

/// Changelog records waiting to be produced: their keys and encoded values in one buffer, and
/// the customers' states still to be encoded (`ChangelogBatch::encode`, on the writer's
/// thread).
#[derive(Default)]
pub struct ChangelogBatch {
    bytes: Vec<u8>,
    /// The (topic, partition) of each run of records.
    targets: Vec<(String, i32)>,
    records: Vec<Entry>,
    /// Copies of customers' states and their applied offsets, for `Value::State` entries.
    states: Vec<(i64, CustomerState)>,
}

struct Entry {
    target: usize,
    key: Range<usize>,
    value: Value,
}

enum Value {
    Encoded(Range<usize>),
    /// Index into `states`, to be encoded.
    State(usize),
    Tombstone,
}

impl ChangelogBatch {
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Records pushed from now on go to `partition` of `topic`.
    pub fn to(&mut self, topic: &str, partition: i32) {
        if self
            .targets
            .last()
            .is_none_or(|(t, p)| t != topic || *p != partition)
        {
            self.targets.push((topic.to_string(), partition));
        }
    }

    /// A customer's record: their state as of input `applied_offset`, or a tombstone (`None`).
    /// The state is copied, and encoded later, on the writer's thread (`ChangelogBatch::encode`).
    pub fn push_customer(&mut self, id: &str, applied_offset: i64, state: Option<&CustomerState>) {
        let key = self.append(|b| b.extend_from_slice(id.as_bytes()));
        let value = match state {
            Some(c) => {
                self.states.push((applied_offset, c.clone()));
                Value::State(self.states.len() - 1)
            }
            None => Value::Tombstone,
        };
        self.push_entry(key, value);
    }

    /// A record with an encoded value.
    pub fn push(&mut self, key: &[u8], value: &[u8]) {
        let key = self.append(|b| b.extend_from_slice(key));
        let value = self.append(|b| b.extend_from_slice(value));
        self.push_entry(key, Value::Encoded(value));
    }

    /// Encode the copied states into the buffer (and free the copies).
    fn encode(&mut self) {
        let states = std::mem::take(&mut self.states);
        for r in &mut self.records {
            if let Value::State(i) = r.value {
                let (applied_offset, c) = &states[i];
                let start = self.bytes.len();
                append_customer(&mut self.bytes, *applied_offset, c);
                r.value = Value::Encoded(start..self.bytes.len());
            }
        }
    }

    fn append(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> Range<usize> {
        let start = self.bytes.len();
        write(&mut self.bytes);
        start..self.bytes.len()
    }

    fn push_entry(&mut self, key: Range<usize>, value: Value) {
        let target = self
            .targets
            .len()
            .checked_sub(1)
            .expect("ChangelogBatch::to before the first record");
        self.records.push(Entry { target, key, value });
    }

    /// A record's value: its bytes, or `None` for a tombstone (after [`ChangelogBatch::encode`]).
    fn value(&self, r: &Entry) -> Option<&[u8]> {
        match &r.value {
            Value::Encoded(v) => Some(&self.bytes[v.clone()]),
            Value::Tombstone => None,
            Value::State(_) => unreachable!("a batch is encoded before it is read"),
        }
    }

    /// Encode the batch, then hand every record to the producer, in order; stops at the first
    /// that cannot be.
    fn produce(mut self, sink: &Sink) -> Result<Vec<PendingAck>, SinkError> {
        self.encode();
        self.records
            .iter()
            .map(|r| {
                let (topic, partition) = &self.targets[r.target];
                sink.send_changelog(topic, *partition, &self.bytes[r.key.clone()], self.value(r))
            })
            .collect()
    }
}

/// What producing a batch gave: an acknowledgement to wait for per record.
type Produced = Result<Vec<PendingAck>, SinkError>;

/// The thread that produces changelog batches, in the order they are written.
pub struct ChangelogWriter {
    batches: Option<mpsc::Sender<(ChangelogBatch, oneshot::Sender<Produced>)>>,
    thread: Option<JoinHandle<()>>,
}

impl ChangelogWriter {
    /// Start the thread; it produces through `sink`.
    pub fn start(sink: Sink) -> std::io::Result<Self> {
        let (batches, queue) = mpsc::channel::<(ChangelogBatch, oneshot::Sender<Produced>)>();
        let thread = std::thread::Builder::new()
            .name("changelog".into())
            .spawn(move || {
                for (batch, done) in queue {
                    // The receiver may be gone (a rewind forgot the checkpoint): nothing to tell.
                    let _ = done.send(batch.produce(&sink));
                }
            })?;
        Ok(ChangelogWriter {
            batches: Some(batches),
            thread: Some(thread),
        })
    }

    /// Queue `batch` behind those written before it.
    pub fn write(&self, batch: ChangelogBatch) -> Writing {
        let (done, produced) = oneshot::channel();
        let records = batch.len();
        let sender = self.batches.as_ref().expect("open until dropped");
        // A thread that is gone drops `done`: the batch then reads as failed.
        let _ = sender.send((batch, done));
        Writing { produced, records }
    }
}

impl Drop for ChangelogWriter {
    fn drop(&mut self) {
        drop(self.batches.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A batch being handed to the producer.
pub struct Writing {
    produced: oneshot::Receiver<Produced>,
    /// Records in the batch.
    pub records: usize,
}

impl Writing {
    /// The batch's acknowledgements once all its records are with the producer; `None` until
    /// then.
    pub fn poll(&mut self) -> Option<Produced> {
        (&mut self.produced).now_or_never().map(outcome)
    }

    /// Wait until all its records are with the producer.
    pub fn wait(self) -> Produced {
        outcome(block_on(self.produced))
    }
}

fn outcome(r: Result<Produced, oneshot::Canceled>) -> Produced {
    r.unwrap_or_else(|_| {
        Err(SinkError::Enqueue {
            topic: "changelog".into(),
            source: KafkaError::Canceled,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_records_in_order_with_their_targets() {
        let mut b = ChangelogBatch::default();
        b.to("cl", 3);
        b.push(b"k1", b"v1");
        b.to("cl", 3);
        b.push_customer("gone", 5, None);
        b.to("cl", 4);
        b.push(b"k2", b"");
        assert_eq!(b.len(), 3);
        b.encode();
        let seen: Vec<_> = b
            .records
            .iter()
            .map(|r| {
                (
                    b.targets[r.target].clone(),
                    &b.bytes[r.key.clone()],
                    b.value(r),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                (("cl".to_string(), 3), &b"k1"[..], Some(&b"v1"[..])),
                (("cl".to_string(), 3), &b"gone"[..], None),
                (("cl".to_string(), 4), &b"k2"[..], Some(&b""[..])),
            ]
        );
    }

    #[test]
    fn a_customer_record_is_the_same_bytes_as_encoded_alone() {
        let cfg = crate::config::Config::default();
        let mut c = CustomerState::new(&cfg, 1_700_000_000_000);
        let visit = |c: &mut CustomerState, ts_ms: i64| {
            c.apply(
                &crate::event::Event {
                    customer_id: std::borrow::Cow::Borrowed("c1"),
                    ts_ms,
                    activity: crate::event::Activity::Visit,
                    event_id: None,
                },
                &cfg,
            );
        };
        visit(&mut c, 1_700_000_000_000);
        let mut alone = Vec::new();
        crate::state::record::encode_customer(&mut alone, 9, &c);
        let mut b = ChangelogBatch::default();
        b.to("cl", 0);
        b.push(b"x", b"y");
        b.push_customer("c1", 9, Some(&c));
        // The batch holds the state as it was pushed: later changes are not in the record,
        // which is encoded on the writer's thread.
        visit(&mut c, 1_700_000_100_000);
        b.encode();
        let r = &b.records[1];
        assert_eq!(&b.bytes[r.key.clone()], b"c1");
        assert_eq!(b.value(r), Some(&alone[..]));
        assert!(b.states.is_empty(), "the copies are freed once encoded");
    }
}
