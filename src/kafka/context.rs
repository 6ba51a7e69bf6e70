//! The consumer's rdkafka context: rebalances handed to the [`Processor`] (drain and commit
//! before a partition is released, restore before one is processed), consumer lag from
//! librdkafka's statistics, commit results into metrics.
//!
//! librdkafka calls the rebalance callback from inside `poll`, on the consumer thread, which
//! never holds the processor's lock while polling.

use std::sync::{Arc, Mutex};

use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, TopicPartitionList};
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::processor::Processor;

/// Context of the events consumer.
pub struct ConsumerCtx {
    metrics: Arc<Metrics>,
    events_topics: Vec<String>,
    processor: Arc<Mutex<Processor>>,
}

impl ConsumerCtx {
    pub fn new(
        metrics: Arc<Metrics>,
        events_topics: Vec<String>,
        processor: Arc<Mutex<Processor>>,
    ) -> Self {
        ConsumerCtx {
            metrics,
            events_topics,
            processor,
        }
    }

    fn processor(&self) -> std::sync::MutexGuard<'_, Processor> {
        self.processor.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn list(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}
impl ClientContext for ConsumerCtx {
    fn stats(&self, s: Statistics) {
        for topic in &self.events_topics {
            if let Some(t) = s.topics.get(topic) {
                for (p, part) in &t.partitions {
                    // -1 is librdkafka's "unknown" (partition not consumed here).
                    if *p >= 0 && part.consumer_lag >= 0 {
                        self.metrics
                            .consumer_lag
                            .with_label_values(&[topic.as_str(), &p.to_string()])
                            .set(part.consumer_lag);
                    }
                }
            }
        }
    }
}

impl ConsumerContext for ConsumerCtx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts = list(tpl);
            info!(partitions = ?parts, "partitions revoked: checkpointing them");
            self.processor().revoke(consumer, &parts);
            for (t, p) in &parts {
                let _ = self
                    .metrics
                    .consumer_lag
                    .remove_label_values(&[t.as_str(), &p.to_string()]);
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts = list(tpl);
                info!(partitions = ?parts, "partitions assigned: restoring their state");
                let mut p = self.processor();
                if let Err(e) = p.assign(&parts) {
                    p.set_fatal(e);
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => self.metrics.offsets_committed_total.inc(),
            // Nothing stored since the last commit: not a failure.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => warn!(error = %e, partitions = offsets.count(), "offset commit failed"),
        }
    }
}
