//! Configuration: a raw serde view of `churnwatch.toml` (unknown keys rejected), environment
//! overrides, and validation into the typed [`Config`] the rest of the crate uses.
//!
//! Sources, later ones winning:
//! 1. built-in defaults ([`RawConfig::default`]),
//! 2. the TOML file,
//! 3. environment variables `CHURNWATCH_<SECTION>__<KEY>` (for example
//!    `CHURNWATCH_KAFKA__BROKERS=broker1:9092`, `CHURNWATCH_HTTP__LISTEN=0.0.0.0:9464`),
//! 4. librdkafka pass-through variables `CHURNWATCH_RDKAFKA_<PROPERTY>` where `_` stands for `.`
//!    (for example `CHURNWATCH_RDKAFKA_SASL_PASSWORD` sets `sasl.password`).
//!
//! Every validation error names the key and the offending value.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// The documented default config, shipped in `config/churnwatch.toml` and embedded in the binary.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../config/churnwatch.toml");

/// Environment prefix for section overrides (`CHURNWATCH_KAFKA__BROKERS`).
pub const ENV_PREFIX: &str = "CHURNWATCH_";
/// Environment prefix for librdkafka pass-through properties.
pub const RDKAFKA_ENV_PREFIX: &str = "CHURNWATCH_RDKAFKA_";

/// Errors from loading or validating a config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be parsed or has a key or type that is not allowed.
    #[error("{0}")]
    Parse(String),
    /// A key has a value outside what it allows.
    #[error("invalid value for `{key}`: {value} ({problem})")]
    Invalid {
        key: String,
        value: String,
        problem: String,
    },
}

impl ConfigError {
    fn invalid(key: &str, value: impl std::fmt::Display, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.to_string(),
            value: value.to_string(),
            problem: problem.into(),
        }
    }

    /// If the offending key was set by an environment variable, say so.
    fn naming_env_source(self) -> Self {
        match self {
            ConfigError::Invalid {
                key,
                value,
                mut problem,
            } => {
                let var = format!(
                    "{ENV_PREFIX}{}",
                    key.to_ascii_uppercase().replace('.', "__")
                );
                if !key.contains('.') || std::env::var_os(&var).is_none() {
                    return ConfigError::Invalid {
                        key,
                        value,
                        problem,
                    };
                }
                problem.push_str(&format!("; set by environment variable {var}"));
                ConfigError::Invalid {
                    key,
                    value,
                    problem,
                }
            }
            other => other,
        }
    }

    /// The config key the error is about, when it is known.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Parse(_) => None,
        }
    }
}

impl From<figment::Error> for ConfigError {
    fn from(err: figment::Error) -> Self {
        // One message per underlying error, each naming its key path.
        let msgs: Vec<String> = err
            .into_iter()
            .map(|e| {
                let path = e.path.join(".");
                let source = e
                    .metadata
                    .as_ref()
                    .map(|m| match &m.source {
                        Some(src) => format!(" (from {} {src})", m.name),
                        None => format!(" (from {})", m.name),
                    })
                    .unwrap_or_default();
                if path.is_empty() {
                    format!("{}{}", e.kind, source)
                } else {
                    format!("key `{}`: {}{}", path, e.kind, source)
                }
            })
            .collect();
        ConfigError::Parse(msgs.join("; "))
    }
}

// ---------------------------------------------------------------------------------------------
// Raw config: what the file says.
// ---------------------------------------------------------------------------------------------

/// The config file as written. Unknown keys are errors.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub config_version: String,
    pub kafka: RawKafka,
    pub state: RawState,
    pub processing: RawProcessing,
    pub http: RawHttp,
    pub log: RawLog,
    pub input: RawInput,
    pub windows: RawWindows,
    pub signals: RawSignals,
    pub churn: RawChurn,
    pub alerting: RawAlerting,
    pub lifecycle: RawLifecycle,
    pub value: RawValue,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawKafka {
    pub brokers: String,
    pub group_id: String,
    pub client_id: String,
    pub events_topics: Vec<String>,
    pub alerts_topic: String,
    pub dead_letter_topic: String,
    pub auto_offset_reset: String,
    pub commit_interval_ms: u64,
    pub statistics_interval_ms: u64,
    pub delivery_timeout_ms: u64,
    pub max_pending_records: u64,
    pub properties: BTreeMap<String, String>,
}

/// `[state]`: durable per-customer state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawState {
    pub changelog: bool,
    pub changelog_replication_factor: i32,
    pub restore_timeout_secs: u64,
    pub max_customers: u64,
    pub evict_lapsed_after_days: f64,
    pub write_changed_after: u64,
}

impl Default for RawState {
    fn default() -> Self {
        RawState {
            changelog: true,
            changelog_replication_factor: -1,
            restore_timeout_secs: 600,
            max_customers: 5_000_000,
            evict_lapsed_after_days: 365.0,
            write_changed_after: 0,
        }
    }
}

/// `[processing]`: the delivery guarantee.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawProcessing {
    pub guarantee: String,
    pub transactional_id: String,
    pub transaction_timeout_ms: u64,
}

impl Default for RawProcessing {
    fn default() -> Self {
        RawProcessing {
            guarantee: "at_least_once".into(),
            transactional_id: String::new(),
            transaction_timeout_ms: 60_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    pub enabled: bool,
    pub listen: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub format: String,
    pub level: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawInput {
    pub max_event_bytes: usize,
    pub max_future_skew_secs: u64,
    pub allowed_lateness_secs: u64,
    pub idle_partition_timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawWindows {
    pub bucket_secs: u64,
    pub recent_buckets: u32,
    pub baseline_buckets: u32,
    pub min_baseline_buckets: u32,
    pub check_interval_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawSignals {
    pub max_p_value: f64,
    pub full_evidence_days: f64,
    pub visits: RawRateSignal,
    pub usage: RawRateSignal,
    pub activity: RawRateSignal,
    pub purchases: RawPurchaseSignal,
    pub engagement: RawEngagementSignal,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawRateSignal {
    pub enabled: bool,
    pub weight: f64,
    pub min_baseline_events: u32,
    pub min_drop: f64,
    pub full_drop: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawPurchaseSignal {
    pub enabled: bool,
    pub weight: f64,
    pub min_purchases: u32,
    pub prior_mean_gap_days: f64,
    pub prior_strength: f64,
    pub min_overdue_cycles: f64,
    pub full_overdue_cycles: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawEngagementSignal {
    pub enabled: bool,
    pub weight: f64,
    pub recent_half_life_days: f64,
    pub baseline_half_life_days: f64,
    pub min_events: u32,
    pub min_drop: f64,
    pub full_drop: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawChurn {
    pub horizon_days: f64,
    pub priors: String,
    pub weight: f64,
    pub min_repeat_days: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawAlerting {
    pub enter_threshold: f64,
    pub exit_threshold: f64,
    pub medium_threshold: f64,
    pub high_threshold: f64,
    pub cooldown_secs: u64,
    pub confirm_secs: u64,
    pub high_value_at_risk: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawLifecycle {
    pub new_customer_days: f64,
    pub lapse_after_days: f64,
    pub kpi_period_days: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RawValue {
    pub horizon_days: f64,
    pub min_tenure_days: f64,
    pub currency: String,
}

impl Default for RawKafka {
    fn default() -> Self {
        RawKafka {
            brokers: "localhost:9092".into(),
            group_id: "churnwatch".into(),
            client_id: "churnwatch".into(),
            events_topics: vec!["customer-events".into()],
            alerts_topic: "churn-alerts".into(),
            dead_letter_topic: "churnwatch-dead-letter".into(),
            auto_offset_reset: "earliest".into(),
            commit_interval_ms: 1000,
            statistics_interval_ms: 5000,
            delivery_timeout_ms: 30_000,
            max_pending_records: 50_000,
            properties: BTreeMap::new(),
        }
    }
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp {
            enabled: true,
            listen: "127.0.0.1:9464".into(),
        }
    }
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

impl Default for RawInput {
    fn default() -> Self {
        RawInput {
            max_event_bytes: 16 * 1024,
            max_future_skew_secs: 86_400,
            allowed_lateness_secs: 3_600,
            idle_partition_timeout_secs: 30,
        }
    }
}

impl Default for RawWindows {
    fn default() -> Self {
        RawWindows {
            bucket_secs: 86_400,
            recent_buckets: 7,
            baseline_buckets: 28,
            min_baseline_buckets: 14,
            check_interval_secs: 86_400,
        }
    }
}

impl Default for RawSignals {
    fn default() -> Self {
        RawSignals {
            max_p_value: 0.002,
            full_evidence_days: 7.0,
            visits: RawRateSignal {
                enabled: true,
                weight: 0.7,
                min_baseline_events: 8,
                min_drop: 0.3,
                full_drop: 0.8,
            },
            usage: RawRateSignal {
                enabled: true,
                weight: 0.7,
                min_baseline_events: 8,
                min_drop: 0.3,
                full_drop: 0.8,
            },
            activity: RawRateSignal {
                enabled: true,
                weight: 0.7,
                min_baseline_events: 8,
                min_drop: 0.4,
                full_drop: 0.8,
            },
            purchases: RawPurchaseSignal::default(),
            engagement: RawEngagementSignal::default(),
        }
    }
}

impl Default for RawRateSignal {
    fn default() -> Self {
        RawSignals::default().visits
    }
}

impl Default for RawPurchaseSignal {
    fn default() -> Self {
        RawPurchaseSignal {
            enabled: true,
            weight: 0.6,
            min_purchases: 2,
            prior_mean_gap_days: 30.0,
            prior_strength: 2.0,
            min_overdue_cycles: 0.5,
            full_overdue_cycles: 2.0,
        }
    }
}

impl Default for RawEngagementSignal {
    fn default() -> Self {
        RawEngagementSignal {
            enabled: true,
            weight: 0.5,
            recent_half_life_days: 3.0,
            baseline_half_life_days: 28.0,
            min_events: 4,
            min_drop: 0.15,
            full_drop: 0.5,
        }
    }
}

impl Default for RawAlerting {
    fn default() -> Self {
        RawAlerting {
            enter_threshold: 0.5,
            exit_threshold: 0.3,
            medium_threshold: 0.7,
            high_threshold: 0.85,
            cooldown_secs: 7 * 86_400,
            confirm_secs: 0,
            high_value_at_risk: 0.0,
        }
    }
}

impl Default for RawLifecycle {
    fn default() -> Self {
        RawLifecycle {
            new_customer_days: 30.0,
            lapse_after_days: 30.0,
            kpi_period_days: 30.0,
        }
    }
}

impl Default for RawChurn {
    fn default() -> Self {
        RawChurn {
            horizon_days: 30.0,
            priors: String::new(),
            weight: 0.8,
            min_repeat_days: 1,
        }
    }
}

impl Default for RawValue {
    fn default() -> Self {
        RawValue {
            horizon_days: 90.0,
            min_tenure_days: 30.0,
            currency: "EUR".into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Typed config: what the program uses.
// ---------------------------------------------------------------------------------------------

/// Validated configuration. Durations are in milliseconds of event time unless named otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The config's version: the `config_version` label, or a content hash of the effective config.
    pub version: String,
    pub kafka: KafkaConfig,
    pub state: StateConfig,
    pub processing: ProcessingConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    pub input: InputConfig,
    pub windows: WindowConfig,
    pub signals: SignalsConfig,
    pub churn: ChurnConfig,
    pub alerting: AlertingConfig,
    pub lifecycle: LifecycleConfig,
    pub value: ValueConfig,
}

/// Durable per-customer state (see [`crate::state`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StateConfig {
    /// Back each partition's customers with a changelog topic and restore them on assignment.
    pub changelog: bool,
    /// Replication factor of changelog topics churnwatch creates (-1: the broker's default).
    pub changelog_replication_factor: i32,
    pub restore_timeout: std::time::Duration,
    /// Most customers one instance tracks (0: no cap); beyond it the least recently active
    /// are evicted.
    pub max_customers: usize,
    /// Lapsed customers inactive this long are evicted (0: never).
    pub evict_lapsed_after_ms: i64,
    /// At-least-once: changed customers waiting after a chunk of messages from which they are
    /// written to the changelog at once rather than at the next checkpoint (0: only at
    /// checkpoints).
    pub write_changed_after: usize,
}

/// What survives a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarantee {
    /// Nothing is lost; after a crash an alert may be produced again, with the same `alert_id`.
    AtLeastOnce,
    /// Alerts, changelog records and input offsets commit atomically in Kafka transactions.
    ExactlyOnce,
}

impl Guarantee {
    pub fn as_str(self) -> &'static str {
        match self {
            Guarantee::AtLeastOnce => "at_least_once",
            Guarantee::ExactlyOnce => "exactly_once",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProcessingConfig {
    pub guarantee: Guarantee,
    /// Stable per instance (a restarted instance fences its predecessor's transactions).
    pub transactional_id: String,
    pub transaction_timeout_ms: u64,
}

/// The host's name, for a default transactional id that differs between replicas.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
}

impl OffsetReset {
    pub fn as_str(self) -> &'static str {
        match self {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
        }
    }
}

#[derive(Clone, PartialEq)]
pub struct KafkaConfig {
    pub brokers: String,
    pub group_id: String,
    pub client_id: String,
    pub events_topics: Vec<String>,
    pub alerts_topic: String,
    pub dead_letter_topic: String,
    pub auto_offset_reset: OffsetReset,
    pub commit_interval_ms: u64,
    pub statistics_interval_ms: u64,
    pub delivery_timeout_ms: u64,
    /// Records handed to the producer and not yet acknowledged beyond which the instance
    /// pauses its partitions (back-pressure); it resumes below half.
    pub max_pending_records: usize,
    /// librdkafka properties passed through to every client (may hold secrets: never logged).
    pub properties: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Pass-through properties can carry credentials: show only their names.
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("client_id", &self.client_id)
            .field("events_topics", &self.events_topics)
            .field("alerts_topic", &self.alerts_topic)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("auto_offset_reset", &self.auto_offset_reset)
            .field("properties", &self.properties.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InputConfig {
    pub max_event_bytes: usize,
    pub max_future_skew_ms: i64,
    pub allowed_lateness_ms: i64,
    pub idle_partition_timeout: std::time::Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WindowConfig {
    pub bucket_ms: i64,
    pub recent_buckets: u32,
    pub baseline_buckets: u32,
    pub min_baseline_buckets: u32,
    pub check_interval_ms: i64,
}

impl WindowConfig {
    /// Total buckets held per customer.
    pub fn total_buckets(&self) -> u32 {
        self.recent_buckets + self.baseline_buckets
    }
    pub fn bucket_days(&self) -> f64 {
        self.bucket_ms as f64 / crate::time::DAY_MS as f64
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SignalsConfig {
    pub max_p_value: f64,
    pub full_evidence_days: f64,
    pub visits: RateSignalConfig,
    pub usage: RateSignalConfig,
    pub activity: RateSignalConfig,
    pub purchases: PurchaseSignalConfig,
    pub engagement: EngagementSignalConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RateSignalConfig {
    pub enabled: bool,
    pub weight: f64,
    pub min_baseline_events: u32,
    pub min_drop: f64,
    pub full_drop: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PurchaseSignalConfig {
    pub enabled: bool,
    pub weight: f64,
    pub min_purchases: u32,
    pub prior_mean_gap_days: f64,
    pub prior_strength: f64,
    pub min_overdue_cycles: f64,
    pub full_overdue_cycles: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EngagementSignalConfig {
    pub enabled: bool,
    pub weight: f64,
    pub recent_half_life_days: f64,
    pub baseline_half_life_days: f64,
    pub min_events: u32,
    pub min_drop: f64,
    pub full_drop: f64,
}

/// The churn probability and the silence signal.
#[derive(Debug, Clone, PartialEq)]
pub struct ChurnConfig {
    /// `p_churn` is the probability of no activity within this many days.
    pub horizon_days: f64,
    /// The same in milliseconds (also the win-back horizon of at-risk episodes).
    pub horizon_ms: i64,
    /// The customer-base models for customers who visit or use the product (active days) and
    /// for purchase-only customers (purchase days), from `churn.priors` or the built-in
    /// defaults.
    pub activity_model: crate::model::Model,
    pub purchase_model: crate::model::Model,
    /// Where the priors came from (`None`: built-in defaults).
    pub priors_path: Option<std::path::PathBuf>,
    /// Weight of the silence signal in the risk.
    pub weight: f64,
    /// Repeat active days needed before silence is judged against the customer's rhythm.
    pub min_repeat_days: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlertingConfig {
    pub enter_threshold: f64,
    pub exit_threshold: f64,
    pub medium_threshold: f64,
    pub high_threshold: f64,
    pub cooldown_ms: i64,
    /// How long the risk must stay at or above `enter_threshold` before `at_risk`.
    pub confirm_ms: i64,
    /// Value at risk (currency units) from which an at-risk customer's tier is raised one
    /// step; 0 = off.
    pub high_value_at_risk: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LifecycleConfig {
    pub new_customer_ms: i64,
    pub lapse_after_ms: i64,
    /// Length of the event-time periods of the churn and retention KPIs.
    pub kpi_period_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ValueConfig {
    pub horizon_days: f64,
    pub min_tenure_days: f64,
    pub currency: String,
}

impl Default for Config {
    fn default() -> Self {
        Config::from_toml_str(DEFAULT_CONFIG_TOML).expect("the embedded default config is valid")
    }
}

impl Config {
    /// Load a file, apply the environment overrides, and validate.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        RawConfig::load(Some(path))?.into_config()
    }

    /// Parse a TOML string (no environment overrides) and validate.
    pub fn from_toml_str(toml: &str) -> Result<Config, ConfigError> {
        let raw = Figment::from(Serialized::defaults(RawConfig::default()))
            .merge(Toml::string(toml))
            .extract::<RawConfig>()?;
        raw.validate()
    }
}

impl RawConfig {
    /// The file (or, with `None`, the embedded default) with the environment overrides
    /// applied; not validated yet.
    pub fn load(path: Option<&Path>) -> Result<RawConfig, ConfigError> {
        let file = match path {
            Some(p) if !p.exists() => {
                return Err(ConfigError::Parse(format!(
                    "config file {} does not exist",
                    p.display()
                )))
            }
            Some(p) => Toml::file_exact(p),
            None => Toml::string(DEFAULT_CONFIG_TOML),
        };
        let raw = Figment::from(Serialized::defaults(RawConfig::default()))
            .merge(file)
            .merge(
                Env::prefixed(ENV_PREFIX)
                    .filter(|k| k.as_str().contains("__"))
                    .split("__"),
            )
            .extract::<RawConfig>()?;
        let mut raw = raw.with_rdkafka_env(std::env::vars());
        // A relative priors path is relative to the config file.
        if let Some(dir) = path.and_then(Path::parent) {
            let priors = raw.churn.priors.trim();
            if !priors.is_empty() && Path::new(priors).is_relative() {
                raw.churn.priors = dir.join(priors).to_string_lossy().into_owned();
            }
        }
        Ok(raw)
    }

    /// Validate, naming the environment variable when it set the offending value.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        self.validate().map_err(ConfigError::naming_env_source)
    }

    /// Apply `CHURNWATCH_RDKAFKA_<PROP>` variables as librdkafka pass-through properties.
    pub fn with_rdkafka_env(mut self, vars: impl Iterator<Item = (String, String)>) -> Self {
        for (k, v) in vars {
            if let Some(prop) = k.strip_prefix(RDKAFKA_ENV_PREFIX) {
                if !prop.is_empty() {
                    let prop = prop.to_ascii_lowercase().replace('_', ".");
                    self.kafka.properties.insert(prop, v);
                }
            }
        }
        self
    }

    /// Validate every key, returning the first problem found.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let k = &self.kafka;
        non_empty("kafka.brokers", &k.brokers)?;
        non_empty("kafka.group_id", &k.group_id)?;
        non_empty("kafka.client_id", &k.client_id)?;
        if k.events_topics.is_empty() {
            return Err(ConfigError::invalid(
                "kafka.events_topics",
                "[]",
                "at least one events topic is required",
            ));
        }
        for t in &k.events_topics {
            topic_name("kafka.events_topics", t)?;
        }
        topic_name("kafka.alerts_topic", &k.alerts_topic)?;
        topic_name("kafka.dead_letter_topic", &k.dead_letter_topic)?;
        if k.events_topics.contains(&k.alerts_topic) {
            return Err(ConfigError::invalid(
                "kafka.alerts_topic",
                &k.alerts_topic,
                "must differ from the events topics",
            ));
        }
        if k.events_topics.contains(&k.dead_letter_topic) {
            return Err(ConfigError::invalid(
                "kafka.dead_letter_topic",
                &k.dead_letter_topic,
                "must differ from the events topics",
            ));
        }
        let auto_offset_reset = one_of(
            "kafka.auto_offset_reset",
            &k.auto_offset_reset,
            &[
                ("earliest", OffsetReset::Earliest),
                ("latest", OffsetReset::Latest),
            ],
        )?;
        in_range_u64(
            "kafka.commit_interval_ms",
            k.commit_interval_ms,
            10,
            600_000,
        )?;
        in_range_u64(
            "kafka.statistics_interval_ms",
            k.statistics_interval_ms,
            0,
            3_600_000,
        )?;
        in_range_u64(
            "kafka.delivery_timeout_ms",
            k.delivery_timeout_ms,
            1_000,
            3_600_000,
        )?;
        in_range_u64(
            "kafka.max_pending_records",
            k.max_pending_records,
            100,
            1_000_000,
        )?;
        for key in k.properties.keys() {
            const OWNED: &[&str] = &[
                "bootstrap.servers",
                "group.id",
                "enable.auto.offset.store",
                "enable.auto.commit",
                "transactional.id",
            ];
            if OWNED.contains(&key.as_str()) {
                return Err(ConfigError::invalid(
                    &format!("kafka.properties.{key}"),
                    "(set)",
                    "is managed by churnwatch; use the dedicated key in [kafka] instead",
                ));
            }
        }

        let st = &self.state;
        if st.changelog_replication_factor == 0 || st.changelog_replication_factor < -1 {
            return Err(ConfigError::invalid(
                "state.changelog_replication_factor",
                st.changelog_replication_factor,
                "must be -1 (the broker's default) or at least 1",
            ));
        }
        in_range_u64(
            "state.restore_timeout_secs",
            st.restore_timeout_secs,
            1,
            86_400,
        )?;
        if st.max_customers != 0 && st.max_customers < 1000 {
            return Err(ConfigError::invalid(
                "state.max_customers",
                st.max_customers,
                "must be 0 (no cap) or at least 1000",
            ));
        }
        non_negative("state.evict_lapsed_after_days", st.evict_lapsed_after_days)?;
        in_range_u64(
            "state.write_changed_after",
            st.write_changed_after,
            0,
            10_000_000,
        )?;
        if st.evict_lapsed_after_days > 36_500.0 {
            return Err(ConfigError::invalid(
                "state.evict_lapsed_after_days",
                st.evict_lapsed_after_days,
                "must be at most 36500 (0: never evict)",
            ));
        }
        let pr = &self.processing;
        let guarantee = one_of(
            "processing.guarantee",
            &pr.guarantee,
            &[
                ("at_least_once", Guarantee::AtLeastOnce),
                ("exactly_once", Guarantee::ExactlyOnce),
            ],
        )?;
        if guarantee == Guarantee::ExactlyOnce && !st.changelog {
            return Err(ConfigError::invalid(
                "state.changelog",
                "false",
                "processing.guarantee = \"exactly_once\" needs the changelog",
            ));
        }
        in_range_u64(
            "processing.transaction_timeout_ms",
            pr.transaction_timeout_ms,
            1_000,
            900_000,
        )?;
        if guarantee == Guarantee::ExactlyOnce && k.delivery_timeout_ms > pr.transaction_timeout_ms
        {
            return Err(ConfigError::invalid(
                "kafka.delivery_timeout_ms",
                k.delivery_timeout_ms,
                format!(
                    "must not exceed processing.transaction_timeout_ms ({}) under exactly-once",
                    pr.transaction_timeout_ms
                ),
            ));
        }
        let transactional_id = if pr.transactional_id.trim().is_empty() {
            format!("{}-{}", k.group_id, host_name())
        } else {
            pr.transactional_id.trim().to_string()
        };

        let listen: SocketAddr = self.http.listen.parse().map_err(|_| {
            ConfigError::invalid(
                "http.listen",
                format!("{:?}", self.http.listen),
                "must be an address like 127.0.0.1:9464",
            )
        })?;

        let format = one_of(
            "log.format",
            &self.log.format,
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
        )?;
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(ConfigError::invalid(
                "log.level",
                format!("{:?}", self.log.level),
                "must be a level (error, warn, info, debug, trace) or a tracing filter directive",
            ));
        }

        let i = &self.input;
        in_range_u64(
            "input.max_event_bytes",
            i.max_event_bytes as u64,
            64,
            16 * 1024 * 1024,
        )?;
        in_range_u64(
            "input.max_future_skew_secs",
            i.max_future_skew_secs,
            0,
            100 * 365 * 86_400,
        )?;
        in_range_u64(
            "input.allowed_lateness_secs",
            i.allowed_lateness_secs,
            0,
            30 * 86_400,
        )?;
        in_range_u64(
            "input.idle_partition_timeout_secs",
            i.idle_partition_timeout_secs,
            1,
            86_400,
        )?;

        let w = &self.windows;
        in_range_u64("windows.bucket_secs", w.bucket_secs, 60, 30 * 86_400)?;
        in_range_u64("windows.recent_buckets", w.recent_buckets as u64, 1, 1_000)?;
        in_range_u64(
            "windows.baseline_buckets",
            w.baseline_buckets as u64,
            1,
            1_000,
        )?;
        if w.min_baseline_buckets == 0 || w.min_baseline_buckets > w.baseline_buckets {
            return Err(ConfigError::invalid(
                "windows.min_baseline_buckets",
                w.min_baseline_buckets,
                format!(
                    "must be between 1 and windows.baseline_buckets ({})",
                    w.baseline_buckets
                ),
            ));
        }
        in_range_u64(
            "windows.check_interval_secs",
            w.check_interval_secs,
            60,
            30 * 86_400,
        )?;

        let s = &self.signals;
        prob_open("signals.max_p_value", s.max_p_value)?;
        positive("signals.full_evidence_days", s.full_evidence_days)?;
        let visits = rate_signal("signals.visits", &s.visits)?;
        let usage = rate_signal("signals.usage", &s.usage)?;
        let activity = rate_signal("signals.activity", &s.activity)?;
        let p = &s.purchases;
        unit("signals.purchases.weight", p.weight)?;
        in_range_u64(
            "signals.purchases.min_purchases",
            p.min_purchases as u64,
            2,
            1_000,
        )?;
        positive(
            "signals.purchases.prior_mean_gap_days",
            p.prior_mean_gap_days,
        )?;
        positive("signals.purchases.prior_strength", p.prior_strength)?;
        non_negative("signals.purchases.min_overdue_cycles", p.min_overdue_cycles)?;
        if p.full_overdue_cycles <= p.min_overdue_cycles || !p.full_overdue_cycles.is_finite() {
            return Err(ConfigError::invalid(
                "signals.purchases.full_overdue_cycles",
                p.full_overdue_cycles,
                "must be greater than signals.purchases.min_overdue_cycles",
            ));
        }
        let e = &s.engagement;
        unit("signals.engagement.weight", e.weight)?;
        positive(
            "signals.engagement.recent_half_life_days",
            e.recent_half_life_days,
        )?;
        if e.baseline_half_life_days <= e.recent_half_life_days
            || !e.baseline_half_life_days.is_finite()
        {
            return Err(ConfigError::invalid(
                "signals.engagement.baseline_half_life_days",
                e.baseline_half_life_days,
                "must be greater than signals.engagement.recent_half_life_days",
            ));
        }
        in_range_u64(
            "signals.engagement.min_events",
            e.min_events as u64,
            2,
            1_000,
        )?;
        drop_pair("signals.engagement", e.min_drop, e.full_drop)?;

        let ch = &self.churn;
        positive("churn.horizon_days", ch.horizon_days)?;
        if ch.horizon_days > 3650.0 {
            return Err(ConfigError::invalid(
                "churn.horizon_days",
                ch.horizon_days,
                "must be at most 3650",
            ));
        }
        unit("churn.weight", ch.weight)?;
        let (priors, priors_path) = if ch.priors.trim().is_empty() {
            (crate::model::Priors::default(), None)
        } else {
            let path = std::path::PathBuf::from(ch.priors.trim());
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::invalid(
                    "churn.priors",
                    format!("{:?}", ch.priors),
                    format!("cannot be read: {e}"),
                )
            })?;
            let priors = crate::model::Priors::from_toml_str(&text).map_err(|e| {
                ConfigError::invalid(
                    "churn.priors",
                    format!("{:?}", ch.priors),
                    format!("is not a valid priors file: {e}"),
                )
            })?;
            (priors, Some((path, text)))
        };
        // The version covers the priors' content, not just their path.
        let version = if self.config_version.trim().is_empty() {
            content_hash(&self, priors_path.as_ref().map(|(_, text)| text.as_str()))
        } else {
            self.config_version.trim().to_string()
        };
        let priors_path = priors_path.map(|(path, _)| path);

        let a = &self.alerting;
        non_negative("alerting.high_value_at_risk", a.high_value_at_risk)?;
        unit("alerting.exit_threshold", a.exit_threshold)?;
        unit("alerting.enter_threshold", a.enter_threshold)?;
        unit("alerting.medium_threshold", a.medium_threshold)?;
        unit("alerting.high_threshold", a.high_threshold)?;
        if a.exit_threshold >= a.enter_threshold {
            return Err(ConfigError::invalid(
                "alerting.exit_threshold",
                a.exit_threshold,
                format!(
                    "must be below alerting.enter_threshold ({}) for hysteresis",
                    a.enter_threshold
                ),
            ));
        }
        if a.enter_threshold <= 0.0 {
            return Err(ConfigError::invalid(
                "alerting.enter_threshold",
                a.enter_threshold,
                "must be above 0",
            ));
        }
        if a.medium_threshold < a.enter_threshold {
            return Err(ConfigError::invalid(
                "alerting.medium_threshold",
                a.medium_threshold,
                format!(
                    "must be at least alerting.enter_threshold ({})",
                    a.enter_threshold
                ),
            ));
        }
        if a.high_threshold < a.medium_threshold {
            return Err(ConfigError::invalid(
                "alerting.high_threshold",
                a.high_threshold,
                format!(
                    "must be at least alerting.medium_threshold ({})",
                    a.medium_threshold
                ),
            ));
        }
        in_range_u64("alerting.cooldown_secs", a.cooldown_secs, 0, 365 * 86_400)?;
        in_range_u64("alerting.confirm_secs", a.confirm_secs, 0, 60 * 86_400)?;

        let l = &self.lifecycle;
        positive("lifecycle.new_customer_days", l.new_customer_days)?;
        positive("lifecycle.lapse_after_days", l.lapse_after_days)?;
        if !(1.0..=3660.0).contains(&l.kpi_period_days) {
            return Err(ConfigError::invalid(
                "lifecycle.kpi_period_days",
                l.kpi_period_days,
                "must be between 1 and 3660 days",
            ));
        }

        let v = &self.value;
        positive("value.horizon_days", v.horizon_days)?;
        positive("value.min_tenure_days", v.min_tenure_days)?;
        if v.currency.len() != 3 || !v.currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(ConfigError::invalid(
                "value.currency",
                format!("{:?}", v.currency),
                "must be an ISO 4217 code such as \"EUR\"",
            ));
        }

        let day = crate::time::DAY_MS as f64;
        Ok(Config {
            version,
            kafka: KafkaConfig {
                brokers: k.brokers.clone(),
                group_id: k.group_id.clone(),
                client_id: k.client_id.clone(),
                events_topics: k.events_topics.clone(),
                alerts_topic: k.alerts_topic.clone(),
                dead_letter_topic: k.dead_letter_topic.clone(),
                auto_offset_reset,
                commit_interval_ms: k.commit_interval_ms,
                statistics_interval_ms: k.statistics_interval_ms,
                delivery_timeout_ms: k.delivery_timeout_ms,
                max_pending_records: k.max_pending_records as usize,
                properties: k.properties.clone(),
            },
            state: StateConfig {
                changelog: st.changelog,
                changelog_replication_factor: st.changelog_replication_factor,
                restore_timeout: std::time::Duration::from_secs(st.restore_timeout_secs),
                max_customers: usize::try_from(st.max_customers).unwrap_or(usize::MAX),
                evict_lapsed_after_ms: (st.evict_lapsed_after_days * day) as i64,
                write_changed_after: st.write_changed_after as usize,
            },
            processing: ProcessingConfig {
                guarantee,
                transactional_id,
                transaction_timeout_ms: pr.transaction_timeout_ms,
            },
            http: HttpConfig {
                enabled: self.http.enabled,
                listen,
            },
            log: LogConfig {
                format,
                level: self.log.level.clone(),
            },
            input: InputConfig {
                max_event_bytes: i.max_event_bytes,
                max_future_skew_ms: i.max_future_skew_secs as i64 * 1000,
                allowed_lateness_ms: i.allowed_lateness_secs as i64 * 1000,
                idle_partition_timeout: std::time::Duration::from_secs(
                    i.idle_partition_timeout_secs,
                ),
            },
            windows: WindowConfig {
                bucket_ms: w.bucket_secs as i64 * 1000,
                recent_buckets: w.recent_buckets,
                baseline_buckets: w.baseline_buckets,
                min_baseline_buckets: w.min_baseline_buckets,
                check_interval_ms: w.check_interval_secs as i64 * 1000,
            },
            signals: SignalsConfig {
                max_p_value: s.max_p_value,
                full_evidence_days: s.full_evidence_days,
                visits,
                usage,
                activity,
                purchases: PurchaseSignalConfig {
                    enabled: p.enabled,
                    weight: p.weight,
                    min_purchases: p.min_purchases,
                    prior_mean_gap_days: p.prior_mean_gap_days,
                    prior_strength: p.prior_strength,
                    min_overdue_cycles: p.min_overdue_cycles,
                    full_overdue_cycles: p.full_overdue_cycles,
                },
                engagement: EngagementSignalConfig {
                    enabled: e.enabled,
                    weight: e.weight,
                    recent_half_life_days: e.recent_half_life_days,
                    baseline_half_life_days: e.baseline_half_life_days,
                    min_events: e.min_events,
                    min_drop: e.min_drop,
                    full_drop: e.full_drop,
                },
            },
            alerting: AlertingConfig {
                enter_threshold: a.enter_threshold,
                exit_threshold: a.exit_threshold,
                medium_threshold: a.medium_threshold,
                high_threshold: a.high_threshold,
                cooldown_ms: a.cooldown_secs as i64 * 1000,
                confirm_ms: a.confirm_secs as i64 * 1000,
                high_value_at_risk: a.high_value_at_risk,
            },
            churn: ChurnConfig {
                horizon_days: ch.horizon_days,
                horizon_ms: (ch.horizon_days * day) as i64,
                activity_model: priors
                    .activity_model()
                    .unwrap_or(crate::model::DEFAULT_ACTIVITY),
                purchase_model: priors
                    .purchases_model()
                    .unwrap_or(crate::model::DEFAULT_PURCHASES),
                priors_path,
                weight: ch.weight,
                min_repeat_days: ch.min_repeat_days,
            },
            lifecycle: LifecycleConfig {
                new_customer_ms: (l.new_customer_days * day) as i64,
                lapse_after_ms: (l.lapse_after_days * day) as i64,
                kpi_period_ms: (l.kpi_period_days * day) as i64,
            },
            value: ValueConfig {
                horizon_days: v.horizon_days,
                min_tenure_days: v.min_tenure_days,
                currency: v.currency.clone(),
            },
        })
    }
}

/// A short content hash of the effective config (stable across runs and machines).
fn content_hash(raw: &RawConfig, priors: Option<&str>) -> String {
    let mut canonical = serde_json::to_vec(raw).expect("config serializes");
    if let Some(p) = priors {
        canonical.extend_from_slice(p.as_bytes());
    }
    let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, &canonical);
    format!("cfg-{}", &id.simple().to_string()[..12])
}

/// The value `v` names among `choices`; the error lists them.
fn one_of<T: Copy>(key: &str, v: &str, choices: &[(&str, T)]) -> Result<T, ConfigError> {
    choices
        .iter()
        .find(|(name, _)| *name == v)
        .map(|&(_, t)| t)
        .ok_or_else(|| {
            let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
            ConfigError::invalid(
                key,
                format!("{v:?}"),
                format!("must be {}", names.join(" or ")),
            )
        })
}

fn non_empty(key: &str, v: &str) -> Result<(), ConfigError> {
    if v.trim().is_empty() {
        return Err(ConfigError::invalid(key, "\"\"", "must not be empty"));
    }
    Ok(())
}

fn topic_name(key: &str, v: &str) -> Result<(), ConfigError> {
    let ok = !v.is_empty()
        && v.len() <= 249
        && v != "."
        && v != ".."
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-');
    if !ok {
        return Err(ConfigError::invalid(
            key,
            format!("{v:?}"),
            "must be a Kafka topic name (1-249 of [a-zA-Z0-9._-])",
        ));
    }
    Ok(())
}

fn in_range_u64(key: &str, v: u64, lo: u64, hi: u64) -> Result<(), ConfigError> {
    if v < lo || v > hi {
        return Err(ConfigError::invalid(
            key,
            v,
            format!("must be between {lo} and {hi}"),
        ));
    }
    Ok(())
}

fn unit(key: &str, v: f64) -> Result<(), ConfigError> {
    if !(0.0..=1.0).contains(&v) {
        return Err(ConfigError::invalid(key, v, "must be between 0 and 1"));
    }
    Ok(())
}

fn prob_open(key: &str, v: f64) -> Result<(), ConfigError> {
    if !(v > 0.0 && v < 1.0) {
        return Err(ConfigError::invalid(
            key,
            v,
            "must be strictly between 0 and 1",
        ));
    }
    Ok(())
}

fn positive(key: &str, v: f64) -> Result<(), ConfigError> {
    if !(v > 0.0 && v.is_finite()) {
        return Err(ConfigError::invalid(key, v, "must be a positive number"));
    }
    Ok(())
}

fn non_negative(key: &str, v: f64) -> Result<(), ConfigError> {
    if !(v >= 0.0 && v.is_finite()) {
        return Err(ConfigError::invalid(key, v, "must be zero or more"));
    }
    Ok(())
}

fn drop_pair(prefix: &str, min_drop: f64, full_drop: f64) -> Result<(), ConfigError> {
    if !(0.0..1.0).contains(&min_drop) {
        return Err(ConfigError::invalid(
            &format!("{prefix}.min_drop"),
            min_drop,
            "must be a fraction in [0, 1)",
        ));
    }
    if full_drop <= min_drop || full_drop > 1.0 || full_drop.is_nan() {
        return Err(ConfigError::invalid(
            &format!("{prefix}.full_drop"),
            full_drop,
            format!("must be above {prefix}.min_drop ({min_drop}) and at most 1"),
        ));
    }
    Ok(())
}

fn rate_signal(prefix: &str, r: &RawRateSignal) -> Result<RateSignalConfig, ConfigError> {
    unit(&format!("{prefix}.weight"), r.weight)?;
    in_range_u64(
        &format!("{prefix}.min_baseline_events"),
        r.min_baseline_events as u64,
        1,
        1_000_000,
    )?;
    drop_pair(prefix, r.min_drop, r.full_drop)?;
    Ok(RateSignalConfig {
        enabled: r.enabled,
        weight: r.weight,
        min_baseline_events: r.min_baseline_events,
        min_drop: r.min_drop,
        full_drop: r.full_drop,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_is_valid_and_equals_defaults() {
        let shipped = Config::from_toml_str(DEFAULT_CONFIG_TOML).unwrap();
        let mut defaults = RawConfig::default().validate().unwrap();
        // Versions are content hashes; the shipped file states every default explicitly.
        defaults.version = shipped.version.clone();
        assert_eq!(shipped, defaults);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml_str("[alerting]\nenter_treshold = 0.5\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("enter_treshold"), "{msg}");
        assert!(msg.contains("alerting"), "{msg}");
    }

    #[test]
    fn out_of_range_threshold_is_named() {
        let err = Config::from_toml_str("[alerting]\nenter_threshold = 1.5\n").unwrap_err();
        assert_eq!(err.key(), Some("alerting.enter_threshold"));
        assert!(err.to_string().contains("1.5"));
    }

    #[test]
    fn hysteresis_requires_exit_below_enter() {
        let err =
            Config::from_toml_str("[alerting]\nexit_threshold = 0.6\nenter_threshold = 0.5\n")
                .unwrap_err();
        assert_eq!(err.key(), Some("alerting.exit_threshold"));
    }

    #[test]
    fn wrong_type_is_named() {
        let err = Config::from_toml_str("[windows]\nrecent_buckets = \"seven\"\n").unwrap_err();
        assert!(err.to_string().contains("windows.recent_buckets"), "{err}");
    }

    #[test]
    fn managed_properties_rejected() {
        let err = Config::from_toml_str("[kafka.properties]\n\"group.id\" = \"x\"\n").unwrap_err();
        assert_eq!(err.key(), Some("kafka.properties.group.id"));
    }

    #[test]
    fn rdkafka_env_passthrough() {
        let raw = RawConfig::default().with_rdkafka_env(
            vec![
                (
                    "CHURNWATCH_RDKAFKA_SASL_PASSWORD".to_string(),
                    "s3cret".to_string(),
                ),
                ("OTHER".to_string(), "x".to_string()),
            ]
            .into_iter(),
        );
        assert_eq!(raw.kafka.properties.get("sasl.password").unwrap(), "s3cret");
        let cfg = raw.validate().unwrap();
        assert!(!format!("{:?}", cfg.kafka).contains("s3cret"));
    }

    #[test]
    fn version_is_a_stable_content_hash_unless_labelled() {
        let a = Config::from_toml_str("").unwrap();
        let b = Config::from_toml_str("").unwrap();
        assert_eq!(a.version, b.version);
        let c = Config::from_toml_str("[alerting]\ncooldown_secs = 60\n").unwrap();
        assert_ne!(a.version, c.version);
        let d = Config::from_toml_str("config_version = \"v7\"\n").unwrap();
        assert_eq!(d.version, "v7");
    }
}
