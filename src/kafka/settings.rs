//! librdkafka settings for churnwatch's consumer and producer.

use rdkafka::config::ClientConfig;

use crate::config::KafkaConfig;

fn base(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("client.id", &cfg.client_id);
    // Pass-through last, so operators can tune anything not managed by churnwatch.
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

/// Consumer: offsets are stored by churnwatch only once the records produced from the events
/// are acknowledged, and committed by librdkafka's auto-commit (and on shutdown/revoke).
pub fn consumer_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = base(cfg);
    c.set("group.id", &cfg.group_id)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.commit.interval.ms",
            cfg.commit_interval_ms.to_string(),
        )
        .set("auto.offset.reset", cfg.auto_offset_reset.as_str())
        .set("enable.partition.eof", "false");
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

/// Producer: idempotent, acknowledged by all in-sync replicas, bounded delivery time.
pub fn producer_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = base(cfg);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", cfg.delivery_timeout_ms.to_string());
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
        let mut cfg = Config::default().kafka;
        cfg.properties
            .insert("security.protocol".into(), "SASL_SSL".into());
        let c = consumer_config(&cfg);
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(c.get("group.id"), Some("churnwatch"));
        let p = producer_config(&cfg);
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        assert_eq!(p.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(p.get("group.id"), None);
    }
}
