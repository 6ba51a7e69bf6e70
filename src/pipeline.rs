//! `churnwatch run`: the consumer loop that ties Kafka, the [`Processor`] and shutdown
//! together.
//!
//! Messages are polled on a dedicated thread, in chunks of up to [`MAX_CHUNK`] (what
//! librdkafka has already fetched), and handed to the processor as one chunk, so that it can
//! prefetch each message's customer a few messages ahead. The processor decides alerts,
//! produces them, and checkpoints every `kafka.commit_interval_ms` (see [`crate::processor`]
//! for what a checkpoint guarantees and [`crate::state`] for recovery). Rebalances run inside
//! `poll` and reach the processor through the consumer's context; a poll that revokes
//! partitions ends the chunk.
//!
//! Back-pressure: the loop does all the work itself, so it fetches no faster than it
//! processes, and librdkafka's fetch queue (`queued.max.messages.kbytes`) is bounded. When the
//! broker acknowledges the records produced more slowly than they are made, the partitions
//! are paused ([`Processor::throttle`]) while the loop keeps polling; a checkpoint waits for
//! the broker.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::Config;
use crate::event::DecodeLimits;
use crate::http::Health;
use crate::kafka::{consumer_config, ConsumerCtx, KafkaPipelineError};
use crate::metrics::Metrics;
use crate::processor::Processor;
pub use crate::processor::{PipelineError, RunSummary};
use crate::time::now_ms;

/// Largest number of messages handled as one chunk.
pub const MAX_CHUNK: usize = 2048;

/// One poll's outcome: a message, or the error librdkafka reported instead.
type Polled<'a> = KafkaResult<BorrowedMessage<'a>>;
/// How often idle partitions are checked and gauges refreshed.
const TICK: Duration = Duration::from_millis(500);
/// Due timers fired at a time, over all partitions, while no message is waiting (about a
/// millisecond's work).
const TIMERS_BETWEEN_MESSAGES: usize = 1024;
/// Longest wait for a message (bounds the reaction time to shutdown and ticks).
const POLL_TIMEOUT: Duration = Duration::from_millis(100);

/// Run the pipeline until `shutdown` is cancelled or a fatal error occurs, on a fixed config.
pub async fn run(
    cfg: Arc<Config>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> Result<RunSummary, PipelineError> {
    let (_fixed, updates) = watch::channel(cfg);
    run_reloadable(updates, metrics, health, shutdown).await
}

/// Run the pipeline on the config in `updates`, putting each new one in force (see
/// [`crate::reload`]), until `shutdown` is cancelled or a fatal error occurs.
pub async fn run_reloadable(
    updates: watch::Receiver<Arc<Config>>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> Result<RunSummary, PipelineError> {
    // Everything Kafka-facing blocks (transactions, restores, checkpoints): one thread owns it.
    tokio::task::spawn_blocking(move || run_blocking(updates, metrics, health, shutdown))
        .await
        .expect("the consumer loop does not panic")
}

fn run_blocking(
    mut updates: watch::Receiver<Arc<Config>>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> Result<RunSummary, PipelineError> {
    let cfg = updates.borrow_and_update().clone();
    let k = &cfg.kafka;
    let processor = Arc::new(Mutex::new(Processor::new(
        cfg.clone(),
        metrics.clone(),
        health.clone(),
    )?));
    health.set_customers(Some(processor.clone()));
    let ctx = ConsumerCtx::new(metrics.clone(), k.events_topics.clone(), processor.clone());
    let consumer: BaseConsumer<ConsumerCtx> = consumer_config(&cfg)
        .create_with_context(ctx)
        .map_err(|source| KafkaPipelineError::Create {
            what: "consumer",
            source,
        })?;
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
        guarantee = cfg.processing.guarantee.as_str(),
        changelog = cfg.state.changelog,
        config_version = %cfg.version,
        "pipeline started"
    );

    let looper = Consume {
        cfg: &cfg,
        consumer: &consumer,
        processor: &processor,
        shutdown: &shutdown,
        updates: RefCell::new(updates),
    };
    let result = looper.run();

    health.set_ready(false);
    health.set_customers(None);
    metrics.ready.set(0);
    let closed = {
        let mut p = looper.lock();
        if result.is_ok() {
            p.close(&consumer)
        } else {
            // Nothing more becomes durable: a restart resumes from the last checkpoint.
            p.abandon();
            Ok(())
        }
    };
    consumer.unsubscribe();
    let summary = looper.lock().summary;
    info!(
        messages = summary.messages,
        chunks = summary.chunks,
        events = summary.events,
        invalid = summary.invalid,
        alerts = summary.alerts,
        checkpoints = summary.checkpoints,
        recoveries = summary.recoveries,
        "pipeline stopped"
    );
    if let Err(e) = &result {
        error!(error = %e, "stopped: the events since the last checkpoint will be re-read on restart");
    }
    result.and(closed).map(|()| summary)
}

/// The consumer loop's borrowed parts.
struct Consume<'a> {
    cfg: &'a Config,
    consumer: &'a BaseConsumer<ConsumerCtx>,
    processor: &'a Mutex<Processor>,
    shutdown: &'a CancellationToken,
    /// Reloaded configs (only their live settings differ from `cfg`).
    updates: RefCell<watch::Receiver<Arc<Config>>>,
}

impl<'a> Consume<'a> {
    /// The processor; never held across a poll (rebalance callbacks inside it lock it too).
    fn lock(&self) -> MutexGuard<'a, Processor> {
        self.processor.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Poll once; an error that a rebalance callback met inside the poll comes first. With
    /// the message, the processor's count of revocations after the poll.
    fn poll(&self, timeout: Duration) -> Result<(Option<Polled<'a>>, u64), PipelineError> {
        let m = self.consumer.poll(timeout);
        let mut processor = self.lock();
        match processor.take_fatal() {
            Some(e) => Err(e),
            None => Ok((m, processor.revocations())),
        }
    }

    /// Consume until shutdown; a transient failure rewinds in place (a broker that went
    /// away, a record it did not take).
    fn run(&self) -> Result<(), PipelineError> {
        loop {
            match self.until_error() {
                Ok(()) => return Ok(()),
                Err(e) if e.is_transient() => self.lock().recover(self.consumer, &e)?,
                Err(e) => return Err(e),
            }
        }
    }

    fn until_error(&self) -> Result<(), PipelineError> {
        let mut last_tick = Instant::now();
        // The chunk's buffer, kept across chunks.
        let mut chunk: Vec<Polled<'a>> = Vec::new();
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                self.lock().tick(self.consumer)?;
                let mut updates = self.updates.borrow_mut();
                if updates.has_changed().unwrap_or(false) {
                    let cfg = updates.borrow_and_update().clone();
                    self.lock().reconfigure(cfg);
                }
            }
            self.lock().throttle(self.consumer);
            // Due timers left over (a burst fires a few per event) are worked off between
            // messages, a batch at a time.
            let timers_due = self.lock().timers_due();
            let wait = if timers_due {
                Duration::ZERO
            } else {
                POLL_TIMEOUT
            };
            let (Some(first), revocations) = self.poll(wait)? else {
                if timers_due {
                    self.lock().fire_some_timers(TIMERS_BETWEEN_MESSAGES)?;
                }
                continue;
            };
            let polled_ms = now_ms();
            let limits = DecodeLimits::from_config(&self.cfg.input, polled_ms);
            // The chunk is what librdkafka has already fetched: taken whole, then processed
            // with each message's customer prefetched a few messages ahead.
            // A poll that runs a revocation ends the chunk; the messages fetched before it are
            // checked against the partitions still held (`handle_chunk`).
            chunk.push(first);
            let mut fetched_before_revocation = 0;
            while chunk.len() < MAX_CHUNK {
                let (m, now) = self.poll(Duration::ZERO)?;
                if now != revocations {
                    fetched_before_revocation = chunk.len();
                    chunk.extend(m);
                    break;
                }
                match m {
                    Some(m) => chunk.push(m),
                    None => break,
                }
            }
            let mut processor = self.lock();
            let handled =
                processor.handle_chunk(&chunk, fetched_before_revocation, &limits, polled_ms);
            // librdkafka's messages go back now, not at the next chunk.
            chunk.clear();
            handled?;
            processor.after_chunk(self.consumer)?;
        }
    }
}
