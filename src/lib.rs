//! churnwatch: a churn-risk early-warning stream processor.
//!
//! Customer activity events (visits, usage, purchases, engagement scores) are read from
//! Kafka, folded into compact per-customer rolling windows in event time, scored against
//! each customer's own baseline, and turned into alerts (at most one per change of state)
//! on an alerts topic and into Prometheus gauges.
//!
//! # Layout
//!
//! The crate is a library with a thin binary (`src/main.rs`). Modules, from the wire inward:
//!
//! - [`config`]: the TOML config (raw serde structs with `deny_unknown_fields`, environment
//!   overrides) validated into a typed [`config::Config`] whose errors name the key.
//! - [`event`]: the event schema and the decoder that validates one Kafka message into an
//!   [`event::Event`], or an [`event::InvalidEvent`] with a machine-readable reason
//!   (`event/scan.rs`: the fast path for flat objects, `serde_json` for the rest).
//! - [`time`]: event-time helpers (RFC 3339, milliseconds, buckets).
//! - [`window`]: the fixed-size ring of event-time buckets behind each customer's recent and
//!   baseline windows; [`ring_pool`]: the fixed-size slots the rings (and the parts kept
//!   apart) are allocated in.
//! - [`bits`]: one-bit-per-slot sets (changed customers, purchase marks).
//! - [`customer`]: one customer's compact state (windows, purchase rhythm, engagement), and
//!   [`customer::parts`], what only some customers need kept apart in one pooled slot;
//!   [`compact`]: the serde adapters that keep its narrow fields in records' wider types.
//! - [`stats`]: the statistical tests (Poisson rate test, gamma survival, z-test) on statrs.
//! - [`change`]: online change detection on per-bucket counts (weekday-adjusted baseline,
//!   CUSUM onset, exact test of the segment since the onset).
//! - [`model`]: the customer-base models (BG/NBD, MBG/NBD) behind `p_churn`, their maximum-
//!   likelihood fit and the priors file.
//! - [`scoring`]: the early signals and the churn probability, their explanation as
//!   [`scoring::Reason`]s and the
//!   combined risk score and tier.
//! - [`alerting`]: the per-customer alert state machine (hysteresis, cooldown, escalation,
//!   recovery, lapse) and the [`alert::Alert`] it emits ([`alert`] holds the wire schema).
//! - [`timers`]: event-time timers that re-score silent customers (a calendar queue).
//! - [`partition`]: everything one Kafka partition owns: customers, stream time, watermark,
//!   timers, and the per-event entry point used by the live stream and tests alike.
//! - [`slot_index`]: the partition's customer index (id hash -> slot), prefetchable;
//!   [`id_table`]: the ids by slot, 8 bytes each; and [`prefetch`]: the cache hints that let a
//!   chunk's lookups overlap.
//! - [`kpi`]: business KPIs per event-time period (churn, retention, revenue churn counts).
//! - [`metrics`]: the Prometheus registry and every `churnwatch_` metric.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz` and the status page's routes.
//! - [`status`]: the status page and customer lookup (views of the pipeline, HTML, JSON).
//! - [`reload`]: live config reloads (SIGHUP, file changes): live and restart-only settings.
//! - [`kafka`]: rdkafka client settings, the consumer's context (rebalances handed to the
//!   processor, lag from statistics, commits) and the sink (alerts, dead letters, changelog).
//! - [`state`]: durable per-customer state: changelog topics (naming, creation, restore) and
//!   their record format; its module doc describes the recovery model.
//! - [`processor`]: what the consumer thread owns: the assigned partitions, checkpoints (alerts
//!   acknowledged, changelog written, offsets committed; or one transaction), restore on
//!   assignment, drain on revocation, rewind after a transient failure.
//! - [`pipeline`]: `churnwatch run`: the consumer loop on its own thread, shutdown.
//! - [`sim`]: a seeded simulator of customer activity with ground truth (the demo's traffic,
//!   `simulate`); [`simulate`] writes it as a dataset or produces it to Kafka, [`labels`]
//!   reads and writes its `labels.csv`.
//! - [`backtest`]: the offline tools on history, all through [`partition`]: replay, `score`,
//!   `fit` and `backtest` with its accuracy metrics and threshold sweep.
//! - [`bench`](mod@bench): `churnwatch bench`, the per-event path measured in process on a simulated
//!   stream (events/s on one core and on all, state bytes per customer).
//! - [`demo`]: the embedded default: an in-process broker, the simulator and the real pipeline.
//! - [`shutdown`]: SIGINT/SIGTERM handling shared by `run` and `demo`.
//! - [`logging`]: `tracing` to stderr, as text or JSON lines.

pub mod alert;
pub mod alerting;
pub mod backtest;
pub mod bench;
pub mod bits;
pub mod change;
pub mod compact;
pub mod config;
pub mod customer;
pub mod demo;
pub mod event;
pub mod http;
pub mod id_table;
pub mod kafka;
pub mod kpi;
pub mod labels;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod partition;
pub mod pipeline;
pub mod prefetch;
pub mod processor;
pub mod reload;
pub mod ring_pool;
pub mod scoring;
pub mod shutdown;
pub mod sim;
pub mod simulate;
pub mod slot_index;
pub mod state;
pub mod stats;
pub mod status;
pub mod time;
pub mod timers;
pub mod window;
