//! Producing alerts and dead-letter records. Each send returns the broker's acknowledgement as
//! a future; the pipeline commits an input offset only after the acknowledgements of every
//! record its events produced.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::alert::Alert;
use crate::event::InvalidReason;

/// Header names on dead-letter records.
pub const HEADER_REASON: &str = "churnwatch.reason";
pub const HEADER_ERROR: &str = "churnwatch.error";
pub const HEADER_SOURCE_TOPIC: &str = "churnwatch.source.topic";
pub const HEADER_SOURCE_PARTITION: &str = "churnwatch.source.partition";
pub const HEADER_SOURCE_OFFSET: &str = "churnwatch.source.offset";

/// Errors from producing.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("could not enqueue a record for {topic}: {source}")]
    Enqueue {
        topic: String,
        #[source]
        source: KafkaError,
    },
}

/// A record that failed validation, with where it came from.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetter<'a> {
    pub payload: &'a [u8],
    pub key: Option<&'a [u8]>,
    pub reason: InvalidReason,
    pub detail: &'a str,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// An acknowledgement to wait for, with the topic it is for.
pub struct PendingAck {
    pub topic: &'static str,
    pub future: DeliveryFuture,
}

/// Producer of alerts and dead-letter records.
#[derive(Clone)]
pub struct Sink {
    producer: FutureProducer,
    alerts_topic: String,
    dead_letter_topic: String,
}

impl Sink {
    pub fn new(producer: FutureProducer, alerts_topic: String, dead_letter_topic: String) -> Self {
        Sink {
            producer,
            alerts_topic,
            dead_letter_topic,
        }
    }

    /// Produce one alert (key = customer id).
    pub fn send_alert(&self, alert: &Alert) -> Result<PendingAck, SinkError> {
        let payload = alert.to_json();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "churnwatch.alert_id",
                value: Some(alert.alert_id.as_bytes()),
            })
            .insert(Header {
                key: "churnwatch.kind",
                value: Some(alert.kind.as_str().as_bytes()),
            });
        let record = FutureRecord::to(&self.alerts_topic)
            .key(alert.customer_id.as_bytes())
            .payload(&payload)
            .headers(headers);
        let future = self.enqueue(record, &self.alerts_topic)?;
        Ok(PendingAck {
            topic: "alerts",
            future,
        })
    }

    /// Produce one dead-letter record: the original bytes and key, the reason in headers.
    pub fn send_dead_letter(&self, dl: DeadLetter<'_>) -> Result<PendingAck, SinkError> {
        let partition = dl.partition.to_string();
        let offset = dl.offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: HEADER_REASON,
                value: Some(dl.reason.as_str().as_bytes()),
            })
            .insert(Header {
                key: HEADER_ERROR,
                value: Some(dl.detail.as_bytes()),
            })
            .insert(Header {
                key: HEADER_SOURCE_TOPIC,
                value: Some(dl.topic.as_bytes()),
            })
            .insert(Header {
                key: HEADER_SOURCE_PARTITION,
                value: Some(partition.as_bytes()),
            })
            .insert(Header {
                key: HEADER_SOURCE_OFFSET,
                value: Some(offset.as_bytes()),
            });
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.dead_letter_topic)
            .payload(dl.payload)
            .headers(headers);
        if let Some(k) = dl.key {
            record = record.key(k);
        }
        let future = self.enqueue(record, &self.dead_letter_topic)?;
        Ok(PendingAck {
            topic: "dead_letter",
            future,
        })
    }

    /// Produce one changelog record to `partition` of `topic` (a `None` value is a tombstone).
    pub fn send_changelog(
        &self,
        topic: &str,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<PendingAck, SinkError> {
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(topic).partition(partition).key(key);
        if let Some(v) = value {
            record = record.payload(v);
        }
        let future = self.enqueue(record, topic)?;
        Ok(PendingAck {
            topic: "changelog",
            future,
        })
    }

    /// The producer, for transactions.
    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// Enqueue, waiting (not failing) while librdkafka's local queue is full. Blocking: called
    /// from the consumer thread.
    fn enqueue<'a, K, P>(
        &self,
        mut record: FutureRecord<'a, K, P>,
        topic: &str,
    ) -> Result<DeliveryFuture, SinkError>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        loop {
            match self.producer.send_result(record) {
                Ok(f) => return Ok(f),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => {
                    return Err(SinkError::Enqueue {
                        topic: topic.to_string(),
                        source: e,
                    })
                }
            }
        }
    }

    /// Wait for everything enqueued to be delivered (or to fail).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}
