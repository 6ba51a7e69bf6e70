//! Kafka plumbing on rdkafka: client settings, the consumer's context (rebalances, statistics,
//! commits), the sink that produces alerts and dead-letter records, and the thread that
//! produces the changelog.

pub mod changelog_writer;
pub mod context;
pub mod settings;
pub mod sink;

pub use changelog_writer::{ChangelogBatch, ChangelogWriter, Writing};
pub use context::ConsumerCtx;
pub use settings::{base_config, consumer_config, producer_config};
pub use sink::{DeadLetter, Sink, SinkError};

use rdkafka::error::KafkaError;

/// Errors from the Kafka side of the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum KafkaPipelineError {
    #[error("could not create the Kafka {what}: {source}")]
    Create {
        what: &'static str,
        #[source]
        source: KafkaError,
    },
    #[error("could not subscribe to {topics:?}: {source}")]
    Subscribe {
        topics: Vec<String>,
        #[source]
        source: KafkaError,
    },
    #[error("the broker did not acknowledge a record for topic {topic}: {source}")]
    Delivery {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("moving the consumer back to the committed offsets failed: {0}")]
    Rewind(#[source] KafkaError),
    #[error("committing offsets failed: {0}")]
    Commit(#[source] KafkaError),
    #[error("transaction failed ({step}): {source}")]
    Transaction {
        step: &'static str,
        #[source]
        source: KafkaError,
    },
}
