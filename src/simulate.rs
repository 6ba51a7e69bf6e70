//! `churnwatch simulate`: write a dataset (events.jsonl + labels.csv) or produce to Kafka.
