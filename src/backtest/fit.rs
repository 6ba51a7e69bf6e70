//! `churnwatch fit`: estimate the population priors of the churn models from history.
//!
//! The events are replayed through the same per-customer state the live scorer keeps, so the
//! summaries `(x, t_x, T)` that are fitted are exactly those the scorer will later feed the
//! models: active days for customers who visit or use the product, purchase days for
//! purchase-only customers. Each model is fitted by maximum likelihood
//! ([`crate::model::fit`]); a population without such customers keeps the built-in default.

use std::io::BufRead;
use std::sync::Arc;

use thiserror::Error;

use super::replay::{Replay, ReplayError};
use crate::config::Config;
use crate::model::{fit, FitError, FitOptions, FitReport, ModelSpec, Priors, Summary, Variant};

#[derive(Debug, Error)]
pub enum FitPriorsError {
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
    /// Fitted; written to the priors.
    Fitted(FitReport),
    /// The likelihood is maximised at the edge of the parameter space (the data cannot pin
    /// the model down, e.g. nobody has come back yet): not written, the default stays.
    AtBound(FitReport),
}

impl FitOutcome {
    fn spec(&self) -> Option<ModelSpec> {
        match self {
            FitOutcome::Fitted(r) => Some(ModelSpec::from(r.model())),
            _ => None,
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

/// Replay `input` (up to `as_of_ms`, or all of it) and fit both models.
pub fn fit_priors<R: BufRead>(
    input: R,
    as_of_ms: Option<i64>,
    cfg: Arc<Config>,
) -> Result<FittedPriors, FitPriorsError> {
    let mut replay = Replay::new(cfg);
    replay.run(input, as_of_ms, &[], &mut ())?;
    let stats = replay.stats().clone();
    let as_of = as_of_ms.or(stats.last_ts_ms).ok_or(FitPriorsError::Empty)?;
    let mut activity = Vec::new();
    let mut purchases = Vec::new();
    for (_, c) in replay.state().customers() {
        let Some((x, t_x, t)) = c.activity.summary(as_of) else {
            continue;
        };
        let s = Summary::new(x, if x > 0.0 { t_x } else { 0.0 }, t);
        if c.engaged {
            activity.push(s);
        } else {
            purchases.push(s);
        }
    }
    let run = |model: &'static str, data: &[Summary]| -> Result<FitOutcome, FitPriorsError> {
        if data.is_empty() {
            return Ok(FitOutcome::NoData);
        }
        match fit(data, Variant::ModifiedBgNbd, &FitOptions::default()) {
            Ok(r) => Ok(FitOutcome::Fitted(r)),
            Err(FitError::AtBound(r)) => Ok(FitOutcome::AtBound(*r)),
            Err(source) => Err(FitPriorsError::Fit { model, source }),
        }
    };
    let activity = run("activity", &activity)?;
    let purchases = run("purchases", &purchases)?;
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
