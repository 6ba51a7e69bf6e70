//! The `churnwatch` binary: command-line parsing and error reporting around the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use churnwatch::config::Config;
use churnwatch::demo::{self, DemoOptions};
use churnwatch::http::Health;
use churnwatch::metrics::Metrics;
use churnwatch::{logging, pipeline, shutdown};

#[derive(Parser)]
#[command(
    name = "churnwatch",
    version,
    about = "Churn-risk early-warning stream processor: Kafka events in, at-risk customer alerts out."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume events from Kafka, score customers, produce alerts, serve metrics.
    Run {
        /// Config file (TOML). Environment variables override it (see the file's header).
        #[arg(long, short, env = "CHURNWATCH_CONFIG")]
        config: PathBuf,
    },
    /// Run everything in-process: a Kafka-protocol broker, simulated customers and the pipeline.
    Demo {
        /// Stop after this many seconds (default: until Ctrl-C).
        #[arg(long)]
        duration: Option<f64>,
        /// Number of simulated customers.
        #[arg(long, default_value_t = 5000)]
        customers: usize,
        /// Seed of the simulator.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Partitions of the events topic.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// Simulated seconds per wall-clock second once the history is produced.
        #[arg(long, default_value_t = 21600.0)]
        speed: f64,
        /// Start from this config file instead of the embedded default.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Metrics address (overrides http.listen).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Validate a config file and print the effective settings' version.
    CheckConfig {
        /// Config file (default: config/churnwatch.toml).
        path: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::CheckConfig { path } => check_config(path),
        Command::Run { config } => runtime().and_then(|rt| rt.block_on(run(config))),
        Command::Demo {
            duration,
            customers,
            seed,
            partitions,
            speed,
            config,
            listen,
        } => {
            let opts = DemoOptions {
                duration: duration.map(Duration::from_secs_f64),
                customers,
                seed,
                partitions,
                speed,
                config,
                listen,
                ..DemoOptions::default()
            };
            runtime().and_then(|rt| rt.block_on(run_demo(opts)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("churnwatch: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn check_config(path: Option<PathBuf>) -> anyhow::Result<()> {
    let path = path.unwrap_or_else(|| PathBuf::from("config/churnwatch.toml"));
    let cfg = Config::load(&path).with_context(|| format!("{} is not valid", path.display()))?;
    println!(
        "{}: OK (config_version {}, events from {:?} on {}, alerts to {})",
        path.display(),
        cfg.version,
        cfg.kafka.events_topics,
        cfg.kafka.brokers,
        cfg.kafka.alerts_topic
    );
    Ok(())
}

async fn run(config: PathBuf) -> anyhow::Result<()> {
    let cfg = Config::load(&config)
        .with_context(|| format!("refusing to start: {} is not valid", config.display()))?;
    logging::init(&cfg.log);
    let cfg = Arc::new(cfg);
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let token = CancellationToken::new();
    shutdown::cancel_on_signals(token.clone());
    // The HTTP server outlives the pipeline's drain, so /readyz answers 503 while it stops.
    let http_token = CancellationToken::new();
    let http = if cfg.http.enabled {
        Some(
            churnwatch::http::serve(
                cfg.http.listen,
                metrics.clone(),
                health.clone(),
                http_token.clone(),
            )
            .await
            .context("starting the HTTP server")?,
        )
    } else {
        None
    };
    let result = pipeline::run(cfg, metrics, health, token.clone()).await;
    http_token.cancel();
    if let Some((_, h)) = http {
        let _ = h.await;
    }
    result.context("pipeline stopped with an error")?;
    Ok(())
}

async fn run_demo(opts: DemoOptions) -> anyhow::Result<()> {
    let log = match &opts.config {
        Some(p) => {
            Config::load(p)
                .with_context(|| format!("{} is not valid", p.display()))?
                .log
        }
        None => Config::default().log,
    };
    logging::init(&log);
    let token = CancellationToken::new();
    shutdown::cancel_on_signals(token.clone());
    demo::run(opts, token).await.context("demo failed")?;
    Ok(())
}
