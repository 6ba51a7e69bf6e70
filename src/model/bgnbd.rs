//! The BG/NBD and MBG/NBD models: per-customer quantities and the maximum-likelihood fit.
//!
//! See the [module documentation](crate::model) for the model, the formulas and the choice
//! of MBG/NBD as the default. Everything here works in logs: the per-customer functions are
//! O(1) (apart from the hypergeometric series behind [`Model::expected_transactions`]) and
//! stay finite for `x` in the thousands and `T` in the tens of thousands of days.

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;

use argmin::core::{CostFunction, Error as ArgminError, Executor, State, TerminationReason};
use argmin::solver::neldermead::NelderMead;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use statrs::distribution::{ChiSquared, ContinuousCDF};
use statrs::function::beta::{beta_reg, ln_beta};
use statrs::function::gamma::ln_gamma;

/// Which member of the BG/NBD family.
///
/// Serialised as `"bgnbd"` / `"mbgnbd"`; the default is [`Variant::ModifiedBgNbd`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Variant {
    /// BG/NBD (Fader, Hardie & Lee 2005): a customer can only drop out right after a
    /// *repeat* transaction, so a customer with no repeat transaction is certainly alive.
    #[serde(rename = "bgnbd")]
    BgNbd,
    /// MBG/NBD (Batislam, Denizel & Filiztekin 2007): a customer can also drop out right
    /// after the first transaction, so one-time customers are not certainly alive.
    #[default]
    #[serde(rename = "mbgnbd")]
    ModifiedBgNbd,
}

impl Variant {
    /// The identifier used in files: `"bgnbd"` or `"mbgnbd"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::BgNbd => "bgnbd",
            Variant::ModifiedBgNbd => "mbgnbd",
        }
    }

    /// The name used in the literature: `"BG/NBD"` or `"MBG/NBD"`.
    pub fn name(self) -> &'static str {
        match self {
            Variant::BgNbd => "BG/NBD",
            Variant::ModifiedBgNbd => "MBG/NBD",
        }
    }

    /// The shift δ in the formulas: 0 for BG/NBD, 1 for MBG/NBD (one more drop-out chance).
    fn delta(self) -> f64 {
        match self {
            Variant::BgNbd => 0.0,
            Variant::ModifiedBgNbd => 1.0,
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Variant {
    type Err = String;

    /// Accepts `bgnbd`, `mbgnbd`, `bg/nbd`, `mbg/nbd` (any case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "bgnbd" | "bg/nbd" => Ok(Variant::BgNbd),
            "mbgnbd" | "mbg/nbd" => Ok(Variant::ModifiedBgNbd),
            other => Err(format!(
                "unknown model variant `{other}` (expected `mbgnbd` or `bgnbd`)"
            )),
        }
    }
}

/// The four population parameters of the BG/NBD family.
///
/// The transaction rate λ of a customer is Gamma(shape `r`, rate `alpha`) across the
/// population (mean `r / alpha` transactions per time unit); the drop-out probability `p`
/// is Beta(`a`, `b`) (mean `a / (a + b)`). `alpha` carries the time unit (days in
/// churnwatch: `alpha` in days is 7 × `alpha` in weeks); `r`, `a` and `b` have none.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// Shape of the Gamma distribution of transaction rates.
    pub r: f64,
    /// Rate (inverse scale) of the Gamma distribution of transaction rates, in time units.
    pub alpha: f64,
    /// First shape of the Beta distribution of drop-out probabilities.
    pub a: f64,
    /// Second shape of the Beta distribution of drop-out probabilities.
    pub b: f64,
}

impl Params {
    /// Parameters from their four values (not validated: see [`Params::validate`]).
    pub const fn new(r: f64, alpha: f64, a: f64, b: f64) -> Self {
        Params { r, alpha, a, b }
    }

    /// The parameters as `(name, value)` pairs, in the order r, alpha, a, b.
    pub fn named(&self) -> [(&'static str, f64); 4] {
        [
            ("r", self.r),
            ("alpha", self.alpha),
            ("a", self.a),
            ("b", self.b),
        ]
    }

    /// Checks that every parameter is finite and > 0; the error names the first that is not.
    pub fn validate(&self) -> Result<(), InvalidParam> {
        for (name, value) in self.named() {
            if !(value.is_finite() && value > 0.0) {
                return Err(InvalidParam { name, value });
            }
        }
        Ok(())
    }

    /// Mean transaction rate of the population while alive, `r / alpha` per time unit.
    pub fn mean_rate(&self) -> f64 {
        self.r / self.alpha
    }

    /// Mean drop-out probability per drop-out opportunity, `a / (a + b)`.
    pub fn mean_dropout(&self) -> f64 {
        self.a / (self.a + self.b)
    }

    fn to_log(self) -> [f64; 4] {
        [self.r.ln(), self.alpha.ln(), self.a.ln(), self.b.ln()]
    }

    fn from_log(phi: &[f64]) -> Self {
        Params::new(phi[0].exp(), phi[1].exp(), phi[2].exp(), phi[3].exp())
    }
}

/// A model parameter that is not finite and > 0.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[error("parameter `{name}` = {value} must be finite and > 0")]
pub struct InvalidParam {
    /// `r`, `alpha`, `a` or `b`.
    pub name: &'static str,
    /// The offending value.
    pub value: f64,
}

/// A customer's transaction summary: `x` repeat transactions (in churnwatch: distinct active
/// days after the first), the last at `t_x` time units after the first transaction, observed
/// until `t` (the `T` of the literature) time units after the first transaction.
///
/// Valid summaries have `x ≥ 0`, `0 ≤ t_x ≤ t` and `t_x = 0` when `x = 0`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of repeat transactions.
    pub x: f64,
    /// Time of the last repeat transaction since the first transaction (0 when `x = 0`).
    pub t_x: f64,
    /// Time from the first transaction to the end of observation (`T`).
    pub t: f64,
}

impl Summary {
    /// A summary from `(x, t_x, T)`.
    pub const fn new(x: f64, t_x: f64, t: f64) -> Self {
        Summary { x, t_x, t }
    }
}

/// A BG/NBD-family model: a variant and its population parameters.
///
/// The per-customer methods take the customer's summary `(x, t_x, t)` (see [`Summary`]) as
/// plain numbers. Inputs are tidied rather than rejected: negative values count as 0, `t_x`
/// is clamped into `[0, t]` and ignored when `x = 0`; a NaN input gives a NaN result.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Model {
    /// BG/NBD or MBG/NBD.
    pub variant: Variant,
    /// The population parameters.
    pub params: Params,
    /// How much of the customer's rate history counts for the *current* rate, κ in (0, 1];
    /// 1 is the textbook model. See [`Model::with_discount`].
    pub discount: f64,
}

/// Clamps a summary into the model's domain (see [`Model`]).
fn tidy(x: f64, t_x: f64, t: f64) -> (f64, f64, f64) {
    let x = if x < 0.0 { 0.0 } else { x };
    let t = if t < 0.0 { 0.0 } else { t };
    let t_x = if x == 0.0 || t_x < 0.0 {
        0.0
    } else if t_x > t {
        t
    } else {
        t_x
    };
    (x, t_x, t)
}

/// `ln(1 + e^v)` without overflow or loss of precision.
#[inline]
fn softplus(v: f64) -> f64 {
    if v > 0.0 {
        v + (-v).exp().ln_1p()
    } else {
        v.exp().ln_1p()
    }
}

/// The logistic function `1 / (1 + e^-v)` without overflow.
#[inline]
fn sigmoid(v: f64) -> f64 {
    if v >= 0.0 {
        1.0 / (1.0 + (-v).exp())
    } else {
        let e = v.exp();
        e / (1.0 + e)
    }
}

/// `(sigmoid(v), sigmoid(-v))` from one exponential, each as [`sigmoid`] computes it.
#[inline]
fn sigmoid_pair(v: f64) -> (f64, f64) {
    if v >= 0.0 {
        let e = (-v).exp();
        (1.0 / (1.0 + e), e / (1.0 + e))
    } else {
        let e = v.exp();
        (e / (1.0 + e), 1.0 / (1.0 + e))
    }
}

/// `(e^v - 1) / v`, 1 at `v = 0`.
#[inline]
fn exprel(v: f64) -> f64 {
    if v.abs() < 1e-8 {
        1.0 + 0.5 * v
    } else {
        v.exp_m1() / v
    }
}

/// `ln(e^u + e^v)` with `-inf` allowed in either argument.
#[inline]
fn log_add_exp(u: f64, v: f64) -> f64 {
    let m = u.max(v);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + ((u - m).exp() + (v - m).exp()).ln()
}

/// The posterior of a customer's rate λ given alive at `T`, with the history discounted by κ
/// ([`Model::with_discount`]): `Gamma(shape, rate_now)`.
#[derive(Debug, Clone, Copy)]
struct Posterior {
    /// `r + κx`.
    shape: f64,
    /// `α + κ·t_x`: the rate right after the latest transaction.
    rate_at_last: f64,
    /// `α + κ·t_x + (T − t_x)`, computed as `α + T − (1−κ)·t_x` (so `α + T` itself at κ = 1).
    rate_now: f64,
}

impl Posterior {
    /// `ln(1 + silence / (α + κ·t_x))`: per unit of `shape`, how much likelier a silence this
    /// long since the latest transaction is for a dead customer than for an alive one.
    #[inline]
    fn log_silence(&self, silence: f64) -> f64 {
        (silence / self.rate_at_last).ln_1p()
    }
}

/// The log odds of dead at `T` from their value right after the latest transaction and the
/// silence since ([`Posterior::log_silence`]); `-inf` (certainly alive) stays `-inf`.
#[inline]
fn log_odds_dead_from(at_last: f64, shape: f64, log_silence: f64) -> f64 {
    if at_last == f64::NEG_INFINITY {
        return at_last;
    }
    at_last + shape * log_silence
}

/// `(P(alive), P(no transaction in (T, T+h]))` from the log odds of dead at `T` and the
/// posterior of the rate at `T`.
#[inline]
fn alive_and_quiet(lod: f64, post: &Posterior, h: f64) -> (f64, f64) {
    let h = if h < 0.0 { 0.0 } else { h };
    let (dead, alive) = sigmoid_pair(lod);
    let quiet_if_alive = (-post.shape * (h / post.rate_now).ln_1p()).exp();
    let p = dead + alive * quiet_if_alive;
    // Rounding can push the sum a hair above 1 (and NaN must stay NaN, so no `min`).
    (alive, if p > 1.0 { 1.0 } else { p })
}

/// Hard cap on the terms of the hypergeometric series in `expected_given_alive`.
const MAX_SERIES_TERMS: usize = 1_000_000;

/// One customer's outlook under the model ([`Model::outlook`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outlook {
    /// P(alive at `T`).
    pub p_alive: f64,
    /// P(no transaction in `(T, T+h]`).
    pub p_churn: f64,
    /// P(no transaction in the horizon) right after the latest transaction (`T = t_x`).
    pub p_churn_after_last: f64,
    /// `((α+κt_x)/(α+κt_x+T−t_x))^(r+κx)` (`((α+t_x)/(α+T))^(r+x)` at κ = 1), on the tidied
    /// summary (`t_x = 0` when `x = 0`): P(no transaction in `(t_x, T]`) for a customer alive
    /// with the rate expected after `t_x`.
    pub p_silence: f64,
}

impl Model {
    /// A model from a variant and parameters (not validated: see [`Params::validate`]).
    pub const fn new(variant: Variant, params: Params) -> Self {
        Model {
            variant,
            params,
            discount: 1.0,
        }
    }

    /// The same model with the customer's transaction history discounted by κ (`discount`,
    /// in (0, 1]) when it is used to predict: a power prior (Ibrahim & Chen 2000) on the rate.
    ///
    /// The textbook model assumes that a customer's rate λ never changes, so x transactions
    /// up to t_x pin λ down (posterior `Gamma(r+x, α+T)`), and a silence since t_x that is long
    /// for that λ is read as death. Real rates drift: buyers come in bursts and slow down.
    /// With κ < 1 the history before t_x counts for κ of its weight, while the silence since
    /// t_x, which is about now, counts in full:
    ///
    /// ```text
    /// λ | history, alive ~ Gamma(r + κx, α + κ·t_x + (T − t_x))
    /// odds(dead) = a/(b+x−1+δ) · ((α + κ·t_x + (T − t_x)) / (α + κ·t_x))^(r+κx)
    /// ```
    ///
    /// κ = 1 gives back the formulas of the module documentation exactly; one-time customers
    /// (x = 0) are unaffected by κ. The population parameters are still estimated by maximum
    /// likelihood of the textbook model ([`fit`]); `churnwatch fit` then picks κ by how well
    /// it predicts a held-out stretch of the history ([`crate::backtest::fit`]). The likelihood
    /// and the population-level curves ([`Model::log_likelihood`], [`Model::pmf`],
    /// [`Model::expected_repeat_transactions`]) do not depend on κ.
    pub const fn with_discount(self, discount: f64) -> Self {
        Model { discount, ..self }
    }

    /// The posterior of λ given alive at `T` (see [`Posterior`]). Inputs must already be
    /// tidied.
    #[inline]
    fn posterior(&self, x: f64, t_x: f64, t: f64) -> Posterior {
        let Params { r, alpha, .. } = self.params;
        // The history's weight that is not counted: 0 for the textbook model, where every
        // product below is exactly 0 and each sum is bit for bit the textbook one.
        let lost = 1.0 - self.discount;
        Posterior {
            shape: r + x - lost * x,
            rate_at_last: alpha + t_x - lost * t_x,
            rate_now: alpha + t - lost * t_x,
        }
    }

    /// `ln[P(dead) / P(alive)]` given the history: `-inf` when the customer is certainly
    /// alive (BG/NBD with `x = 0`). Inputs must already be tidied.
    #[inline]
    fn log_odds_dead(&self, x: f64, t_x: f64, t: f64) -> f64 {
        let post = self.posterior(x, t_x, t);
        log_odds_dead_from(
            self.log_odds_dead_at_last(x),
            post.shape,
            post.log_silence(t - t_x),
        )
    }

    /// The part of [`log_odds_dead`](Model::log_odds_dead) that depends on `x` alone (its
    /// value right after the latest transaction).
    #[inline]
    fn log_odds_dead_at_last(&self, x: f64) -> f64 {
        let Params { a, b, .. } = self.params;
        if self.variant == Variant::BgNbd && x == 0.0 {
            return f64::NEG_INFINITY;
        }
        a.ln() - (b + x - 1.0 + self.variant.delta()).ln()
    }

    /// Log-likelihood of one customer's summary, `ln L(r, α, a, b | x, t_x, T)`.
    ///
    /// With δ = 0 (BG/NBD) or 1 (MBG/NBD):
    ///
    /// ```text
    /// L = Γ(r+x) α^r / Γ(r) · B(a, b+x+δ) / B(a, b) · (α+T)^-(r+x)
    ///     · [1 + 1{x>0 or δ=1} · a/(b+x-1+δ) · ((α+T)/(α+t_x))^(r+x)]
    /// ```
    ///
    /// evaluated as a sum of logs plus `softplus` of the log of the bracketed ratio.
    pub fn log_likelihood(&self, x: f64, t_x: f64, t: f64) -> f64 {
        let (x, t_x, t) = tidy(x, t_x, t);
        let Params { r, alpha, a, b } = self.params;
        let d = self.variant.delta();
        let a1 = ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln();
        let a2 = ln_beta(a, b + x + d) - ln_beta(a, b);
        let a3 = -(r + x) * (alpha + t).ln();
        let textbook = self.with_discount(1.0);
        a1 + a2 + a3 + softplus(textbook.log_odds_dead(x, t_x, t))
    }

    /// Probability that the customer is still alive at `t` (= `T`) given the history.
    ///
    /// `P(alive) = 1 / (1 + 1{x>0 or δ=1} · a/(b+x-1+δ) · ((α+T)/(α+t_x))^(r+x))`: exactly 1 for
    /// `x = 0` under BG/NBD; under MBG/NBD `1 / (1 + a/b · ((α+T)/α)^r)` for `x = 0`, which
    /// decreases with `T`.
    pub fn p_alive(&self, x: f64, t_x: f64, t: f64) -> f64 {
        let (x, t_x, t) = tidy(x, t_x, t);
        sigmoid(-self.log_odds_dead(x, t_x, t))
    }

    /// Probability of **no** transaction in `(T, T + h]` given the history: churnwatch's
    /// `p_churn` for horizon `h`.
    ///
    /// ```text
    /// P(X(T, T+h) = 0 | x, t_x, T) = (1 - P(alive)) + P(alive) · ((α+T)/(α+T+h))^(r+x)
    /// ```
    ///
    /// Derivation: a dead customer makes no transaction. An alive customer can only drop out
    /// right after a transaction, so "no transaction in `(T, T+h]`" is exactly "the Poisson(λ)
    /// process has no event in a window of length `h`", probability `e^(-λh)`. Given alive, the
    /// alive term of the likelihood is `(1-p)^(x+δ) · λ^x e^(-λT)` times the priors, which
    /// factorises: `λ | data, alive ~ Gamma(r+x, α+T)` (and `p ~ Beta(a, b+x+δ)`,
    /// independent). Hence `E[e^(-λh)] = ((α+T)/(α+T+h))^(r+x)` (the Gamma Laplace transform).
    /// Both terms are non-negative, so the result is in `[0, 1]` with no cancellation, and it
    /// increases with `h` (the power decreases) and with the recency gap `T - t_x` at fixed
    /// `T` (P(alive) decreases).
    pub fn p_no_transaction(&self, x: f64, t_x: f64, t: f64, h: f64) -> f64 {
        self.p_alive_and_no_transaction(x, t_x, t, h).1
    }

    /// [`p_alive`](Model::p_alive) and [`p_no_transaction`](Model::p_no_transaction) together,
    /// sharing the posterior odds (what a scorer that reports both needs).
    pub fn p_alive_and_no_transaction(&self, x: f64, t_x: f64, t: f64, h: f64) -> (f64, f64) {
        let (x, t_x, t) = tidy(x, t_x, t);
        let post = self.posterior(x, t_x, t);
        let lod = log_odds_dead_from(
            self.log_odds_dead_at_last(x),
            post.shape,
            post.log_silence(t - t_x),
        );
        alive_and_quiet(lod, &post, h)
    }

    /// What a scorer reads at `T` for horizon `h`, computed together (the terms that depend on
    /// `x` alone once): the same values as [`p_alive_and_no_transaction`] at `T` and right
    /// after the latest transaction (`T = t_x`), and the chance of a silence this long.
    ///
    /// [`p_alive_and_no_transaction`]: Model::p_alive_and_no_transaction
    pub fn outlook(&self, x: f64, t_x: f64, t: f64, h: f64) -> Outlook {
        let (x, t_x, t) = tidy(x, t_x, t);
        let at_last = self.log_odds_dead_at_last(x);
        let now = self.posterior(x, t_x, t);
        // Shared by the odds of dead now and by `p_silence`.
        let log_silence = now.log_silence(t - t_x);
        let (p_alive, p_churn) =
            alive_and_quiet(log_odds_dead_from(at_last, now.shape, log_silence), &now, h);
        // Right after the latest transaction there is no silence: the odds are `at_last`.
        let (_, p_churn_after_last) = alive_and_quiet(at_last, &self.posterior(x, t_x, t_x), h);
        Outlook {
            p_alive,
            p_churn,
            p_churn_after_last,
            p_silence: (-now.shape * log_silence).exp(),
        }
    }

    /// Expected number of transactions in `(T, T + h]` given the history (the conditional
    /// expectation): `P(alive) · E[X(h) | alive]`.
    ///
    /// Given alive, `λ ~ Gamma(r+x, α+T)` and `p ~ Beta(a, b')` with `b' = b+x+δ`, and the
    /// customer's future is a fresh BG process, so (Fader, Hardie & Lee 2005, eq. 10)
    ///
    /// ```text
    /// E[X(h) | alive] = C/(a-1) · [1 - ((α+T)/(α+T+h))^(r+x) · ₂F₁(r+x, b'; C; z)],
    ///     C = a + b' - 1,  z = h/(α+T+h)
    /// ```
    ///
    /// which is evaluated after two Pfaff transformations as
    /// `C·(1 - (1+w)^(1-a))/(a-1) - (1+w)^(1-a) · Σ_{k≥1} (C-A)_k (a)_{k-1} / ((C+1)_{k-1} k!) z^k`
    /// with `w = h/(α+T)` and `A = r+x`: the `1/(a-1)` singularity cancels analytically and the
    /// series has argument `z < 1`. It needs a few dozen terms for `h ≲ α+T` and about
    /// `1/(1-z)` terms for horizons far longer than `α+T` (capped at 10⁶).
    pub fn expected_transactions(&self, x: f64, t_x: f64, t: f64, h: f64) -> f64 {
        let (x, t_x, t) = tidy(x, t_x, t);
        let h = if h < 0.0 { 0.0 } else { h };
        self.p_alive(x, t_x, t) * self.expected_given_alive(x, t_x, t, h)
    }

    /// Unconditional expected number of repeat transactions in `(0, t]` for a new customer,
    /// `E[X(t)]` (the curve of FHL 2005 eq. 9; for MBG/NBD it includes the chance of dropping
    /// out at the first transaction).
    pub fn expected_repeat_transactions(&self, t: f64) -> f64 {
        self.expected_transactions(0.0, 0.0, 0.0, t)
    }

    /// `E[X(h) | alive, x, T]` (see [`Model::expected_transactions`]).
    fn expected_given_alive(&self, x: f64, t_x: f64, t: f64, h: f64) -> f64 {
        if h == 0.0 {
            return 0.0;
        }
        let Params { a, b, .. } = self.params;
        let Posterior {
            shape: big_a,
            rate_now,
            ..
        } = self.posterior(x, t_x, t);
        let bp = b + x + self.variant.delta();
        let c = a + bp - 1.0;
        let w = h / rate_now;
        let z = h / (rate_now + h);
        let u = w.ln_1p();
        let term1 = u * exprel((1.0 - a) * u);
        // Σ s_k with s_1 = (C-A) z, s_{k+1} = s_k (C-A+k)(a+k-1) / ((C+k)(k+1)) z.
        let cma = c - big_a;
        let mut s = cma * z;
        let mut sum = s;
        let mut k = 1.0_f64;
        for _ in 0..MAX_SERIES_TERMS {
            if s == 0.0 {
                break;
            }
            let denom = (c + k) * (k + 1.0);
            s *= (cma + k) * (a + k - 1.0) / denom * z;
            sum += s;
            k += 1.0;
            if s.abs() <= 1e-17 * sum.abs() && k > a + cma.abs() + 2.0 {
                break;
            }
        }
        let scale = ((1.0 - a) * u).exp();
        let e = c * term1 - scale * sum;
        if e.is_finite() {
            e.max(0.0)
        } else {
            e
        }
    }

    /// Unconditional probability of exactly `n` repeat transactions in `(0, t]` for a new
    /// customer, `P(X(t) = n)` (FHL 2005 eq. 8; Batislam et al. 2007 for MBG/NBD):
    ///
    /// ```text
    /// P(X(t)=n) = B(a, b+n+δ)/B(a,b) · NB(n)
    ///           + 1{n>0 or δ=1} · B(a+1, b+n-1+δ)/B(a,b) · P(NB ≥ n)
    /// NB(j) = Γ(r+j)/(Γ(r) j!) · (α/(α+t))^r · (t/(α+t))^j
    /// ```
    ///
    /// where `P(NB ≥ n)` is the regularised incomplete beta `I_{t/(α+t)}(n, r)`.
    pub fn pmf(&self, n: u64, t: f64) -> f64 {
        self.ln_pmf(n, t).exp()
    }

    /// `ln P(X(t) = n)` (see [`Model::pmf`]).
    pub fn ln_pmf(&self, n: u64, t: f64) -> f64 {
        let t = if t < 0.0 { 0.0 } else { t };
        let Params { r, alpha, a, b } = self.params;
        let d = self.variant.delta();
        let nf = n as f64;
        let ln_b = ln_beta(a, b);
        let ln_nb = if n == 0 {
            -r * (t / alpha).ln_1p()
        } else if t == 0.0 {
            f64::NEG_INFINITY
        } else {
            ln_gamma(r + nf) - ln_gamma(r) - ln_gamma(nf + 1.0) - r * (t / alpha).ln_1p()
                + nf * (t.ln() - (alpha + t).ln())
        };
        let first = ln_beta(a, b + nf + d) - ln_b + ln_nb;
        if n == 0 && self.variant == Variant::BgNbd {
            return if first > 0.0 { 0.0 } else { first };
        }
        let survival = if n == 0 {
            1.0
        } else if t == 0.0 {
            0.0
        } else {
            beta_reg(nf, r, t / (alpha + t))
        };
        let second = ln_beta(a + 1.0, b + nf - 1.0 + d) - ln_b + survival.ln();
        let lp = log_add_exp(first, second);
        // ln B rounding can leave ln P(X(0) = 0) a hair above 0.
        if lp > 0.0 {
            0.0
        } else {
            lp
        }
    }

    /// `P(X(t) = n)` for `n = 0..len`, sharing the work (used by the fit diagnostics).
    fn pmf_table(&self, t: f64, out: &mut [f64]) {
        let Params { r, alpha, a, b } = self.params;
        let d = self.variant.delta();
        let ln_b = ln_beta(a, b);
        let ln_z = if t > 0.0 {
            t.ln() - (alpha + t).ln()
        } else {
            f64::NEG_INFINITY
        };
        let mut ln_nb = -r * (t / alpha).ln_1p();
        let mut survival = 1.0_f64; // P(NB >= n)
        for (n, slot) in out.iter_mut().enumerate() {
            let nf = n as f64;
            if n > 0 {
                survival = (survival - ln_nb.exp()).max(0.0);
                ln_nb += ((r + nf - 1.0) / nf).ln() + ln_z;
            }
            let first = (ln_beta(a, b + nf + d) - ln_b + ln_nb).exp();
            let second = if n == 0 && self.variant == Variant::BgNbd {
                0.0
            } else {
                (ln_beta(a + 1.0, b + nf - 1.0 + d) - ln_b).exp() * survival
            };
            *slot = first + second;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Fitting
// ---------------------------------------------------------------------------------------

/// Options for [`fit`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FitOptions {
    /// Maximum Nelder-Mead iterations per run.
    pub max_iters: u64,
    /// Nelder-Mead stops when the standard deviation of the simplex's costs (mean negative
    /// log-likelihood per customer) falls below this.
    pub sd_tolerance: f64,
    /// How many of the best-scoring start values get a full Nelder-Mead run.
    pub starts: usize,
    /// How many times the best optimum is polished by restarting Nelder-Mead from it with a
    /// fresh simplex; the fit is converged once a restart no longer improves it.
    pub max_restarts: usize,
    /// An extra start value (for example the current priors), always run.
    pub initial: Option<Params>,
    /// Return [`FitError::NoConvergence`] or [`FitError::AtBound`] (carrying the best report)
    /// instead of a report with `converged = false` or a non-empty `at_bound`.
    pub require_convergence: bool,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            max_iters: 4000,
            sd_tolerance: 1e-11,
            starts: 2,
            max_restarts: 4,
            initial: None,
            require_convergence: true,
        }
    }
}

/// Errors from [`fit`].
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    /// No customers (or only zero weights).
    #[error("no customers to fit")]
    EmptyData,
    /// A summary is not finite, negative, or has `t_x > T`.
    #[error("customer #{index}: {field} = {value} is invalid ({problem})")]
    InvalidSummary {
        /// Position in the input slice.
        index: usize,
        /// `x`, `t_x`, `t` or `weight`.
        field: &'static str,
        /// The offending value.
        value: f64,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// Every customer has `T = 0`: the data say nothing about rates.
    #[error("every customer has T = 0: nothing to fit")]
    NoObservationTime,
    /// The log-likelihood is not finite at any start value or at the optimum.
    #[error("the log-likelihood is not finite ({0})")]
    NonFinite(String),
    /// Some parameters ran to the edge of the search space (below about 1.5e-8 or above
    /// about 6.6e7): the maximum likelihood is at infinity and the data do not identify the
    /// model (for example nobody repeated, or every customer is still active). The report
    /// is attached.
    #[error(
        "{} fit: {} ran to the search bound; the data do not identify the model",
        .0.variant, .0.at_bound.join(", ")
    )]
    AtBound(Box<FitReport>),
    /// The optimizer did not converge; the best report found is attached.
    #[error(
        "{} fit did not converge after {} iterations (best log-likelihood {:.4})",
        .0.variant, .0.iterations, .0.log_likelihood
    )]
    NoConvergence(Box<FitReport>),
    /// argmin reported an error.
    #[error("optimizer error: {0}")]
    Optimizer(String),
}

/// One cell of the frequency diagnostic: customers with `x = n` (or `x ≥ n` for the last).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrequencyRow {
    /// Number of repeat transactions `n`.
    pub n: u32,
    /// `true` for the open cell `n+` (here `7+`).
    pub or_more: bool,
    /// Number of customers observed with that many repeat transactions.
    pub actual: u64,
    /// Number expected by the fitted model, `Σ_i P(X(T_i) = n)`.
    pub expected: f64,
}

/// The result of [`fit`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FitReport {
    /// The fitted variant.
    pub variant: Variant,
    /// Maximum-likelihood parameters.
    pub params: Params,
    /// Total log-likelihood at `params`.
    pub log_likelihood: f64,
    /// Customers fitted (sum of weights).
    pub n_customers: u64,
    /// Distinct `(x, t_x, T)` rows the likelihood was evaluated on.
    pub n_distinct: usize,
    /// Nelder-Mead iterations over all runs.
    pub iterations: u64,
    /// Log-likelihood evaluations over all runs (including start values and the Hessian).
    pub evaluations: u64,
    /// Whether the optimum was confirmed (a restart from it did not improve it).
    pub converged: bool,
    /// Parameters that ran to the edge of the search space (see [`FitError::AtBound`]);
    /// empty for a proper interior optimum.
    pub at_bound: Vec<String>,
    /// Asymptotic standard errors of the natural parameters, from the inverse of a
    /// numerical Hessian of the negative log-likelihood in log-parameters (delta method:
    /// `se(θ) = θ · se(ln θ)`); `None` when that Hessian is not positive-definite.
    pub std_errors: Option<Params>,
    /// Actual vs expected customers with `x = 0, 1, …, 6` and `7+` repeat transactions.
    pub frequency: Vec<FrequencyRow>,
    /// Pearson chi-square of `frequency`, `Σ (actual - expected)² / expected`.
    pub chi_square: f64,
    /// Degrees of freedom of `chi_square`: cells - 1 - 4 parameters.
    pub chi_square_dof: u32,
    /// Upper-tail p-value of `chi_square` (approximate: small expected counts in the tail
    /// cells make it optimistic).
    pub chi_square_p_value: f64,
}

impl FitReport {
    /// The fitted model.
    pub fn model(&self) -> Model {
        Model::new(self.variant, self.params)
    }
}

impl fmt::Display for FitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} fit: {} customers ({} distinct summaries), {} after {} iterations",
            self.variant,
            self.n_customers,
            self.n_distinct,
            if self.converged {
                "converged"
            } else {
                "NOT converged"
            },
            self.iterations
        )?;
        let se = self.std_errors.map(|s| s.named());
        for (i, (name, value)) in self.params.named().into_iter().enumerate() {
            match se {
                Some(se) => writeln!(f, "  {name:<6}= {value:>10.4} ± {:.4}", se[i].1)?,
                None => writeln!(f, "  {name:<6}= {value:>10.4} ± n/a")?,
            }
        }
        if !self.at_bound.is_empty() {
            writeln!(
                f,
                "  WARNING: {} ran to the search bound (not identified by the data)",
                self.at_bound.join(", ")
            )?;
        }
        writeln!(f, "  log-likelihood = {:.4}", self.log_likelihood)?;
        writeln!(f, "  repeat transactions    actual    expected")?;
        for row in &self.frequency {
            let label = if row.or_more {
                format!("{}+", row.n)
            } else {
                row.n.to_string()
            };
            writeln!(f, "  {label:>19} {:>9} {:>11.1}", row.actual, row.expected)?;
        }
        write!(
            f,
            "  chi-square = {:.2} ({} dof, p = {:.3})",
            self.chi_square, self.chi_square_dof, self.chi_square_p_value
        )
    }
}

/// Frequency cells `0..=6` and `7+`.
const FREQ_CELLS: usize = 8;
/// Log-parameters are kept within ±this (parameters within about [2e-9, 5e8]).
const LOG_BOUND: f64 = 20.0;
/// A fitted log-parameter beyond ±this has run to the bound.
const AT_BOUND: f64 = LOG_BOUND - 2.0;
/// Cost returned outside the bounds or where the likelihood is not finite.
const PENALTY: f64 = 1e100;

/// One distinct `(x, t_x, T)` row whose softplus term must be evaluated per row.
#[derive(Clone, Copy, Debug)]
struct Row {
    ix: u32,
    it: u32,
    itx: u32,
    w: f64,
}

/// The data reduced to what the likelihood needs, with the `x`- and time-only terms
/// separated so that they cost O(distinct x + distinct times) per evaluation.
#[derive(Debug)]
struct Prepared {
    variant: Variant,
    /// Distinct `x` values and the number of customers with each.
    xs: Vec<f64>,
    w_x: Vec<f64>,
    /// Distinct time values (every `T` and `t_x`), customers with `T` equal to each, and the
    /// sum of their `x`.
    times: Vec<f64>,
    w_t: Vec<f64>,
    wx_t: Vec<f64>,
    rows: Vec<Row>,
    n_customers: u64,
    n_distinct: usize,
    actual: [u64; FREQ_CELLS],
}

fn index_of(sorted: &[f64], v: f64) -> u32 {
    sorted
        .binary_search_by(|p| p.total_cmp(&v))
        .expect("value was collected") as u32
}

impl Prepared {
    fn new(data: &[(Summary, u64)], variant: Variant) -> Result<Self, FitError> {
        let mut groups: FxHashMap<(u64, u64, u64), u64> = FxHashMap::default();
        let mut n_customers = 0u64;
        let mut actual = [0u64; FREQ_CELLS];
        let mut total_t = 0.0;
        for (index, (s, w)) in data.iter().enumerate() {
            let bad = |field, value, problem| FitError::InvalidSummary {
                index,
                field,
                value,
                problem,
            };
            for (field, value) in [("x", s.x), ("t_x", s.t_x), ("t", s.t)] {
                if !value.is_finite() {
                    return Err(bad(field, value, "not finite"));
                }
                if value < 0.0 {
                    return Err(bad(field, value, "negative"));
                }
            }
            if s.t_x > s.t {
                return Err(bad("t_x", s.t_x, "after T"));
            }
            if *w == 0 {
                continue;
            }
            // +0.0 normalises -0.0; t_x carries no information when x = 0.
            let x = s.x + 0.0;
            let t = s.t + 0.0;
            let t_x = if x == 0.0 { 0.0 } else { s.t_x + 0.0 };
            *groups
                .entry((x.to_bits(), t_x.to_bits(), t.to_bits()))
                .or_insert(0) += w;
            n_customers += w;
            total_t += t * *w as f64;
            let cell = (x.round() as usize).min(FREQ_CELLS - 1);
            actual[cell] += w;
        }
        if n_customers == 0 {
            return Err(FitError::EmptyData);
        }
        if total_t <= 0.0 {
            return Err(FitError::NoObservationTime);
        }
        let mut xs: Vec<f64> = Vec::new();
        let mut times: Vec<f64> = Vec::new();
        for &(x, t_x, t) in groups.keys() {
            xs.push(f64::from_bits(x));
            times.push(f64::from_bits(t_x));
            times.push(f64::from_bits(t));
        }
        for v in [&mut xs, &mut times] {
            v.sort_by(f64::total_cmp);
            v.dedup();
        }
        let mut w_x = vec![0.0; xs.len()];
        let mut w_t = vec![0.0; times.len()];
        let mut wx_t = vec![0.0; times.len()];
        let mut rows = Vec::with_capacity(groups.len());
        // Sorted rows make the per-row loop's memory access more regular.
        let mut keys: Vec<_> = groups.into_iter().collect();
        keys.sort_unstable_by_key(|&(k, _)| k);
        let n_distinct = keys.len();
        for ((x, t_x, t), w) in keys {
            let (x, t_x, t) = (f64::from_bits(x), f64::from_bits(t_x), f64::from_bits(t));
            let w = w as f64;
            let ix = index_of(&xs, x);
            let it = index_of(&times, t);
            let itx = index_of(&times, t_x);
            w_x[ix as usize] += w;
            w_t[it as usize] += w;
            wx_t[it as usize] += w * x;
            if variant == Variant::ModifiedBgNbd || x > 0.0 {
                rows.push(Row { ix, it, itx, w });
            }
        }
        Ok(Prepared {
            variant,
            xs,
            w_x,
            times,
            w_t,
            wx_t,
            rows,
            n_customers,
            n_distinct,
            actual,
        })
    }

    /// Total log-likelihood `Σ_i ln L_i`.
    fn log_likelihood(&self, p: &Params) -> f64 {
        let Params { r, alpha, a, b } = *p;
        let d = self.variant.delta();
        // x-only terms.
        let common = -ln_gamma(r) + r * alpha.ln() + ln_gamma(a + b) - ln_gamma(b);
        let ln_a = a.ln();
        let mut sep = 0.0;
        let mut c4 = Vec::with_capacity(self.xs.len());
        let mut rx = Vec::with_capacity(self.xs.len());
        for (&x, &w) in self.xs.iter().zip(&self.w_x) {
            let g = ln_gamma(r + x) + ln_gamma(b + x + d) - ln_gamma(a + b + x + d);
            sep += w * (common + g);
            c4.push(ln_a - (b + x - 1.0 + d).ln());
            rx.push(r + x);
        }
        // time-only terms, -(r + x) ln(α + T), caching ln(α + s) for every distinct time s.
        let mut ln_at = Vec::with_capacity(self.times.len());
        for (i, &s) in self.times.iter().enumerate() {
            let l = (alpha + s).ln();
            ln_at.push(l);
            sep -= (r * self.w_t[i] + self.wx_t[i]) * l;
        }
        // per-row softplus of the log odds of being dead.
        let mut soft = 0.0;
        for row in &self.rows {
            let ix = row.ix as usize;
            let lod = c4[ix] + rx[ix] * (ln_at[row.it as usize] - ln_at[row.itx as usize]);
            soft += row.w * softplus(lod);
        }
        sep + soft
    }

    /// The optimizer's cost: mean negative log-likelihood per customer at `exp(phi)`.
    fn cost(&self, phi: &[f64]) -> f64 {
        if phi.iter().any(|v| !v.is_finite() || v.abs() > LOG_BOUND) {
            return PENALTY;
        }
        let ll = self.log_likelihood(&Params::from_log(phi));
        let c = -ll / self.n_customers as f64;
        if c.is_finite() {
            c
        } else {
            PENALTY
        }
    }
}

struct Objective<'a> {
    prep: &'a Prepared,
    evaluations: &'a Cell<u64>,
}

impl CostFunction for Objective<'_> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, phi: &Self::Param) -> Result<f64, ArgminError> {
        self.evaluations.set(self.evaluations.get() + 1);
        Ok(self.prep.cost(phi))
    }
}

/// Outcome of one Nelder-Mead run.
struct Run {
    phi: Vec<f64>,
    cost: f64,
    iterations: u64,
    evaluations: u64,
    converged: bool,
}

fn nelder_mead(
    prep: &Prepared,
    start: &[f64],
    step: f64,
    opts: &FitOptions,
) -> Result<Run, FitError> {
    let mut simplex = vec![start.to_vec()];
    for i in 0..start.len() {
        let mut v = start.to_vec();
        v[i] += step;
        simplex.push(v);
    }
    let solver = NelderMead::new(simplex)
        .with_sd_tolerance(opts.sd_tolerance)
        .map_err(|e| FitError::Optimizer(e.to_string()))?;
    let evaluations = Cell::new(0);
    let objective = Objective {
        prep,
        evaluations: &evaluations,
    };
    let res = Executor::new(objective, solver)
        .configure(|s| s.max_iters(opts.max_iters))
        .run()
        .map_err(|e| FitError::Optimizer(e.to_string()))?;
    let state = res.state();
    let phi = state
        .get_best_param()
        .cloned()
        .unwrap_or_else(|| start.to_vec());
    Ok(Run {
        cost: prep.cost(&phi),
        phi,
        iterations: state.get_iter(),
        evaluations: evaluations.get(),
        converged: matches!(
            state.get_termination_reason(),
            Some(TerminationReason::SolverConverged)
        ),
    })
}

/// Start values: a small grid scaled by the data's mean repeat rate.
fn start_values(prep: &Prepared) -> Vec<Params> {
    let total_t: f64 = prep.times.iter().zip(&prep.w_t).map(|(t, w)| t * w).sum();
    let total_x: f64 = prep.wx_t.iter().sum();
    // Observed repeat transactions per time unit; a floor keeps alpha finite when nobody
    // repeated.
    let rate = (total_x / total_t).max(0.05 * prep.n_customers as f64 / total_t);
    let mut out = Vec::new();
    for r in [0.25, 1.0, 4.0] {
        for inflation in [1.0, 3.0] {
            for (a, b) in [(0.5, 2.0), (1.0, 1.0), (1.5, 6.0)] {
                out.push(Params::new(r, r / (rate * inflation), a, b));
            }
        }
    }
    out
}

/// Central-difference Hessian of `f` at `phi` with step `h`.
#[allow(clippy::needless_range_loop)] // dense matrix algebra reads best indexed
fn hessian(f: impl Fn(&[f64]) -> f64, phi: &[f64; 4], h: f64) -> [[f64; 4]; 4] {
    let at = |di: &[(usize, f64)]| {
        let mut v = *phi;
        for &(i, s) in di {
            v[i] += s;
        }
        f(&v)
    };
    let f0 = f(phi);
    let mut hm = [[0.0; 4]; 4];
    for i in 0..4 {
        hm[i][i] = (at(&[(i, h)]) - 2.0 * f0 + at(&[(i, -h)])) / (h * h);
        for j in 0..i {
            let v = (at(&[(i, h), (j, h)]) - at(&[(i, h), (j, -h)]) - at(&[(i, -h), (j, h)])
                + at(&[(i, -h), (j, -h)]))
                / (4.0 * h * h);
            hm[i][j] = v;
            hm[j][i] = v;
        }
    }
    hm
}

/// Inverse of a symmetric positive-definite 4×4 matrix via Cholesky; `None` if not PD.
#[allow(clippy::needless_range_loop)] // dense matrix algebra reads best indexed
fn spd_inverse(m: &[[f64; 4]; 4]) -> Option<[[f64; 4]; 4]> {
    let n = 4;
    let mut l = [[0.0; 4]; 4];
    for i in 0..n {
        for j in 0..=i {
            let mut s = m[i][j];
            for k in 0..j {
                s -= l[i][k] * l[j][k];
            }
            if i == j {
                if !(s > 0.0 && s.is_finite()) {
                    return None;
                }
                l[i][i] = s.sqrt();
            } else {
                l[i][j] = s / l[j][j];
            }
        }
    }
    // Solve L Lᵀ X = I column by column.
    let mut inv = [[0.0; 4]; 4];
    for col in 0..n {
        let mut y = [0.0; 4];
        for i in 0..n {
            let mut s = if i == col { 1.0 } else { 0.0 };
            for k in 0..i {
                s -= l[i][k] * y[k];
            }
            y[i] = s / l[i][i];
        }
        for i in (0..n).rev() {
            let mut s = y[i];
            for k in i + 1..n {
                s -= l[k][i] * inv[k][col];
            }
            inv[i][col] = s / l[i][i];
        }
    }
    Some(inv)
}

/// Fits `variant` by maximum likelihood to one summary per customer.
///
/// Identical `(x, t_x, T)` rows are aggregated first (with daily data most customers share a
/// row with others). See [`fit_weighted`] for the procedure.
pub fn fit(data: &[Summary], variant: Variant, opts: &FitOptions) -> Result<FitReport, FitError> {
    let weighted: Vec<(Summary, u64)> = data.iter().map(|s| (*s, 1)).collect();
    fit_weighted(&weighted, variant, opts)
}

/// Fits `variant` by maximum likelihood to summaries with customer counts.
///
/// The summed log-likelihood is maximised over the log-parameters (which keeps every
/// parameter positive) with argmin's Nelder-Mead: a grid of 18 start values scaled by the
/// observed repeat rate (plus `opts.initial`) is scored, the best `opts.starts` get a full run,
/// and the best optimum is restarted with a fresh simplex until a restart no longer improves
/// it (at most `opts.max_restarts` times). Standard errors come from a numerical Hessian at
/// the optimum; the frequency diagnostics compare the observed distribution of `x` with
/// `Σ_i P(X(T_i) = n)`.
pub fn fit_weighted(
    data: &[(Summary, u64)],
    variant: Variant,
    opts: &FitOptions,
) -> Result<FitReport, FitError> {
    let prep = Prepared::new(data, variant)?;
    let mut evaluations = 0u64;
    let mut iterations = 0u64;

    // Score the start values.
    let mut starts: Vec<(f64, [f64; 4])> = start_values(&prep)
        .into_iter()
        .map(|p| {
            let phi = p.to_log();
            (prep.cost(&phi), phi)
        })
        .collect();
    evaluations += starts.len() as u64;
    starts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut chosen: Vec<[f64; 4]> = starts
        .iter()
        .filter(|(c, _)| *c < PENALTY)
        .take(opts.starts.max(1))
        .map(|(_, phi)| *phi)
        .collect();
    if let Some(p) = opts.initial {
        if p.validate().is_ok() {
            chosen.push(p.to_log());
        }
    }
    if chosen.is_empty() {
        return Err(FitError::NonFinite("at every start value".to_string()));
    }

    let mut best: Option<Run> = None;
    for phi in &chosen {
        let run = nelder_mead(&prep, phi, 0.5, opts)?;
        iterations += run.iterations;
        evaluations += run.evaluations;
        if best.as_ref().is_none_or(|b| run.cost < b.cost) {
            best = Some(run);
        }
    }
    let mut best = best.expect("at least one run");
    let names = ["r", "alpha", "a", "b"];
    let at_bound = |phi: &[f64]| -> Vec<String> {
        (0..4)
            .filter(|&i| phi[i].abs() > AT_BOUND)
            .map(|i| names[i].to_string())
            .collect()
    };

    // Polish: restart from the optimum until a restart no longer improves it (pointless,
    // and slow, when the optimum is at infinity).
    let mut converged = false;
    let restarts = if at_bound(&best.phi).is_empty() {
        opts.max_restarts
    } else {
        0
    };
    for _ in 0..restarts {
        let run = nelder_mead(&prep, &best.phi, 0.05, opts)?;
        iterations += run.iterations;
        evaluations += run.evaluations;
        let improvement = best.cost - run.cost;
        let settled = run.converged && improvement <= 10.0 * opts.sd_tolerance;
        if run.cost < best.cost {
            best = run;
        }
        if settled {
            converged = true;
            break;
        }
    }

    if best.cost >= PENALTY {
        return Err(FitError::NonFinite("at the optimum".to_string()));
    }
    let params = Params::from_log(&best.phi);
    let log_likelihood = prep.log_likelihood(&params);
    if !log_likelihood.is_finite() {
        return Err(FitError::NonFinite("at the optimum".to_string()));
    }

    // Standard errors: Hessian of the total negative log-likelihood in log-parameters.
    let phi4 = [best.phi[0], best.phi[1], best.phi[2], best.phi[3]];
    let nll = |phi: &[f64]| -prep.log_likelihood(&Params::from_log(phi));
    let h = hessian(nll, &phi4, 1e-3);
    evaluations += 33;
    let std_errors = spd_inverse(&h).and_then(|cov| {
        let se = |i: usize| {
            let v = cov[i][i];
            (v > 0.0 && v.is_finite()).then(|| phi4[i].exp() * v.sqrt())
        };
        Some(Params::new(se(0)?, se(1)?, se(2)?, se(3)?))
    });

    // Frequency diagnostics.
    let model = Model::new(variant, params);
    let mut expected = [0.0; FREQ_CELLS];
    let mut table = [0.0; FREQ_CELLS - 1];
    for (i, &t) in prep.times.iter().enumerate() {
        let w = prep.w_t[i];
        if w == 0.0 {
            continue;
        }
        model.pmf_table(t, &mut table);
        let mut total = 0.0;
        for (n, p) in table.iter().enumerate() {
            expected[n] += w * p;
            total += p;
        }
        expected[FREQ_CELLS - 1] += w * (1.0 - total).max(0.0);
    }
    let frequency: Vec<FrequencyRow> = (0..FREQ_CELLS)
        .map(|n| FrequencyRow {
            n: n as u32,
            or_more: n == FREQ_CELLS - 1,
            actual: prep.actual[n],
            expected: expected[n],
        })
        .collect();
    let chi_square: f64 = frequency
        .iter()
        .filter(|row| row.expected > 0.0)
        .map(|row| (row.actual as f64 - row.expected).powi(2) / row.expected)
        .sum();
    let chi_square_dof = (FREQ_CELLS - 1 - 4) as u32;
    let chi_square_p_value = ChiSquared::new(f64::from(chi_square_dof))
        .map(|d| d.sf(chi_square))
        .unwrap_or(f64::NAN);

    let at_bound = at_bound(&best.phi);
    let report = FitReport {
        variant,
        params,
        log_likelihood,
        n_customers: prep.n_customers,
        n_distinct: prep.n_distinct,
        iterations,
        evaluations,
        converged,
        at_bound,
        std_errors,
        frequency,
        chi_square,
        chi_square_dof,
        chi_square_p_value,
    };
    if opts.require_convergence {
        if !report.at_bound.is_empty() {
            return Err(FitError::AtBound(Box::new(report)));
        }
        if !converged {
            return Err(FitError::NoConvergence(Box::new(report)));
        }
    }
    Ok(report)
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    const CDNOW_BG: Params = Params::new(0.243, 4.414, 0.793, 2.426);

    #[test]
    fn helpers_are_stable() {
        assert_eq!(softplus(f64::NEG_INFINITY), 0.0);
        assert!((softplus(800.0) - 800.0).abs() < 1e-12);
        assert!((softplus(0.0) - 2f64.ln()).abs() < 1e-15);
        assert_eq!(sigmoid(f64::NEG_INFINITY), 0.0);
        assert_eq!(sigmoid(f64::INFINITY), 1.0);
        assert!((sigmoid(-800.0)).abs() < 1e-300);
        assert!((exprel(0.0) - 1.0).abs() < 1e-15);
        assert!((exprel(1e-3) - (1e-3f64).exp_m1() / 1e-3).abs() < 1e-12);
        assert_eq!(
            log_add_exp(f64::NEG_INFINITY, f64::NEG_INFINITY),
            f64::NEG_INFINITY
        );
        assert!((log_add_exp(0.0, 0.0) - 2f64.ln()).abs() < 1e-15);
    }

    #[test]
    fn variant_parses_and_serialises() {
        assert_eq!("mbgnbd".parse::<Variant>().unwrap(), Variant::ModifiedBgNbd);
        assert_eq!("BG/NBD".parse::<Variant>().unwrap(), Variant::BgNbd);
        assert!("pareto".parse::<Variant>().is_err());
        assert_eq!(Variant::default(), Variant::ModifiedBgNbd);
        assert_eq!(serde_json::to_string(&Variant::BgNbd).unwrap(), "\"bgnbd\"");
    }

    #[test]
    fn params_validate_names_the_parameter() {
        assert!(CDNOW_BG.validate().is_ok());
        let err = Params::new(1.0, f64::NAN, 1.0, 1.0).validate().unwrap_err();
        assert_eq!(err.name, "alpha");
        let err = Params::new(1.0, 1.0, 1.0, -2.0).validate().unwrap_err();
        assert_eq!(err.name, "b");
        assert!(err.to_string().contains("-2"));
    }

    #[test]
    fn pmf_table_matches_pmf() {
        for variant in [Variant::BgNbd, Variant::ModifiedBgNbd] {
            let m = Model::new(variant, CDNOW_BG);
            for t in [0.0, 0.5, 10.0, 38.86, 200.0] {
                let mut table = [0.0; 7];
                m.pmf_table(t, &mut table);
                for (n, p) in table.iter().enumerate() {
                    let q = m.pmf(n as u64, t);
                    assert!((p - q).abs() < 1e-12, "{variant} t={t} n={n}: {p} vs {q}");
                }
            }
        }
    }

    #[test]
    #[allow(clippy::needless_range_loop)]
    fn spd_inverse_inverts() {
        let m = [
            [4.0, 1.0, 0.5, 0.0],
            [1.0, 3.0, 0.2, 0.1],
            [0.5, 0.2, 2.0, 0.3],
            [0.0, 0.1, 0.3, 1.0],
        ];
        let inv = spd_inverse(&m).unwrap();
        for i in 0..4 {
            for j in 0..4 {
                let s: f64 = (0..4).map(|k| m[i][k] * inv[k][j]).sum();
                assert!((s - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        let mut not_pd = m;
        not_pd[3][3] = -1.0;
        assert!(spd_inverse(&not_pd).is_none());
    }

    #[test]
    fn aggregated_likelihood_equals_sum_of_customers() {
        let data = [
            Summary::new(0.0, 0.0, 30.0),
            Summary::new(0.0, 0.0, 30.0),
            Summary::new(2.0, 10.5, 30.0),
            Summary::new(5.0, 29.0, 31.0),
            Summary::new(5.0, 29.0, 31.0),
            Summary::new(40.0, 12.0, 100.0),
        ];
        for variant in [Variant::BgNbd, Variant::ModifiedBgNbd] {
            let weighted: Vec<_> = data.iter().map(|s| (*s, 1)).collect();
            let prep = Prepared::new(&weighted, variant).unwrap();
            assert_eq!(prep.n_distinct, 4);
            let m = Model::new(variant, CDNOW_BG);
            let direct: f64 = data.iter().map(|s| m.log_likelihood(s.x, s.t_x, s.t)).sum();
            let agg = prep.log_likelihood(&CDNOW_BG);
            assert!((direct - agg).abs() < 1e-9, "{variant}: {direct} vs {agg}");
        }
    }

    #[test]
    fn invalid_data_is_rejected_with_the_field() {
        let opts = FitOptions::default();
        assert!(matches!(
            fit(&[], Variant::BgNbd, &opts),
            Err(FitError::EmptyData)
        ));
        let err = fit(
            &[
                Summary::new(1.0, 2.0, 10.0),
                Summary::new(1.0, f64::NAN, 10.0),
            ],
            Variant::BgNbd,
            &opts,
        )
        .unwrap_err();
        match err {
            FitError::InvalidSummary { index, field, .. } => {
                assert_eq!((index, field), (1, "t_x"));
            }
            other => panic!("unexpected {other}"),
        }
        assert!(matches!(
            fit(&[Summary::new(1.0, 12.0, 10.0)], Variant::BgNbd, &opts),
            Err(FitError::InvalidSummary { field: "t_x", .. })
        ));
        assert!(matches!(
            fit(&[Summary::new(0.0, 0.0, 0.0)], Variant::BgNbd, &opts),
            Err(FitError::NoObservationTime)
        ));
    }
}
