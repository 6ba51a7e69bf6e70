//! The priors file: population parameters for the activity and purchase processes.
//!
//! ```toml
//! [activity]            # any event that makes a day "active"
//! variant = "mbgnbd"    # or "bgnbd"; optional, defaults to "mbgnbd"
//! r = 0.5
//! alpha = 5.0           # days
//! a = 0.6
//! b = 3.0
//!
//! [purchases]           # purchase days only
//! variant = "mbgnbd"
//! r = 0.7
//! alpha = 40.0
//! a = 0.8
//! b = 2.5
//! discount = 0.5        # optional, in (0, 1], default 1: see Model::with_discount
//! ```
//!
//! Both sections are optional; unknown keys are rejected, and every parameter must be finite
//! and > 0, `discount` at most 1 (errors name the key, e.g. `activity.alpha`, and the value).

use serde::{Deserialize, Serialize};

use super::bgnbd::{Model, Params, Variant};

/// Default prior of the **activity** process (one "transaction" = one active day), in days.
///
/// The population is a mix of daily app users and occasional (monthly) visitors:
/// - `r = 0.5, alpha = 5`: active-day rates are Gamma with mean 0.1/day (an active day every
///   ten days) and coefficient of variation `1/√r ≈ 1.4`, a long right tail reaching daily
///   users; the median (≈ 0.045/day, about every three weeks) is the monthly visitor. With
///   `r + x` and `alpha + T` as posterior shape and rate, a customer's own history dominates
///   after a few weeks (30 active days out of 30 gives a posterior mean rate of 0.87/day).
/// - `a = 0.6, b = 3`: the drop-out chance per active day averages 1/6, but `a < 1` puts a
///   lot of mass near 0 (loyal habitual users who essentially never churn per day of use)
///   alongside try-and-leave customers; under MBG/NBD about 17 % of new customers never
///   come back after their first day.
pub const DEFAULT_ACTIVITY: Model =
    Model::new(Variant::ModifiedBgNbd, Params::new(0.5, 5.0, 0.6, 3.0));

/// Default prior of the **purchase** process (one "transaction" = one purchase day), in days.
///
/// Close to the MBG/NBD estimates on the CDNOW panel converted to days (r = 0.525,
/// α = 6.183 weeks = 43.3 days, a = 0.891, b = 1.614), nudged towards slightly more regular
/// buyers for a subscription-style business:
/// - `r = 0.7, alpha = 40`: mean 0.0175 purchase days/day (about one every eight weeks for a
///   customer who stays), CV ≈ 1.2: monthly buyers and rare buyers.
/// - `a = 0.8, b = 2.5`: mean drop-out chance 0.24 per purchase, so about a quarter of
///   first-time buyers never buy again (MBG/NBD) and the rest churn after a handful of
///   purchases on average, with a loyal tail (`a < 1`).
pub const DEFAULT_PURCHASES: Model =
    Model::new(Variant::ModifiedBgNbd, Params::new(0.7, 40.0, 0.8, 2.5));

/// One model in the priors file: variant and parameters, flat.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct ModelSpec {
    /// `"mbgnbd"` (default) or `"bgnbd"`.
    #[serde(default)]
    pub variant: Variant,
    /// Gamma shape of transaction rates.
    pub r: f64,
    /// Gamma rate of transaction rates, in days.
    pub alpha: f64,
    /// Beta shape `a` of drop-out probabilities.
    pub a: f64,
    /// Beta shape `b` of drop-out probabilities.
    pub b: f64,
    /// Weight of the customer's history in predicting their current rate, in (0, 1]
    /// ([`Model::with_discount`]); 1 (the default) is the textbook model.
    #[serde(default = "one")]
    pub discount: f64,
}

fn one() -> f64 {
    1.0
}

impl ModelSpec {
    /// The model this spec describes.
    pub fn model(&self) -> Model {
        Model::new(
            self.variant,
            Params::new(self.r, self.alpha, self.a, self.b),
        )
        .with_discount(self.discount)
    }

    /// Checks every parameter is finite and > 0 and the discount in (0, 1]; `section` prefixes
    /// the key in the error.
    pub fn validate(&self, section: &str) -> Result<(), PriorsError> {
        if let Err(e) = self.model().params.validate() {
            return Err(PriorsError::Invalid {
                key: format!("{section}.{}", e.name),
                value: e.value.to_string(),
                problem: "must be finite and > 0".to_string(),
            });
        }
        if !(self.discount > 0.0 && self.discount <= 1.0) {
            return Err(PriorsError::Invalid {
                key: format!("{section}.discount"),
                value: self.discount.to_string(),
                problem: "must be in (0, 1]".to_string(),
            });
        }
        Ok(())
    }
}

impl From<Model> for ModelSpec {
    fn from(m: Model) -> Self {
        ModelSpec {
            variant: m.variant,
            r: m.params.r,
            alpha: m.params.alpha,
            a: m.params.a,
            b: m.params.b,
            discount: m.discount,
        }
    }
}

/// Errors from reading, validating or writing a priors file.
#[derive(Debug, thiserror::Error)]
pub enum PriorsError {
    /// Not valid TOML, an unknown key, or a value of the wrong type.
    #[error("cannot parse priors: {0}")]
    Parse(String),
    /// A parameter outside what it allows.
    #[error("invalid value for `{key}`: {value} ({problem})")]
    Invalid {
        /// Dotted key, e.g. `activity.alpha`.
        key: String,
        /// The offending value.
        value: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The priors could not be written as TOML.
    #[error("cannot write priors as TOML: {0}")]
    Serialize(String),
}

/// Population priors for the two processes churnwatch scores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Priors {
    /// Prior for active days (any activity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<ModelSpec>,
    /// Prior for purchase days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purchases: Option<ModelSpec>,
}

impl Default for Priors {
    /// [`DEFAULT_ACTIVITY`] and [`DEFAULT_PURCHASES`].
    fn default() -> Self {
        Priors {
            activity: Some(DEFAULT_ACTIVITY.into()),
            purchases: Some(DEFAULT_PURCHASES.into()),
        }
    }
}

impl Priors {
    /// Parses and validates a priors file's contents.
    pub fn from_toml_str(s: &str) -> Result<Self, PriorsError> {
        let priors: Priors = toml::from_str(s).map_err(|e| PriorsError::Parse(e.to_string()))?;
        priors.validate()?;
        Ok(priors)
    }

    /// The priors as a TOML document (validated first, so that what is written reads back).
    pub fn to_toml_string(&self) -> Result<String, PriorsError> {
        self.validate()?;
        toml::to_string_pretty(self).map_err(|e| PriorsError::Serialize(e.to_string()))
    }

    /// Checks every present section; the error names the key (`activity.alpha`) and value.
    pub fn validate(&self) -> Result<(), PriorsError> {
        if let Some(spec) = &self.activity {
            spec.validate("activity")?;
        }
        if let Some(spec) = &self.purchases {
            spec.validate("purchases")?;
        }
        Ok(())
    }

    /// The activity model, if configured.
    pub fn activity_model(&self) -> Option<Model> {
        self.activity.map(|s| s.model())
    }

    /// The purchase model, if configured.
    pub fn purchases_model(&self) -> Option<Model> {
        self.purchases.map(|s| s.model())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_round_trips_through_toml() {
        let p = Priors::default();
        let text = p.to_toml_string().unwrap();
        assert!(text.contains("[activity]"), "{text}");
        assert!(text.contains("variant = \"mbgnbd\""), "{text}");
        assert_eq!(Priors::from_toml_str(&text).unwrap(), p);
        assert_eq!(p.activity_model(), Some(DEFAULT_ACTIVITY));
        assert_eq!(p.purchases_model(), Some(DEFAULT_PURCHASES));
    }

    #[test]
    fn sections_and_variant_are_optional_and_integers_are_accepted() {
        let p = Priors::from_toml_str("[purchases]\nr = 1\nalpha = 30\na = 0.5\nb = 2\n").unwrap();
        assert_eq!(p.activity, None);
        let m = p.purchases_model().unwrap();
        assert_eq!(m.variant, Variant::ModifiedBgNbd);
        assert_eq!(m.params, Params::new(1.0, 30.0, 0.5, 2.0));
        let p = Priors::from_toml_str(
            "[activity]\nvariant = \"bgnbd\"\nr = 1\nalpha = 30\na = 0.5\nb = 2\n",
        )
        .unwrap();
        assert_eq!(p.activity_model().unwrap().variant, Variant::BgNbd);
        let empty = Priors::from_toml_str("").unwrap();
        assert_eq!(empty.to_toml_string().unwrap().trim(), "");
    }

    #[test]
    fn errors_name_the_key_and_value() {
        let err = Priors::from_toml_str("[activity]\nr = 0.5\nalpha = -5.0\na = 0.6\nb = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("activity.alpha"), "{err}");
        assert!(err.contains("-5"), "{err}");
        let err = Priors::from_toml_str("[purchases]\nr = nan\nalpha = 5.0\na = 0.6\nb = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("purchases.r") && err.contains("NaN"), "{err}");
        let err = Priors::from_toml_str("[purchases]\nr = 0.5\nalpha = inf\na = 0.6\nb = 3\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("purchases.alpha") && err.contains("inf"),
            "{err}"
        );
        let err =
            Priors::from_toml_str("[activity]\nr = 0.5\nalpha = 5\na = 0.6\nb = 3\nbeta = 1\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("beta"), "{err}");
        let err = Priors::from_toml_str("[visits]\nr = 0.5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("visits"), "{err}");
        let err = Priors::from_toml_str(
            "[activity]\nvariant = \"pareto\"\nr = 1\nalpha = 1\na = 1\nb = 1\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("pareto"), "{err}");
        let err = Priors::from_toml_str("[activity]\nr = 0.5\nalpha = 5\na = 0.6\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`b`"), "{err}");
        let err = Priors::from_toml_str(
            "[purchases]\nr = 0.5\nalpha = 5\na = 0.6\nb = 3\ndiscount = 1.5\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("purchases.discount") && err.contains("1.5"),
            "{err}"
        );
        let p = Priors::from_toml_str(
            "[purchases]\nr = 0.5\nalpha = 5\na = 0.6\nb = 3\ndiscount = 0.4\n",
        )
        .unwrap();
        assert_eq!(p.purchases_model().unwrap().discount, 0.4);
        let bad = Priors {
            activity: Some(ModelSpec::from(Model::new(
                Variant::BgNbd,
                Params::new(1.0, 1.0, 0.0, 1.0),
            ))),
            purchases: None,
        };
        let err = bad.to_toml_string().unwrap_err().to_string();
        assert!(err.contains("activity.a`"), "{err}");
    }
}
