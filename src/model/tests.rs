//! Tests of the BG/NBD family against published CDNOW results, model properties, numerical
//! robustness, parameter recovery from simulated data, and fit speed.

use std::time::Instant;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use rand_distr::{Beta, Distribution, Exp1, Gamma};

use super::*;

/// FHL (2005) BG/NBD estimates on CDNOW (weeks).
const FHL_BG: Params = Params::new(0.243, 4.414, 0.793, 2.426);
/// BTYDplus MBG/NBD estimates on CDNOW (weeks), as used by lifetimes' tests.
const BTYDPLUS_MBG: Params = Params::new(0.525, 6.183, 0.891, 1.614);
/// Both variants at their published CDNOW estimates.
const PUBLISHED: [(Variant, Params); 2] = [
    (Variant::BgNbd, FHL_BG),
    (Variant::ModifiedBgNbd, BTYDPLUS_MBG),
];

/// The CDNOW sample summary (2357 customers, weeks), from lifetimes' `cdnow_customers.csv`.
fn cdnow() -> Vec<Summary> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/cdnow_customers.csv"
    );
    let text = std::fs::read_to_string(path).expect("CDNOW fixture");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("id,x,t_x,T"));
    lines
        .map(|line| {
            let f: Vec<f64> = line.split(',').map(|v| v.parse().unwrap()).collect();
            Summary::new(f[1], f[2], f[3])
        })
        .collect()
}

fn assert_close(name: &str, actual: f64, expected: f64, tol: f64) {
    assert!(
        (actual - expected).abs() <= tol,
        "{name}: got {actual}, expected {expected} ± {tol}"
    );
}

#[test]
fn cdnow_fixture_is_complete() {
    let data = cdnow();
    assert_eq!(data.len(), 2357);
    let repeaters = data.iter().filter(|s| s.x > 0.0).count();
    assert_eq!(2357 - repeaters, 1411);
    assert_eq!(data.iter().map(|s| s.x).sum::<f64>(), 2457.0);
}

#[test]
fn cdnow_bgnbd_reproduces_fader_hardie_lee_2005() {
    let data = cdnow();
    let started = Instant::now();
    let report = fit(&data, Variant::BgNbd, &FitOptions::default()).unwrap();
    eprintln!("{report}\n(fit in {:?})", started.elapsed());
    assert!(report.converged);
    assert_eq!(report.n_customers, 2357);
    let p = report.params;
    // Published to 3 decimals.
    assert_close("r", p.r, FHL_BG.r, 0.0015);
    assert_close("alpha", p.alpha, FHL_BG.alpha, 0.0015);
    assert_close("a", p.a, FHL_BG.a, 0.0015);
    assert_close("b", p.b, FHL_BG.b, 0.0015);
    assert_close("LL", report.log_likelihood, -9582.4, 0.05);
    // The published parameters are (up to rounding) the same optimum.
    let at_published: f64 = data
        .iter()
        .map(|s| Model::new(Variant::BgNbd, FHL_BG).log_likelihood(s.x, s.t_x, s.t))
        .sum();
    assert!(at_published <= report.log_likelihood + 1e-6);
    assert_close("LL at published", at_published, -9582.4, 0.05);
    // Standard errors exist and are sensible (a few percent of the estimates).
    let se = report.std_errors.expect("positive-definite Hessian");
    for ((name, v), (_, s)) in p.named().into_iter().zip(se.named()) {
        assert!(s > 0.0 && s < 0.5 * v, "se({name}) = {s} for {v}");
    }
    // Frequency diagnostic: observed counts are the data's; expected sum to the customers.
    assert_eq!(report.frequency.len(), 8);
    assert_eq!(report.frequency[0].actual, 1411);
    assert!(report.frequency[7].or_more);
    let total: f64 = report.frequency.iter().map(|r| r.expected).sum();
    assert_close("expected total", total, 2357.0, 1e-6);
    assert!(report.chi_square.is_finite() && report.chi_square >= 0.0);
    let text = report.to_string();
    assert!(text.contains("BG/NBD") && text.contains("7+") && text.contains('±'));
}

#[test]
fn cdnow_mbgnbd_matches_btydplus_and_lifetimes() {
    let data = cdnow();
    let started = Instant::now();
    let report = fit(&data, Variant::ModifiedBgNbd, &FitOptions::default()).unwrap();
    eprintln!("{report}\n(fit in {:?})", started.elapsed());
    assert!(report.converged);
    let p = report.params;
    assert_close("r", p.r, BTYDPLUS_MBG.r, 0.0015);
    assert_close("alpha", p.alpha, BTYDPLUS_MBG.alpha, 0.0015);
    assert_close("a", p.a, BTYDPLUS_MBG.a, 0.0015);
    assert_close("b", p.b, BTYDPLUS_MBG.b, 0.0015);
    let m = report.model();
    // lifetimes: conditional expectation close to Hardie's BG/NBD value (1.226), ± 0.05.
    let e = m.expected_transactions(2.0, 30.43, 38.86, 39.0);
    assert_close("E[X(39) | 2, 30.43, 38.86]", e, 1.226, 0.05);
    // lifetimes: unconditional curve within 5 % of Hardie's BG/NBD values.
    for (t, expected) in [
        (0.1429, 0.0078),
        (1.0, 0.0532),
        (3.0, 0.1506),
        (31.8571, 1.0405),
        (32.0, 1.0437),
        (78.0, 1.8576),
    ] {
        let actual = m.expected_repeat_transactions(t);
        assert!(
            (actual - expected).abs() <= 0.05 * expected,
            "E[X({t})] = {actual}, expected {expected} ± 5 %"
        );
    }
    // lifetimes: a customer with no repeat purchase is not certainly alive.
    assert!(m.p_alive(0.0, 1.0, 1.0) < 1.0);
    for i in (0..100).step_by(10) {
        for j in (0..100).step_by(10) {
            for k in (j..100).step_by(10) {
                let pa = m.p_alive(i as f64, j as f64, k as f64);
                assert!((0.0..=1.0).contains(&pa));
            }
        }
    }
    // With its extra drop-out chance MBG/NBD fits CDNOW slightly better than BG/NBD.
    let bg = fit(&data, Variant::BgNbd, &FitOptions::default()).unwrap();
    assert!(report.log_likelihood > bg.log_likelihood);
}

#[test]
fn published_bgnbd_quantities_match_hardie_and_btyd() {
    let m = Model::new(Variant::BgNbd, FHL_BG);
    // Hardie's spreadsheet: conditional expectation for customer 1 over 39 weeks.
    assert_close(
        "E[X(39) | 2, 30.43, 38.86]",
        m.expected_transactions(2.0, 30.43, 38.86, 39.0),
        1.226,
        0.001,
    );
    // Hardie's spreadsheet: E[X(t)]. These were computed at the unrounded MLE, to which
    // E[X(31.86)] is sensitive (1.0420 at the rounded published parameters), so use our fit.
    let fitted = fit(&cdnow(), Variant::BgNbd, &FitOptions::default())
        .unwrap()
        .model();
    for (t, expected) in [
        (0.1429, 0.0078),
        (1.0, 0.0532),
        (3.0, 0.1506),
        (31.8571, 1.0405),
        (32.0, 1.0437),
        (78.0, 1.8576),
    ] {
        assert_close(
            &format!("E[X({t})]"),
            fitted.expected_repeat_transactions(t),
            expected,
            0.0005,
        );
    }
    // R BTYD bgnbd.pmf.
    let rel = |name: &str, a: f64, e: f64, tol: f64| {
        assert!(
            (a - e).abs() <= tol * e,
            "{name}: got {a}, expected {e} (rtol {tol})"
        );
    };
    rel("P(X(2)=10)", m.pmf(10, 2.0), 1.07869e-07, 1e-3);
    rel("P(X(39)=0)", m.pmf(0, 39.0), 0.5737864, 1e-5);
    let expected = [
        0.0019995214,
        0.0015170236,
        0.0011633150,
        0.0009003148,
        0.0007023638,
        0.0005517902,
        0.0004361913,
        0.0003467171,
        0.0002769613,
        0.0002222260,
    ];
    for (i, e) in expected.iter().enumerate() {
        let n = 11 + i as u64;
        rel(&format!("P(X(30)={n})"), m.pmf(n, 30.0), *e, 1e-4);
    }
}

#[test]
fn pmf_is_a_distribution_with_the_expected_mean() {
    for variant in [Variant::BgNbd, Variant::ModifiedBgNbd] {
        for params in [
            FHL_BG,
            BTYDPLUS_MBG,
            DEFAULT_ACTIVITY.params,
            Params::new(2.0, 3.0, 1.5, 0.7),
        ] {
            let m = Model::new(variant, params);
            for t in [0.0, 0.5, 7.0, 39.0] {
                let mut total = 0.0;
                let mut mean = 0.0;
                for n in 0..3000u64 {
                    let p = m.pmf(n, t);
                    assert!(p.is_finite() && p >= 0.0);
                    total += p;
                    mean += n as f64 * p;
                }
                assert_close(
                    &format!("{variant} {params:?} Σ pmf({t})"),
                    total,
                    1.0,
                    1e-9,
                );
                let e = m.expected_repeat_transactions(t);
                assert_close(
                    &format!("{variant} {params:?} mean({t})"),
                    mean,
                    e,
                    1e-7 * (1.0 + e),
                );
            }
        }
    }
}

/// `E[X(h) | alive]` by brute-force quadrature over `p` (λ integrated analytically).
fn expected_given_alive_by_quadrature(m: &Model, x: f64, t: f64, h: f64) -> f64 {
    let Params { r, alpha, a, b } = m.params;
    let bp = b
        + x
        + if m.variant == Variant::BgNbd {
            0.0
        } else {
            1.0
        };
    let big_a = r + x;
    let w = h / (alpha + t);
    // E[(1 - e^(-λ p h)) / p] over λ ~ Gamma(r+x, α+T).
    let g = |p: f64| {
        if p == 0.0 {
            big_a * w
        } else {
            -(-big_a * (p * w).ln_1p()).exp_m1() / p
        }
    };
    let simpson = |f: &dyn Fn(f64) -> f64, hi: f64| {
        let n = 200_000;
        let step = hi / n as f64;
        let mut s = f(0.0) + f(hi);
        for i in 1..n {
            s += if i % 2 == 1 { 4.0 } else { 2.0 } * f(i as f64 * step);
        }
        s * step / 3.0
    };
    // p in [0, 1/2]: p = v^(k/a) turns p^(a-1) dp into (k/a) v^(k-1) dv, smooth for k ≥ 2a.
    let k = (2.0 * a).ceil().max(1.0);
    let lower = |v: f64| {
        let p = v.powf(k / a);
        g(p) * (1.0 - p).powf(bp - 1.0) * (k / a) * v.powi(k as i32 - 1)
    };
    // p in [1/2, 1]: 1 - p = u^(j/b') likewise.
    let j = (2.0 * bp).ceil().max(1.0);
    let upper = |u: f64| {
        let p = 1.0 - u.powf(j / bp);
        g(p) * p.powf(a - 1.0) * (j / bp) * u.powi(j as i32 - 1)
    };
    let integral = simpson(&lower, 0.5f64.powf(a / k)) + simpson(&upper, 0.5f64.powf(bp / j));
    integral / statrs::function::beta::beta(a, bp)
}

#[test]
fn conditional_expectation_matches_quadrature() {
    let cases = [
        (Variant::BgNbd, FHL_BG),
        (Variant::ModifiedBgNbd, BTYDPLUS_MBG),
        (Variant::ModifiedBgNbd, DEFAULT_ACTIVITY.params),
        (Variant::BgNbd, Params::new(0.5, 5.0, 0.3, 0.5)), // a + b < 1
        (Variant::ModifiedBgNbd, Params::new(0.5, 5.0, 1.0, 3.0)), // a = 1
        (Variant::ModifiedBgNbd, Params::new(3.0, 2.0, 2.5, 4.0)),
    ];
    for (variant, params) in cases {
        let m = Model::new(variant, params);
        for (x, t, h) in [
            (0.0, 0.0, 30.0),
            (0.0, 10.0, 5.0),
            (2.0, 38.86, 39.0),
            (5.0, 30.0, 300.0),
            (40.0, 60.0, 14.0),
        ] {
            let p_alive = m.p_alive(x, t, t);
            let series = m.expected_transactions(x, t, t, h) / p_alive;
            let quad = expected_given_alive_by_quadrature(&m, x, t, h);
            assert!(
                (series - quad).abs() <= 1e-6 * (1.0 + quad),
                "{variant} {params:?} x={x} T={t} h={h}: series {series} vs quadrature {quad}"
            );
        }
    }
}

#[test]
fn p_alive_for_one_time_customers() {
    let bg = Model::new(Variant::BgNbd, FHL_BG);
    let mbg = Model::new(Variant::ModifiedBgNbd, DEFAULT_ACTIVITY.params);
    let mut last = 1.0;
    for t in [0.0, 1.0, 7.0, 30.0, 90.0, 365.0, 3000.0] {
        assert_eq!(bg.p_alive(0.0, 0.0, t), 1.0);
        let p = mbg.p_alive(0.0, 0.0, t);
        assert!(p < 1.0 && p > 0.0, "T={t}: {p}");
        assert!(
            p < last,
            "P(alive | x=0) must decrease with T: {p} at T={t}"
        );
        last = p;
        // t_x is ignored when x = 0.
        assert_eq!(mbg.p_alive(0.0, 5.0, t), p);
    }
    // At T = 0 the only evidence is the first transaction: P(alive) = E[1 - p] = b/(a+b).
    let Params { a, b, .. } = DEFAULT_ACTIVITY.params;
    assert_close(
        "P(alive | 0, 0, 0)",
        mbg.p_alive(0.0, 0.0, 0.0),
        b / (a + b),
        1e-15,
    );
}

#[test]
fn p_no_transaction_is_a_monotone_probability() {
    for variant in [Variant::BgNbd, Variant::ModifiedBgNbd] {
        let m = Model::new(variant, DEFAULT_ACTIVITY.params);
        for (x, t) in [(0.0, 10.0), (1.0, 30.0), (5.0, 60.0), (50.0, 90.0)] {
            // Increasing in the horizon.
            let mut last = m.p_no_transaction(x, t, t, 0.0);
            assert_eq!(last, 1.0 - m.p_alive(x, t, t) + m.p_alive(x, t, t));
            for h in [0.5, 1.0, 7.0, 30.0, 365.0] {
                let p = m.p_no_transaction(x, t, t, h);
                assert!((0.0..=1.0).contains(&p));
                assert!(
                    p <= last + 1e-15,
                    "{variant} x={x} T={t} h={h}: {p} > {last}"
                );
                last = p;
            }
            // Increasing in the recency gap T - t_x (fixed x, T, h).
            if x > 0.0 {
                let mut last = 0.0;
                for gap in [0.0, 1.0, 5.0, t / 2.0, t] {
                    let p = m.p_no_transaction(x, t - gap, t, 7.0);
                    assert!((0.0..=1.0).contains(&p));
                    assert!(p >= last, "{variant} x={x} T={t} gap={gap}: {p} < {last}");
                    last = p;
                }
            }
        }
    }
}

#[test]
fn p_no_transaction_of_a_new_customer_is_the_pmf_at_zero() {
    for variant in [Variant::BgNbd, Variant::ModifiedBgNbd] {
        let m = Model::new(variant, BTYDPLUS_MBG);
        for h in [0.0, 1.0, 10.0, 100.0] {
            assert_close(
                &format!("{variant} h={h}"),
                m.p_no_transaction(0.0, 0.0, 0.0, h),
                m.pmf(0, h),
                1e-14,
            );
        }
        for t in [0.0, 3.0, 40.0] {
            assert_close(
                &format!("{variant} LL(0, 0, {t})"),
                m.log_likelihood(0.0, 0.0, t),
                m.ln_pmf(0, t),
                1e-12,
            );
        }
    }
}

#[test]
fn heavy_users_are_alive_unless_they_stopped() {
    for variant in [Variant::BgNbd, Variant::ModifiedBgNbd] {
        let m = Model::new(variant, DEFAULT_ACTIVITY.params);
        let active = m.p_alive(300.0, 299.0, 300.0);
        assert!(active > 0.99, "{variant}: {active}");
        let stopped = m.p_alive(300.0, 250.0, 300.0);
        assert!(stopped < 1e-15, "{variant}: {stopped}");
        assert!(m.p_no_transaction(300.0, 299.0, 300.0, 7.0) < 0.01);
        assert!(m.p_no_transaction(300.0, 250.0, 300.0, 7.0) > 1.0 - 1e-15);
        let e = m.expected_transactions(300.0, 299.0, 300.0, 30.0);
        assert!(e > 25.0 && e < 32.0, "{variant}: E = {e}");
    }
}

#[test]
fn extreme_inputs_give_no_nan() {
    let models = [
        Model::new(Variant::BgNbd, FHL_BG),
        Model::new(Variant::ModifiedBgNbd, DEFAULT_ACTIVITY.params),
        Model::new(Variant::ModifiedBgNbd, Params::new(1e-6, 1e-6, 1e-6, 1e6)),
        Model::new(Variant::ModifiedBgNbd, Params::new(1e4, 1e6, 50.0, 1e-4)),
    ];
    let xs = [0.0, 1.0, 30.0, 1000.0, 1e5];
    let ts = [0.0, 1e-9, 1.0, 3000.0, 1e6];
    let hs = [0.0, 1e-9, 1.0, 30.0, 3000.0];
    for m in models {
        for x in xs {
            for t in ts {
                for frac in [0.0, 0.5, 1.0] {
                    let t_x = if x == 0.0 { 0.0 } else { t * frac };
                    let ll = m.log_likelihood(x, t_x, t);
                    // A density in t_x when x > 0: it may exceed 0, but must be finite.
                    assert!(ll.is_finite(), "{m:?} LL({x}, {t_x}, {t}) = {ll}");
                    let pa = m.p_alive(x, t_x, t);
                    assert!((0.0..=1.0).contains(&pa), "{m:?} P(alive) = {pa}");
                    for h in hs {
                        let p = m.p_no_transaction(x, t_x, t, h);
                        assert!(
                            (0.0..=1.0).contains(&p),
                            "{m:?} p_no({x},{t_x},{t},{h}) = {p}"
                        );
                        let e = m.expected_transactions(x, t_x, t, h);
                        assert!(
                            e.is_finite() && e >= 0.0,
                            "{m:?} E({x},{t_x},{t},{h}) = {e}"
                        );
                    }
                }
            }
        }
        for n in [0u64, 1, 7, 100, 10_000] {
            for t in ts {
                let p = m.pmf(n, t);
                assert!((0.0..=1.0).contains(&p), "{m:?} pmf({n}, {t}) = {p}");
            }
        }
        // Out-of-domain inputs are tidied, NaN propagates.
        assert!(m.p_alive(-1.0, -5.0, -3.0).is_finite());
        assert!(m.p_alive(3.0, 50.0, 10.0) == m.p_alive(3.0, 10.0, 10.0));
        assert!(m.p_no_transaction(f64::NAN, 1.0, 2.0, 3.0).is_nan());
    }
}

/// The distributions of `model`'s heterogeneity, the rate (gamma) and the drop-out chance
/// (beta), and a seeded generator to draw customers with.
fn population(model: &Model, seed: u64) -> (Gamma<f64>, Beta<f64>, Xoshiro256PlusPlus) {
    let Params { r, alpha, a, b } = model.params;
    (
        Gamma::new(r, 1.0 / alpha).unwrap(),
        Beta::new(a, b).unwrap(),
        Xoshiro256PlusPlus::seed_from_u64(seed),
    )
}

/// Simulates `n` customers of `model`; `T` uniform on `t_range`. With `daily`, `T` is a whole
/// number of days and transactions are reduced to distinct active days (real daily data).
fn simulate(model: &Model, n: usize, t_range: (f64, f64), seed: u64, daily: bool) -> Vec<Summary> {
    let (gamma, beta, mut rng) = population(model, seed);
    (0..n)
        .map(|_| {
            let mut t_obs = t_range.0 + (t_range.1 - t_range.0) * rng.random::<f64>();
            if daily {
                t_obs = t_obs.round();
            }
            let lambda: f64 = gamma.sample(&mut rng);
            let p: f64 = beta.sample(&mut rng);
            let mut alive = !(model.variant == Variant::ModifiedBgNbd && rng.random::<f64>() < p);
            let (mut x, mut t_x, mut now) = (0.0, 0.0, 0.0);
            while alive {
                let e: f64 = rng.sample(Exp1);
                now += e / lambda;
                if now > t_obs {
                    break;
                }
                if daily {
                    let day = now.floor();
                    if day > t_x {
                        x += 1.0;
                        t_x = day;
                    }
                } else {
                    x += 1.0;
                    t_x = now;
                }
                alive = rng.random::<f64>() >= p;
            }
            Summary::new(x, t_x, t_obs)
        })
        .collect()
}

#[test]
fn fit_recovers_simulated_parameters() {
    let cases = [
        (
            Model::new(Variant::ModifiedBgNbd, DEFAULT_ACTIVITY.params),
            (30.0, 365.0),
            7,
        ),
        (
            Model::new(Variant::ModifiedBgNbd, DEFAULT_PURCHASES.params),
            (60.0, 720.0),
            8,
        ),
        (Model::new(Variant::BgNbd, FHL_BG), (27.0, 39.0), 9),
    ];
    for (truth, t_range, seed) in cases {
        let data = simulate(&truth, 30_000, t_range, seed, false);
        let report = fit(&data, truth.variant, &FitOptions::default()).unwrap();
        eprintln!("truth {:?}\n{report}", truth.params);
        let se = report.std_errors.expect("standard errors");
        for ((name, est), ((_, s), (_, true_value))) in report
            .params
            .named()
            .into_iter()
            .zip(se.named().into_iter().zip(truth.params.named()))
        {
            assert!(
                (est - true_value).abs() <= 4.0 * s,
                "{}: {name} = {est} ± {s}, truth {true_value}",
                truth.variant
            );
            assert!(
                (est - true_value).abs() <= 0.25 * true_value,
                "{}: {name} = {est}, truth {true_value}",
                truth.variant
            );
        }
        // The model fits its own data: no significant frequency misfit.
        assert!(report.chi_square_p_value > 1e-4, "{report}");
    }
}

#[test]
fn fitting_200k_daily_customers_is_fast() {
    let truth = Model::new(Variant::ModifiedBgNbd, DEFAULT_ACTIVITY.params);
    let data = simulate(&truth, 200_000, (1.0, 365.0), 11, true);
    let started = Instant::now();
    let report = fit(&data, Variant::ModifiedBgNbd, &FitOptions::default()).unwrap();
    let elapsed = started.elapsed();
    eprintln!(
        "{report}\n200k customers, {} distinct rows, {} evaluations: fit in {elapsed:?}",
        report.n_distinct, report.evaluations
    );
    assert_eq!(report.n_customers, 200_000);
    assert!(report.converged);
    // "A few seconds at most" on one core; generous here as tests share the machine.
    assert!(elapsed.as_secs_f64() < 20.0, "fit took {elapsed:?}");
}

#[test]
fn fit_weighted_equals_fit_on_expanded_rows() {
    let data = cdnow();
    let mut counts: Vec<(Summary, u64)> = Vec::new();
    for s in &data {
        match counts.iter_mut().find(|(c, _)| c == s) {
            Some((_, n)) => *n += 1,
            None => counts.push((*s, 1)),
        }
    }
    let opts = FitOptions::default();
    let a = fit(&data, Variant::BgNbd, &opts).unwrap();
    let b = fit_weighted(&counts, Variant::BgNbd, &opts).unwrap();
    assert_eq!(a.n_distinct, b.n_distinct);
    assert_eq!(a.n_customers, b.n_customers);
    assert_close("LL", a.log_likelihood, b.log_likelihood, 1e-6);
}

#[test]
fn non_convergence_is_an_error_carrying_the_report() {
    let data = cdnow();
    let opts = FitOptions {
        max_iters: 5,
        max_restarts: 1,
        ..FitOptions::default()
    };
    match fit(&data, Variant::ModifiedBgNbd, &opts) {
        Err(FitError::NoConvergence(report)) => {
            assert!(!report.converged);
            assert!(report.log_likelihood.is_finite());
        }
        other => panic!("expected NoConvergence, got {other:?}"),
    }
    let lenient = FitOptions {
        require_convergence: false,
        ..opts
    };
    let report = fit(&data, Variant::ModifiedBgNbd, &lenient).unwrap();
    assert!(!report.converged);
    assert!(report.to_string().contains("NOT converged"));
}

#[test]
fn unidentified_data_is_reported_not_fitted() {
    let cases: Vec<(&str, Vec<Summary>)> = vec![
        ("nobody repeats", vec![Summary::new(0.0, 0.0, 10.0); 50]),
        ("one customer", vec![Summary::new(3.0, 9.0, 10.0)]),
        (
            "all active to the end",
            vec![Summary::new(5.0, 10.0, 10.0); 100],
        ),
    ];
    for (name, data) in cases {
        for variant in [Variant::BgNbd, Variant::ModifiedBgNbd] {
            match fit(&data, variant, &FitOptions::default()) {
                Err(FitError::AtBound(report)) => {
                    assert!(!report.at_bound.is_empty());
                    assert!(report.log_likelihood.is_finite(), "{name}: {report}");
                    assert!(report.to_string().contains("WARNING"));
                }
                other => panic!("{name} ({variant}): expected AtBound, got {other:?}"),
            }
        }
    }
}

#[test]
fn outlook_is_the_separate_evaluations_computed_together() {
    for (variant, params) in PUBLISHED {
        let m = Model::new(variant, params);
        for x in [0.0, 1.0, 2.0, 7.0, 40.0] {
            for (t_x, t) in [(0.0, 0.0), (0.3, 0.3), (0.3, 5.0), (3.0, 3.5), (10.0, 60.0)] {
                for h in [0.0, 4.0, 30.0] {
                    let o = m.outlook(x, t_x, t, h);
                    let (alive, churn) = m.p_alive_and_no_transaction(x, t_x, t, h);
                    let case = format!("{variant:?} x={x} t_x={t_x} T={t} h={h}");
                    // Bit for bit: the backtest must not move.
                    assert_eq!(o.p_alive.to_bits(), alive.to_bits(), "{case}");
                    assert_eq!(o.p_churn.to_bits(), churn.to_bits(), "{case}");
                    // The model's latest transaction: at the first one when there is no
                    // repeat (`t_x` is then 0, however late the first day's events went on).
                    let last = if x == 0.0 { 0.0 } else { t_x };
                    let after = m.p_no_transaction(x, last, last, h);
                    assert_eq!(o.p_churn_after_last.to_bits(), after.to_bits(), "{case}");
                    let silence = ((params.alpha + last) / (params.alpha + t)).powf(params.r + x);
                    assert_close(&case, o.p_silence, silence, 1e-12 * silence.max(1e-300));
                }
            }
        }
    }
}

#[test]
fn discounted_history_matches_hand_computed_values() {
    let m = Model::new(Variant::ModifiedBgNbd, Params::new(0.6, 50.0, 0.8, 1.2));
    // κ = 0.5, x = 4, t_x = 100, T = 250, h = 90, computed by hand:
    // shape = 0.6 + 0.5·4 = 2.6, rate at t_x = 50 + 0.5·100 = 100, rate at T = 100 + 150 = 250;
    // odds = 0.8/(1.2+4) · (250/100)^2.6, P(alive) = 1/(1+odds),
    // p_churn = (1 − P(alive)) + P(alive) · (250/340)^2.6.
    let d = m.with_discount(0.5);
    let (alive, churn) = d.p_alive_and_no_transaction(4.0, 100.0, 250.0, 90.0);
    assert_close("P(alive), κ = 0.5", alive, 0.375_063_728_211_203_7, 1e-14);
    assert_close("p_churn, κ = 0.5", churn, 0.793_554_260_432_169_9, 1e-14);
    // The textbook model on the same history: the long silence after a busy spell reads as
    // death more readily.
    let (alive1, churn1) = m.p_alive_and_no_transaction(4.0, 100.0, 250.0, 90.0);
    assert_close("P(alive), κ = 1", alive1, 0.211_372_043_134_758_77, 1e-14);
    assert_close("p_churn, κ = 1", churn1, 0.851_855_764_705_361_4, 1e-14);
    // `outlook` computes the same, and its silence term uses the discounted posterior.
    let o = d.outlook(4.0, 100.0, 250.0, 90.0);
    assert_eq!(o.p_alive.to_bits(), alive.to_bits());
    assert_eq!(o.p_churn.to_bits(), churn.to_bits());
    assert_close(
        "p_silence",
        o.p_silence,
        (100.0f64 / 250.0).powf(2.6),
        1e-14,
    );
}

#[test]
fn discount_one_is_the_textbook_model_and_never_touches_one_time_customers() {
    for (variant, params) in PUBLISHED {
        let m = Model::new(variant, params);
        let same = m.with_discount(1.0);
        let half = m.with_discount(0.5);
        for x in [0.0, 1.0, 7.0] {
            for (t_x, t) in [(0.0, 5.0), (3.0, 3.5), (10.0, 60.0)] {
                // A customer's summary has t_x = 0 when x = 0.
                let t_x = if x == 0.0 { 0.0 } else { t_x };
                for h in [0.0, 4.0, 30.0] {
                    let case = format!("{variant:?} x={x} t_x={t_x} T={t} h={h}");
                    let a = m.outlook(x, t_x, t, h);
                    let b = same.outlook(x, t_x, t, h);
                    assert_eq!(a, b, "{case}");
                    let c = half.outlook(x, t_x, t, h);
                    if x == 0.0 {
                        assert_eq!(a, c, "{case}");
                    } else if t > t_x {
                        // Less weight on a busy past: a silence is less telling.
                        assert!(c.p_alive > a.p_alive, "{case}: {c:?} vs {a:?}");
                    }
                    assert!((0.0..=1.0).contains(&c.p_churn), "{case}");
                }
            }
        }
        // The likelihood (what is fitted) does not depend on the discount.
        for s in cdnow().iter().take(50) {
            assert_eq!(
                m.log_likelihood(s.x, s.t_x, s.t).to_bits(),
                half.log_likelihood(s.x, s.t_x, s.t).to_bits()
            );
        }
    }
}

/// Buyers of `model` observed on days `[0, split + holdout)`, acquired uniformly over the first
/// `split` days: each one's summary at the split and whether they made no purchase after it.
/// With `slowdown`, a buyer's rate falls to that share of itself 60 days after their first
/// purchase (a burst, then a slower habit), which the textbook model does not know.
fn held_out_buyers(
    model: &Model,
    n: usize,
    split: f64,
    holdout: f64,
    slowdown: Option<f64>,
    seed: u64,
) -> Vec<(Summary, bool)> {
    let (gamma, beta, mut rng) = population(model, seed);
    (0..n)
        .map(|_| {
            let start = (split * rng.random::<f64>()).floor();
            let lambda: f64 = gamma.sample(&mut rng);
            let p: f64 = beta.sample(&mut rng);
            let mut alive = rng.random::<f64>() >= p;
            let (mut x, mut t_x, mut now, mut after) = (0.0, 0.0, start, false);
            while alive {
                let rate = match slowdown {
                    Some(share) if now - start > 60.0 => lambda * share,
                    _ => lambda,
                };
                let e: f64 = rng.sample(Exp1);
                now += e / rate;
                if now >= split + holdout {
                    break;
                }
                if now >= split {
                    after = true;
                    break;
                }
                let day = now.floor() - start;
                if day > t_x {
                    x += 1.0;
                    t_x = day;
                }
                alive = rng.random::<f64>() >= p;
            }
            (Summary::new(x, t_x, split - start), !after)
        })
        .collect()
}

#[test]
fn the_held_out_check_keeps_the_textbook_model_for_steady_buyers_and_discounts_bursts() {
    use crate::backtest::fit::{check_discount, Discount};
    let truth = Model::new(Variant::ModifiedBgNbd, Params::new(0.8, 30.0, 0.6, 2.5));
    let steady = held_out_buyers(&truth, 20_000, 270.0, 90.0, None, 11);
    let Discount::Checked(c) = check_discount(&steady, 90.0) else {
        panic!("the check should run on 20,000 buyers");
    };
    assert_eq!(c.chosen, 1.0, "{c:?}");
    assert_eq!(c.grid.len(), 10);
    let bursty = held_out_buyers(&truth, 20_000, 270.0, 90.0, Some(0.25), 12);
    let Discount::Checked(c) = check_discount(&bursty, 90.0) else {
        panic!("the check should run on 20,000 buyers");
    };
    assert!(c.chosen < 1.0, "{c:?}");
    // Too few customers: not checked, and the textbook model stays.
    let few = check_discount(&bursty[..50], 90.0);
    assert!(matches!(few, Discount::Unchecked(_)), "{few:?}");
    assert_eq!(few.chosen(), 1.0);
}
