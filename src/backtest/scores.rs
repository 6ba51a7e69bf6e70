//! `churnwatch score`: every customer's risk and churn probability at one point in time, from
//! a replay of the events before it through the streaming scorer.

use std::io::{BufRead, Write};
use std::sync::Arc;

use serde::Serialize;
use thiserror::Error;

use super::replay::{Replay, ReplayError, ReplayStats};
use crate::config::Config;
use crate::scoring::{Assessment, Lifecycle, Tier};

#[derive(Debug, Error)]
pub enum ScoreError {
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error("writing the scores: {0}")]
    Write(#[from] csv::Error),
}

/// One customer's row of `scores.csv`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreRow {
    pub customer_id: String,
    pub risk_score: f64,
    pub p_churn: f64,
    /// The tier the alert state machine holds for the customer (`none` unless at risk).
    pub tier: &'static str,
    pub lifecycle: &'static str,
    /// The strongest reason that counts, as a sentence (empty when none does).
    pub top_reason: String,
}

impl ScoreRow {
    pub fn new(id: &str, a: &Assessment, tier: Option<Tier>, lifecycle: Lifecycle) -> ScoreRow {
        let top_reason = a
            .ranked_reasons()
            .first()
            .filter(|r| r.contribution() > 0.0)
            .map(|r| r.summary())
            .unwrap_or_default();
        ScoreRow {
            customer_id: id.to_string(),
            risk_score: (a.risk * 1e4).floor() / 1e4,
            // Six decimals: most customers of a retail log sit close to 1, and four decimals
            // tied thousands of them, which loses the ranking an analyst sorts by.
            p_churn: (a.p_churn * 1e6).round() / 1e6,
            tier: tier.unwrap_or(Tier::None).as_str(),
            lifecycle: lifecycle.as_str(),
            top_reason,
        }
    }
}

/// What `score` did.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreSummary {
    pub replay: ReplayStats,
    pub customers: usize,
    pub at_risk: usize,
}

/// Replay `input` up to `as_of_ms` (events from then on are not read; timers fire up to it)
/// and write one CSV row per customer, sorted by risk (highest first), then id.
pub fn score<R: BufRead, W: Write>(
    input: R,
    as_of_ms: i64,
    cfg: Arc<Config>,
    out: W,
) -> Result<ScoreSummary, ScoreError> {
    let mut replay = Replay::keeping_everyone(cfg);
    replay.run(input, Some(as_of_ms), &[], &mut ())?;
    let mut alerts = Vec::new();
    replay.advance_to(as_of_ms, &mut alerts);
    let mut rows = Vec::with_capacity(replay.state().len());
    replay
        .state()
        .for_each_assessment(as_of_ms, |id, c, a, lifecycle| {
            rows.push(ScoreRow::new(id, a, c.alert().current_tier(), lifecycle));
        });
    rows.sort_by(|a, b| {
        b.risk_score
            .total_cmp(&a.risk_score)
            .then(b.p_churn.total_cmp(&a.p_churn))
            .then_with(|| a.customer_id.cmp(&b.customer_id))
    });
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(out);
    w.write_record([
        "customer_id",
        "risk_score",
        "p_churn",
        "tier",
        "lifecycle",
        "top_reason",
    ])?;
    for r in &rows {
        w.serialize(r)?;
    }
    w.flush().map_err(csv::Error::from)?;
    Ok(ScoreSummary {
        replay: replay.stats().clone(),
        customers: rows.len(),
        at_risk: rows.iter().filter(|r| r.tier != "none").count(),
    })
}
