//! Replay of history through the streaming scorer, and the accuracy report.
//!
//! - [`replay`]: an events file fed through the same [`crate::partition::PartitionState`]
//!   the live pipeline runs, with checkpoints at cut-off dates.
//! - [`scores`]: `churnwatch score`, every customer's risk and `p_churn` at one time.
//! - [`metrics`]: ROC/PR AUC, precision at the top, Brier score, calibration, quantiles.
//! - [`fit`]: `churnwatch fit`, the population priors of the churn models from history.
//! - [`evaluate`]: `churnwatch backtest`: the replay joined with ground-truth labels into a
//!   [`evaluate::Report`], and the threshold sweep.

pub mod evaluate;
pub mod fit;
pub mod metrics;
pub mod replay;
pub mod report;
pub mod scores;
