//! `churnwatch backtest`: replay the events as production would, join what churnwatch said
//! with what really happened (`labels.csv`), and report.
//!
//! Definitions (also printed in the report's notes):
//!
//! - **Cut-off dates** every `cutoff_every_days`, from `first_cutoff_days` after the first
//!   event, while a whole horizon of events follows them. At each one every customer is
//!   scored on the events before it.
//! - **Ranking** (ROC AUC, PR AUC, precision at the top k %): over the customers who, at the
//!   cut-off, had been seen and had not churned yet (by the labels): the ones a retention
//!   team can still save. A customer is positive when labelled churned with `churned_at`
//!   within the horizon after the cut-off. Pooled over cut-offs; also per cut-off.
//! - **Calibration** of `p_churn` (Brier score, reliability table, ECE): over every customer
//!   seen before the cut-off, against the observed outcome "no activity in the next
//!   `churn.horizon_days`", read from the events themselves; also over the active base alone.
//!   The ROC AUC of `p_churn` for that outcome, beside that of days since the latest activity,
//!   says whether the model ranks better than recency alone.
//! - **Alerts**: `at_risk` alerts. An alert is *true* when the customer churns and it came no
//!   earlier than `onset_slack_days` before the labelled decline onset. A churner is *warned
//!   early* when a true alert precedes `churned_at`; lead time = `churned_at` − the first one.
//!   *Trackable* churners had an established baseline before their decline began (at least
//!   14 days of history and 5 active days, fixed whatever the config under test):
//!   without a baseline there is no decline to see (one-time buyers, brand-new customers).
//! - **False alarms**: non-churners with at least one `at_risk` alert.
//! - **Onset error**: for early-warned churners, |first alert's estimated onset − labelled
//!   decline onset|.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::Serialize;
use thiserror::Error;

use super::metrics::{brier, calibration, pr_auc, precision_at_top, roc_auc, Calibration, Summary};
use super::replay::{replay_limits, Observer, Replay, ReplayError};
use crate::alert::Alert;
use crate::alerting::AlertKind;
use crate::config::{Config, RawConfig};
use crate::customer::ActiveDays;
use crate::event::decode;
use crate::event::Event;
use crate::labels::Label;
use crate::partition::PartitionState;
use crate::time::{parse_rfc3339_ms, DAY_MS};

#[derive(Debug, Error)]
pub enum BacktestError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error("{0} has no valid event")]
    Empty(String),
    #[error("no cut-off date has a whole horizon of events after it: the history is too short")]
    TooShort,
    #[error("sweep: {0}")]
    Sweep(String),
}

/// Knobs of the evaluation (not of churnwatch).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BacktestOptions {
    pub first_cutoff_days: f64,
    pub cutoff_every_days: f64,
    pub onset_slack_days: f64,
    /// Fractions for precision at the top.
    pub top_fractions: Vec<f64>,
    pub calibration_bins: usize,
    /// A churner is trackable with at least this many active days and this much history
    /// before the decline began (fixed, so that configs are compared on the same churners).
    pub trackable_min_active_days: usize,
    pub trackable_min_history_days: f64,
    /// Write every alert of the replay here (JSON lines), for inspection.
    #[serde(skip)]
    pub alerts_out: Option<std::path::PathBuf>,
}

impl Default for BacktestOptions {
    fn default() -> Self {
        BacktestOptions {
            first_cutoff_days: 90.0,
            cutoff_every_days: 30.0,
            onset_slack_days: 14.0,
            top_fractions: vec![0.01, 0.05, 0.10],
            calibration_bins: 10,
            trackable_min_active_days: 5,
            trackable_min_history_days: 14.0,
            alerts_out: None,
        }
    }
}

/// The backtest's findings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub config_version: String,
    pub horizon_days: f64,
    pub events: u64,
    pub invalid_lines: u64,
    pub late_events: u64,
    pub customers: usize,
    pub days: f64,
    pub ranking: Ranking,
    pub alerts: AlertFigures,
    pub calibration: CalibrationFigures,
    pub by_segment: Vec<SegmentRow>,
    pub cutoffs: Vec<CutoffRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranking {
    pub cutoffs: usize,
    /// Customer-cut-off pairs in the active base, and how many were positive.
    pub scored: usize,
    pub positives: usize,
    pub roc_auc_risk: Option<f64>,
    pub pr_auc_risk: Option<f64>,
    pub roc_auc_p_churn: Option<f64>,
    pub pr_auc_p_churn: Option<f64>,
    /// Baseline: days since the latest activity as the score.
    pub roc_auc_recency: Option<f64>,
    pub precision_at_top: Vec<TopK>,
    pub base_rate: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopK {
    pub fraction: f64,
    pub precision_risk: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertFigures {
    pub at_risk_alerts: u64,
    pub all_alerts: u64,
    /// Share of at_risk alerts that were true (see the module doc).
    pub precision: Option<f64>,
    pub churners: usize,
    pub trackable_churners: usize,
    /// Churners warned before `churned_at`, over all churners and over trackable ones.
    pub recall_all: Option<f64>,
    pub recall_trackable: Option<f64>,
    /// Days from the first true alert to `churned_at`, trackable churners warned early.
    pub lead_time_days: Option<Summary>,
    pub onset_error_days: Option<Summary>,
    pub non_churners: usize,
    pub false_alarm_rate: Option<f64>,
    pub at_risk_alerts_per_1000_customers_per_day: f64,
    pub all_alerts_per_1000_customers_per_day: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalibrationFigures {
    pub samples: usize,
    pub brier: Option<f64>,
    pub table: Calibration,
    pub active_base_samples: usize,
    pub active_base_brier: Option<f64>,
    pub active_base_ece: f64,
    /// How well `p_churn` ranks the customers who then have no activity within the horizon
    /// (all customers seen), against days since the latest activity as the baseline score.
    pub outcome_auc_p_churn: Option<f64>,
    pub outcome_auc_recency: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentRow {
    pub segment: String,
    pub customers: usize,
    pub churned: usize,
    /// Customers with at least one at_risk alert.
    pub alerted: usize,
    /// Churners of the segment warned before `churned_at`.
    pub warned_early: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CutoffRow {
    pub cutoff: String,
    /// Customers not churned by the cut-off.
    pub customers: usize,
    pub positives: usize,
    pub roc_auc_risk: Option<f64>,
    pub roc_auc_p_churn: Option<f64>,
}

/// Per-customer facts gathered while replaying.
#[derive(Debug, Default, Clone)]
struct Facts {
    /// Activity times, in stream order (sorted before use).
    activity: Vec<i64>,
    /// `at_risk` alerts: event time and the estimated onset of their top reason.
    at_risk: Vec<(i64, Option<i64>)>,
}

/// The customers the replay has seen, numbered in order of appearance, with their facts.
#[derive(Debug, Default)]
struct Customers {
    index: FxHashMap<Box<str>, u32>,
    ids: Vec<Box<str>>,
    facts: Vec<Facts>,
}

impl Customers {
    fn slot(&mut self, id: &str) -> u32 {
        if let Some(&s) = self.index.get(id) {
            return s;
        }
        let s = self.ids.len() as u32;
        self.index.insert(id.into(), s);
        self.ids.push(id.into());
        self.facts.push(Facts::default());
        s
    }

    fn get(&mut self, id: &str) -> &mut Facts {
        let s = self.slot(id);
        &mut self.facts[s as usize]
    }
}

/// What the backtest records from its replay: every customer's activity and alerts, and every
/// customer's scores at each cut-off date.
struct Recorder<'a> {
    cutoffs: &'a [i64],
    lapse_ms: i64,
    customers: Customers,
    rows: Vec<CutRow>,
    at_risk_alerts: u64,
    all_alerts: u64,
    alerts_out: Option<std::io::BufWriter<File>>,
}

impl Observer for Recorder<'_> {
    fn checkpoint(&mut self, cp: i64, state: &PartitionState) {
        let k = self.cutoffs.partition_point(|&c| c < cp);
        let day = DAY_MS as f64;
        state.for_each_assessment(cp, |id, c, a, _| {
            let Some(first) = c.activity.first.get() else {
                return;
            };
            if first >= cp {
                return;
            }
            self.rows.push(CutRow {
                cutoff: k,
                customer: self.customers.slot(id),
                risk: a.risk as f32,
                p_churn: a.p_churn as f32,
                days_silent: ((cp - c.activity.last.ms()) as f64 / day) as f32,
                active_base: cp - c.activity.last.ms() < self.lapse_ms,
            });
        });
    }

    fn alert(&mut self, alert: &Alert) {
        self.all_alerts += 1;
        if let Some(w) = self.alerts_out.as_mut() {
            use std::io::Write;
            let _ = w.write_all(&alert.to_json());
            let _ = w.write_all(b"\n");
        }
        if alert.kind != AlertKind::AtRisk {
            return;
        }
        self.at_risk_alerts += 1;
        let t = parse_rfc3339_ms(&alert.event_time).unwrap_or_default();
        let onset = alert
            .reasons
            .iter()
            .filter(|r| r.contribution > 0.0)
            .find_map(|r| r.onset.as_deref().and_then(parse_rfc3339_ms));
        self.customers
            .get(&alert.customer_id)
            .at_risk
            .push((t, onset));
    }

    fn event(&mut self, ev: &Event<'_>) {
        if ev.activity.is_customer_activity() {
            self.customers.get(&ev.customer_id).activity.push(ev.ts_ms);
        }
    }
}

/// One customer at one cut-off.
#[derive(Debug, Clone, Copy)]
struct CutRow {
    cutoff: usize,
    customer: u32,
    risk: f32,
    p_churn: f32,
    days_silent: f32,
    active_base: bool,
}

/// Run the backtest of `events` (a JSON-lines file) with `cfg` against `labels`.
pub fn backtest(
    events: &Path,
    labels: &[Label],
    cfg: Arc<Config>,
    opts: &BacktestOptions,
) -> Result<Report, BacktestError> {
    let open = || {
        File::open(events)
            .map(|f| BufReader::with_capacity(1 << 20, f))
            .map_err(|source| BacktestError::Open {
                path: events.display().to_string(),
                source,
            })
    };
    let first_ts = first_event_ms(open()?, &cfg)
        .ok_or_else(|| BacktestError::Empty(events.display().to_string()))?;
    let day = DAY_MS as f64;
    let start = first_ts.div_euclid(DAY_MS) * DAY_MS;
    let cutoffs: Vec<i64> = (0..10_000)
        .map(|k| {
            start + ((opts.first_cutoff_days + k as f64 * opts.cutoff_every_days) * day) as i64
        })
        .collect();

    let alerts_out = match &opts.alerts_out {
        Some(p) => Some(std::io::BufWriter::new(File::create(p).map_err(
            |source| BacktestError::Open {
                path: p.display().to_string(),
                source,
            },
        )?)),
        None => None,
    };
    let mut rec = Recorder {
        cutoffs: &cutoffs,
        lapse_ms: cfg.lifecycle.lapse_after_ms,
        customers: Customers::default(),
        rows: Vec::new(),
        at_risk_alerts: 0,
        all_alerts: 0,
        alerts_out,
    };
    let mut replay = Replay::new(cfg.clone());
    replay.run(open()?, None, &cutoffs, &mut rec)?;
    let Recorder {
        customers,
        rows,
        at_risk_alerts,
        all_alerts,
        ..
    } = rec;
    let Customers {
        index,
        ids,
        mut facts,
    } = customers;
    let stats = replay.stats().clone();
    let last_ts = stats.last_ts_ms.unwrap_or(first_ts);
    for f in &mut facts {
        f.activity.sort_unstable();
    }

    let horizon_ms = (cfg.churn.horizon_days * day) as i64;
    // Cut-offs with a whole horizon of events after them.
    let usable = |k: usize| cutoffs[k] + horizon_ms <= last_ts;
    let label_of: FxHashMap<&str, &Label> =
        labels.iter().map(|l| (l.customer_id.as_str(), l)).collect();

    // Ranking over the active base.
    let mut risk = Vec::new();
    let mut pch = Vec::new();
    let mut recency = Vec::new();
    let mut positive = Vec::new();
    // Calibration over all seen customers.
    let mut cal_p = Vec::new();
    let mut cal_y = Vec::new();
    let mut cal_recency = Vec::new();
    let mut base_p = Vec::new();
    let mut base_y = Vec::new();
    let mut per_cutoff: Vec<(Vec<f64>, Vec<f64>, Vec<bool>)> =
        vec![Default::default(); cutoffs.len()];
    for r in &rows {
        if !usable(r.cutoff) {
            continue;
        }
        let cp = cutoffs[r.cutoff];
        let f = &facts[r.customer as usize];
        let lo = f.activity.partition_point(|&t| t < cp);
        let active_next = f.activity.get(lo).is_some_and(|&t| t < cp + horizon_ms);
        let p = (r.p_churn as f64).clamp(0.0, 1.0);
        cal_p.push(p);
        cal_y.push(!active_next);
        cal_recency.push(r.days_silent as f64);
        if r.active_base {
            base_p.push(p);
            base_y.push(!active_next);
        }
        let churned_at = label_of
            .get(ids[r.customer as usize].as_ref())
            .and_then(|l| l.churned.then_some(l.churned_at_ms).flatten());
        if churned_at.is_some_and(|t| t <= cp) {
            continue; // already gone: not in the population to rank
        }
        let pos = churned_at.is_some_and(|t| t <= cp + horizon_ms);
        risk.push(r.risk as f64);
        pch.push(p);
        recency.push(r.days_silent as f64);
        positive.push(pos);
        let pc = &mut per_cutoff[r.cutoff];
        pc.0.push(r.risk as f64);
        pc.1.push(p);
        pc.2.push(pos);
    }
    let used_cutoffs: Vec<usize> = (0..cutoffs.len())
        .filter(|&k| usable(k) && !per_cutoff[k].2.is_empty())
        .collect();
    if used_cutoffs.is_empty() {
        return Err(BacktestError::TooShort);
    }
    let positives = positive.iter().filter(|&&p| p).count();
    let ranking = Ranking {
        cutoffs: used_cutoffs.len(),
        scored: risk.len(),
        positives,
        roc_auc_risk: roc_auc(&risk, &positive),
        pr_auc_risk: pr_auc(&risk, &positive),
        roc_auc_p_churn: roc_auc(&pch, &positive),
        pr_auc_p_churn: pr_auc(&pch, &positive),
        roc_auc_recency: roc_auc(&recency, &positive),
        precision_at_top: opts
            .top_fractions
            .iter()
            .map(|&fraction| TopK {
                fraction,
                precision_risk: precision_at_top(&risk, &positive, fraction),
            })
            .collect(),
        base_rate: positives as f64 / risk.len().max(1) as f64,
    };
    let cutoff_rows = used_cutoffs
        .iter()
        .map(|&k| {
            let (r, p, y) = &per_cutoff[k];
            CutoffRow {
                cutoff: crate::time::format_rfc3339_ms(cutoffs[k]),
                customers: y.len(),
                positives: y.iter().filter(|&&b| b).count(),
                roc_auc_risk: roc_auc(r, y),
                roc_auc_p_churn: roc_auc(p, y),
            }
        })
        .collect();

    // Alerts against the labels.
    let slack_ms = (opts.onset_slack_days * day) as i64;
    let min_hist_ms = (opts.trackable_min_history_days * day) as i64;
    let min_days = opts.trackable_min_active_days;
    let mut true_alerts = 0u64;
    let mut churners = 0usize;
    let mut trackable = 0usize;
    let mut warned_all = 0usize;
    let mut warned_trackable = 0usize;
    let mut leads = Vec::new();
    let mut onset_errors = Vec::new();
    let mut non_churners = 0usize;
    let mut false_alarms = 0usize;
    let mut segments: FxHashMap<&str, SegmentRow> = FxHashMap::default();
    for l in labels {
        let f = index
            .get(l.customer_id.as_str())
            .map(|&s| &facts[s as usize]);
        let alerts: &[(i64, Option<i64>)] = f.map_or(&[], |f| &f.at_risk);
        let seg = segments
            .entry(l.segment.as_str())
            .or_insert_with(|| SegmentRow {
                segment: l.segment.clone(),
                customers: 0,
                churned: 0,
                alerted: 0,
                warned_early: 0,
            });
        seg.customers += 1;
        seg.alerted += usize::from(!alerts.is_empty());
        match (l.churned, l.churned_at_ms) {
            (true, Some(churned_at)) => {
                churners += 1;
                seg.churned += 1;
                let onset = l.decline_onset_ms.unwrap_or(churned_at);
                let from = onset - slack_ms;
                true_alerts += alerts.iter().filter(|(t, _)| *t >= from).count() as u64;
                let first = alerts
                    .iter()
                    .filter(|(t, _)| *t >= from && *t < churned_at)
                    .min_by_key(|(t, _)| *t);
                let is_trackable = f.is_some_and(|f| {
                    let before = &f.activity[..f.activity.partition_point(|&t| t < onset)];
                    let mut days = ActiveDays::default();
                    for &t in before {
                        days.record(t);
                    }
                    before.first().is_some_and(|&t0| onset - t0 >= min_hist_ms)
                        && days.repeat_days as usize + 1 >= min_days
                });
                trackable += usize::from(is_trackable);
                if let Some(&(t, est)) = first {
                    warned_all += 1;
                    seg.warned_early += 1;
                    if is_trackable {
                        warned_trackable += 1;
                        leads.push((churned_at - t) as f64 / day);
                        if let Some(e) = est {
                            onset_errors.push(((e - onset) as f64 / day).abs());
                        }
                    }
                }
            }
            _ => {
                non_churners += 1;
                false_alarms += usize::from(!alerts.is_empty());
            }
        }
    }
    let ratio = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
    let span_days = ((last_ts - first_ts) as f64 / day).max(1.0);
    let customers = labels.len().max(ids.len());
    let per_1000_day = |n: u64| n as f64 / (customers.max(1) as f64 / 1000.0) / span_days;
    let alerts = AlertFigures {
        at_risk_alerts,
        all_alerts,
        precision: (at_risk_alerts > 0).then(|| true_alerts as f64 / at_risk_alerts as f64),
        churners,
        trackable_churners: trackable,
        recall_all: ratio(warned_all, churners),
        recall_trackable: ratio(warned_trackable, trackable),
        lead_time_days: Summary::of(&leads),
        onset_error_days: Summary::of(&onset_errors),
        non_churners,
        false_alarm_rate: ratio(false_alarms, non_churners),
        at_risk_alerts_per_1000_customers_per_day: per_1000_day(at_risk_alerts),
        all_alerts_per_1000_customers_per_day: per_1000_day(all_alerts),
    };
    let base_cal = calibration(&base_p, &base_y, opts.calibration_bins);
    let calibration_figures = CalibrationFigures {
        samples: cal_p.len(),
        brier: brier(&cal_p, &cal_y),
        table: calibration(&cal_p, &cal_y, opts.calibration_bins),
        active_base_samples: base_p.len(),
        active_base_brier: brier(&base_p, &base_y),
        active_base_ece: base_cal.ece,
        outcome_auc_p_churn: roc_auc(&cal_p, &cal_y),
        outcome_auc_recency: roc_auc(&cal_recency, &cal_y),
    };
    let mut by_segment: Vec<SegmentRow> = segments.into_values().collect();
    by_segment.sort_by(|a, b| a.segment.cmp(&b.segment));
    Ok(Report {
        config_version: cfg.version.clone(),
        horizon_days: cfg.churn.horizon_days,
        events: stats.events,
        invalid_lines: stats.invalid,
        late_events: stats.late,
        customers,
        days: span_days,
        ranking,
        alerts,
        calibration: calibration_figures,
        by_segment,
        cutoffs: cutoff_rows,
    })
}

/// Time of the first valid event of a file.
fn first_event_ms<R: BufRead>(input: R, cfg: &Config) -> Option<i64> {
    let limits = replay_limits(cfg);
    input
        .split(b'\n')
        .take(10_000)
        .map_while(Result::ok)
        .find_map(|line| decode(line.trim_ascii_end(), &limits).ok().map(|e| e.ts_ms))
}

/// One row of the threshold sweep.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepRow {
    pub enter_threshold: f64,
    pub exit_threshold: f64,
    pub precision: Option<f64>,
    pub recall_trackable: Option<f64>,
    pub recall_all: Option<f64>,
    pub median_lead_days: Option<f64>,
    pub false_alarm_rate: Option<f64>,
    pub at_risk_alerts_per_1000_customers_per_day: f64,
}

/// What the sweep must meet.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum SweepTarget {
    /// At least this share of alerts true.
    MinPrecision(f64),
    /// At most this many at_risk alerts per 1,000 customers per day.
    MaxAlertsPer1000PerDay(f64),
}

/// The sweep's table and the threshold it suggests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sweep {
    pub rows: Vec<SweepRow>,
    pub target: Option<SweepTarget>,
    /// Index into `rows` of the suggestion: among the rows meeting the target, the one that
    /// warns the most trackable churners early.
    pub suggested: Option<usize>,
}

/// Backtest every `enter_threshold` of `grid` (exit kept at the same ratio below it, tiers
/// kept above it), `threads` replays at a time.
pub fn sweep(
    events: &Path,
    labels: &[Label],
    raw: &RawConfig,
    grid: &[f64],
    target: Option<SweepTarget>,
    opts: &BacktestOptions,
    threads: usize,
) -> Result<Sweep, BacktestError> {
    let ratio = raw.alerting.exit_threshold / raw.alerting.enter_threshold;
    let configs: Vec<(f64, Arc<Config>)> = grid
        .iter()
        .map(|&enter| {
            let mut r = raw.clone();
            let a = &mut r.alerting;
            a.enter_threshold = enter;
            a.exit_threshold = enter * ratio;
            a.medium_threshold = a.medium_threshold.max(enter);
            a.high_threshold = a.high_threshold.max(a.medium_threshold);
            r.validate()
                .map(|c| (enter, Arc::new(c)))
                .map_err(|e| BacktestError::Sweep(format!("enter_threshold {enter}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let results: Vec<Result<SweepRow, BacktestError>> = {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let out = std::sync::Mutex::new((0..configs.len()).map(|_| None).collect::<Vec<_>>());
        std::thread::scope(|s| {
            for _ in 0..threads.max(1).min(configs.len()) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((enter, cfg)) = configs.get(i) else {
                        break;
                    };
                    let row = backtest(events, labels, cfg.clone(), opts).map(|r| SweepRow {
                        enter_threshold: *enter,
                        exit_threshold: cfg.alerting.exit_threshold,
                        precision: r.alerts.precision,
                        recall_trackable: r.alerts.recall_trackable,
                        recall_all: r.alerts.recall_all,
                        median_lead_days: r.alerts.lead_time_days.map(|s| s.median),
                        false_alarm_rate: r.alerts.false_alarm_rate,
                        at_risk_alerts_per_1000_customers_per_day: r
                            .alerts
                            .at_risk_alerts_per_1000_customers_per_day,
                    });
                    out.lock().expect("sweep results")[i] = Some(row);
                });
            }
        });
        out.into_inner()
            .expect("sweep results")
            .into_iter()
            .map(|r| r.expect("every grid point ran"))
            .collect()
    };
    let rows: Vec<SweepRow> = results.into_iter().collect::<Result<_, _>>()?;
    let meets = |r: &SweepRow| match target {
        Some(SweepTarget::MinPrecision(p)) => r.precision.is_some_and(|x| x >= p),
        Some(SweepTarget::MaxAlertsPer1000PerDay(b)) => {
            r.at_risk_alerts_per_1000_customers_per_day <= b
        }
        None => false,
    };
    let suggested = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| meets(r))
        .max_by(|(_, a), (_, b)| {
            a.recall_trackable
                .unwrap_or(0.0)
                .total_cmp(&b.recall_trackable.unwrap_or(0.0))
                .then(b.enter_threshold.total_cmp(&a.enter_threshold))
        })
        .map(|(i, _)| i);
    Ok(Sweep {
        rows,
        target,
        suggested,
    })
}
