//! Changelog topics: their names, their creation (compacted, co-partitioned with the events
//! topic) and the restore of a partition's customers from them.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::executor::block_on;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, DefaultConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use thiserror::Error;
use tracing::{debug, info, warn};

use super::record::{decode, Record, RecordError};
use crate::config::Config;
use crate::kafka::base_config;

/// How long metadata requests may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a CreateTopics request may take before broker-side auto-creation is tried (some
/// brokers, librdkafka's mock cluster among them, do not answer it).
const CREATE_TIMEOUT: Duration = Duration::from_secs(5);

/// The changelog topic of an events topic: `<group_id>-<events topic>-changelog`.
pub fn changelog_topic(group_id: &str, events_topic: &str) -> String {
    format!("{group_id}-{events_topic}-changelog")
}

#[derive(Debug, Error)]
pub enum StateError {
    #[error("cannot create the {what}: {source}")]
    Create {
        what: &'static str,
        #[source]
        source: KafkaError,
    },
    #[error("metadata of {topic}: {source}")]
    Metadata {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("topic {0} does not exist")]
    NoTopic(String),
    #[error("cannot create changelog topic {topic}: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error(
        "changelog topic {changelog} has {has} partitions, but {events} has {needs}: \
         they must be co-partitioned"
    )]
    NotCoPartitioned {
        changelog: String,
        has: usize,
        events: String,
        needs: usize,
    },
    #[error("restoring {topic} [{partition}]: {source}")]
    Read {
        topic: String,
        partition: i32,
        #[source]
        source: KafkaError,
    },
    #[error("restoring {topic} [{partition}] offset {offset}: {source}")]
    Corrupt {
        topic: String,
        partition: i32,
        offset: i64,
        #[source]
        source: RecordError,
    },
    #[error("restore not finished after {0:?} ({1} partitions left)")]
    Timeout(Duration, usize),
}

/// What one partition's restore read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreCount {
    pub records: u64,
    pub bytes: u64,
}

/// Creates changelog topics when missing and reads them back.
pub struct Changelog {
    /// CreateTopics; its metadata requests (a producer-type client) let brokers auto-create.
    admin: AdminClient<DefaultClientContext>,
    /// Metadata without side effects (a consumer never asks for auto-creation).
    metadata: BaseConsumer<DefaultConsumerContext>,
    /// Settings of the restore reader, created afresh for each restore (a long-idle client
    /// can sit in reconnect back-off after a broker outage).
    reader_config: rdkafka::ClientConfig,
    replication: i32,
    timeout: Duration,
    known: HashSet<String>,
}

impl Changelog {
    pub fn new(cfg: &Config) -> Result<Self, StateError> {
        let k = &cfg.kafka;
        let admin = base_config(k)
            .set("allow.auto.create.topics", "true")
            .create()
            .map_err(created("admin client"))?;
        let mut reader_config = base_config(k);
        reader_config
            .set("group.id", format!("{}-restore", k.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest");
        let metadata = reader_config.create().map_err(created("metadata client"))?;
        Ok(Changelog {
            admin,
            metadata,
            reader_config,
            replication: cfg.state.changelog_replication_factor,
            timeout: cfg.state.restore_timeout,
            known: HashSet::new(),
        })
    }

    fn partitions(&self, topic: &str) -> Result<Option<usize>, StateError> {
        let md = self
            .metadata
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .map_err(|source| StateError::Metadata {
                topic: topic.to_string(),
                source,
            })?;
        Ok(md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.partitions().len()))
    }

    /// Make sure `changelog` exists with as many partitions as `events`: create it (compacted)
    /// when missing, refuse one that is not co-partitioned.
    pub fn ensure(&mut self, events: &str, changelog: &str) -> Result<(), StateError> {
        if self.known.contains(changelog) {
            return Ok(());
        }
        let needs = self
            .partitions(events)?
            .ok_or_else(|| StateError::NoTopic(events.to_string()))?;
        let has = match self.partitions(changelog)? {
            Some(n) => n,
            None => self.create(changelog, needs)?,
        };
        if has != needs {
            return Err(StateError::NotCoPartitioned {
                changelog: changelog.to_string(),
                has,
                events: events.to_string(),
                needs,
            });
        }
        self.known.insert(changelog.to_string());
        Ok(())
    }

    /// Create `topic`, compacted, with `partitions` partitions; returns the partition count
    /// it then has (which differs when only the broker's auto-creation was available).
    fn create(&self, topic: &str, partitions: usize) -> Result<usize, StateError> {
        let spec = NewTopic::new(
            topic,
            partitions as i32,
            TopicReplication::Fixed(self.replication),
        )
        .set("cleanup.policy", "compact");
        let opts = AdminOptions::new()
            .operation_timeout(Some(CREATE_TIMEOUT))
            .request_timeout(Some(CREATE_TIMEOUT));
        match block_on(self.admin.create_topics([&spec], &opts)) {
            Ok(results) => {
                for r in results {
                    match r {
                        Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((topic, code)) => return Err(StateError::CreateTopic { topic, code }),
                    }
                }
                info!(topic, partitions, "changelog topic created");
            }
            Err(e) => {
                // No CreateTopics (librdkafka's mock cluster): brokers that auto-create
                // topics create it on a metadata request, with their default partition count.
                warn!(topic, error = %e, "CreateTopics failed; trying the broker's topic auto-creation");
                let _ = self
                    .admin
                    .inner()
                    .fetch_metadata(Some(topic), REQUEST_TIMEOUT);
            }
        }
        // Wait until the new topic's metadata is visible.
        let start = Instant::now();
        loop {
            if let Some(n) = self.partitions(topic)? {
                return Ok(n);
            }
            if start.elapsed() > REQUEST_TIMEOUT {
                return Err(StateError::NoTopic(topic.to_string()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Read partitions `partitions` of changelog `topic` from their beginning to their end
    /// (committed records only), handing each record to `apply(partition, record)`. Returns
    /// what each partition held.
    pub fn restore(
        &self,
        topic: &str,
        partitions: &[i32],
        mut apply: impl FnMut(i32, Record),
    ) -> Result<Vec<RestoreCount>, StateError> {
        let reader: BaseConsumer<DefaultConsumerContext> = self
            .reader_config
            .create()
            .map_err(created("restore consumer"))?;
        let read_err = |partition: i32| {
            move |source| StateError::Read {
                topic: topic.to_string(),
                partition,
                source,
            }
        };
        let mut counts = vec![RestoreCount::default(); partitions.len()];
        let mut left = vec![false; partitions.len()];
        let mut tpl = TopicPartitionList::new();
        for (i, &p) in partitions.iter().enumerate() {
            let (lo, hi) = reader
                .fetch_watermarks(topic, p, REQUEST_TIMEOUT)
                .map_err(read_err(p))?;
            if hi > lo {
                left[i] = true;
                tpl.add_partition_offset(topic, p, Offset::Beginning)
                    .expect("a fresh list takes any partition");
            }
        }
        let mut remaining = left.iter().filter(|l| **l).count();
        if remaining == 0 {
            return Ok(counts);
        }
        reader.assign(&tpl).map_err(read_err(partitions[0]))?;
        let index = |p: i32| partitions.iter().position(|&q| q == p);
        let start = Instant::now();
        let result = loop {
            if remaining == 0 {
                break Ok(());
            }
            if start.elapsed() > self.timeout {
                break Err(StateError::Timeout(self.timeout, remaining));
            }
            match reader.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(m)) => {
                    let Some(i) = index(m.partition()) else {
                        continue;
                    };
                    counts[i].records += 1;
                    counts[i].bytes += m.payload_len() as u64;
                    match decode(m.key(), m.payload()) {
                        Ok(r) => apply(m.partition(), r),
                        Err(source) => {
                            break Err(StateError::Corrupt {
                                topic: topic.to_string(),
                                partition: m.partition(),
                                offset: m.offset(),
                                source,
                            })
                        }
                    }
                }
                // librdkafka reports the end once the position reaches the last committed
                // record (the last stable offset under read_committed).
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    if let Some(i) = index(p) {
                        if left[i] {
                            left[i] = false;
                            remaining -= 1;
                            debug!(
                                topic,
                                partition = p,
                                records = counts[i].records,
                                "changelog partition read"
                            );
                        }
                    }
                }
                Some(Err(e)) => break Err(read_err(partitions[0])(e)),
            }
        };
        result.map(|()| counts)
    }
}

/// The error of a Kafka client that could not be created.
fn created(what: &'static str) -> impl Fn(rdkafka::error::KafkaError) -> StateError {
    move |source| StateError::Create { what, source }
}
