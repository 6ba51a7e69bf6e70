//! `churnwatch demo`: the embedded default. No Kafka to install: an in-process Kafka-protocol
//! broker (librdkafka's mock cluster), the simulator producing customer traffic to it, and the
//! real [`pipeline`](mod@crate::pipeline) consuming it, exactly as `run` would against a cluster.
//!
//! Timeline: simulated time starts `history_days` before now. The first `backfill_days` are
//! produced at once (the customers' history; decliners start to decline inside it, so the
//! first alerts appear within seconds), then simulated time runs live at `speed` simulated
//! seconds per wall-clock second. Alerts are read back from the alerts topic and printed to
//! stdout, one JSON object per line; logs go to stderr.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, ConfigError, RawConfig};
use crate::http::{Health, Server};
use crate::metrics::Metrics;
use crate::pipeline::{self, PipelineError, RunSummary};
use crate::reload::{Loader, Reloader};
use crate::sim::{SimConfig, SimEvent, Simulator};
use crate::time::DAY_MS;

/// Options of the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Stop by itself after this long (wall clock); `None`: until SIGINT/SIGTERM.
    pub duration: Option<Duration>,
    pub customers: usize,
    pub seed: u64,
    /// Partitions of the events topic.
    pub partitions: i32,
    /// Simulated seconds per wall-clock second in the live phase.
    pub speed: f64,
    /// Days of history produced at start.
    pub backfill_days: f64,
    /// Where the simulated timeline starts, in days before now.
    pub history_days: f64,
    /// The config to start from (the broker, group and topics are the demo's own); by
    /// default the shipped one.
    pub config: RawConfig,
    /// The file `config` came from: reloaded on SIGHUP and when it changes.
    pub config_path: Option<std::path::PathBuf>,
    /// Override of `http.listen`.
    pub listen: Option<SocketAddr>,
    /// Share of deliberately malformed messages (they go to the dead-letter topic).
    pub malformed_share: f64,
    /// Print alerts on stdout.
    pub print_alerts: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            duration: None,
            customers: 5_000,
            seed: 1,
            partitions: 4,
            speed: 6.0 * 3600.0,
            backfill_days: 45.0,
            history_days: 60.0,
            config: RawConfig::default(),
            config_path: None,
            listen: None,
            malformed_share: 0.0005,
            print_alerts: true,
        }
    }
}

/// Errors of the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the in-process broker failed: {0}")]
    Broker(#[source] rdkafka::error::KafkaError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

/// What the demo did.
#[derive(Debug, Clone, Copy, Default)]
pub struct DemoSummary {
    pub produced: u64,
    pub alerts_printed: u64,
    pub pipeline: RunSummary,
}

/// The demo's config: `raw` (the user's file or the embedded default) pointed at the in-process
/// broker, validated.
pub fn demo_config(
    mut raw: RawConfig,
    bootstrap: &str,
    listen: Option<SocketAddr>,
) -> Result<Config, ConfigError> {
    raw.kafka.brokers = bootstrap.to_string();
    raw.kafka.group_id = "churnwatch-demo".into();
    raw.kafka.properties.clear();
    // Simulated time runs ahead of the wall clock.
    raw.input.max_future_skew_secs = 0;
    if let Some(l) = listen {
        raw.http.listen = l.to_string();
    }
    raw.validate()
}

/// Run the demo until `shutdown` is cancelled or `opts.duration` has passed.
pub async fn run(opts: DemoOptions, shutdown: CancellationToken) -> Result<DemoSummary, DemoError> {
    let cluster = MockCluster::new(1).map_err(DemoError::Broker)?;
    let bootstrap = cluster.bootstrap_servers();
    let cfg = Arc::new(demo_config(opts.config.clone(), &bootstrap, opts.listen)?);
    let k = &cfg.kafka;
    for t in &k.events_topics {
        cluster
            .create_topic(t, opts.partitions, 1)
            .map_err(DemoError::Broker)?;
        // The in-process broker has no CreateTopics API: its changelog is made here.
        cluster
            .create_topic(
                &crate::state::changelog_topic(&k.group_id, t),
                opts.partitions,
                1,
            )
            .map_err(DemoError::Broker)?;
    }
    cluster
        .create_topic(&k.alerts_topic, opts.partitions, 1)
        .map_err(DemoError::Broker)?;
    cluster
        .create_topic(&k.dead_letter_topic, 1, 1)
        .map_err(DemoError::Broker)?;

    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let stop = shutdown.child_token();
    if let Some(d) = opts.duration {
        let s = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            info!(seconds = d.as_secs_f64(), "demo duration reached");
            s.cancel();
        });
    }
    let http = Server::start_configured(&cfg.http, metrics.clone(), health.clone()).await?;

    eprintln!();
    eprintln!(
        "churnwatch demo: {} simulated customers, events topic '{}' ({} partitions)",
        opts.customers, k.events_topics[0], opts.partitions
    );
    eprintln!("  in-process Kafka broker:  {bootstrap}");
    eprintln!(
        "  watch the alerts:         kcat -C -b {bootstrap} -t {}",
        k.alerts_topic
    );
    eprintln!(
        "  dead-letter topic:        kcat -C -b {bootstrap} -t {}",
        k.dead_letter_topic
    );
    if let Some(server) = &http {
        eprintln!(
            "  metrics:                  curl http://{}/metrics",
            server.addr
        );
    }
    eprintln!("  alerts are printed below as JSON lines; stop with Ctrl-C");
    eprintln!();

    let produced = Arc::new(AtomicU64::new(0));
    let producer_task = tokio::spawn(produce_traffic(
        bootstrap.clone(),
        k.events_topics[0].clone(),
        opts.clone(),
        stop.clone(),
        produced.clone(),
        metrics.clone(),
    ));
    let printed = Arc::new(AtomicU64::new(0));
    let printer_stop = CancellationToken::new();
    let printer = if opts.print_alerts {
        Some(tokio::spawn(print_alerts(
            bootstrap.clone(),
            k.alerts_topic.clone(),
            printer_stop.clone(),
            printed.clone(),
        )))
    } else {
        None
    };

    // The config file, re-read with the demo's own settings on top.
    let loader: Loader = match opts.config_path.clone() {
        Some(path) => {
            let (bootstrap, listen) = (bootstrap.clone(), opts.listen);
            Box::new(move || demo_config(RawConfig::load(Some(&path))?, &bootstrap, listen))
        }
        None => Box::new(|| Err(ConfigError::Parse("no config file".into()))),
    };
    let (reloader, updates) = Reloader::new(cfg.clone(), loader, metrics.clone());
    reloader.spawn(opts.config_path.clone(), stop.clone());
    let result = pipeline::run_reloadable(updates, metrics.clone(), health, stop.clone()).await;
    stop.cancel();
    let _ = producer_task.await;
    if let Some(p) = printer {
        // Give the printer a moment to read the last alerts the pipeline produced.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        printer_stop.cancel();
        let _ = p.await;
    }
    if let Some(server) = http {
        server.stop().await;
    }
    drop(cluster);
    let summary = DemoSummary {
        produced: produced.load(Ordering::Relaxed),
        alerts_printed: printed.load(Ordering::Relaxed),
        pipeline: result?,
    };
    eprintln!(
        "churnwatch demo: produced {} messages; processed {} valid events and {} invalid messages; {} alerts",
        summary.produced,
        summary.pipeline.events,
        summary.pipeline.invalid,
        summary.pipeline.alerts
    );
    Ok(summary)
}

/// Produce the simulator's traffic: the backfill at once, then live at `opts.speed`.
async fn produce_traffic(
    bootstrap: String,
    topic: String,
    opts: DemoOptions,
    stop: CancellationToken,
    produced: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
) {
    let producer: ThreadedProducer<DefaultProducerContext> =
        match crate::simulate::producer_config(&bootstrap).create() {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "demo producer could not start");
                return;
            }
        };
    let now = crate::time::now_ms();
    let start_ms = (now - (opts.history_days * DAY_MS as f64) as i64).div_euclid(DAY_MS) * DAY_MS;
    let mut sim = Simulator::new(SimConfig {
        customers: opts.customers,
        seed: opts.seed,
        start_ms,
        malformed_share: opts.malformed_share,
        // Everybody exists from the start, and decliners start to decline inside the backfill
        // (the first alerts appear within seconds).
        existing_share: 1.0,
        decline_window_days: Some((opts.backfill_days * 0.5, opts.backfill_days * 0.5 + 30.0)),
        ..SimConfig::default()
    });
    let mut buf: Vec<SimEvent> = Vec::new();
    let mut sim_ms = start_ms + (opts.backfill_days * DAY_MS as f64) as i64;
    sim.advance(sim_ms, &mut buf);
    info!(
        events = buf.len(),
        days = opts.backfill_days,
        "producing the simulated customers' history"
    );
    if !send_all(&producer, &topic, &mut buf, &produced, &metrics, &stop).await {
        return;
    }
    let step = Duration::from_millis(100);
    let mut tick = tokio::time::interval(step);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                sim_ms += (opts.speed * step.as_secs_f64() * 1000.0) as i64;
                sim.advance(sim_ms, &mut buf);
                if !send_all(&producer, &topic, &mut buf, &produced, &metrics, &stop).await {
                    break;
                }
            }
        }
    }
    let _ = producer.flush(Duration::from_secs(5));
}

/// How far the producer may run ahead of the pipeline. The mock broker keeps only the newest
/// 5 MiB / 100,000 messages of each partition, so it must not run further ahead than that.
const MAX_AHEAD: u64 = 40_000;

async fn send_all(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    buf: &mut Vec<SimEvent>,
    produced: &AtomicU64,
    metrics: &Metrics,
    stop: &CancellationToken,
) -> bool {
    for (i, e) in buf.drain(..).enumerate() {
        if i % 1000 == 0 {
            while produced.load(Ordering::Relaxed) > metrics.messages_processed() + MAX_AHEAD {
                if stop.is_cancelled() {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let mut record = BaseRecord::to(topic)
            .key(e.customer_id.as_bytes())
            .payload(&e.payload);
        loop {
            if stop.is_cancelled() {
                return false;
            }
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        produced.fetch_add(1, Ordering::Relaxed);
    }
    true
}

/// Read the alerts topic and print each alert as one line on stdout.
async fn print_alerts(
    bootstrap: String,
    topic: String,
    stop: CancellationToken,
    printed: Arc<AtomicU64>,
) {
    let consumer: StreamConsumer = match ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "churnwatch-demo-printer")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
    {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "alert printer could not start");
            return;
        }
    };
    if let Err(e) = consumer.subscribe(&[&topic]) {
        warn!(error = %e, "alert printer could not subscribe");
        return;
    }
    let mut stream = consumer.stream();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            m = stream.next() => match m {
                Some(Ok(m)) => {
                    if let Some(p) = m.payload() {
                        let mut out = std::io::stdout().lock();
                        let _ = out.write_all(p);
                        let _ = out.write_all(b"\n");
                        let _ = out.flush();
                        printed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some(Err(e)) => warn!(error = %e, "alert printer"),
                None => break,
            }
        }
    }
}
