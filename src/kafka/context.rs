//! The consumer's rdkafka context: rebalance notices for the pipeline, consumer lag from
//! librdkafka's statistics, commit results into metrics.

use std::sync::mpsc;
use std::sync::Arc;

use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, TopicPartitionList};
use tracing::{info, warn};

use crate::metrics::Metrics;

/// A change of assignment, passed from librdkafka's thread to the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceNotice {
    Assigned(Vec<(String, i32)>),
    Revoked(Vec<(String, i32)>),
}

/// Context of the events consumer.
pub struct ConsumerCtx {
    metrics: Arc<Metrics>,
    events_topics: Vec<String>,
    notices: mpsc::Sender<RebalanceNotice>,
}

impl ConsumerCtx {
    pub fn new(
        metrics: Arc<Metrics>,
        events_topics: Vec<String>,
    ) -> (Self, mpsc::Receiver<RebalanceNotice>) {
        let (tx, rx) = mpsc::channel();
        (
            ConsumerCtx {
                metrics,
                events_topics,
                notices: tx,
            },
            rx,
        )
    }

    fn notify(&self, n: RebalanceNotice) {
        // The pipeline only stops listening when it is shutting down.
        let _ = self.notices.send(n);
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
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let _ = consumer;
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts = list(tpl);
                info!(partitions = ?parts, "partitions assigned");
                self.metrics.partitions_assigned.set(parts.len() as i64);
                self.notify(RebalanceNotice::Assigned(parts));
            }
            Rebalance::Revoke(tpl) => {
                let parts = list(tpl);
                info!(partitions = ?parts, "partitions revoked");
                for (t, p) in &parts {
                    let _ = self
                        .metrics
                        .consumer_lag
                        .remove_label_values(&[t.as_str(), &p.to_string()]);
                }
                self.metrics.partitions_assigned.set(0);
                self.notify(RebalanceNotice::Revoked(parts));
            }
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
