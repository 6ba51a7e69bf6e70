//! librdkafka settings for churnwatch's consumer and producer.

use rdkafka::config::ClientConfig;

use crate::config::{Config, Guarantee, KafkaConfig};

/// Settings shared by every client: brokers, client id, the pass-through properties (security).
pub fn base_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("client.id", &cfg.client_id)
        // Decisions are latency-sensitive, and librdkafka leaves Nagle's algorithm on: a small
        // request could wait for the broker's delayed acknowledgement (tens of ms).
        .set("socket.nagle.disable", "true");
    // Pass-through last, so operators can tune anything not managed by churnwatch.
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

/// Consumer: churnwatch commits offsets itself, at checkpoints, once the records produced from
/// the events are acknowledged (or inside the transaction, exactly-once); it reads only
/// committed records.
pub fn consumer_config(full: &Config) -> ClientConfig {
    let cfg = &full.kafka;
    let mut c = base_config(cfg);
    c.set("group.id", &cfg.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", cfg.auto_offset_reset.as_str())
        .set("enable.partition.eof", "false")
        // librdkafka's default (100,000) held end-to-end throughput at ~120k events/s against
        // both local brokers with churnwatch 60 % idle; 1,000,000 gave ~400k
        // (scripts/bench-e2e.sh, BENCHMARKS.md). Memory stays bounded by
        // queued.max.messages.kbytes.
        .set("queued.min.messages", "1000000");
    if cfg.statistics_interval_ms > 0 {
        // The source of the consumer-lag gauge.
        c.set(
            "statistics.interval.ms",
            cfg.statistics_interval_ms.to_string(),
        );
    }
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

/// Producer: idempotent, acknowledged by all in-sync replicas, bounded delivery time;
/// transactional under `processing.guarantee = "exactly_once"`.
pub fn producer_config(full: &Config) -> ClientConfig {
    let cfg = &full.kafka;
    let mut c = base_config(cfg);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", cfg.delivery_timeout_ms.to_string())
        // Room above the back-pressure limit, for the changelog records of a checkpoint.
        .set(
            "queue.buffering.max.messages",
            (2 * cfg.max_pending_records).max(100_000).to_string(),
        );
    if full.processing.guarantee == Guarantee::ExactlyOnce {
        c.set("transactional.id", &full.processing.transactional_id)
            .set(
                "transaction.timeout.ms",
                full.processing.transaction_timeout_ms.to_string(),
            );
    }
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn managed_settings_and_passthrough() {
        let mut cfg = Config::default();
        cfg.kafka
            .properties
            .insert("security.protocol".into(), "SASL_SSL".into());
        let c = consumer_config(&cfg);
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("isolation.level"), Some("read_committed"));
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(c.get("group.id"), Some("churnwatch"));
        let p = producer_config(&cfg);
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        assert_eq!(p.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(p.get("group.id"), None);
        assert_eq!(p.get("transactional.id"), None);
        cfg.processing.guarantee = Guarantee::ExactlyOnce;
        cfg.processing.transactional_id = "churnwatch-a".into();
        let p = producer_config(&cfg);
        assert_eq!(p.get("transactional.id"), Some("churnwatch-a"));
    }

    /// The clients can be made with TLS and SCRAM (librdkafka built with OpenSSL: without it,
    /// creation fails with "OpenSSL not available at build time").
    #[test]
    fn tls_and_scram_clients_can_be_created() {
        use rdkafka::consumer::BaseConsumer;
        use rdkafka::producer::BaseProducer;
        let mut cfg = Config::default();
        for (k, v) in [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "churnwatch"),
            ("sasl.password", "not-a-real-secret"),
        ] {
            cfg.kafka.properties.insert(k.into(), v.into());
        }
        cfg.kafka.brokers = "127.0.0.1:1".into();
        let p: Result<BaseProducer, _> = producer_config(&cfg).create();
        assert!(p.is_ok(), "{:?}", p.err());
        let c: Result<BaseConsumer, _> = consumer_config(&cfg).create();
        assert!(c.is_ok(), "{:?}", c.err());
    }
}
