//! `churnwatch run`: the consumer loop that ties Kafka, partition state, the sink and shutdown
//! together.
//!
//! Delivery guarantee (at-least-once, no alert lost):
//! 1. messages are polled in chunks on a dedicated thread; each is decoded and handed to its partition's state;
//! 2. the alerts and dead-letter records a chunk produced are enqueued on the producer, and the
//!    chunk's acknowledgement futures and highest offsets go, in order, to the *ack task*;
//! 3. the ack task waits for every acknowledgement of a chunk and only then stores the chunk's
//!    offsets; librdkafka commits stored offsets every `kafka.commit_interval_ms` and on
//!    shutdown. A record the broker does not acknowledge stops the pipeline with an error
//!    before its offset is stored, so a restart re-reads and re-alerts (same `alert_id`).
//!
//! Back-pressure: at most `kafka.max_in_flight_batches` chunks await acknowledgement; beyond
//! that the loop stops fetching until the broker catches up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::FutureProducer;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::alert::{Alert, SourceRef};
use crate::config::Config;
use crate::event::{decode, DecodeLimits, InvalidReason};
use crate::http::Health;
use crate::kafka::sink::PendingAck;
use crate::kafka::{
    consumer_config, producer_config, ConsumerCtx, DeadLetter, KafkaPipelineError, RebalanceNotice,
    Sink, SinkError,
};
use crate::metrics::Metrics;
use crate::partition::PartitionState;
use crate::time::now_ms;

/// Largest number of messages handled as one chunk.
const MAX_CHUNK: usize = 2048;
/// How often idle partitions are checked and gauges refreshed.
const TICK: Duration = Duration::from_millis(500);
/// Longest wait for a message (bounds the reaction time to shutdown and ticks).
const POLL_TIMEOUT: Duration = Duration::from_millis(100);

/// Errors that stop the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Kafka(#[from] KafkaPipelineError),
    #[error(transparent)]
    Sink(#[from] SinkError),
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
}

/// Acknowledgements of one chunk and the offsets they release.
#[derive(Default)]
struct Batch {
    acks: Vec<PendingAck>,
    offsets: Vec<(String, i32, i64)>,
}

impl Batch {
    fn note_offset(&mut self, topic: &str, partition: i32, offset: i64) {
        match self
            .offsets
            .iter_mut()
            .find(|(t, p, _)| *p == partition && t == topic)
        {
            Some(e) => e.2 = e.2.max(offset),
            None => self.offsets.push((topic.to_string(), partition, offset)),
        }
    }
}

struct Part {
    topic: String,
    partition: i32,
    state: PartitionState,
}

/// Run the pipeline until `shutdown` is cancelled or a fatal error occurs.
pub async fn run(
    cfg: Arc<Config>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> Result<RunSummary, PipelineError> {
    let k = &cfg.kafka;
    let (ctx, notices) = ConsumerCtx::new(metrics.clone(), k.events_topics.clone());
    let consumer: Arc<BaseConsumer<ConsumerCtx>> = Arc::new(
        consumer_config(k)
            .create_with_context(ctx)
            .map_err(|source| KafkaPipelineError::Create {
                what: "consumer",
                source,
            })?,
    );
    let producer: FutureProducer =
        producer_config(k)
            .create()
            .map_err(|source| KafkaPipelineError::Create {
                what: "producer",
                source,
            })?;
    let sink = Sink::new(
        producer,
        k.alerts_topic.clone(),
        k.dead_letter_topic.clone(),
    );
    let topics: Vec<&str> = k.events_topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(|source| KafkaPipelineError::Subscribe {
            topics: k.events_topics.clone(),
            source,
        })?;
    metrics.set_config_version(&cfg.version);
    info!(
        brokers = %k.brokers,
        group = %k.group_id,
        topics = ?k.events_topics,
        alerts_topic = %k.alerts_topic,
        dead_letter_topic = %k.dead_letter_topic,
        config_version = %cfg.version,
        "pipeline started"
    );

    let (ack_tx, ack_rx) = mpsc::channel::<Batch>(k.max_in_flight_batches);
    let failed = CancellationToken::new();
    let ack_task = tokio::spawn(ack_loop(
        consumer.clone(),
        ack_rx,
        metrics.clone(),
        failed.clone(),
    ));

    // The consumer loop is synchronous: it polls librdkafka with a timeout on its own thread
    // (no reliance on wake-ups) and does the per-event work there.
    let looper = ConsumeLoop {
        cfg: cfg.clone(),
        metrics: metrics.clone(),
        health: health.clone(),
        consumer: consumer.clone(),
        sink: sink.clone(),
        notices,
        ack_tx,
        shutdown,
        failed,
    };
    let (summary, loop_result) = tokio::task::spawn_blocking(move || looper.run())
        .await
        .expect("the consumer loop does not panic");

    // The loop dropped its sender: wait until every acknowledgement has arrived and its
    // offsets are stored, then commit.
    health.set_ready(false);
    metrics.ready.set(0);
    let ack_failure = ack_task.await.expect("the ack task does not panic");
    if let Err(e) = sink.flush(Duration::from_millis(cfg.kafka.delivery_timeout_ms)) {
        warn!(error = %e, "producer flush incomplete");
    }
    if loop_result.is_ok() && ack_failure.is_none() {
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => metrics.offsets_committed_total.inc(),
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => warn!(error = %e, "final offset commit failed"),
        }
    }
    consumer.unsubscribe();
    info!(
        messages = summary.messages,
        chunks = summary.chunks,
        events = summary.events,
        invalid = summary.invalid,
        alerts = summary.alerts,
        "pipeline stopped"
    );
    loop_result?;
    if let Some(e) = ack_failure {
        error!(error = %e, "stopped: a record was not acknowledged; its events will be re-read on restart");
        return Err(e.into());
    }
    Ok(summary)
}

/// The consumer thread's state.
struct ConsumeLoop {
    cfg: Arc<Config>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    consumer: Arc<BaseConsumer<ConsumerCtx>>,
    sink: Sink,
    notices: std::sync::mpsc::Receiver<RebalanceNotice>,
    ack_tx: mpsc::Sender<Batch>,
    shutdown: CancellationToken,
    failed: CancellationToken,
}

impl ConsumeLoop {
    fn run(self) -> (RunSummary, Result<(), PipelineError>) {
        let mut parts: Vec<Part> = Vec::new();
        let mut summary = RunSummary::default();
        let result = self.run_inner(&mut parts, &mut summary);
        drop(parts); // withdraws the partitions' customers from the gauges
        (summary, result)
    }

    fn run_inner(
        &self,
        parts: &mut Vec<Part>,
        summary: &mut RunSummary,
    ) -> Result<(), PipelineError> {
        let cfg = &*self.cfg;
        let metrics = &*self.metrics;
        let mut alerts: Vec<Alert> = Vec::new();
        let mut max_event_ms: Option<i64> = None;
        let mut last_tick = Instant::now();
        loop {
            if self.shutdown.is_cancelled() || self.failed.is_cancelled() {
                return Ok(());
            }
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                apply_notices(&self.notices, parts, &self.health, &self.metrics);
                let now = Instant::now();
                for p in parts.iter_mut() {
                    p.state.on_idle(now, &mut alerts);
                }
                if let Some(wm) = parts.iter().filter_map(|p| p.state.watermark_ms()).min() {
                    metrics.watermark_timestamp_seconds.set(wm as f64 / 1000.0);
                }
                if !alerts.is_empty() {
                    let mut batch = Batch::default();
                    emit(&self.sink, &mut alerts, &mut batch, summary)?;
                    if self.ack_tx.blocking_send(batch).is_err() {
                        return Ok(());
                    }
                }
            }

            let Some(first) = self.consumer.poll(POLL_TIMEOUT) else {
                continue;
            };
            summary.chunks += 1;
            apply_notices(&self.notices, parts, &self.health, &self.metrics);
            let mut batch = Batch::default();
            let limits = DecodeLimits::from_config(&cfg.input, now_ms());
            let mut next = Some(first);
            let mut n = 0;
            while let Some(msg) = next.take() {
                n += 1;
                match msg {
                    Ok(m) => self.handle(
                        &m,
                        &limits,
                        parts,
                        &mut alerts,
                        &mut batch,
                        summary,
                        &mut max_event_ms,
                    )?,
                    Err(e) => warn!(error = %e, "error while consuming"),
                }
                if n < MAX_CHUNK {
                    next = self.consumer.poll(Duration::ZERO);
                }
            }
            if let Some(t) = max_event_ms {
                metrics.last_event_timestamp_seconds.set(t as f64 / 1000.0);
            }
            emit(&self.sink, &mut alerts, &mut batch, summary)?;
            if self.ack_tx.blocking_send(batch).is_err() {
                return Ok(());
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn handle(
        &self,
        m: &BorrowedMessage<'_>,
        limits: &DecodeLimits,
        parts: &mut Vec<Part>,
        alerts: &mut Vec<Alert>,
        batch: &mut Batch,
        summary: &mut RunSummary,
        max_event_ms: &mut Option<i64>,
    ) -> Result<(), PipelineError> {
        summary.messages += 1;
        let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
        let idx = match parts
            .iter()
            .position(|p| p.partition == partition && p.topic == topic)
        {
            Some(i) => i,
            None => {
                parts.push(Part {
                    topic: topic.to_string(),
                    partition,
                    state: PartitionState::new(self.cfg.clone(), &self.metrics),
                });
                parts.len() - 1
            }
        };
        let payload = m.payload();
        let decoded = match payload {
            Some(p) => decode(p, limits),
            None => Err(crate::event::InvalidEvent {
                reason: InvalidReason::NotJson,
                detail: "empty (null) payload".into(),
            }),
        };
        match decoded {
            Ok(ev) => {
                summary.events += 1;
                *max_event_ms = Some(max_event_ms.map_or(ev.ts_ms, |t| t.max(ev.ts_ms)));
                let source = SourceRef {
                    topic,
                    partition,
                    offset,
                };
                parts[idx].state.on_event(&ev, Some(source), alerts);
                if let Some(ts) = m.timestamp().to_millis() {
                    let lat = (now_ms() - ts).max(0) as f64 / 1000.0;
                    self.metrics.decision_latency_seconds.observe(lat);
                }
            }
            Err(inv) => {
                summary.invalid += 1;
                self.metrics
                    .events_invalid_total
                    .with_label_values(&[inv.reason.as_str()])
                    .inc();
                debug!(topic, partition, offset, reason = inv.reason.as_str(), detail = %inv.detail, "invalid event to dead-letter topic");
                let ack = self.sink.send_dead_letter(DeadLetter {
                    payload: payload.unwrap_or(&[]),
                    key: m.key(),
                    reason: inv.reason,
                    detail: &inv.detail,
                    topic,
                    partition,
                    offset,
                })?;
                batch.acks.push(ack);
            }
        }
        batch.note_offset(topic, partition, offset);
        Ok(())
    }
}

/// Enqueue the pending alerts and add their acknowledgements to the batch.
fn emit(
    sink: &Sink,
    alerts: &mut Vec<Alert>,
    batch: &mut Batch,
    summary: &mut RunSummary,
) -> Result<(), SinkError> {
    for a in alerts.drain(..) {
        debug!(customer_id = %a.customer_id, kind = a.kind.as_str(), tier = a.tier.as_str(), risk = a.risk_score, "alert");
        batch.acks.push(sink.send_alert(&a)?);
        summary.alerts += 1;
    }
    Ok(())
}

fn apply_notices(
    notices: &std::sync::mpsc::Receiver<RebalanceNotice>,
    parts: &mut Vec<Part>,
    health: &Health,
    metrics: &Metrics,
) {
    while let Ok(n) = notices.try_recv() {
        match n {
            RebalanceNotice::Assigned(_) => {
                health.set_ready(true);
                metrics.ready.set(1);
            }
            RebalanceNotice::Revoked(revoked) => {
                parts.retain(|p| {
                    !revoked
                        .iter()
                        .any(|(t, q)| *q == p.partition && *t == p.topic)
                });
            }
        }
    }
}

/// Wait for each batch's acknowledgements in order, then store its offsets. On the first record
/// the broker did not take, signal `failed` (the consumer loop stops), store nothing more, and
/// return the error once the loop has hung up.
async fn ack_loop(
    consumer: Arc<BaseConsumer<ConsumerCtx>>,
    mut rx: mpsc::Receiver<Batch>,
    metrics: Arc<Metrics>,
    failed: CancellationToken,
) -> Option<KafkaPipelineError> {
    let mut failure = None;
    while let Some(batch) = rx.recv().await {
        if failure.is_some() {
            continue; // drain without storing anything after a failure
        }
        for ack in batch.acks {
            let err = match ack.future.await {
                Ok(Ok(_)) => continue,
                Ok(Err((e, _))) => e,
                Err(_) => KafkaError::Canceled,
            };
            metrics.delivery_errors_total.inc();
            failure = Some(KafkaPipelineError::Delivery {
                topic: ack.topic.to_string(),
                source: err,
            });
            failed.cancel();
            break;
        }
        if failure.is_some() {
            continue;
        }
        for (topic, partition, offset) in batch.offsets {
            if let Err(e) = consumer.store_offset(&topic, partition, offset) {
                // The partition was revoked meanwhile: its new owner re-reads these events.
                debug!(topic, partition, offset, error = %e, "offset not stored");
            }
        }
    }
    failure
}
