//! The `churnwatch` binary: command-line parsing and error reporting around the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use churnwatch::config::{Config, RawConfig};
use churnwatch::demo::{self, DemoOptions};
use churnwatch::http::{Health, Server};
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
    Demo(DemoArgs),
    /// Validate a config file and print the effective settings' version.
    CheckConfig {
        /// Config file (default: config/churnwatch.toml).
        path: Option<PathBuf>,
    },
}

#[derive(Args)]
struct DemoArgs {
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::CheckConfig { path } => check_config(path),
        Command::Run { config } => runtime().and_then(|rt| rt.block_on(run(config))),
        Command::Demo(args) => runtime().and_then(|rt| rt.block_on(run_demo(args))),
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
    let http = Server::start_configured(&cfg.http, metrics.clone(), health.clone())
        .await
        .context("starting the HTTP server")?;
    let result = pipeline::run(cfg, metrics, health, token).await;
    if let Some(server) = http {
        server.stop().await;
    }
    result.context("pipeline stopped with an error")?;
    Ok(())
}

async fn run_demo(args: DemoArgs) -> anyhow::Result<()> {
    let path = args.config.as_deref();
    let config = RawConfig::load(path)?;
    // Validate the config as given, so errors name the user's keys, not the demo's.
    let log = config
        .clone()
        .into_config()
        .with_context(|| match path {
            Some(p) => format!("{} is not valid", p.display()),
            None => "the embedded default config is not valid".to_string(),
        })?
        .log;
    logging::init(&log);
    let token = CancellationToken::new();
    shutdown::cancel_on_signals(token.clone());
    let opts = DemoOptions {
        duration: args.duration.map(Duration::from_secs_f64),
        customers: args.customers,
        seed: args.seed,
        partitions: args.partitions,
        speed: args.speed,
        config,
        listen: args.listen,
        ..DemoOptions::default()
    };
    demo::run(opts, token).await.context("demo failed")?;
    Ok(())
}
