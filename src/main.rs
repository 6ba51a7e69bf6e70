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
use churnwatch::reload::Reloader;
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
    /// Generate customers with a known ground truth: a dataset (events.jsonl + labels.csv) or a
    /// stream produced to Kafka.
    Simulate(SimulateArgs),
    /// Estimate the population priors of the churn models from history (maximum likelihood).
    Fit(FitArgs),
    /// Replay events through the streaming scorer up to a time; one CSV row per customer.
    Score(ScoreArgs),
    /// Replay events as production would and measure the alerts and scores against labels.
    Backtest(BacktestArgs),
    /// Measure the per-event path in process (decode, state, timers, scoring, alerts) on a
    /// simulated stream: events/s on one core and on all, state bytes per customer, peak RSS.
    Bench(BenchArgs),
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

#[derive(Args)]
struct SimulateArgs {
    /// Number of customers.
    #[arg(long, default_value_t = 20_000)]
    customers: usize,
    /// Length of the simulated period in days.
    #[arg(long, default_value_t = 365.0)]
    days: f64,
    /// Seed (the same seed gives the same data).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Start of the period (RFC 3339).
    #[arg(long, default_value = "2026-01-01T00:00:00Z")]
    start: String,
    /// Share of deliberately malformed messages (for dead-letter tests).
    #[arg(long, default_value_t = 0.0)]
    malformed_share: f64,
    /// Write DIR/events.jsonl and DIR/labels.csv.
    #[arg(long, required_unless_present = "brokers")]
    out: Option<PathBuf>,
    /// Produce the events to Kafka instead (with --topic).
    #[arg(long, requires = "topic", conflicts_with = "out")]
    brokers: Option<String>,
    /// Topic to produce to.
    #[arg(long, requires = "brokers")]
    topic: Option<String>,
    /// With --brokers: produce at most this many messages per second (default: as fast as
    /// the broker takes them).
    #[arg(long, requires = "brokers")]
    rate: Option<f64>,
    /// With --brokers: also write the labels to this file.
    #[arg(long, requires = "brokers")]
    labels: Option<PathBuf>,
}

#[derive(Args)]
struct BenchArgs {
    /// Distinct customers in the simulated stream.
    #[arg(long, default_value_t = 1_000_000)]
    customers: usize,
    /// Days of stream processed before timing starts (customers build up their history).
    #[arg(long, default_value_t = 14.0)]
    warmup_days: f64,
    /// Timed slices; the figures are their medians.
    #[arg(long, default_value_t = 5)]
    slices: usize,
    /// Days of stream per timed slice.
    #[arg(long, default_value_t = 1.0)]
    slice_days: f64,
    /// Threads of the all-cores run (default: the cores available).
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Config file (default: the embedded default config).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct FitArgs {
    /// Events, one JSON object per line (the live schema), in arrival order.
    #[arg(long, short)]
    input: PathBuf,
    /// Where to write the priors (TOML; reference it as churn.priors in the config).
    #[arg(long, short)]
    out: PathBuf,
    /// Fit on the events before this time (RFC 3339; default: all of them).
    #[arg(long)]
    as_of: Option<String>,
    /// Config file (default: the embedded default config).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct ScoreArgs {
    /// Events, one JSON object per line (the live schema), in arrival order.
    #[arg(long, short)]
    input: PathBuf,
    /// Score as of this time (RFC 3339); events from then on are not read.
    #[arg(long)]
    as_of: String,
    /// Horizon of p_churn in days (overrides churn.horizon_days).
    #[arg(long)]
    horizon_days: Option<f64>,
    /// Config file (default: the embedded default config).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Where to write the CSV.
    #[arg(long, short)]
    out: PathBuf,
}

#[derive(Args)]
struct BacktestArgs {
    /// Events, one JSON object per line, in arrival order.
    #[arg(long, short)]
    input: PathBuf,
    /// Ground truth: customer_id,churned,decline_onset,churned_at,segment.
    #[arg(long, short)]
    labels: PathBuf,
    /// Config file (default: the embedded default config).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Also evaluate a grid of alerting.enter_threshold values and print the trade-off.
    #[arg(long)]
    sweep: bool,
    /// The grid for --sweep (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.3,0.35,0.4,0.45,0.5,0.55,0.6,0.65,0.7,0.75,0.8,0.85,0.9"
    )]
    grid: Vec<f64>,
    /// --sweep target: the smallest share of at_risk alerts followed by churn.
    #[arg(long, conflicts_with = "max_alerts_per_1000_per_day")]
    min_precision: Option<f64>,
    /// --sweep target: the largest number of at_risk alerts per 1,000 customers per day.
    #[arg(long)]
    max_alerts_per_1000_per_day: Option<f64>,
    /// Days between cut-off dates for the ranking and calibration figures.
    #[arg(long, default_value_t = 30.0)]
    cutoff_every_days: f64,
    /// Days after the first event of the first cut-off date.
    #[arg(long, default_value_t = 90.0)]
    first_cutoff_days: f64,
    /// Also write every alert of the replay to this file (JSON lines).
    #[arg(long)]
    alerts_out: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::CheckConfig { path } => check_config(path),
        Command::Simulate(args) => simulate(args),
        Command::Fit(args) => fit(args),
        Command::Score(args) => score(args),
        Command::Backtest(args) => backtest(args),
        Command::Bench(args) => bench(args),
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
    let priors = cfg
        .churn
        .priors_path
        .as_ref()
        .map_or_else(|| "built-in".to_string(), |p| p.display().to_string());
    println!(
        "{}: OK (config_version {}, events from {:?} on {}, alerts to {}, churn priors {priors})",
        path.display(),
        cfg.version,
        cfg.kafka.events_topics,
        cfg.kafka.brokers,
        cfg.kafka.alerts_topic
    );
    Ok(())
}

/// An events file (JSON lines), buffered for a replay.
fn events_reader(path: &std::path::Path) -> std::io::Result<std::io::BufReader<std::fs::File>> {
    Ok(std::io::BufReader::with_capacity(
        1 << 20,
        std::fs::File::open(path)?,
    ))
}

/// [`events_reader`], its error naming the file.
fn open_events(path: &std::path::Path) -> anyhow::Result<std::io::BufReader<std::fs::File>> {
    events_reader(path).with_context(|| format!("opening {}", path.display()))
}

fn parse_time(flag: &str, s: &str) -> anyhow::Result<i64> {
    churnwatch::time::parse_rfc3339_ms(s).with_context(|| {
        format!("{flag} {s:?} is not an RFC 3339 time such as 2026-06-30T00:00:00Z")
    })
}

/// A config file, or the embedded default, with the environment overrides: as written (for
/// commands that derive variants of it: the demo, `score --horizon-days`, `backtest --sweep`)
/// and validated, with errors naming the user's keys.
fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<(RawConfig, Config)> {
    let raw = RawConfig::load(path)?;
    let cfg = raw.clone().into_config().with_context(|| match path {
        Some(p) => format!("{} is not valid", p.display()),
        None => "the embedded default config is not valid".to_string(),
    })?;
    Ok((raw, cfg))
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
    use churnwatch::bench::{self, BenchOptions};
    let (_, cfg) = load_config(args.config.as_deref())?;
    anyhow::ensure!(args.customers > 0, "--customers must be at least 1");
    anyhow::ensure!(
        args.warmup_days >= 0.0 && args.slice_days > 0.0,
        "--warmup-days must be 0 or more and --slice-days more than 0"
    );
    // bench::run takes at least one slice and one thread.
    let opts = BenchOptions {
        customers: args.customers,
        warmup_days: args.warmup_days,
        slices: args.slices,
        slice_days: args.slice_days,
        threads: args.threads.unwrap_or(BenchOptions::default().threads),
        seed: args.seed,
    };
    let report = bench::run(Arc::new(cfg), &opts);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    use churnwatch::simulate::{produce, write_dataset, SimulateOptions};
    let opts = SimulateOptions {
        customers: args.customers,
        days: args.days,
        seed: args.seed,
        start_ms: parse_time("--start", &args.start)?,
        malformed_share: args.malformed_share,
    };
    let started = std::time::Instant::now();
    let summary = match (&args.out, &args.brokers, &args.topic) {
        (Some(dir), _, _) => write_dataset(&opts, dir)
            .with_context(|| format!("writing the dataset to {}", dir.display()))?,
        (None, Some(brokers), Some(topic)) => {
            // At a set rate the messages' timestamps feed latency figures downstream: no
            // batching delay of the producer's own in them, and no Nagle delay on its socket
            // (small requests would wait for the broker's delayed acknowledgement).
            let props: &[(String, String)] = if args.rate.is_some() {
                &[
                    ("linger.ms".to_string(), "1".to_string()),
                    ("socket.nagle.disable".to_string(), "true".to_string()),
                ]
            } else {
                &[]
            };
            produce(
                &opts,
                brokers,
                topic,
                props,
                args.labels.as_deref(),
                args.rate,
            )
            .with_context(|| format!("producing to {topic} on {brokers}"))?
        }
        _ => anyhow::bail!("give --out DIR, or --brokers and --topic"),
    };
    eprintln!(
        "simulated {} customers over {} days (seed {}) in {:.1}s",
        args.customers,
        args.days,
        args.seed,
        started.elapsed().as_secs_f64()
    );
    println!("{summary}");
    Ok(())
}

fn fit(args: FitArgs) -> anyhow::Result<()> {
    let (_, cfg) = load_config(args.config.as_deref())?;
    let cfg = Arc::new(cfg);
    let as_of = args
        .as_of
        .as_deref()
        .map(|s| parse_time("--as-of", s))
        .transpose()?;
    let started = std::time::Instant::now();
    let fitted = churnwatch::backtest::fit::fit_priors(|| events_reader(&args.input), as_of, cfg)
        .with_context(|| format!("fitting priors to {}", args.input.display()))?;
    let as_of = churnwatch::time::format_rfc3339_ms(fitted.as_of_ms);
    println!(
        "Fitted on {} events of {} as of {as_of} ({:.1}s)\n",
        fitted.events,
        args.input.display(),
        started.elapsed().as_secs_f64()
    );
    for (name, report) in [
        (
            "activity (customers who visit or use the product; active days)",
            &fitted.activity,
        ),
        (
            "purchases (purchase-only customers; purchase days)",
            &fitted.purchases,
        ),
    ] {
        use churnwatch::backtest::fit::FitOutcome;
        match report {
            FitOutcome::Fitted(r, discount) => println!("== {name}\n{r}\n{discount}"),
            FitOutcome::NoData => {
                println!("== {name}\nno such customers: the built-in default stays in use\n")
            }
            FitOutcome::AtBound(r) => println!(
                "== {name}\n{r}\nNOT written: the estimate runs to the edge of the parameter space ({}); the history cannot pin this model down, so the built-in default stays in use\n",
                r.at_bound.join(", ")
            ),
        }
    }
    let body = fitted
        .priors
        .to_toml_string()
        .context("writing the priors as TOML")?;
    let text = format!(
        "# churnwatch priors: fitted by `churnwatch fit` on {} as of {as_of}.\n# Reference this file as churn.priors in the config. Time unit: days.\n\n{body}",
        args.input.display()
    );
    std::fs::write(&args.out, text).with_context(|| format!("writing {}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    Ok(())
}

fn score(args: ScoreArgs) -> anyhow::Result<()> {
    let (mut raw, mut cfg) = load_config(args.config.as_deref())?;
    if let Some(h) = args.horizon_days {
        raw.churn.horizon_days = h;
        cfg = raw.into_config().context("--horizon-days is not valid")?;
    }
    let as_of = parse_time("--as-of", &args.as_of)?;
    let input = open_events(&args.input)?;
    let out = std::fs::File::create(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let started = std::time::Instant::now();
    let summary = churnwatch::backtest::scores::score(
        input,
        as_of,
        Arc::new(cfg),
        std::io::BufWriter::new(out),
    )
    .with_context(|| format!("scoring {}", args.input.display()))?;
    eprintln!(
        "scored {} customers as of {} from {} events ({} invalid lines) in {:.1}s: {} at risk -> {}",
        summary.customers,
        args.as_of,
        summary.replay.events,
        summary.replay.invalid,
        started.elapsed().as_secs_f64(),
        summary.at_risk,
        args.out.display()
    );
    Ok(())
}

fn backtest(args: BacktestArgs) -> anyhow::Result<()> {
    use churnwatch::backtest::evaluate::{self, BacktestOptions, SweepTarget};
    let (raw, cfg) = load_config(args.config.as_deref())?;
    let cfg = Arc::new(cfg);
    let labels_file = std::fs::File::open(&args.labels)
        .with_context(|| format!("opening {}", args.labels.display()))?;
    let labels = churnwatch::labels::read_labels(std::io::BufReader::new(labels_file))
        .with_context(|| format!("reading {}", args.labels.display()))?;
    let opts = BacktestOptions {
        cutoff_every_days: args.cutoff_every_days,
        first_cutoff_days: args.first_cutoff_days,
        alerts_out: args.alerts_out.clone(),
        ..BacktestOptions::default()
    };
    let started = std::time::Instant::now();
    let report = evaluate::backtest(&args.input, &labels, cfg, &opts)
        .with_context(|| format!("backtesting {}", args.input.display()))?;
    let sweep = if args.sweep {
        let target = args.min_precision.map(SweepTarget::MinPrecision).or(args
            .max_alerts_per_1000_per_day
            .map(SweepTarget::MaxAlertsPer1000PerDay));
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Some(
            evaluate::sweep(
                &args.input,
                &labels,
                &raw,
                &args.grid,
                target,
                &BacktestOptions {
                    alerts_out: None,
                    ..opts.clone()
                },
                threads,
            )
            .context("sweeping the thresholds")?,
        )
    } else {
        None
    };
    if args.json {
        let v = serde_json::json!({ "report": report, "sweep": sweep });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{report}");
        if let Some(s) = sweep {
            println!("\nThreshold sweep (alerting.enter_threshold; exit kept at the same ratio)");
            print!("{s}");
        }
    }
    eprintln!("backtest took {:.1}s", started.elapsed().as_secs_f64());
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
    let path = config.clone();
    let (reloader, updates) =
        Reloader::new(cfg, Box::new(move || Config::load(&path)), metrics.clone());
    reloader.spawn(Some(config), token.clone());
    let result = pipeline::run_reloadable(updates, metrics, health, token).await;
    if let Some(server) = http {
        server.stop().await;
    }
    result.context("pipeline stopped with an error")?;
    Ok(())
}

async fn run_demo(args: DemoArgs) -> anyhow::Result<()> {
    // Validated as given, so errors name the user's keys, not the demo's.
    let (config, cfg) = load_config(args.config.as_deref())?;
    logging::init(&cfg.log);
    let token = CancellationToken::new();
    shutdown::cancel_on_signals(token.clone());
    let opts = DemoOptions {
        duration: args.duration.map(Duration::from_secs_f64),
        customers: args.customers,
        seed: args.seed,
        partitions: args.partitions,
        speed: args.speed,
        config,
        config_path: args.config.clone(),
        listen: args.listen,
        ..DemoOptions::default()
    };
    demo::run(opts, token).await.context("demo failed")?;
    Ok(())
}
