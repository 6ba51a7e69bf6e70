//! Customer-base models: the population priors and the per-customer probability of churn.
