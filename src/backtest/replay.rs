//! Replay of an events file (JSON lines, the live schema) through the streaming scorer: the
//! same [`PartitionState`] the pipeline runs per Kafka partition, fed in file order, with
//! event-time timers firing as the stream's watermark passes them.
//!
//! Optional *checkpoints* stop the clock at given times: before the first event at or after a
//! checkpoint is applied, stream time is advanced so that the watermark reaches the
//! checkpoint (every timer due by then fires) and a callback sees the whole state, so scores
//! at a cut-off date use exactly the events before it.

use std::io::BufRead;
use std::sync::Arc;

use thiserror::Error;

use crate::alert::Alert;
use crate::config::Config;
use crate::event::{decode, DecodeLimits, Event};
use crate::metrics::Metrics;
use crate::partition::PartitionState;

/// Why a replay failed.
#[derive(Debug, Error)]
pub enum ReplayError {
    #[error("reading the events at line {line}: {source}")]
    Io {
        line: u64,
        #[source]
        source: std::io::Error,
    },
}

/// What a replay saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayStats {
    pub lines: u64,
    pub events: u64,
    pub invalid: u64,
    pub late: u64,
    pub alerts: u64,
    pub first_ts_ms: Option<i64>,
    pub last_ts_ms: Option<i64>,
}

/// What a replay reports as it goes; every method does nothing unless overridden, and `()`
/// observes nothing.
pub trait Observer {
    /// Time has reached checkpoint `at_ms`: the whole state, before any later event.
    fn checkpoint(&mut self, _at_ms: i64, _state: &PartitionState) {}
    /// An alert the replay raised.
    fn alert(&mut self, _alert: &Alert) {}
    /// A valid event, after it was applied.
    fn event(&mut self, _ev: &Event<'_>) {}
}

impl Observer for () {}

/// How a replay decodes: the live limits, except that history is replayed as it was, its time
/// stamps not checked against the clock.
pub fn replay_limits(cfg: &Config) -> DecodeLimits {
    DecodeLimits {
        max_event_bytes: cfg.input.max_event_bytes,
        max_ts_ms: None,
    }
}

/// A replay in progress.
pub struct Replay {
    state: PartitionState,
    limits: DecodeLimits,
    lateness_ms: i64,
    stats: ReplayStats,
    _metrics: Metrics,
}

impl Replay {
    pub fn new(cfg: Arc<Config>) -> Replay {
        let metrics = Metrics::new();
        let limits = replay_limits(&cfg);
        let lateness_ms = cfg.input.allowed_lateness_ms;
        Replay {
            state: PartitionState::new(cfg, &metrics),
            limits,
            lateness_ms,
            stats: ReplayStats::default(),
            _metrics: metrics,
        }
    }

    /// A replay that forgets nobody: lapsed customers are not evicted
    /// (`state.evict_lapsed_after_days` is ignored), so that `fit` sees the whole history and
    /// `score` writes a row for every customer in it, however long ago they were last active.
    /// The live pipeline and the backtest evict as production does.
    pub fn keeping_everyone(cfg: Arc<Config>) -> Replay {
        let mut cfg = Arc::unwrap_or_clone(cfg);
        cfg.state.evict_lapsed_after_ms = 0;
        Replay::new(Arc::new(cfg))
    }

    /// The state (for scoring snapshots).
    pub fn state(&self) -> &PartitionState {
        &self.state
    }

    pub fn stats(&self) -> &ReplayStats {
        &self.stats
    }

    /// Feed every line of `input`. Before the first event at or after each checkpoint (in
    /// ascending order), time is advanced to it and the observer sees the state; checkpoints
    /// never reached by an event are left to the caller ([`Replay::advance_to`]). The observer
    /// also sees every alert and every valid event (after it was applied). With `stop_at`,
    /// reading stops before the first event at or after that time.
    pub fn run<R: BufRead>(
        &mut self,
        mut input: R,
        stop_at: Option<i64>,
        checkpoints: &[i64],
        observer: &mut impl Observer,
    ) -> Result<(), ReplayError> {
        let mut line = Vec::with_capacity(512);
        let mut alerts = Vec::new();
        let mut next_cp = 0usize;
        loop {
            line.clear();
            let n = input
                .read_until(b'\n', &mut line)
                .map_err(|source| ReplayError::Io {
                    line: self.stats.lines + 1,
                    source,
                })?;
            if n == 0 {
                break;
            }
            self.stats.lines += 1;
            let bytes = line.trim_ascii_end();
            if bytes.is_empty() {
                continue;
            }
            let ev = match decode(bytes, &self.limits) {
                Ok(ev) => ev,
                Err(_) => {
                    self.stats.invalid += 1;
                    continue;
                }
            };
            if stop_at.is_some_and(|t| ev.ts_ms >= t) {
                break;
            }
            while next_cp < checkpoints.len() && ev.ts_ms >= checkpoints[next_cp] {
                let cp = checkpoints[next_cp];
                self.advance_to(cp, &mut alerts);
                for a in alerts.drain(..) {
                    observer.alert(&a);
                }
                observer.checkpoint(cp, &self.state);
                next_cp += 1;
            }
            let outcome = self.state.on_event(&ev, None, &mut alerts);
            self.stats.events += 1;
            self.stats.late += outcome.late as u64;
            self.stats.first_ts_ms =
                Some(self.stats.first_ts_ms.map_or(ev.ts_ms, |t| t.min(ev.ts_ms)));
            self.stats.last_ts_ms =
                Some(self.stats.last_ts_ms.map_or(ev.ts_ms, |t| t.max(ev.ts_ms)));
            observer.event(&ev);
            self.stats.alerts += alerts.len() as u64;
            for a in alerts.drain(..) {
                observer.alert(&a);
            }
        }
        Ok(())
    }

    /// Move event time on so that the watermark reaches `ts_ms`: every timer due by then fires.
    pub fn advance_to(&mut self, ts_ms: i64, out: &mut Vec<Alert>) {
        let before = out.len();
        self.state.advance_to(ts_ms + self.lateness_ms, out);
        self.stats.alerts += (out.len() - before) as u64;
    }
}
