//! The consumer's rdkafka context: rebalances handed to the [`Processor`] (drain and commit
//! before a partition is released, restore before one is processed), consumer lag from
//! librdkafka's statistics, commit results into metrics.
//!
//! librdkafka calls the rebalance callback from inside `poll`, on the consumer thread, which
//! never holds the processor's lock while polling. It calls the statistics callback there too:
//! the statistics are a JSON document of every broker, topic and partition (hundreds of
//! kilobytes with a few dozen partitions), and decoding it held up the events behind it for
//! milliseconds, so the callback only copies it for a thread of its own (`Lag`).

use std::collections::HashSet;
use std::sync::mpsc::{sync_channel, SyncSender};
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
    processor: Arc<Mutex<Processor>>,
    lag: Arc<Lag>,
    /// To the statistics thread ([`Lag::start`]): the statistics' JSON, at most one waiting.
    stats: SyncSender<Vec<u8>>,
}

impl ConsumerCtx {
    pub fn new(
        metrics: Arc<Metrics>,
        events_topics: Vec<String>,
        processor: Arc<Mutex<Processor>>,
    ) -> Self {
        let (lag, stats) = Lag::start(metrics.clone(), events_topics);
        ConsumerCtx {
            metrics,
            processor,
            lag,
            stats,
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
/// The consumer-lag gauges, set from librdkafka's statistics on a thread of their own, for the
/// partitions assigned here.
struct Lag {
    metrics: Arc<Metrics>,
    events_topics: Vec<String>,
    /// Assigned partitions: a gauge is set only for those, and removed (under the same lock)
    /// when one is revoked, so that statistics decoded late cannot bring back a revoked
    /// partition's gauge.
    assigned: Mutex<HashSet<(String, i32)>>,
}

impl Lag {
    /// The gauges, and the way to the thread that decodes the statistics for them (it ends
    /// when the sender is dropped).
    fn start(metrics: Arc<Metrics>, events_topics: Vec<String>) -> (Arc<Lag>, SyncSender<Vec<u8>>) {
        let (stats, queue) = sync_channel::<Vec<u8>>(1);
        let lag = Arc::new(Lag {
            metrics,
            events_topics,
            assigned: Mutex::default(),
        });
        let reader = lag.clone();
        let spawned = std::thread::Builder::new()
            .name("churnwatch-stats".into())
            .spawn(move || {
                for json in queue {
                    match serde_json::from_slice::<Statistics>(&json) {
                        Ok(s) => reader.set(&s),
                        Err(e) => warn!(error = %e, "librdkafka statistics do not decode"),
                    }
                }
            });
        if let Err(e) = spawned {
            warn!(error = %e, "no thread for librdkafka statistics: no consumer-lag gauges");
        }
        (lag, stats)
    }
}

impl Lag {
    fn assigned(&self) -> std::sync::MutexGuard<'_, HashSet<(String, i32)>> {
        self.assigned.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, s: &Statistics) {
        let lags = self.events_topics.iter().filter_map(|topic| {
            let t = s.topics.get(topic)?;
            Some(
                t.partitions
                    .iter()
                    .map(move |(p, part)| (topic.as_str(), *p, part.consumer_lag)),
            )
        });
        self.set_lags(lags.flatten());
    }

    /// Set the gauges of the assigned partitions among `lags` (topic, partition, lag).
    fn set_lags<'a>(&self, lags: impl Iterator<Item = (&'a str, i32, i64)>) {
        let assigned = self.assigned();
        for (topic, p, lag) in lags {
            // -1 is librdkafka's "unknown" (partition not consumed here).
            if p >= 0 && lag >= 0 && assigned.contains(&(topic.to_string(), p)) {
                self.metrics
                    .consumer_lag
                    .with_label_values(&[topic, &p.to_string()])
                    .set(lag);
            }
        }
    }

    fn assign(&self, parts: &[(String, i32)]) {
        self.assigned().extend(parts.iter().cloned());
    }

    fn revoke(&self, parts: &[(String, i32)]) {
        let mut assigned = self.assigned();
        for part in parts {
            assigned.remove(part);
            let _ = self
                .metrics
                .consumer_lag
                .remove_label_values(&[part.0.as_str(), &part.1.to_string()]);
        }
    }
}

impl ClientContext for ConsumerCtx {
    fn stats_raw(&self, statistics: &[u8]) {
        // Full: the thread is still decoding the one before (this one is dropped; the next
        // comes in `statistics.interval.ms`). Disconnected: there is no thread.
        let _ = self.stats.try_send(statistics.to_vec());
    }
}

impl ConsumerContext for ConsumerCtx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts = list(tpl);
            info!(partitions = ?parts, "partitions revoked: checkpointing them");
            self.processor().revoke(consumer, &parts);
            self.lag.revoke(&parts);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts = list(tpl);
                info!(partitions = ?parts, "partitions assigned: restoring their state");
                self.lag.assign(&parts);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn gauges(m: &Metrics) -> Vec<(String, String, i64)> {
        use prometheus::core::Collector;
        let mut out: Vec<_> = m
            .consumer_lag
            .collect()
            .iter()
            .flat_map(|f| f.get_metric().to_vec())
            .map(|g| {
                let label = |n: &str| {
                    g.get_label()
                        .iter()
                        .find(|l| l.name() == n)
                        .map(|l| l.value().to_string())
                        .unwrap_or_default()
                };
                (
                    label("topic"),
                    label("partition"),
                    g.get_gauge().get_value() as i64,
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn lag_gauges_are_for_assigned_partitions_only() {
        let metrics = Arc::new(Metrics::new());
        let lag = Lag {
            metrics: metrics.clone(),
            events_topics: vec!["ev".into()],
            assigned: Mutex::default(),
        };
        lag.assign(&[("ev".into(), 0), ("ev".into(), 1)]);
        lag.set_lags([("ev", 0, 5), ("ev", 1, -1), ("ev", 2, 9)].into_iter());
        assert_eq!(gauges(&metrics), vec![("ev".into(), "0".into(), 5)]);
        // Revoked: the gauge goes, and statistics decoded late do not bring it back.
        lag.revoke(&[("ev".into(), 0)]);
        lag.set_lags([("ev", 0, 7), ("ev", 1, 3)].into_iter());
        assert_eq!(gauges(&metrics), vec![("ev".into(), "1".into(), 3)]);
    }
}
