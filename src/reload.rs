//! Live config reloads: on SIGHUP, and when the config file changes.
//!
//! The file is read and validated again (with the same environment overrides as at start). An
//! invalid config is rejected with an error naming the key, and the config in force stays.
//! A valid one is split:
//! - *live* settings (`signals`, `churn`, `alerting`, `lifecycle` but its KPI period, `value`,
//!   `config_version`) take effect at once: the pipeline's partitions score the next event or
//!   timer with them, and later alerts carry the new version;
//! - *restart-only* settings (`kafka`, `state`, `processing`, `http`, `log`, `input`,
//!   `windows`, `lifecycle.kpi_period_days`: the clients, the state's layout, the server) keep
//!   their old values; a change to them is logged and shown by
//!   `churnwatch_config_restart_required` until the process restarts.
//!
//! Results are counted in `churnwatch_config_reloads_total{result}`; the version in force is in
//! `churnwatch_config_info`. The file is watched through its directory (with `notify`), so an
//! editor's save-by-rename and a Kubernetes ConfigMap update (a symlink swap) are both seen.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{Config, ConfigError, LifecycleConfig};
use crate::metrics::Metrics;

/// Reads and validates the config again (the file, the environment, and for the demo its own
/// adjustments).
pub type Loader = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// How long file events are collected into one reload (editors write in several steps).
const SETTLE: Duration = Duration::from_millis(250);

/// The sections of `new` that differ from `active` and that only a restart applies.
pub fn restart_only_changes(active: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |key: &'static str, differs: bool| {
        if differs {
            changed.push(key);
        }
    };
    check("kafka", active.kafka != new.kafka);
    check("state", active.state != new.state);
    check("processing", active.processing != new.processing);
    check("http", active.http != new.http);
    check("log", active.log != new.log);
    check("input", active.input != new.input);
    check("windows", active.windows != new.windows);
    check(
        "lifecycle.kpi_period_days",
        active.lifecycle.kpi_period_ms != new.lifecycle.kpi_period_ms,
    );
    changed
}

/// `new`'s live settings, `active`'s restart-only ones.
pub fn merge(active: &Config, new: Config) -> Config {
    Config {
        version: new.version,
        kafka: active.kafka.clone(),
        state: active.state.clone(),
        processing: active.processing.clone(),
        http: active.http.clone(),
        log: active.log.clone(),
        input: active.input.clone(),
        windows: active.windows.clone(),
        signals: new.signals,
        churn: new.churn,
        alerting: new.alerting,
        lifecycle: LifecycleConfig {
            kpi_period_ms: active.lifecycle.kpi_period_ms,
            ..new.lifecycle
        },
        value: new.value,
    }
}

/// What one reload did.
#[derive(Debug)]
pub enum Outcome {
    /// In force (perhaps identical to the previous config); the restart-only sections that
    /// the file changes, if any.
    Applied {
        version: String,
        restart_required: Vec<&'static str>,
    },
    /// Invalid: the previous config stays.
    Rejected(ConfigError),
}

/// Holds the config in force and hands new ones to the pipeline.
pub struct Reloader {
    loader: Loader,
    active: Arc<Config>,
    tx: watch::Sender<Arc<Config>>,
    metrics: Arc<Metrics>,
}

impl Reloader {
    /// A reloader whose pipeline follows the returned receiver.
    pub fn new(
        active: Arc<Config>,
        loader: Loader,
        metrics: Arc<Metrics>,
    ) -> (Reloader, watch::Receiver<Arc<Config>>) {
        let (tx, rx) = watch::channel(active.clone());
        (
            Reloader {
                loader,
                active,
                tx,
                metrics,
            },
            rx,
        )
    }

    /// Read the config again and put its live settings in force.
    pub fn reload(&mut self, cause: &'static str) -> Outcome {
        let new = match (self.loader)() {
            Ok(c) => c,
            Err(e) => {
                self.metrics
                    .config_reloads_total
                    .with_label_values(&["rejected"])
                    .inc();
                error!(
                    cause,
                    key = e.key().unwrap_or(""),
                    error = %e,
                    version = %self.active.version,
                    "config reload rejected; the config in force stays"
                );
                return Outcome::Rejected(e);
            }
        };
        let restart_required = restart_only_changes(&self.active, &new);
        let merged = merge(&self.active, new);
        let changed = merged != *self.active;
        self.metrics
            .config_reloads_total
            .with_label_values(&["ok"])
            .inc();
        self.metrics
            .config_restart_required
            .set(i64::from(!restart_required.is_empty()));
        if !restart_required.is_empty() {
            warn!(
                cause,
                sections = ?restart_required,
                "the config changes settings that only a restart applies; they keep their old values until then"
            );
        }
        if changed {
            info!(
                cause,
                from = %self.active.version,
                to = %merged.version,
                "config reloaded: new thresholds in force"
            );
            self.metrics.set_config_version(&merged.version);
            self.active = Arc::new(merged);
            self.tx.send_replace(self.active.clone());
        } else {
            info!(cause, version = %merged.version, "config reloaded: nothing changed");
        }
        Outcome::Applied {
            version: self.active.version.clone(),
            restart_required,
        }
    }

    /// Reload on SIGHUP and whenever `path` changes, until `shutdown`.
    pub fn spawn(mut self, path: Option<PathBuf>, shutdown: CancellationToken) {
        let (file_tx, mut file_rx) = mpsc::unbounded_channel::<()>();
        let watcher = path.as_deref().and_then(|p| watch_file(p, file_tx));
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        tokio::spawn(async move {
            let _watcher = watcher; // dropped (unwatched) when the task ends
            loop {
                #[cfg(unix)]
                let hangup = async {
                    match hup.as_mut() {
                        Some(s) => s.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hangup = std::future::pending::<Option<()>>();
                let cause = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = hangup => "SIGHUP",
                    Some(()) = file_rx.recv() => {
                        tokio::time::sleep(SETTLE).await;
                        while file_rx.try_recv().is_ok() {}
                        "file changed"
                    }
                };
                if path.is_none() {
                    warn!(
                        cause,
                        "no config file to reload (running on the embedded default)"
                    );
                    continue;
                }
                // Reading and validating (and the priors file) is blocking I/O.
                self = tokio::task::spawn_blocking(move || {
                    self.reload(cause);
                    self
                })
                .await
                .expect("a reload does not panic");
            }
        });
    }
}

/// Watch `path`'s directory and signal events that concern the file (or a ConfigMap's swap
/// of `..data`).
fn watch_file(path: &Path, tx: mpsc::UnboundedSender<()>) -> Option<RecommendedWatcher> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name()?.to_os_string();
    let handler = move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        if ev.kind.is_access() {
            return;
        }
        let concerns = ev.paths.iter().any(|p| {
            p.file_name()
                .is_some_and(|n| n == name.as_os_str() || n == "..data")
        });
        if concerns {
            let _ = tx.send(());
        }
    };
    match notify::recommended_watcher(handler)
        .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w))
    {
        Ok(w) => {
            info!(path = %path.display(), "watching the config file for changes (SIGHUP also reloads)");
            Some(w)
        }
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot watch the config file; SIGHUP still reloads");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(toml)
    }

    #[test]
    fn live_settings_apply_and_restart_only_ones_are_kept() {
        let active = load("").unwrap();
        let new = load(
            "[alerting]\nenter_threshold = 0.7\nexit_threshold = 0.4\n\
             [kafka]\nbrokers = \"elsewhere:9092\"\n\
             [windows]\ncheck_interval_secs = 7200\n",
        )
        .unwrap();
        assert_eq!(
            restart_only_changes(&active, &new),
            vec!["kafka", "windows"]
        );
        let merged = merge(&active, new.clone());
        assert_eq!(merged.alerting.enter_threshold, 0.7);
        assert_eq!(merged.kafka, active.kafka);
        assert_eq!(merged.windows, active.windows);
        assert_eq!(merged.version, new.version);
        assert_ne!(merged.version, active.version);
        assert!(restart_only_changes(&active, &merged).is_empty());
    }

    #[test]
    fn a_reload_applies_rejects_and_counts() {
        let text = Arc::new(std::sync::Mutex::new(String::new()));
        let source = text.clone();
        let metrics = Arc::new(Metrics::new());
        let active = Arc::new(load("").unwrap());
        let (mut r, rx) = Reloader::new(
            active.clone(),
            Box::new(move || load(&source.lock().unwrap())),
            metrics.clone(),
        );
        let count = |result| {
            metrics
                .config_reloads_total
                .with_label_values(&[result])
                .get()
        };
        // Unchanged: counted, nothing sent.
        assert!(matches!(r.reload("test"), Outcome::Applied { .. }));
        assert!(!rx.has_changed().unwrap());
        // A threshold: in force, with a new version.
        *text.lock().unwrap() = "[alerting]\nhigh_threshold = 0.9\n".into();
        let Outcome::Applied {
            version,
            restart_required,
        } = r.reload("test")
        else {
            panic!("rejected")
        };
        assert!(restart_required.is_empty());
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow().alerting.high_threshold, 0.9);
        assert_eq!(rx.borrow().version, version);
        assert!(metrics.render().contains(&format!(
            "churnwatch_config_info{{version=\"{version}\"}} 1"
        )));
        // Broken: rejected with the key named; the config in force stays.
        *text.lock().unwrap() = "[alerting]\nhigh_threshold = 1.5\n".into();
        match r.reload("test") {
            Outcome::Rejected(e) => assert_eq!(e.key(), Some("alerting.high_threshold")),
            other => panic!("{other:?}"),
        }
        assert_eq!(rx.borrow().version, version);
        // A restart-only change is reported, not applied.
        *text.lock().unwrap() =
            "[alerting]\nhigh_threshold = 0.9\n[kafka]\nalerts_topic = \"x\"\n".into();
        let Outcome::Applied {
            restart_required, ..
        } = r.reload("test")
        else {
            panic!("rejected")
        };
        assert_eq!(restart_required, vec!["kafka"]);
        assert_eq!(metrics.config_restart_required.get(), 1);
        assert_eq!(rx.borrow().kafka, active.kafka);
        assert_eq!((count("ok"), count("rejected")), (3, 1));
    }
}
