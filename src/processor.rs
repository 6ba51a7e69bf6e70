//! The partitions one instance owns and their life: messages in, alerts out, checkpoints,
//! restore on assignment, drain on revocation. Runs on the consumer thread; the consumer's
//! rebalance callbacks reach it through [`crate::kafka::ConsumerCtx`].
//!
//! A **checkpoint** makes the work since the previous one durable, in this order (see
//! [`crate::state`] for the recovery model):
//! - at-least-once: wait for the acknowledgements of every alert and dead-letter record
//!   produced since the previous checkpoint (a customer's record must not become durable
//!   before the alerts its state has raised), write the changed customers and each
//!   partition's progress to the changelog (encoded here, handed to the producer by the
//!   [`ChangelogWriter`]'s thread), and once the broker has acknowledged those,
//!   commit the input offsets as of the checkpoint. Processing goes on meanwhile: the
//!   changelog's acknowledgements are checked after each chunk ([`Processor::settle`]), and a
//!   checkpoint waits only for the previous one. Revoking partitions and shutting down wait for
//!   theirs;
//! - exactly-once: write the changelog records into the open transaction, add the input
//!   offsets to it (`send_offsets_to_transaction`) and commit it.
//!
//! A record the broker does not take, or a transaction that fails, stops the pipeline before
//! the offsets move: a restart re-reads those events and restores the last checkpoint.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::executor::block_on;
use futures::FutureExt;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{DeliveryFuture, FutureProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};
use rustc_hash::FxHashMap;
use tracing::{debug, error, info, warn};

use crate::alert::{Alert, SourceRef};
use crate::config::{Config, Guarantee};
use crate::event::{decode, DecodeLimits, InvalidEvent, InvalidReason};
use crate::http::Health;
use crate::kafka::sink::PendingAck;
use crate::kafka::{
    producer_config, ChangelogBatch, ChangelogWriter, DeadLetter, KafkaPipelineError, Sink,
    SinkError, Writing,
};
use crate::metrics::Metrics;
use crate::partition::{lookahead, Ahead, AheadRing, Lookahead, PartitionState, Step};
use crate::state::record::{encode_partition, StoredPartition, META_KEY};
use crate::state::{changelog_topic, Changelog, Record, StateError, StoredCustomer};
use crate::status::{AtRisk, CustomerSource, CustomerView};
use crate::time::now_ms;

/// Errors that stop the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Kafka(#[from] KafkaPipelineError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("could not start the changelog's producing thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("gave up after {recoveries} recoveries within {window:?}; the last failure: {last}")]
    GaveUp {
        recoveries: usize,
        window: Duration,
        last: String,
    },
}

impl PipelineError {
    /// Whether rewinding to the last checkpoint can get past it (a broker that did not take a
    /// record or a transaction that failed; not a bad config or a corrupt changelog).
    pub fn is_transient(&self) -> bool {
        match self {
            // A transaction the broker cannot do at all (fatal, or an API it lacks) is not.
            PipelineError::Kafka(KafkaPipelineError::Transaction {
                source: KafkaError::Transaction(e),
                ..
            }) => !e.is_fatal() && (e.txn_requires_abort() || e.is_retriable()),
            PipelineError::Kafka(
                KafkaPipelineError::Delivery { .. }
                | KafkaPipelineError::Transaction { .. }
                | KafkaPipelineError::Rewind(_),
            )
            | PipelineError::Sink(_)
            | PipelineError::State(StateError::Read { .. } | StateError::Metadata { .. }) => true,
            _ => false,
        }
    }
}

/// Counts of one run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunSummary {
    /// Chunks of messages handled (messages / chunks = mean chunk size).
    pub chunks: u64,
    pub messages: u64,
    pub events: u64,
    pub invalid: u64,
    pub alerts: u64,
    pub checkpoints: u64,
    /// Rewinds to the last checkpoint after a transient failure.
    pub recoveries: u64,
}

/// More recoveries than this within [`RECOVERY_WINDOW`] stop the pipeline: the failure is not
/// transient after all.
const MAX_RECENT_RECOVERIES: usize = 10;
const RECOVERY_WINDOW: Duration = Duration::from_secs(120);

/// Attempts to restore after a transient failure before the pipeline gives up, and the pause
/// between them.
const RECOVERY_ATTEMPTS: u32 = 60;
const RECOVERY_PAUSE: Duration = Duration::from_secs(2);

/// Acknowledgements outstanding beyond which a checkpoint is taken early (bounds memory and
/// the work a crash can make the pipeline redo).
const MAX_PENDING: usize = 200_000;

/// How long back-pressure waits for a checkpoint's changelog records to drain before it pauses
/// the partitions ([`Processor::throttle`]).
const CHECKPOINT_DRAIN_WAIT: Duration = Duration::from_secs(1);

/// Per partition with work not committed yet: topic, partition, last offset processed.
type Offsets = Vec<(String, i32, i64)>;

/// An at-least-once checkpoint whose records are written but not all acknowledged: its
/// offsets are committed once they are.
struct InFlight {
    /// Its changelog batches still being handed to the producer, oldest first.
    writing: Vec<Writing>,
    /// The acknowledgements of the records handed over.
    acks: Vec<PendingAck>,
    /// As of the checkpoint.
    offsets: Offsets,
}

/// One assigned events-topic partition.
struct Part {
    topic: String,
    partition: i32,
    changelog_topic: String,
    state: PartitionState,
    /// Offset of the last message processed since the assignment.
    processed: Option<i64>,
    /// Offset of the last message whose effects the restored state held (-1: none).
    restored_at: i64,
    /// Offset of the last message this instance committed (None: nothing yet).
    committed: Option<i64>,
}

/// Add `part`'s changed customers to `batch`, and `at_checkpoint` (just before its progress
/// record) also its evicted ones and those who alerted (see [`PartitionState::drain_dirty`]).
/// Returns the input offset their states hold.
fn drain_changed(part: &mut Part, at_checkpoint: bool, batch: &mut ChangelogBatch) -> i64 {
    let at = part.processed.unwrap_or(part.restored_at);
    batch.to(&part.changelog_topic, part.partition);
    part.state.drain_dirty(at, at_checkpoint, |id, c, applied| {
        batch.push_customer(id, applied, c)
    });
    at
}

/// The changed customers and the progress of every partition that moved, to write at a
/// checkpoint.
fn changelog_batch(parts: &mut [Part], metrics: &Metrics) -> ChangelogBatch {
    let mut batch = ChangelogBatch::default();
    for part in parts {
        if part.state.dirty_len() == 0
            && (part.processed.is_none() || part.processed == part.committed)
        {
            continue;
        }
        let at = drain_changed(part, true, &mut batch);
        batch.push(META_KEY, &encode_partition(&part.state.progress(at)));
    }
    metrics.changelog_records_total.inc_by(batch.len() as u64);
    batch
}

/// The changelog's two sides: its topics (creation, restore) and the thread that writes it.
struct ChangelogIo {
    topics: Changelog,
    writer: ChangelogWriter,
}

/// Everything the consumer thread owns.
pub struct Processor {
    cfg: Arc<Config>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    sink: Sink,
    /// With `state.changelog` on.
    changelog: Option<ChangelogIo>,
    /// Batches written between checkpoints: they join the next checkpoint.
    writing: Vec<Writing>,
    parts: Vec<Part>,
    /// The consumer's assignment (a superset of `parts` while a restore is failing).
    assigned: Vec<(String, i32)>,
    alerts: Vec<Alert>,
    pending: Vec<PendingAck>,
    in_flight: Option<InFlight>,
    in_txn: bool,
    /// Whether consumption is paused by back-pressure ([`Processor::throttle`]).
    paused: bool,
    last_checkpoint: Instant,
    max_event_ms: Option<i64>,
    /// When the recent recoveries happened.
    recoveries: Vec<Instant>,
    /// An error raised inside a rebalance callback, for the loop to act on.
    fatal: Option<PipelineError>,
    /// Revocations so far (a chunk fetched across one holds messages of partitions gone).
    revocations: u64,
    pub summary: RunSummary,
}

impl Processor {
    /// This instance's at-risk customers, most value at risk first (the status page).
    pub fn at_risk(&self, limit: usize) -> AtRisk {
        let mut all: Vec<(f64, usize, &str)> = self
            .parts
            .iter()
            .enumerate()
            .flat_map(|(i, p)| p.state.at_risk().map(move |(id, v)| (v, i, id)))
            .collect();
        let total = all.len();
        if limit < total {
            all.select_nth_unstable_by(limit, |a, b| b.0.total_cmp(&a.0));
            all.truncate(limit);
        }
        all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.2.cmp(b.2)));
        let customers = all
            .into_iter()
            .filter_map(|(_, i, id)| {
                let p = &self.parts[i];
                let seen = p.state.inspect(id)?;
                Some(CustomerView::new(id, &p.topic, p.partition, &seen))
            })
            .collect();
        AtRisk { total, customers }
    }

    /// One customer, if one of this instance's partitions holds them.
    pub fn customer(&self, id: &str) -> Option<CustomerView> {
        self.parts.iter().find_map(|p| {
            let seen = p.state.inspect(id)?;
            Some(CustomerView::new(id, &p.topic, p.partition, &seen))
        })
    }

    /// Put a reloaded config in force in every partition (and in those assigned later). The
    /// timers already due fire under the config they fell due under.
    pub fn reconfigure(&mut self, cfg: Arc<Config>) {
        for p in &mut self.parts {
            p.state.fire_timers(&mut self.alerts, None);
            p.state.set_config(cfg.clone());
        }
        self.cfg = cfg;
    }

    /// Create the producer (and, exactly-once, initialise its transactions, fencing any
    /// predecessor with the same transactional id) and the changelog client.
    pub fn new(
        cfg: Arc<Config>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Result<Self, PipelineError> {
        let k = &cfg.kafka;
        let producer: FutureProducer =
            producer_config(&cfg)
                .create()
                .map_err(|source| KafkaPipelineError::Create {
                    what: "producer",
                    source,
                })?;
        if cfg.processing.guarantee == Guarantee::ExactlyOnce {
            producer
                .init_transactions(Duration::from_millis(k.delivery_timeout_ms))
                .map_err(|source| KafkaPipelineError::Transaction {
                    step: "init",
                    source,
                })?;
            info!(transactional_id = %cfg.processing.transactional_id, "transactions initialised");
        }
        let sink = Sink::new(
            producer,
            k.alerts_topic.clone(),
            k.dead_letter_topic.clone(),
        );
        let changelog = if cfg.state.changelog {
            Some(ChangelogIo {
                topics: Changelog::new(&cfg)?,
                writer: ChangelogWriter::start(sink.clone()).map_err(PipelineError::Thread)?,
            })
        } else {
            None
        };
        Ok(Processor {
            cfg,
            metrics,
            health,
            sink,
            changelog,
            writing: Vec::new(),
            parts: Vec::new(),
            assigned: Vec::new(),
            alerts: Vec::new(),
            pending: Vec::new(),
            in_flight: None,
            in_txn: false,
            paused: false,
            last_checkpoint: Instant::now(),
            max_event_ms: None,
            recoveries: Vec::new(),
            fatal: None,
            revocations: 0,
            summary: RunSummary::default(),
        })
    }

    fn eos(&self) -> bool {
        self.cfg.processing.guarantee == Guarantee::ExactlyOnce
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.kafka.delivery_timeout_ms)
    }

    /// Record an error met inside a rebalance callback (the first one wins).
    pub fn set_fatal(&mut self, e: PipelineError) {
        self.fatal.get_or_insert(e);
    }

    /// Revocations so far: see [`Processor::handle_chunk`].
    pub fn revocations(&self) -> u64 {
        self.revocations
    }

    /// An error a rebalance callback ran into.
    pub fn take_fatal(&mut self) -> Option<PipelineError> {
        self.fatal.take()
    }

    fn producer(&self) -> &FutureProducer {
        self.sink.producer()
    }

    /// Abort the open transaction, if any: nothing of it becomes visible or durable.
    fn abort(&mut self) {
        if self.in_txn {
            if let Err(e) = self.producer().abort_transaction(self.timeout()) {
                warn!(error = %e, "abort failed");
            }
            self.in_txn = false;
        }
    }

    /// Open a transaction before the first record of a checkpoint interval (exactly-once).
    fn begin(&mut self) -> Result<(), PipelineError> {
        if self.eos() && !self.in_txn {
            self.producer().begin_transaction().map_err(|source| {
                KafkaPipelineError::Transaction {
                    step: "begin",
                    source,
                }
            })?;
            self.in_txn = true;
        }
        Ok(())
    }

    fn part_index(&mut self, topic: &str, partition: i32) -> Result<usize, PipelineError> {
        if let Some(i) = self.position(topic, partition) {
            return Ok(i);
        }
        // Not announced by a rebalance (cannot happen with subscribe): restore it now.
        self.assign(&[(topic.to_string(), partition)])?;
        Ok(self.parts.len() - 1)
    }

    /// Process a chunk of messages in order, each message's customer prefetched a few
    /// messages ahead ([`crate::partition::lookahead`]) by the message key (the customer id,
    /// as producers key events; a message keyed otherwise is only not prefetched).
    ///
    /// The first `fetched_before_revocation` messages were fetched before a partition was
    /// revoked (in a later poll of the same chunk): those of a partition no longer held are
    /// skipped, as they would have been purged had they not been fetched yet. The revocation
    /// committed only what was processed, so the partition's new owner consumes them.
    pub fn handle_chunk(
        &mut self,
        msgs: &[KafkaResult<BorrowedMessage<'_>>],
        fetched_before_revocation: usize,
        limits: &DecodeLimits,
        polled_ms: i64,
    ) -> Result<(), PipelineError> {
        // Per message in flight: its partition's index and the customer's prefetch state,
        // found once (at the first stage).
        let mut ahead: AheadRing<(usize, Ahead)> = AheadRing::default();
        lookahead(msgs.len(), |step| {
            match step {
                Step::Prefetch(i, Lookahead::Index) => {
                    *ahead.at(i) = msgs[i].as_ref().ok().and_then(|m| {
                        let id = std::str::from_utf8(m.key()?).ok()?;
                        let part = self.held(m)?;
                        Some((part, self.parts[part].state.prefetch_index(id)))
                    });
                }
                Step::Prefetch(i, Lookahead::State) => {
                    if let Some((part, a)) = ahead.at(i) {
                        self.parts[*part].state.prefetch_state(a);
                    }
                }
                Step::Prefetch(i, Lookahead::Ring) => {
                    if let Some((part, a)) = ahead.at(i) {
                        self.parts[*part].state.prefetch_ring(a);
                    }
                }
                Step::Process(i) => match &msgs[i] {
                    Ok(m) if i < fetched_before_revocation && self.held(m).is_none() => {
                        debug!(
                            topic = m.topic(),
                            partition = m.partition(),
                            offset = m.offset(),
                            "message of a partition revoked after it was fetched: skipped"
                        );
                    }
                    Ok(m) => self.handle(m, limits, polled_ms)?,
                    Err(e) => warn!(error = %e, "error while consuming"),
                },
            }
            Ok(())
        })
    }

    /// The index of the message's partition among those held here, if held.
    fn held(&self, m: &BorrowedMessage<'_>) -> Option<usize> {
        self.position(m.topic(), m.partition())
    }

    fn position(&self, topic: &str, partition: i32) -> Option<usize> {
        self.parts
            .iter()
            .position(|p| p.partition == partition && p.topic == topic)
    }

    /// Process one message, polled at wall-clock time `polled_ms`.
    pub fn handle(
        &mut self,
        m: &BorrowedMessage<'_>,
        limits: &DecodeLimits,
        polled_ms: i64,
    ) -> Result<(), PipelineError> {
        self.summary.messages += 1;
        let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
        let idx = self.part_index(topic, partition)?;
        let payload = m.payload();
        let decoded = match payload {
            Some(p) => decode(p, limits),
            None => Err(InvalidEvent {
                reason: InvalidReason::NotJson,
                detail: "empty (null) payload".into(),
            }),
        };
        match decoded {
            Ok(ev) => {
                self.summary.events += 1;
                self.max_event_ms = Some(self.max_event_ms.map_or(ev.ts_ms, |t| t.max(ev.ts_ms)));
                let source = SourceRef {
                    topic,
                    partition,
                    offset,
                };
                self.parts[idx]
                    .state
                    .on_event(&ev, Some(source), &mut self.alerts);
                if let Some(ts) = m.timestamp().to_millis() {
                    let lat = (now_ms() - ts).max(0) as f64 / 1000.0;
                    self.metrics.decision_latency_seconds.observe(lat);
                    let polled = (polled_ms - ts).max(0) as f64 / 1000.0;
                    self.metrics.poll_latency_seconds.observe(polled);
                }
            }
            Err(inv) => {
                self.summary.invalid += 1;
                self.metrics
                    .events_invalid_total
                    .with_label_values(&[inv.reason.as_str()])
                    .inc();
                debug!(topic, partition, offset, reason = inv.reason.as_str(), detail = %inv.detail, "invalid event to dead-letter topic");
                self.begin()?;
                let ack = self.sink.send_dead_letter(DeadLetter {
                    payload: payload.unwrap_or(&[]),
                    key: m.key(),
                    reason: inv.reason,
                    detail: &inv.detail,
                    topic,
                    partition,
                    offset,
                })?;
                self.pending.push(ack);
            }
        }
        self.parts[idx].processed = Some(offset);
        Ok(())
    }

    /// Hand the alerts decided so far to the producer.
    pub fn emit(&mut self) -> Result<(), PipelineError> {
        if self.alerts.is_empty() {
            return Ok(());
        }
        self.begin()?;
        for a in self.alerts.drain(..) {
            debug!(customer_id = %a.customer_id, kind = a.kind.as_str(), tier = a.tier.as_str(), risk = a.risk_score, "alert");
            self.pending.push(self.sink.send_alert(&a)?);
            self.summary.alerts += 1;
        }
        Ok(())
    }

    /// Whether any partition has timers due that have not fired yet (they fire in runs between
    /// events; [`Processor::fire_some_timers`] works off the rest while no message waits).
    pub fn timers_due(&self) -> bool {
        self.parts.iter().any(|p| p.state.timers_due())
    }

    /// While no message is waiting: fire about `n` due timers in all (an equal share per
    /// partition, so that a message arriving meanwhile waits for little), and emit their alerts.
    pub fn fire_some_timers(&mut self, n: usize) -> Result<(), PipelineError> {
        let share = n.div_ceil(self.parts.len().max(1)).max(8);
        for p in &mut self.parts {
            p.state.fire_timers(&mut self.alerts, Some(share));
        }
        self.emit()
    }

    /// After a chunk of messages: publish progress, emit alerts, and checkpoint when due.
    pub fn after_chunk<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), PipelineError> {
        self.summary.chunks += 1;
        if let Some(t) = self.max_event_ms {
            self.metrics
                .last_event_timestamp_seconds
                .set(t as f64 / 1000.0);
        }
        self.enforce_capacity();
        self.emit()?;
        self.write_changed_customers();
        self.checkpoint_if_due(consumer)
    }

    /// At-least-once: once `state.write_changed_after` changed customers are waiting, write them to the
    /// changelog now, each record with the input offset its state holds (a restore skips re-read
    /// input up to it for that customer), so that a checkpoint has little left to write and
    /// processing never pauses long. Their acknowledgements join the next checkpoint's. Under
    /// exactly-once every record belongs to the checkpoint's transaction instead.
    fn write_changed_customers(&mut self) {
        let Some(cl) = self.changelog.as_ref().filter(|_| !self.eos()) else {
            return;
        };
        let after = self.cfg.state.write_changed_after;
        let waiting: usize = self.parts.iter().map(|p| p.state.changed_len()).sum();
        if after == 0 || waiting < after {
            return;
        }
        let mut batch = ChangelogBatch::default();
        for part in &mut self.parts {
            if part.state.changed_len() > 0 {
                drain_changed(part, false, &mut batch);
            }
        }
        self.metrics
            .changelog_records_total
            .inc_by(batch.len() as u64);
        self.writing.push(cl.writer.write(batch));
    }

    /// Keep the customers tracked within `state.max_customers`: beyond it, evict the least
    /// recently active down to 95% of the cap (so the scan this takes happens once per 5% of
    /// the cap of new customers), from each partition in proportion to its size.
    fn enforce_capacity(&mut self) {
        let cap = self.cfg.state.max_customers;
        let total: usize = self.parts.iter().map(|p| p.state.len()).sum();
        if cap == 0 || total <= cap {
            return;
        }
        let excess = total - (cap - cap / 20);
        let mut evicted = 0;
        for p in &mut self.parts {
            let share = (excess * p.state.len()).div_ceil(total);
            evicted += p.state.evict_least_active(share.min(excess - evicted));
        }
        warn!(
            tracked = total,
            max_customers = cap,
            evicted,
            "state.max_customers reached: evicted the least recently active customers"
        );
    }

    fn checkpoint_if_due<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), PipelineError> {
        self.settle(consumer, false)?;
        let interval = Duration::from_millis(self.cfg.kafka.commit_interval_ms);
        let awaited = self.pending.len() + self.writing.iter().map(|w| w.records).sum::<usize>();
        if self.last_checkpoint.elapsed() >= interval || awaited >= MAX_PENDING {
            self.checkpoint_with(consumer, false)?;
        }
        Ok(())
    }

    /// Back-pressure: pause every assigned partition while the producer holds more than
    /// `kafka.max_pending_records` unacknowledged records, resume once half are acknowledged.
    /// The loop keeps polling meanwhile (rebalances, group membership); librdkafka re-fetches
    /// from the position of the last message handled, so nothing is skipped.
    ///
    /// While a checkpoint's changelog records are in flight, the loop first waits up to
    /// `CHECKPOINT_DRAIN_WAIT` (1 s) for the producer to get back under the limit, as it did when it
    /// produced those records itself: a pause discards the messages prefetched for the
    /// partitions, which are fetched again on resume (against tansu, with the changelog's
    /// records handed over on their own thread, pausing took the broker from ~20 % to ~110 %
    /// of a core).
    pub fn throttle<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        let in_flight_now = || usize::try_from(self.producer().in_flight_count()).unwrap_or(0);
        let limit = self.cfg.kafka.max_pending_records;
        let mut in_flight = in_flight_now();
        if !self.paused && in_flight > limit && self.in_flight.is_some() {
            let waiting = Instant::now();
            while in_flight > limit && waiting.elapsed() < CHECKPOINT_DRAIN_WAIT {
                std::thread::sleep(Duration::from_millis(1));
                in_flight = in_flight_now();
            }
        }
        let pause = if !self.paused && in_flight > limit {
            true
        } else if self.paused && in_flight <= limit / 2 {
            false
        } else {
            return;
        };
        let result = consumer.assignment().and_then(|tpl| {
            if pause {
                consumer.pause(&tpl)?;
            } else {
                consumer.resume(&tpl)?;
            }
            Ok(tpl.count())
        });
        match result {
            Ok(n) => {
                self.paused = pause;
                self.metrics
                    .partitions_paused
                    .set(if pause { n as i64 } else { 0 });
                if pause {
                    self.metrics.backpressure_pauses_total.inc();
                }
                debug!(
                    paused = pause,
                    partitions = n,
                    in_flight,
                    limit,
                    "back-pressure"
                );
            }
            Err(e) => warn!(error = %e, paused = pause, "could not pause or resume the partitions"),
        }
    }

    /// Periodic work without messages: idle partitions advance with the wall clock, gauges.
    pub fn tick<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), PipelineError> {
        let now = Instant::now();
        for p in self.parts.iter_mut() {
            p.state.on_idle(now, &mut self.alerts);
        }
        if let Some(wm) = self
            .parts
            .iter()
            .filter_map(|p| p.state.watermark_ms())
            .min()
        {
            self.metrics
                .watermark_timestamp_seconds
                .set(wm as f64 / 1000.0);
        }
        self.emit()?;
        self.checkpoint_if_due(consumer)
    }

    /// Make everything processed so far durable (see the module doc), and wait until it is.
    pub fn checkpoint<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), PipelineError> {
        self.checkpoint_with(consumer, true)
    }

    /// Take a checkpoint; `wait`: until its offsets are committed (at-least-once; a
    /// transaction always commits before this returns).
    fn checkpoint_with<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        wait: bool,
    ) -> Result<(), PipelineError> {
        let start = Instant::now();
        let result = if self.eos() {
            self.checkpoint_transaction(consumer)
        } else {
            self.checkpoint_acknowledged(consumer, wait)
        };
        self.last_checkpoint = Instant::now();
        self.metrics
            .checkpoint_duration_seconds
            .observe(start.elapsed().as_secs_f64());
        let label = if result.is_ok() { "ok" } else { "failed" };
        self.metrics
            .checkpoints_total
            .with_label_values(&[label])
            .inc();
        if result.is_ok() {
            self.summary.checkpoints += 1;
        }
        result
    }

    fn checkpoint_acknowledged<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        wait: bool,
    ) -> Result<(), PipelineError> {
        // One checkpoint in flight at a time.
        self.settle(consumer, true)?;
        // A customer's record must not become durable before the alerts that its state says
        // were raised (a restore would skip the events that raised them): wait for the
        // acknowledgements of what was produced since the last checkpoint, mostly there already,
        // before writing the changelog.
        for ack in std::mem::take(&mut self.pending) {
            let outcome = block_on(ack.future);
            delivered(&self.metrics, ack.topic, outcome)?;
        }
        // The changelog's records are handed to the producer on the writer's thread: processing
        // goes on meanwhile.
        let mut writing = std::mem::take(&mut self.writing);
        if let Some(cl) = &self.changelog {
            writing.push(
                cl.writer
                    .write(changelog_batch(&mut self.parts, &self.metrics)),
            );
        }
        let offsets = self.uncommitted();
        self.in_flight = Some(InFlight {
            writing,
            acks: Vec::new(),
            offsets,
        });
        if wait {
            self.settle(consumer, true)?;
        }
        Ok(())
    }

    /// Commit the offsets of the checkpoint in flight once the broker has acknowledged every
    /// record it covers; `block`: wait for that. A record the broker did not take is an error
    /// (the offsets stay where they were).
    pub fn settle<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        block: bool,
    ) -> Result<(), PipelineError> {
        let Some(cp) = self.in_flight.as_mut() else {
            return Ok(());
        };
        // The records still being handed to the producer, oldest batch first.
        while let Some(w) = cp.writing.first_mut() {
            let produced = if block {
                cp.writing.remove(0).wait()
            } else {
                match w.poll() {
                    Some(produced) => {
                        cp.writing.remove(0);
                        produced
                    }
                    None => return Ok(()),
                }
            };
            match produced {
                Ok(acks) => cp.acks.extend(acks),
                Err(e) => {
                    self.in_flight = None;
                    return Err(e.into());
                }
            }
        }
        // Newest first: once it is acknowledged, nearly all the others are too.
        let mut settled = Ok(());
        while let Some(last) = cp.acks.last_mut() {
            let outcome = if block {
                block_on(&mut last.future)
            } else {
                match (&mut last.future).now_or_never() {
                    Some(outcome) => outcome,
                    None => return Ok(()),
                }
            };
            let topic = last.topic;
            cp.acks.pop();
            settled = delivered(&self.metrics, topic, outcome);
            if settled.is_err() {
                break;
            }
        }
        let cp = self.in_flight.take().expect("checked above");
        settled?;
        self.commit_offsets(consumer, &cp.offsets);
        Ok(())
    }

    /// Commit `offsets`, synchronously, so that a failed commit is retried at the next
    /// checkpoint.
    fn commit_offsets<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        offsets: &Offsets,
    ) {
        if offsets.is_empty() {
            return;
        }
        match consumer.commit(&offset_list(offsets), CommitMode::Sync) {
            Ok(()) => self.mark_committed(offsets),
            // Nothing new, or the partitions moved on meanwhile: their new owner re-reads.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => warn!(error = %e, "offset commit failed; retried at the next checkpoint"),
        }
    }

    fn checkpoint_transaction<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), PipelineError> {
        let dirty = self.parts.iter().any(|p| p.state.dirty_len() > 0);
        let offsets = self.uncommitted();
        if !self.in_txn && !dirty && offsets.is_empty() {
            return Ok(());
        }
        self.begin()?;
        let result = self.commit_transaction(consumer, offsets);
        if let Err(e) = &result {
            error!(error = %e, "transaction failed; aborting it");
            self.abort();
        }
        result
    }

    fn commit_transaction<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        offsets: Offsets,
    ) -> Result<(), PipelineError> {
        // Delivery is settled by the commit; the individual acknowledgements are not needed,
        // only that every record is with the producer before it.
        if let Some(cl) = &self.changelog {
            cl.writer
                .write(changelog_batch(&mut self.parts, &self.metrics))
                .wait()?;
        }
        self.pending.clear();
        let step =
            |step: &'static str| move |source| KafkaPipelineError::Transaction { step, source };
        if !offsets.is_empty() {
            let group = consumer
                .group_metadata()
                .ok_or(KafkaPipelineError::Transaction {
                    step: "group metadata",
                    source: KafkaError::ConsumerCommit(RDKafkaErrorCode::UnknownMemberId),
                })?;
            self.producer()
                .send_offsets_to_transaction(&offset_list(&offsets), &group, self.timeout())
                .map_err(step("send offsets"))?;
        }
        self.producer()
            .commit_transaction(self.timeout())
            .map_err(step("commit"))?;
        self.in_txn = false;
        if !offsets.is_empty() {
            self.mark_committed(&offsets);
        }
        Ok(())
    }

    /// The partitions processed beyond their last commit, and how far.
    fn uncommitted(&self) -> Offsets {
        self.parts
            .iter()
            .filter_map(|p| {
                p.processed
                    .filter(|&at| Some(at) != p.committed)
                    .map(|at| (p.topic.clone(), p.partition, at))
            })
            .collect()
    }

    fn mark_committed(&mut self, offsets: &Offsets) {
        self.metrics.offsets_committed_total.inc();
        for (topic, partition, at) in offsets {
            if let Some(p) = self
                .parts
                .iter_mut()
                .find(|p| p.partition == *partition && p.topic == *topic)
            {
                p.committed = Some(*at);
            }
        }
    }

    /// Partitions are being taken away: checkpoint (unless they are already lost to another
    /// member), then drop their state.
    pub fn revoke<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        revoked: &[(String, i32)],
    ) {
        self.revocations += 1;
        if consumer.assignment_lost() {
            warn!(partitions = ?revoked, "assignment lost: dropping the partitions' uncommitted work");
            self.drop_uncommitted();
        } else if let Err(e) = self.emit().and_then(|()| self.checkpoint(consumer)) {
            self.fatal.get_or_insert(e);
        }
        self.parts.retain(|p| {
            !revoked
                .iter()
                .any(|(t, q)| *q == p.partition && *t == p.topic)
        });
        self.assigned.retain(|a| !revoked.contains(a));
        self.metrics
            .partitions_assigned
            .set(self.parts.len() as i64);
        if self.parts.is_empty() {
            self.health.set_ready(false);
            self.metrics.ready.set(0);
        }
    }

    /// Partitions were assigned: restore each from its changelog before it is processed.
    pub fn assign(&mut self, assigned: &[(String, i32)]) -> Result<(), PipelineError> {
        let start = Instant::now();
        // New partitions arrive unpaused: the next throttle check pauses them all again if
        // the producer is still behind.
        self.paused = false;
        for a in assigned {
            if !self.assigned.contains(a) {
                self.assigned.push(a.clone());
            }
        }
        let new: Vec<(String, i32)> = assigned
            .iter()
            .filter(|(t, p)| {
                !self
                    .parts
                    .iter()
                    .any(|q| q.partition == *p && q.topic == *t)
            })
            .cloned()
            .collect();
        self.metrics.restoring_partitions.set(new.len() as i64);
        let mut topics: Vec<&str> = new.iter().map(|(t, _)| t.as_str()).collect();
        topics.sort_unstable();
        topics.dedup();
        let result = (|| {
            for topic in topics {
                let partitions: Vec<i32> = new
                    .iter()
                    .filter(|(t, _)| t == topic)
                    .map(|(_, p)| *p)
                    .collect();
                self.restore_topic(topic, &partitions)?;
            }
            Ok(())
        })();
        self.metrics.restoring_partitions.set(0);
        if !new.is_empty() {
            self.metrics
                .restore_duration_seconds
                .observe(start.elapsed().as_secs_f64());
        }
        self.metrics
            .partitions_assigned
            .set(self.parts.len() as i64);
        if result.is_ok() && !self.parts.is_empty() {
            self.health.set_ready(true);
            self.metrics.ready.set(1);
        }
        result
    }

    fn restore_topic(&mut self, topic: &str, partitions: &[i32]) -> Result<(), PipelineError> {
        let cl_topic = changelog_topic(&self.cfg.kafka.group_id, topic);
        let mut stores: Vec<(FxHashMap<String, StoredCustomer>, Option<StoredPartition>)> =
            partitions.iter().map(|_| Default::default()).collect();
        let started = Instant::now();
        let counts = match &mut self.changelog {
            Some(cl) => {
                cl.topics.ensure(topic, &cl_topic)?;
                let metrics = &self.metrics;
                cl.topics.restore(&cl_topic, partitions, |p, rec| {
                    metrics.restore_records_total.inc();
                    let Some(i) = partitions.iter().position(|&q| q == p) else {
                        return;
                    };
                    let (customers, progress) = &mut stores[i];
                    match rec {
                        Record::Customer(id, c) => {
                            customers.insert(id, *c);
                        }
                        Record::Removed(id) => {
                            customers.remove(&id);
                        }
                        Record::Partition(p) => *progress = Some(p),
                    }
                })?
            }
            None => vec![Default::default(); partitions.len()],
        };
        for ((&partition, (customers, progress)), count) in
            partitions.iter().zip(stores).zip(counts)
        {
            let mut state = PartitionState::new(self.cfg.clone(), &self.metrics);
            if self.changelog.is_some() {
                state.track_changes();
            }
            let n = customers.len();
            state.restore(customers, progress);
            self.metrics.restored_customers_total.inc_by(n as u64);
            if self.changelog.is_some() {
                info!(
                    topic,
                    partition,
                    changelog = %cl_topic,
                    customers = n,
                    records = count.records,
                    bytes = count.bytes,
                    resume_after_offset = progress.map(|p| p.applied_offset),
                    secs = started.elapsed().as_secs_f64(),
                    "partition state restored"
                );
            }
            self.parts.push(Part {
                topic: topic.to_string(),
                partition,
                changelog_topic: cl_topic.clone(),
                state,
                processed: None,
                restored_at: progress.map_or(-1, |p| p.applied_offset),
                committed: None,
            });
        }
        Ok(())
    }

    /// Get past a transient failure without a restart: forget everything since the last
    /// checkpoint (abort the transaction), restore the assigned partitions from their
    /// changelog again and rewind the consumer to the committed offsets. What follows is what a
    /// restart would do: the same events again, the same alerts (same `alert_id`s).
    pub fn recover<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        cause: &PipelineError,
    ) -> Result<(), PipelineError> {
        self.recoveries.retain(|t| t.elapsed() < RECOVERY_WINDOW);
        if self.recoveries.len() >= MAX_RECENT_RECOVERIES {
            error!(error = %cause, recoveries = self.recoveries.len(), "failing again and again: giving up");
            return Err(PipelineError::GaveUp {
                recoveries: self.recoveries.len(),
                window: RECOVERY_WINDOW,
                last: cause.to_string(),
            });
        }
        self.recoveries.push(Instant::now());
        warn!(error = %cause, "rewinding to the last checkpoint");
        self.summary.recoveries += 1;
        self.metrics.recoveries_total.inc();
        self.drop_uncommitted();
        self.alerts.clear();
        let assigned = self.assigned.clone();
        self.parts.clear();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = self
                .assign(&assigned)
                .and_then(|()| self.rewind(consumer, &assigned));
            match r {
                Ok(()) => break,
                Err(e) if e.is_transient() && attempt < RECOVERY_ATTEMPTS => {
                    warn!(error = %e, attempt, "recovery failed; retrying");
                    self.parts.clear();
                    std::thread::sleep(RECOVERY_PAUSE);
                }
                Err(e) => return Err(e),
            }
        }
        info!(
            partitions = assigned.len(),
            "recovered from the last checkpoint"
        );
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// Move the consumer back to the committed offsets of `partitions`.
    fn rewind<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        partitions: &[(String, i32)],
    ) -> Result<(), PipelineError> {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in partitions {
            tpl.add_partition(t, *p);
        }
        let committed = consumer
            .committed_offsets(tpl, self.timeout())
            .map_err(KafkaPipelineError::Rewind)?;
        let reset = match self.cfg.kafka.auto_offset_reset {
            crate::config::OffsetReset::Earliest => Offset::Beginning,
            crate::config::OffsetReset::Latest => Offset::End,
        };
        for e in committed.elements() {
            let to = match e.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => reset,
            };
            consumer
                .seek(e.topic(), e.partition(), to, self.timeout())
                .map_err(KafkaPipelineError::Rewind)?;
        }
        Ok(())
    }

    /// Stop after a failure: abort the open transaction, make nothing more durable.
    pub fn abandon(&mut self) {
        self.drop_uncommitted();
        self.drop_partitions();
    }

    /// Forget what is not committed: the open transaction, the acknowledgements awaited.
    fn drop_uncommitted(&mut self) {
        // Records still being handed to the producer are let through first: a restore must
        // not read the changelog while they are being appended to it.
        let in_flight = self.in_flight.take().map(|cp| cp.writing);
        for w in std::mem::take(&mut self.writing)
            .into_iter()
            .chain(in_flight.into_iter().flatten())
        {
            let _ = w.wait();
        }
        self.abort();
        self.pending.clear();
    }

    fn drop_partitions(&mut self) {
        self.parts.clear();
        self.metrics.partitions_assigned.set(0);
        self.metrics.partitions_paused.set(0);
        self.paused = false;
    }

    /// Final checkpoint at shutdown; the partitions' customers leave the gauges.
    pub fn close<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), PipelineError> {
        let r = self.emit().and_then(|()| self.checkpoint(consumer));
        if r.is_err() {
            self.abort();
        }
        self.drop_partitions();
        if let Err(e) = self.sink.flush(self.timeout()) {
            warn!(error = %e, "producer flush incomplete");
        }
        r
    }
}

/// `offsets` as the list Kafka commits: the next offset to read, per partition.
fn offset_list(offsets: &Offsets) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, at) in offsets {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(at + 1))
            .expect("a fresh list takes any partition");
    }
    tpl
}

/// The broker's answer for one record: a record it did not take is an error.
fn delivered(
    metrics: &Metrics,
    topic: &str,
    outcome: <DeliveryFuture as std::future::Future>::Output,
) -> Result<(), KafkaPipelineError> {
    let source = match outcome {
        Ok(Ok(_)) => return Ok(()),
        Ok(Err((e, _))) => e,
        Err(_) => KafkaError::Canceled,
    };
    metrics.delivery_errors_total.inc();
    Err(KafkaPipelineError::Delivery {
        topic: topic.to_string(),
        source,
    })
}

/// The status page's view of the pipeline (the HTTP server locks the processor briefly, between
/// two chunks of messages).
impl CustomerSource for Mutex<Processor> {
    fn at_risk(&self, limit: usize) -> AtRisk {
        self.lock()
            .unwrap_or_else(|e| e.into_inner())
            .at_risk(limit)
    }

    fn customer(&self, id: &str) -> Option<CustomerView> {
        self.lock().unwrap_or_else(|e| e.into_inner()).customer(id)
    }
}
