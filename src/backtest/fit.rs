//! `churnwatch fit`: estimate the population priors of the churn models from history.
//!
//! The events are replayed through the same per-customer state the live scorer keeps, so the
//! summaries `(x, t_x, T)` that are fitted are exactly those the scorer will later feed the
//! models: active days for customers who visit or use the product, purchase days for
//! purchase-only customers. Each model is fitted by maximum likelihood
//! ([`crate::model::fit`]); a population without such customers keeps the built-in default.
//!
//! # The history discount
//!
//! The textbook model holds a customer's rate fixed for ever; real customers buy in bursts and
//! slow down, and then the model reads a repeat buyer's silence as death too readily. The
//! priors therefore carry a discount κ ([`crate::model::Model::with_discount`]): how much of a
//! customer's past transactions count for their current rate. It is chosen on the history
//! itself, by a held-out stretch at its end:
//!
//! 1. the *split* is a quarter of the history before its end (at least 7, at most 182 days);
//! 2. the model is fitted again on the customers' summaries as they stood at the split;
//! 3. for each κ of a grid (1, 0.9, …, 0.1) it predicts, for every customer seen before the
//!    split, the probability of no activity between the split and the end, and the summed
//!    Bernoulli log-likelihood of what really happened scores κ;
//! 4. the best κ is kept only if it beats κ = 1 by more than 1.92 (a likelihood-ratio test at
//!    5 % with one degree of freedom), else κ = 1: a stationary population keeps the textbook
//!    model.
//!
//! The final parameters are the maximum-likelihood fit on the whole history, with that κ. On
//! the CDNOW purchase log this takes the ranking of who buys again (ROC AUC of `p_churn`)
//! above both days-since-last-purchase and a batch BG/NBD (BENCHMARKS.md, "Real retail data").

use std::io::BufRead;
use std::sync::Arc;

use thiserror::Error;

use super::replay::{Replay, ReplayError};
use crate::config::Config;
use crate::model::{
    fit, FitError, FitOptions, FitReport, Model, ModelSpec, Priors, Summary, Variant,
};
use crate::time::{ms_to_days, DAY_MS};

#[derive(Debug, Error)]
pub enum FitPriorsError {
    /// The events could not be opened (they are read twice: see the module documentation).
    #[error("opening the events: {0}")]
    Open(#[source] std::io::Error),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error("the input has no valid event")]
    Empty,
    #[error("fitting the {model} model: {source}")]
    Fit {
        model: &'static str,
        #[source]
        source: FitError,
    },
}

/// How one model's fit went.
#[derive(Debug, Clone)]
pub enum FitOutcome {
    /// No customers of this kind: the built-in default stays in use.
    NoData,
    /// Fitted; written to the priors with the discount the held-out check chose.
    Fitted(FitReport, Discount),
    /// The likelihood is maximised at the edge of the parameter space (the data cannot pin
    /// the model down, e.g. nobody has come back yet): not written, the default stays.
    AtBound(FitReport),
}

impl FitOutcome {
    fn spec(&self) -> Option<ModelSpec> {
        match self {
            FitOutcome::Fitted(r, d) => Some(ModelSpec::from(r.model().with_discount(d.chosen()))),
            _ => None,
        }
    }
}

/// The discounts tried, from 1 (the textbook model) down.
const DISCOUNT_GRID: [f64; 10] = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1];
/// A discount is kept only if its held-out log-likelihood beats κ = 1 by more than this
/// (half the 95 % quantile of χ²₁).
const DISCOUNT_MIN_GAIN: f64 = 1.92;
/// The held-out stretch is this share of the history, within the bounds below.
const HOLDOUT_SHARE: f64 = 0.25;
const HOLDOUT_MIN_DAYS: f64 = 7.0;
const HOLDOUT_MAX_DAYS: f64 = 182.0;
/// Fewest customers seen before the split, and fewest of each outcome, for the check to run.
const HOLDOUT_MIN_CUSTOMERS: usize = 100;
const HOLDOUT_MIN_OUTCOME: usize = 20;

/// How the history discount of one model was chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Discount {
    /// The held-out check ran.
    Checked(DiscountCheck),
    /// It could not run (the reason); κ = 1.
    Unchecked(String),
}

impl Discount {
    /// The κ written to the priors.
    pub fn chosen(&self) -> f64 {
        match self {
            Discount::Checked(c) => c.chosen,
            Discount::Unchecked(_) => 1.0,
        }
    }
}

/// The held-out check of the discount (see the module documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct DiscountCheck {
    /// Length of the held-out stretch at the end of the history, in days.
    pub holdout_days: f64,
    /// Customers seen before the split, and those of them with no activity after it.
    pub customers: usize,
    pub quiet: usize,
    /// Every κ tried with the summed log-likelihood of the held-out outcome.
    pub grid: Vec<(f64, f64)>,
    pub chosen: f64,
}

impl std::fmt::Display for Discount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Discount::Unchecked(why) => writeln!(f, "history discount: 1 (not checked: {why})"),
            Discount::Checked(c) => {
                writeln!(
                    f,
                    "history discount: {} (held out the last {:.0} days: {} customers seen before, {} of them quiet since)",
                    c.chosen, c.holdout_days, c.customers, c.quiet
                )?;
                let best = c.grid.iter().map(|g| g.1).fold(f64::NEG_INFINITY, f64::max);
                writeln!(f, "  discount  held-out log-likelihood")?;
                for (k, ll) in &c.grid {
                    let mark = if *k == c.chosen { "  <- chosen" } else { "" };
                    writeln!(f, "  {k:>8.1}  {ll:>14.2} ({:+.2}){mark}", ll - best)?;
                }
                Ok(())
            }
        }
    }
}

/// The fitted priors and the reports behind them.
#[derive(Debug, Clone)]
pub struct FittedPriors {
    pub priors: Priors,
    pub as_of_ms: i64,
    pub events: u64,
    pub activity: FitOutcome,
    pub purchases: FitOutcome,
}

/// The summaries `(x, t_x, T)` of the customers in `replay` at `at_ms`, split by the model
/// that scores them (activity, purchases), each with the customer's id.
fn summaries(replay: &Replay, at_ms: i64) -> [Vec<(&str, Summary)>; 2] {
    let mut out = [Vec::new(), Vec::new()];
    for (id, c) in replay.state().customers() {
        let Some((x, t_x, t)) = c.activity.summary(at_ms) else {
            continue;
        };
        let s = Summary::new(x, if x > 0.0 { t_x } else { 0.0 }, t);
        out[usize::from(!c.engaged)].push((id, s));
    }
    out
}

/// Replay the events (`open` gives them from the start, and is called a second time for the
/// held-out check) up to `as_of_ms`, or all of them, and fit both models.
pub fn fit_priors<R: BufRead>(
    mut open: impl FnMut() -> std::io::Result<R>,
    as_of_ms: Option<i64>,
    cfg: Arc<Config>,
) -> Result<FittedPriors, FitPriorsError> {
    let mut replay = Replay::keeping_everyone(cfg.clone());
    replay.run(
        open().map_err(FitPriorsError::Open)?,
        as_of_ms,
        &[],
        &mut (),
    )?;
    let stats = replay.stats().clone();
    let as_of = as_of_ms.or(stats.last_ts_ms).ok_or(FitPriorsError::Empty)?;
    let first = stats.first_ts_ms.ok_or(FitPriorsError::Empty)?;
    let [activity, purchases] = summaries(&replay, as_of);

    // The held-out check: the state at the split, the outcome from the state at `as_of`.
    let holdout_days =
        (ms_to_days(as_of - first) * HOLDOUT_SHARE).clamp(HOLDOUT_MIN_DAYS, HOLDOUT_MAX_DAYS);
    let split = as_of - (holdout_days * DAY_MS as f64) as i64;
    let mut early = Replay::keeping_everyone(cfg);
    early.run(
        open().map_err(FitPriorsError::Open)?,
        Some(split),
        &[],
        &mut (),
    )?;
    let [early_activity, early_purchases] = summaries(&early, split);

    let run = |model: &'static str,
               data: &[(&str, Summary)],
               early: &[(&str, Summary)]|
     -> Result<FitOutcome, FitPriorsError> {
        if data.is_empty() {
            return Ok(FitOutcome::NoData);
        }
        let rows: Vec<Summary> = data.iter().map(|d| d.1).collect();
        match fit(&rows, Variant::ModifiedBgNbd, &FitOptions::default()) {
            Ok(r) => {
                let held_out: Vec<(Summary, bool)> = early
                    .iter()
                    .map(|(id, s)| {
                        let quiet = replay
                            .state()
                            .customer(id)
                            .is_none_or(|c| c.last_active_ms() < split);
                        (*s, quiet)
                    })
                    .collect();
                let discount = check_discount(&held_out, holdout_days);
                Ok(FitOutcome::Fitted(r, discount))
            }
            Err(FitError::AtBound(r)) => Ok(FitOutcome::AtBound(*r)),
            Err(source) => Err(FitPriorsError::Fit { model, source }),
        }
    };
    let activity = run("activity", &activity, &early_activity)?;
    let purchases = run("purchases", &purchases, &early_purchases)?;
    let priors = Priors {
        activity: activity.spec(),
        purchases: purchases.spec(),
    };
    Ok(FittedPriors {
        priors,
        as_of_ms: as_of,
        events: stats.events,
        activity,
        purchases,
    })
}

/// Choose the history discount on a held-out stretch: `held_out` holds each customer's summary
/// at the split and whether they were quiet (no activity) for the `holdout_days` after it.
pub fn check_discount(held_out: &[(Summary, bool)], holdout_days: f64) -> Discount {
    let quiet = held_out.iter().filter(|h| h.1).count();
    let active = held_out.len() - quiet;
    if held_out.len() < HOLDOUT_MIN_CUSTOMERS
        || quiet < HOLDOUT_MIN_OUTCOME
        || active < HOLDOUT_MIN_OUTCOME
    {
        return Discount::Unchecked(format!(
            "{} customers before the last {holdout_days:.0} days, {quiet} of them quiet since; at least {HOLDOUT_MIN_CUSTOMERS}, with {HOLDOUT_MIN_OUTCOME} of each outcome, are needed",
            held_out.len()
        ));
    }
    let rows: Vec<Summary> = held_out.iter().map(|h| h.0).collect();
    let model = match fit(&rows, Variant::ModifiedBgNbd, &FitOptions::default()) {
        Ok(r) => r.model(),
        Err(FitError::AtBound(_)) => {
            return Discount::Unchecked(
                "the fit on the history before the held-out stretch runs to the edge of the parameter space"
                    .to_string(),
            )
        }
        Err(e) => return Discount::Unchecked(format!("the fit before the held-out stretch failed: {e}")),
    };
    let grid: Vec<(f64, f64)> = DISCOUNT_GRID
        .iter()
        .map(|&k| {
            (
                k,
                held_out_log_likelihood(model.with_discount(k), held_out, holdout_days),
            )
        })
        .collect();
    let textbook = grid[0].1;
    let best = grid
        .iter()
        .copied()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("the grid is not empty");
    let chosen = if best.1 - textbook > DISCOUNT_MIN_GAIN {
        best.0
    } else {
        1.0
    };
    Discount::Checked(DiscountCheck {
        holdout_days,
        customers: held_out.len(),
        quiet,
        grid,
        chosen,
    })
}

/// Summed Bernoulli log-likelihood of "quiet for `h` days" under `model`.
fn held_out_log_likelihood(model: Model, held_out: &[(Summary, bool)], h: f64) -> f64 {
    held_out
        .iter()
        .map(|(s, quiet)| {
            let p = model
                .p_no_transaction(s.x, s.t_x, s.t, h)
                .clamp(1e-12, 1.0 - 1e-12);
            if *quiet {
                p.ln()
            } else {
                (1.0 - p).ln()
            }
        })
        .sum()
}
