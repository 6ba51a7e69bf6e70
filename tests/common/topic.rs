//! Reading a whole Kafka topic back, for assertions on what was produced.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// One record of a topic.
pub struct Record {
    pub key: Option<String>,
    pub raw_key: Option<Vec<u8>>,
    pub partition: i32,
    /// The payload; empty for a null one (a tombstone), see `tombstone`.
    pub payload: Vec<u8>,
    pub tombstone: bool,
    pub headers: HashMap<String, String>,
}

/// Every record of `topic` (all partitions) from the beginning, until every partition has
/// reached its end and at least `want` records were read (30 s at most).
pub fn read_topic(bootstrap: &str, topic: &str, want: usize) -> Vec<Record> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "test-reader")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .unwrap();
    let parts = md.topics()[0].partitions().len() as i32;
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut eof = BTreeSet::new();
    let mut out = Vec::new();
    let started = Instant::now();
    while eof.len() < parts as usize || out.len() < want {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "reading {topic} timed out after {} of {want} records",
            out.len()
        );
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let mut headers = HashMap::new();
                if let Some(h) = m.headers() {
                    for i in 0..h.count() {
                        let hd = h.get(i);
                        headers.insert(
                            hd.key.to_string(),
                            String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned(),
                        );
                    }
                }
                out.push(Record {
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    raw_key: m.key().map(<[u8]>::to_vec),
                    partition: m.partition(),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    tombstone: m.payload().is_none(),
                    headers,
                });
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                eof.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}
