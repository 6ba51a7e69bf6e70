//! Durable per-customer state: changelog topics and the recovery model.
//!
//! Kafka is the store, as in Kafka Streams:
//!
//! - Every events-topic partition has a **changelog** partition with the same number, in the
//!   topic `<kafka.group_id>-<events topic>-changelog` (compacted, created by churnwatch with
//!   the events topic's partition count when missing). Its records are keyed by customer id
//!   and hold that customer's whole state ([`record`]); one more record per partition holds
//!   its stream time and the last input offset applied.
//! - At each **checkpoint** (every `kafka.commit_interval_ms`, before a partition is
//!   released, and at shutdown) the pipeline writes the changed customers and the partition
//!   record, and commits the input offsets as of the checkpoint only once the broker has
//!   acknowledged those records and every alert and dead-letter record produced before them
//!   (processing goes on meanwhile; see [`crate::processor`]). Under `processing.guarantee = "exactly_once"` the same records and the offsets
//!   commit atomically in one Kafka transaction instead.
//! - At least once, changed customers are also written **between checkpoints**, once
//!   `state.write_changed_after` of them are waiting, each record with the input offset its
//!   state holds; tombstones and the customers who alerted since the last checkpoint wait for
//!   the checkpoint ([`crate::partition::PartitionState::drain_dirty`] says why).
//! - When a partition is **assigned**, its changelog partition is read from the beginning to
//!   the end (committed records only) before any of its events is processed, with the restore
//!   time and volume logged and in metrics.
//! - After a crash, input is re-read from the last committed offset. A customer whose stored
//!   state already holds a re-read event (its `applied_offset`) does not apply it again, so no
//!   event is counted twice; customers stored earlier re-apply it and re-emit the same alerts
//!   (same `alert_id`). Time-driven re-scores that changed nothing are not written; a restore
//!   re-arms them on the same event-time grid.
//!
//! [`changelog`] holds the topic handling and the restore reader.

pub mod changelog;
mod format4;
pub mod record;

pub use changelog::{changelog_topic, Changelog, RestoreCount, StateError};
pub use record::{Record, StoredCustomer, StoredPartition};
