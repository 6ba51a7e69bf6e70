//! The backtest's human-readable tables (`--json` serialises the same structs instead).

use std::fmt::{self, Display, Formatter};

use super::evaluate::{Report, Sweep, SweepTarget};

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{:.1}%", v * 100.0))
}

fn num(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

impl Display for Report {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let r = &self.ranking;
        let a = &self.alerts;
        let c = &self.calibration;
        writeln!(
            f,
            "churnwatch backtest  config {}  ·  {} events ({} invalid, {} late) · {} customers · {:.0} days",
            self.config_version, self.events, self.invalid_lines, self.late_events, self.customers, self.days
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "Ranking at {} cut-off dates (customers not churned yet, churn within {:.0} days; {} customer-dates, {} positive = {:.1}%)",
            r.cutoffs,
            self.horizon_days,
            r.scored,
            r.positives,
            r.base_rate * 100.0
        )?;
        for (score, roc, pr) in [
            ("score", "ROC AUC".to_string(), "PR AUC".to_string()),
            ("risk_score", num(r.roc_auc_risk, 4), num(r.pr_auc_risk, 4)),
            (
                "p_churn",
                num(r.roc_auc_p_churn, 4),
                num(r.pr_auc_p_churn, 4),
            ),
            (
                "days since last activity (baseline)",
                num(r.roc_auc_recency, 4),
                "-".to_string(),
            ),
        ] {
            writeln!(f, "  {score:<34} {roc:>9} {pr:>9}")?;
        }
        for t in &r.precision_at_top {
            writeln!(
                f,
                "  precision of risk_score in the top {:>4.1}%: {}",
                t.fraction * 100.0,
                pct(t.precision_risk)
            )?;
        }
        writeln!(f)?;
        writeln!(f, "Alerts (at_risk)")?;
        let lead = a.lead_time_days.as_ref();
        let rows: Vec<(&str, String)> = vec![
            (
                "at_risk alerts (all kinds)",
                format!("{} ({})", a.at_risk_alerts, a.all_alerts),
            ),
            ("precision (alert followed by churn)", pct(a.precision)),
            (
                "churners (trackable)",
                format!("{} ({})", a.churners, a.trackable_churners),
            ),
            (
                "warned before churned_at: trackable",
                pct(a.recall_trackable),
            ),
            ("warned before churned_at: all churners", pct(a.recall_all)),
            ("lead time, median (days)", num(lead.map(|s| s.median), 1)),
            ("lead time, p90 (days)", num(lead.map(|s| s.p90), 1)),
            (
                "onset estimate error, median (days)",
                num(a.onset_error_days.as_ref().map(|s| s.median), 1),
            ),
            (
                "non-churners ever alerted",
                format!("{} of {}", pct(a.false_alarm_rate), a.non_churners),
            ),
            (
                "at_risk alerts / 1,000 customers / day",
                format!("{:.3}", a.at_risk_alerts_per_1000_customers_per_day),
            ),
            (
                "all alerts / 1,000 customers / day",
                format!("{:.3}", a.all_alerts_per_1000_customers_per_day),
            ),
        ];
        for (k, v) in rows {
            writeln!(f, "  {k:<42} {v:>14}")?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "Calibration of p_churn (no activity within {:.0} days): {} customer-dates, Brier {}, ECE {:.4} (active base: {} customer-dates, Brier {}, ECE {:.4})",
            self.horizon_days,
            c.samples,
            num(c.brier, 4),
            c.table.ece,
            c.active_base_samples,
            num(c.active_base_brier, 4),
            c.active_base_ece
        )?;
        writeln!(
            f,
            "  ROC AUC for that outcome: p_churn {}, days since last activity {}",
            num(c.outcome_auc_p_churn, 4),
            num(c.outcome_auc_recency, 4)
        )?;
        writeln!(
            f,
            "  {:<13} {:>9} {:>10} {:>10}",
            "p_churn", "count", "predicted", "observed"
        )?;
        for b in &c.table.bins {
            writeln!(
                f,
                "  {:.1} - {:.1}     {:>9} {:>10} {:>10}",
                b.lower,
                b.upper,
                b.count,
                pct(b.mean_predicted),
                pct(b.observed_rate)
            )?;
        }
        writeln!(f)?;
        writeln!(f, "By segment (ground truth)")?;
        writeln!(
            f,
            "  {:<18} {:>9} {:>9} {:>9} {:>13}",
            "segment", "customers", "churned", "alerted", "warned early"
        )?;
        for s in &self.by_segment {
            writeln!(
                f,
                "  {:<18} {:>9} {:>9} {:>9} {:>13}",
                s.segment, s.customers, s.churned, s.alerted, s.warned_early
            )?;
        }
        writeln!(f)?;
        writeln!(f, "By cut-off date")?;
        writeln!(
            f,
            "  {:<26} {:>11} {:>9} {:>10} {:>10}",
            "cut-off", "not churned", "positive", "AUC risk", "AUC p"
        )?;
        for k in &self.cutoffs {
            writeln!(
                f,
                "  {:<26} {:>11} {:>9} {:>10} {:>10}",
                k.cutoff,
                k.customers,
                k.positives,
                num(k.roc_auc_risk, 4),
                num(k.roc_auc_p_churn, 4)
            )?;
        }
        Ok(())
    }
}

impl Display for Sweep {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  {:>6} {:>6} {:>10} {:>10} {:>10} {:>10} {:>12} {:>14}",
            "enter",
            "exit",
            "precision",
            "recall tr.",
            "recall all",
            "lead med.",
            "false alarm",
            "alerts/1k/day"
        )?;
        for (i, r) in self.rows.iter().enumerate() {
            writeln!(
                f,
                "{} {:>6.2} {:>6.3} {:>10} {:>10} {:>10} {:>10} {:>12} {:>14.3}",
                if Some(i) == self.suggested { "*" } else { " " },
                r.enter_threshold,
                r.exit_threshold,
                pct(r.precision),
                pct(r.recall_trackable),
                pct(r.recall_all),
                num(r.median_lead_days, 1),
                pct(r.false_alarm_rate),
                r.at_risk_alerts_per_1000_customers_per_day
            )?;
        }
        match (self.target, self.suggested) {
            (None, _) => writeln!(
                f,
                "\n(no target given: --min-precision P or --max-alerts-per-1000-per-day B suggests a threshold)"
            ),
            (Some(t), None) => writeln!(f, "\nNo threshold of the grid meets {}.", describe(t)),
            (Some(t), Some(i)) => {
                let r = &self.rows[i];
                writeln!(
                    f,
                    "\n* meets {} and warns the most trackable churners early. In the config:\n\n[alerting]\nenter_threshold = {}\nexit_threshold = {:.3}",
                    describe(t),
                    r.enter_threshold,
                    r.exit_threshold
                )
            }
        }
    }
}

fn describe(t: SweepTarget) -> String {
    match t {
        SweepTarget::MinPrecision(p) => format!("the target precision >= {:.0}%", p * 100.0),
        SweepTarget::MaxAlertsPer1000PerDay(b) => {
            format!("the alert budget <= {b} at_risk alerts per 1,000 customers per day")
        }
    }
}
