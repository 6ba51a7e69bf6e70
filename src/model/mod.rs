//! Customer-base models: the population priors and the per-customer probability of churn.
//!
//! churnwatch's `p_churn` for a customer is the probability of **no** activity within a
//! horizon of `h` days, computed from the customer's own history combined with population
//! priors (empirical Bayes). The model is the BG/NBD family, with time in days.
//!
//! # The data: `(x, t_x, T)`
//!
//! Per customer, from the first transaction (active day, purchase day, …):
//! - `x`: number of repeat transactions (distinct active days after the first),
//! - `t_x`: time of the last repeat transaction since the first (0 when `x = 0`),
//! - `T`: time from the first transaction to the scoring time.
//!
//! # The model
//!
//! 1. While alive, a customer transacts as a Poisson process with rate λ.
//! 2. Right after each repeat transaction (BG/NBD) — and, for MBG/NBD, also right after the
//!    first transaction — the customer drops out for good with probability `p`.
//! 3. Across customers λ ~ Gamma(`r`, `alpha`) (shape, rate) and `p` ~ Beta(`a`, `b`),
//!    independently.
//!
//! Write δ = 0 for BG/NBD and δ = 1 for MBG/NBD. Then, with `B` the beta function:
//!
//! ```text
//! L(x, t_x, T) = Γ(r+x) α^r / Γ(r) · B(a, b+x+δ) / B(a, b) · (α+T)^-(r+x)
//!                · [1 + 1{x>0 or δ=1} · a/(b+x-1+δ) · ((α+T)/(α+t_x))^(r+x)]
//!
//! P(alive | x, t_x, T) = 1 / (1 + 1{x>0 or δ=1} · a/(b+x-1+δ) · ((α+T)/(α+t_x))^(r+x))
//!
//! p_churn(h) = P(no transaction in (T, T+h])
//!            = (1 - P(alive)) + P(alive) · ((α+T)/(α+T+h))^(r+x)
//! ```
//!
//! The last line holds because an alive customer can only drop out right after a
//! transaction, and given alive `λ | data ~ Gamma(r+x, α+T)` (see
//! [`Model::p_no_transaction`]). The conditional expectation of future transactions, the
//! unconditional `P(X(t) = n)` and `E[X(t)]` are in [`Model`]. Everything is computed in logs
//! (`ln Γ`, `ln B`, `ln(1+e^v)`, logistic of a log-odds), so `x` in the thousands and `T` in
//! the tens of thousands of days stay finite.
//!
//! # Why MBG/NBD by default
//!
//! Under BG/NBD, `P(alive | x = 0) = 1` whatever `T`: a customer who was active once a year
//! ago and never again is "certainly alive", and `p_churn` then reflects only a low
//! transaction rate, never drop-out. It also makes one early repeat transaction *lower*
//! P(alive) below that of no repeat at all. In a churn monitor one-time customers are the
//! bulk of churn, so churnwatch uses MBG/NBD (Batislam, Denizel & Filiztekin 2007; Wagner &
//! Hoppe 2008), which adds a drop-out chance at the first transaction:
//! `P(alive | x = 0) = 1 / (1 + a/b · ((α+T)/α)^r) < 1`, decreasing in `T`. BG/NBD (Fader,
//! Hardie & Lee 2005) is kept so the implementation can be checked against the published
//! CDNOW estimates.
//!
//! # The history discount
//!
//! The model holds λ fixed for ever. Real buyers come in bursts and slow down, and then a
//! repeat buyer's silence reads as death too readily. [`Model::with_discount`] lets the
//! customer's history count for κ ∈ (0, 1] of its weight when predicting (a power prior:
//! `λ | alive ~ Gamma(r+κx, α+κt_x+(T−t_x))`); κ = 1 is exactly the formulas above, and
//! one-time customers are unaffected. `churnwatch fit` chooses κ on held-out history.
//!
//! # Fitting and priors
//!
//! [`fit`] maximises the summed log-likelihood (identical rows aggregated) over
//! log-parameters with Nelder-Mead and reports standard errors and a frequency diagnostic
//! ([`FitReport`] prints as a readable block). [`Priors`] is the TOML priors file with an
//! `activity` and a `purchases` section; [`Priors::default`] holds defaults for a daily
//! activity process ([`DEFAULT_ACTIVITY`], [`DEFAULT_PURCHASES`]).
//!
//! # References
//!
//! - Fader, Hardie & Lee (2005), "'Counting Your Customers' the Easy Way: An Alternative to
//!   the Pareto/NBD Model", *Marketing Science* 24(2).
//! - Batislam, Denizel & Filiztekin (2007), "Empirical validation and comparison of models
//!   for customer base analysis", *IJRM* 24(3); Wagner & Hoppe (2008), "Erratum on the
//!   MBG/NBD model", *IJRM* 25(3).

pub mod bgnbd;
pub mod priors;

pub use bgnbd::{
    fit, fit_weighted, FitError, FitOptions, FitReport, FrequencyRow, InvalidParam, Model, Outlook,
    Params, Summary, Variant,
};
pub use priors::{ModelSpec, Priors, PriorsError, DEFAULT_ACTIVITY, DEFAULT_PURCHASES};

#[cfg(test)]
mod tests;
