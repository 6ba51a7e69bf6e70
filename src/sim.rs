//! Deterministic, seeded simulator of customer activity with exact ground truth.
//!
//! Used by `churnwatch simulate` (a dataset: events plus truth labels, see
//! [`crate::simulate`]) and by the `demo` (live traffic). It produces a
//! realistic, heterogeneous and deliberately hard stream of JSON events
//! together with the truth: who churns, when their decline starts and when
//! they leave.
//!
//! # Event schema
//!
//! Every event is one JSON object with the common fields `type`
//! (`"visit" | "usage" | "purchase" | "engagement"`), `customer_id`
//! (`"c000042"`), `ts` (RFC 3339 UTC with milliseconds,
//! `"2026-03-01T10:15:00.000Z"`) and `event_id` (unique per generated event,
//! e.g. `"e1-c000042-17"` = seed in hex, customer, per-customer sequence
//! number; a re-delivered duplicate repeats it), plus:
//!
//! * `visit`: `page`, `session_id`, `duration_secs` (checkout visits carry no
//!   duration);
//! * `usage`: `feature`, `quantity` (>= 0; integer counts or `storage_gb`
//!   with 2 decimals);
//! * `purchase`: `amount` (2 decimals), `currency` (`"EUR"`), `quantity`
//!   (integer), `order_id`;
//! * `engagement`: `score` (CRM / e-mail engagement score 0-100, 1 decimal).
//!
//! # Definitions (the truth labels)
//!
//! * **Activity** = `visit`, `usage` and `purchase` events. `engagement`
//!   events are CRM updates *about* the customer, not activity: they continue
//!   for 30 days after a churn (with a falling score), then stop.
//! * **`churned_at`** = the moment the customer leaves: the customer has *no*
//!   activity event with `ts >= churned_at`, and the activity factor (below)
//!   is 0 from then on for good. For purchase-only dropouts it is their last
//!   purchase's `ts` + 1 ms.
//! * **`decline_onset`** = when the customer's engagement starts to fall
//!   (equal to `churned_at` for sudden stops and purchase-only dropouts).
//! * **`churned`** = `churned_at` falls inside the simulated period
//!   `[start, start + days)`. A churn drawn after the end is reported as not
//!   churned with no `churned_at`; if its decline onset is inside the period,
//!   the onset is still reported (and the segment names the decline path).
//! * **Segment** (snake_case, [`Segment`]): what happened to the customer
//!   *inside the period*, in this order of precedence: the decline path
//!   (`gradual_decline`, `abrupt_drop`, `sudden_stop`) if the decline onset
//!   is inside the period; for purchase-only customers `one_time_buyer`
//!   (a new customer who dropped out after their first purchase),
//!   `buyer_dropout` (dropped out after several purchases, or an existing
//!   customer who dropped out) or `buyer_active`; then `temporary_dip`;
//!   then `holiday` (a personal holiday overlapped the customer's time in the
//!   period); otherwise `steady`. Only the labels `churned` /
//!   `churned_at` say whether a customer churned inside the period.
//!
//! [`Simulator::truth`] reports these for the period; it is final once the
//! simulation has been advanced to the end of the period (purchase-only
//! dropouts are decided as their purchases are generated).
//!
//! # Model
//!
//! **Acquisition**: a share `existing_share` (35 %) of the customers exist at
//! the start (the existing base, each stream at a random phase); the others
//! are acquired at a uniformly random day of the period (at an hour drawn
//! from their kind's hour profile). A new customer's first event is at the
//! acquisition time (a `/signup` or landing visit, or the first purchase for
//! purchase-only customers), and nothing happens before it.
//!
//! **Customer kinds** ([`CustomerKind`], drawn per customer):
//!
//! * *SaaS* (30 %): sessions (`visit`) each followed by a few `usage` events
//!   inside the session (per-customer mean 1-3, per-customer favourite
//!   features); 75 % pay a monthly subscription (`purchase` every 30 days,
//!   price per seat x seats; seats occasionally grow, and shrink during a
//!   decline); CRM `engagement` score every 2-7 days.
//! * *Shop* (22 %): browsing sessions (`visit` only) plus purchases with a
//!   personal rhythm: gamma-distributed gaps (shape 1.5-4, mean 7-45 days),
//!   each purchase preceded a few minutes earlier by a `/checkout` visit;
//!   basket size log-normal around a personal median. Half of them get an
//!   e-mail `engagement` score every 5-14 days.
//! * *Mixed* (13 %): app sessions with fewer usage events (mean 0.3-1.3),
//!   purchases every 20-60 days, 20 % subscribe, engagement every 2-7 days.
//! * *Purchase-only* (35 %, retail-like): only `purchase` events, no visits,
//!   usage or engagement. A BG/NBD-like process: purchase rate
//!   λ ~ Gamma(shape 0.9, mean 1/40 per day) per customer (clamped to
//!   1/1500 .. 1/2 per day), exponential gaps snapped onto a shop-like
//!   weekday and hour; after *each* purchase (including the first) the
//!   customer drops out for good with a personal probability
//!   p ~ Beta(1.2, 2.5) (mean 0.32), so many are one-time buyers. Amounts are
//!   log-normal (personal median around 40 EUR, spread 0.7; per purchase 0.5).
//!   Existing purchase-only customers start at a random phase, so a few with
//!   a very low rate have no event in the period at all (they are still
//!   labelled, as active buyers).
//!
//! **Heterogeneous rates**: session rates per day are gamma distributed per
//! customer: SaaS mean 0.8 (shape 1.3: some are daily heavy users, many come
//! weekly), shops mean 0.35, mixed 0.6. A 20,000-customer, 365-day dataset
//! has about 4.5 million events.
//!
//! **Seasonality**: sessions follow a non-homogeneous Poisson process,
//! generated by *thinning* (candidate gaps from the maximal rate, accepted
//! with probability `rate(t) / max_rate`). The rate is the base rate times a
//! piecewise-constant hour-of-day profile (SaaS: office hours; shops: evening
//! peak; mixed: the average), a per-customer weekday profile (35 % of SaaS
//! users are weekday-only, the other SaaS users are lower on weekends, shops
//! and purchase-only buyers are weekend-heavy; each customer's weekdays are
//! perturbed log-normally), a per-customer-week noise factor in `[0.7, 1.3]`
//! (deterministic hash) and the customer's *activity factor* (below). Local
//! time uses a per-customer UTC offset of 0, +1 or +2 hours. Purchase dates
//! are snapped onto a day (weekday-weighted) and an hour drawn from the hour
//! profile, and thinned by the activity factor.
//!
//! **Activity factor** in `[0, 1]`: it multiplies all session and purchase
//! rates (not subscription renewals, which are billed automatically) and
//! drives the engagement score. It is 0 before acquisition and from
//! `churned_at` on, and otherwise the product of:
//!
//! * the *decline path* of churners (SaaS, Shop and Mixed customers): the
//!   decline onset comes from a constant hazard (`churn_hazard_per_day`,
//!   default 0.0013/day, at least 30 days after acquisition; existing
//!   customers from the start), so that about 22 % of them churn inside a
//!   365-day period (38 % of those exposed for a whole year). The path is
//!   [`Segment::GradualDecline`] (45 %: the factor falls linearly from 1 to
//!   0 over 21-70 days, `churned_at` = end of the ramp),
//!   [`Segment::AbruptDrop`] (40 %: the factor drops at the onset to
//!   0.1-0.35 and stays there for 14-56 days, then 0 at `churned_at`) or
//!   [`Segment::SuddenStop`] (15 %: 0 from the onset = `churned_at`).
//!   Subscription renewals continue until `churned_at` (seats may shrink
//!   while the factor is below 0.6), then stop. The demo can instead place
//!   the onsets uniformly in a window (`decline_window_days`).
//! * *holidays* (not churn): 35 % of customers take 1-2 holidays a calendar
//!   year of 3-14 days, 55 % of them starting in July-August, 25 % in
//!   December 18-30, 20 % anywhere; the factor is 0 (30 % of the holidays:
//!   fully silent) or 0.05-0.5 during a holiday;
//! * a *temporary dip* (not churn) for about 2 % of the SaaS, Shop and
//!   Mixed customers: 0.3-0.5 for 10-21 days at a random time in the period
//!   (starting at least 14 days after the start, 30 days after acquisition
//!   and 21 days before the end), then back to 1;
//! * the population-wide *Christmas week* (December 24 to January 1, local
//!   time): 0.5.
//!
//! The engagement score follows a per-customer level (40-90, slow random
//! walk) times `0.35 + 0.65 * activity` (smoothed), plus noise, so it falls
//! during declines (and, less, during holidays). CRM updates continue for 30
//! days after `churned_at`, then stop.
//!
//! **Late and duplicate deliveries**: the stream is in *arrival* order. A
//! share `late_share` (0.3 %) of the events arrives late: 1 minute to 6 hours
//! after its `ts` (log-uniform), a tenth of them 6 hours to 2 days. A share
//! `duplicate_share` (0.15 %) is delivered twice: the same bytes (same
//! `event_id`) again 0-30 minutes after the first delivery. So `ts` is
//! non-decreasing along the stream except at late events. Delivery decisions
//! use their own RNG, so the behaviour of the customers does not depend on
//! them.
//!
//! **Malformed messages** (`malformed_share > 0`, 0 by default): the chosen
//! share of generated messages is replaced by one of: non-JSON bytes
//! (truncated JSON or garbage), a missing `customer_id`, an unknown `type`,
//! an unparsable `ts` or a purchase with a negative `amount`. Malformation
//! decisions use their own RNG too.
//!
//! # Implementation
//!
//! Each customer has up to four independent streams (sessions, purchases,
//! subscription renewals, engagement updates) with their next event time in
//! one [`BinaryHeap`]; [`Simulator::advance`] pops events in
//! `(ts, customer, stream)` order and schedules the stream's next event.
//! Late events and duplicates wait in a small reorder heap keyed by arrival
//! time. Memory is O(customers), and incremental calls produce exactly the
//! same stream as a single call. Every customer has its own seeded
//! `Xoshiro256PlusPlus` RNG, so the output is fully determined by the
//! configuration.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fmt;
use std::io::Write;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use rand_distr::{Beta, Distribution, Exp1, Gamma, StandardNormal};

const SEC: i64 = 1_000;
const MIN: i64 = 60 * SEC;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

/// Maximum of the per-customer-week noise factor (range `[0.7, 1.3]`).
const NOISE_MAX: f64 = 1.3;
/// Activity factor of the whole population in the Christmas week.
const CHRISTMAS_FACTOR: f64 = 0.5;
/// Share of SaaS, Shop and Mixed customers drawn for a temporary dip; with those whose dip
/// does not fit in their time in the period and the churners (whose decline path names
/// their segment) left out, about 2 % of them end up in the `temporary_dip` segment.
const TEMPORARY_DIP_DRAW: f64 = 0.033;
/// Customers who churn start to decline at least this long after acquisition.
const MIN_TENURE_BEFORE_CHURN: i64 = 30 * DAY;
/// CRM updates continue this long after `churned_at`.
const ENGAGEMENT_AFTER_CHURN: i64 = 30 * DAY;

/// Share of purchase-only customers with several purchases who, deciding to leave, first buy
/// less and less often ([`Segment::BuyerDecline`]) rather than vanishing after a purchase.
const PO_DECLINE_SHARE: f64 = 0.75;

const STREAM_SESSION: u8 = 0;
const STREAM_PURCHASE: u8 = 1;
const STREAM_SUBSCRIPTION: u8 = 2;
const STREAM_ENGAGEMENT: u8 = 3;

/// 2026-01-01T00:00:00Z, the default start of a simulation.
pub const DEFAULT_START_MS: i64 = 1_767_225_600_000;

/// Default churn-onset hazard of SaaS, Shop and Mixed customers: about 22 % of
/// them churn inside a 365-day period with the default acquisition.
pub const DEFAULT_CHURN_HAZARD_PER_DAY: f64 = 0.0013;

/// Configuration of the [`Simulator`].
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    pub customers: usize,
    pub seed: u64,
    /// Event-time start of the simulation (ms since Unix epoch).
    pub start_ms: i64,
    /// Length of the simulated period in days: new customers are acquired
    /// uniformly over it, and the truth labels refer to it. The simulator may
    /// be advanced beyond it (the demo does); nothing special happens there.
    pub days: f64,
    /// Share of customers that exist at the start; the others are acquired
    /// during the period.
    pub existing_share: f64,
    /// Daily hazard of a decline onset for SaaS, Shop and Mixed customers
    /// (from 30 days after acquisition; from the start for existing ones).
    pub churn_hazard_per_day: f64,
    /// Demo knob: when set, the share `1 - exp(-365 * churn_hazard_per_day)`
    /// of the SaaS, Shop and Mixed customers start to decline at a uniform
    /// time in this window (days from the start) instead of by the hazard.
    pub decline_window_days: Option<(f64, f64)>,
    /// Share of generated messages that are deliberately malformed (for
    /// dead-letter demos); 0.0 = none.
    pub malformed_share: f64,
    /// Share of events delivered late (1 min to 6 h after `ts`, a tenth up to 2 days).
    pub late_share: f64,
    /// Share of events delivered twice (same bytes, 0-30 min apart).
    pub duplicate_share: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            customers: 20_000,
            seed: 1,
            start_ms: DEFAULT_START_MS,
            days: 365.0,
            existing_share: 0.35,
            churn_hazard_per_day: DEFAULT_CHURN_HAZARD_PER_DAY,
            decline_window_days: None,
            malformed_share: 0.0,
            late_share: 0.003,
            duplicate_share: 0.0015,
        }
    }
}

/// Ground-truth segment of a simulated customer: what happened to them inside
/// the simulated period (see the module docs for the precedence).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    /// No decline, dip or personal holiday in the period.
    Steady,
    /// Took at least one personal holiday in the period (not churn).
    Holiday,
    /// Was at 30-50 % for 10-21 days, then back (not churn).
    TemporaryDip,
    /// Linear decline to zero over 21-70 days.
    GradualDecline,
    /// Drop to 10-35 % for 14-56 days, then gone.
    AbruptDrop,
    /// Gone at once.
    SuddenStop,
    /// Purchase-only: a new customer who dropped out after the first purchase.
    OneTimeBuyer,
    /// Purchase-only: dropped out right after a purchase, without warning (after several
    /// purchases, or an existing customer).
    BuyerDropout,
    /// Purchase-only: bought less and less often (30 % of the usual rate, or less) for 30-120
    /// days after deciding to leave, then gone.
    BuyerDecline,
    /// Purchase-only: still alive at the end of the period (whether or not they bought recently).
    BuyerActive,
}

impl Segment {
    pub const ALL: [Segment; 10] = [
        Segment::Steady,
        Segment::Holiday,
        Segment::TemporaryDip,
        Segment::GradualDecline,
        Segment::AbruptDrop,
        Segment::SuddenStop,
        Segment::OneTimeBuyer,
        Segment::BuyerDropout,
        Segment::BuyerDecline,
        Segment::BuyerActive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Segment::Steady => "steady",
            Segment::Holiday => "holiday",
            Segment::TemporaryDip => "temporary_dip",
            Segment::GradualDecline => "gradual_decline",
            Segment::AbruptDrop => "abrupt_drop",
            Segment::SuddenStop => "sudden_stop",
            Segment::OneTimeBuyer => "one_time_buyer",
            Segment::BuyerDropout => "buyer_dropout",
            Segment::BuyerDecline => "buyer_decline",
            Segment::BuyerActive => "buyer_active",
        }
    }

    /// The segment named `s` (as written by [`as_str`](Segment::as_str)).
    pub fn parse(s: &str) -> Option<Segment> {
        Segment::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// True for the segments whose path ends in churn. Whether the churn falls
    /// inside the period is [`CustomerTruth::churned`]: a decline that starts
    /// near the end of the period may end after it.
    pub fn churns(self) -> bool {
        matches!(
            self,
            Segment::GradualDecline
                | Segment::AbruptDrop
                | Segment::SuddenStop
                | Segment::OneTimeBuyer
                | Segment::BuyerDropout
                | Segment::BuyerDecline
        )
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kind of business relationship of a simulated customer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CustomerKind {
    Saas,
    Shop,
    Mixed,
    PurchaseOnly,
}

impl CustomerKind {
    pub const ALL: [CustomerKind; 4] = [
        CustomerKind::Saas,
        CustomerKind::Shop,
        CustomerKind::Mixed,
        CustomerKind::PurchaseOnly,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CustomerKind::Saas => "saas",
            CustomerKind::Shop => "shop",
            CustomerKind::Mixed => "mixed",
            CustomerKind::PurchaseOnly => "purchase_only",
        }
    }

    /// Index of the hour-of-day profile.
    fn profile(self) -> usize {
        match self {
            CustomerKind::Saas => 0,
            CustomerKind::Shop | CustomerKind::PurchaseOnly => 1,
            CustomerKind::Mixed => 2,
        }
    }
}

impl fmt::Display for CustomerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Ground truth for one simulated customer, relative to the simulated period
/// (see the module docs for the definitions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomerTruth {
    pub customer_id: String,
    pub kind: CustomerKind,
    pub segment: Segment,
    /// When the customer was acquired (their first event); `None` for the
    /// existing base.
    pub acquired_ms: Option<i64>,
    /// `churned_at` falls inside the period.
    pub churned: bool,
    /// Start of the decline, if inside the period (also set when the churn
    /// itself falls after the end).
    pub decline_onset_ms: Option<i64>,
    /// When the customer left (no activity at or after it); set iff `churned`.
    pub churned_at_ms: Option<i64>,
}

/// How a message is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// At its event time.
    OnTime,
    /// After its event time (1 min to 2 days).
    Late,
    /// A second delivery of a message already delivered (same bytes).
    Duplicate,
}

/// One generated message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimEvent {
    pub customer_id: String,
    /// Event time (`ts`).
    pub ts_ms: i64,
    /// When the message enters the stream (`>= ts_ms`); the stream is sorted by it.
    pub arrival_ms: i64,
    pub delivery: Delivery,
    /// The JSON bytes (or malformed bytes).
    pub payload: Vec<u8>,
}

// ---------------------------------------------------------------------------
// Seasonality profiles
// ---------------------------------------------------------------------------

const SAAS_HOURS: [f64; 24] = [
    0.15, 0.1, 0.08, 0.08, 0.1, 0.2, 0.5, 1.0, 1.6, 1.9, 2.0, 1.9, 1.6, 1.8, 1.9, 1.8, 1.6, 1.3,
    0.9, 0.7, 0.6, 0.5, 0.35, 0.2,
];
const SHOP_HOURS: [f64; 24] = [
    0.2, 0.1, 0.07, 0.05, 0.05, 0.1, 0.3, 0.6, 0.8, 0.9, 1.0, 1.1, 1.3, 1.2, 1.0, 1.0, 1.1, 1.3,
    1.6, 1.9, 2.1, 1.9, 1.3, 0.6,
];
/// Monday .. Sunday.
const SAAS_WEEKDAYS: [f64; 7] = [1.15, 1.2, 1.2, 1.15, 1.05, 0.55, 0.45];
const WEEKDAY_ONLY: [f64; 7] = [1.0, 1.05, 1.05, 1.0, 0.9, 0.06, 0.04];
const SHOP_WEEKDAYS: [f64; 7] = [0.9, 0.9, 0.95, 0.95, 1.05, 1.25, 1.15];
/// Share of SaaS users who are (almost) weekday-only.
const WEEKDAY_ONLY_SHARE: f64 = 0.35;

/// Hour-of-day profile of a kind of customer.
#[derive(Clone, Debug)]
struct HourProfile {
    /// Hour-of-day factors, mean 1.
    hour: [f64; 24],
    cdf: [f64; 24],
    max: f64,
}

impl HourProfile {
    fn new(raw: &[f64; 24]) -> Self {
        let mean = raw.iter().sum::<f64>() / 24.0;
        let hour = raw.map(|h| h / mean);
        let mut cdf = [0.0; 24];
        let mut acc = 0.0;
        for (c, h) in cdf.iter_mut().zip(hour.iter()) {
            acc += h / 24.0;
            *c = acc;
        }
        HourProfile {
            hour,
            cdf,
            max: hour.iter().cloned().fold(0.0, f64::max),
        }
    }

    fn all() -> [HourProfile; 3] {
        let mut mixed = [0.0; 24];
        for (i, v) in mixed.iter_mut().enumerate() {
            *v = (SAAS_HOURS[i] + SHOP_HOURS[i]) / 2.0;
        }
        [
            HourProfile::new(&SAAS_HOURS),
            HourProfile::new(&SHOP_HOURS),
            HourProfile::new(&mixed),
        ]
    }

    fn sample_hour(&self, u: f64) -> i64 {
        self.cdf.iter().position(|&c| u < c).unwrap_or(23) as i64
    }
}

/// Monday = 0 for days since the Unix epoch (1970-01-01 was a Thursday).
#[inline]
fn weekday(days: i64) -> usize {
    (days + 3).rem_euclid(7) as usize
}

/// Population-wide seasonal factor of a local time: the Christmas week.
#[inline]
fn season(local_ms: i64) -> f64 {
    let (_, m, d) = civil_from_days(local_ms.div_euclid(DAY));
    if (m == 12 && d >= 24) || (m == 1 && d == 1) {
        CHRISTMAS_FACTOR
    } else {
        1.0
    }
}

#[inline]
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------------------
// Customers
// ---------------------------------------------------------------------------

const FEATURES: [&str; 6] = [
    "api_calls",
    "dashboard_views",
    "reports_generated",
    "exports",
    "storage_gb",
    "integrations_sync",
];
const SAAS_PAGES: [&str; 10] = [
    "/dashboard",
    "/dashboard",
    "/app/projects",
    "/app/reports",
    "/app/integrations",
    "/settings",
    "/billing",
    "/docs",
    "/help",
    "/app/team",
];
const SHOP_PAGES: [&str; 8] = [
    "/",
    "/search",
    "/category/new-arrivals",
    "/category/sale",
    "/cart",
    "/account",
    "/wishlist",
    "/",
];
const SEAT_PRICES_CENTS: [i64; 4] = [900, 1900, 2900, 4900];

/// Decline path of a customer who churns.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    None,
    /// Linear from 1 to 0 over the ramp.
    Gradual {
        ramp_ms: i64,
    },
    /// At `level` from the onset until `churned_at`.
    Abrupt {
        level: f64,
    },
    /// 0 from the onset.
    Sudden,
}

/// A stretch of reduced activity: `[from, to)` at `level`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Dip {
    from: i64,
    to: i64,
    level: f64,
}

impl Dip {
    const NONE: Dip = Dip {
        from: i64::MAX,
        to: i64::MAX,
        level: 1.0,
    };

    #[inline]
    fn contains(&self, t: i64) -> bool {
        t >= self.from && t < self.to
    }

    fn overlaps(&self, from: i64, to: i64) -> bool {
        self.from < to && self.to > from
    }
}

#[derive(Clone, Debug)]
struct Customer {
    id: String,
    rng: Xoshiro256PlusPlus,
    kind: CustomerKind,
    tz_ms: i64,
    noise_key: u64,
    /// Weekday factors (Monday = 0), mean 1, and their maximum.
    wd: [f64; 7],
    wd_max: f64,
    /// Acquisition time; `None` for the existing base.
    acquired: Option<i64>,
    /// Nothing happens before this (acquisition, or the start).
    active_from: i64,

    // Sessions (0 rate = none).
    /// Maximal candidate rate for thinning, per ms.
    session_rate_max: f64,
    usage_mean: f64,
    session_median_s: f64,
    feature_cdf: [f64; 6],
    usage_scale: f64,
    /// The acquisition visit is still to come.
    first_session: bool,

    // Shop purchases (0 mean = none).
    purchase_mean_days: f64,
    purchase_shape: f64,
    basket_median_cents: f64,
    checkout_pending: bool,

    // Purchase-only process (0 rate = not purchase-only).
    po_rate_per_day: f64,
    po_dropout: f64,

    // Subscription (0 price = none).
    seat_price_cents: i64,
    seats: u32,

    // Engagement (0 gap = none).
    eng_gap_days: f64,
    eng_level: f64,
    eng_activity: f64,

    // Decline and noise.
    path: Path,
    /// Decline onset (`i64::MAX`: none).
    onset: i64,
    /// No activity at or after this time (`churned_at`; `i64::MAX`: never).
    dead_at: i64,
    dip: Dip,
    holidays: Vec<Dip>,

    // Counters and session state.
    seq: u64,
    sessions: u32,
    orders: u32,
    sess_left: u32,
    sess_end: i64,
}

/// Civil year of a timestamp.
fn year_of(ms: i64) -> i64 {
    civil_from_days(ms.div_euclid(DAY)).0
}

impl Customer {
    fn new(idx: usize, cfg: &SimConfig, end: i64, profiles: &[HourProfile; 3]) -> Self {
        let seed = splitmix64(cfg.seed ^ splitmix64(idx as u64 ^ 0x5eed_c0ffee));
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let start = cfg.start_ms;

        // The same numbers are drawn in the same order whatever the kind and
        // configuration, so that e.g. changing the hazard does not reshuffle
        // kinds and rates.
        let u_kind: f64 = rng.random();
        let kind = if u_kind < 0.30 {
            CustomerKind::Saas
        } else if u_kind < 0.52 {
            CustomerKind::Shop
        } else if u_kind < 0.65 {
            CustomerKind::Mixed
        } else {
            CustomerKind::PurchaseOnly
        };
        let prof = &profiles[kind.profile()];
        let u_tz: f64 = rng.random();
        let tz_ms = if u_tz < 0.3 {
            0
        } else if u_tz < 0.8 {
            HOUR
        } else {
            2 * HOUR
        };

        // Acquisition.
        let u_existing: f64 = rng.random();
        let u_acq: f64 = rng.random();
        let u_acq_hour: f64 = rng.random();
        let acq_offset = rng.random_range(0..HOUR);
        let acquired = if u_existing < cfg.existing_share || end <= start {
            None
        } else {
            let raw = start + (u_acq * (end - start) as f64) as i64;
            let day = (raw + tz_ms).div_euclid(DAY);
            let snapped = day * DAY + prof.sample_hour(u_acq_hour) * HOUR + acq_offset - tz_ms;
            Some(if (start..end).contains(&snapped) {
                snapped
            } else {
                raw
            })
        };
        let active_from = acquired.unwrap_or(start);

        // Weekday profile.
        let u_wd: f64 = rng.random();
        let (base, sigma) = match kind {
            CustomerKind::Saas if u_wd < WEEKDAY_ONLY_SHARE => (WEEKDAY_ONLY, 0.15),
            CustomerKind::Saas => (SAAS_WEEKDAYS, 0.15),
            CustomerKind::Shop | CustomerKind::PurchaseOnly => (SHOP_WEEKDAYS, 0.2),
            CustomerKind::Mixed => {
                let mut w = [0.0; 7];
                for (i, v) in w.iter_mut().enumerate() {
                    *v = (SAAS_WEEKDAYS[i] + SHOP_WEEKDAYS[i]) / 2.0;
                }
                (w, 0.15)
            }
        };
        let mut wd = [0.0; 7];
        for (v, b) in wd.iter_mut().zip(base) {
            let z: f64 = rng.sample(StandardNormal);
            *v = b * (sigma * z).exp();
        }
        let wmean = wd.iter().sum::<f64>() / 7.0;
        for v in wd.iter_mut() {
            *v /= wmean;
        }
        let wd_max = wd.iter().cloned().fold(0.0, f64::max);

        // Sessions.
        let (rate_shape, rate_mean, rate_lo, rate_hi) = match kind {
            CustomerKind::Saas => (1.3, 0.8, 0.03, 8.0),
            CustomerKind::Shop => (1.2, 0.35, 0.02, 4.0),
            CustomerKind::Mixed => (1.3, 0.6, 0.03, 6.0),
            CustomerKind::PurchaseOnly => (1.0, 1.0, 0.0, 0.0),
        };
        let per_day = gamma(&mut rng, rate_shape, rate_mean).clamp(rate_lo, rate_hi);
        let session_rate_max = per_day / DAY as f64 * prof.max * wd_max * NOISE_MAX;

        let u_usage: f64 = rng.random();
        let usage_mean = match kind {
            CustomerKind::Saas => 1.0 + 2.0 * u_usage,
            CustomerKind::Mixed => 0.3 + 1.0 * u_usage,
            _ => 0.0,
        };
        let z: f64 = rng.sample(StandardNormal);
        let session_median_s = match kind {
            CustomerKind::Shop => 180.0,
            _ => 300.0,
        } * (0.4 * z).exp();
        let mut feature_cdf = [0.0; 6];
        let mut acc = 0.0;
        for c in feature_cdf.iter_mut() {
            acc += gamma(&mut rng, 0.6, 1.0) + 1e-3;
            *c = acc;
        }
        for c in feature_cdf.iter_mut() {
            *c /= acc;
        }
        let z: f64 = rng.sample(StandardNormal);
        let usage_scale = (0.8 * z).exp();

        // Purchases.
        let u_pm: f64 = rng.random();
        let u_ps: f64 = rng.random();
        let (purchase_mean_days, purchase_shape) = match kind {
            CustomerKind::Shop => (7.0 + 38.0 * u_pm, 1.5 + 2.5 * u_ps),
            CustomerKind::Mixed => (20.0 + 40.0 * u_pm, 1.5 + 2.5 * u_ps),
            _ => (0.0, 1.0),
        };
        let z: f64 = rng.sample(StandardNormal);
        let basket_median_cents = match kind {
            CustomerKind::Mixed => 2500.0,
            CustomerKind::Shop => 3500.0,
            _ => 4000.0,
        } * (0.7 * z).exp();
        let po_rate = gamma(&mut rng, 0.9, 1.0 / 40.0).clamp(1.0 / 1500.0, 0.5);
        let po_p = Beta::new(1.2, 2.5).map_or(0.32, |b| b.sample(&mut rng));
        let (po_rate_per_day, po_dropout) = if kind == CustomerKind::PurchaseOnly {
            (po_rate, po_p)
        } else {
            (0.0, 0.0)
        };

        // Subscription.
        let u_sub: f64 = rng.random();
        let price_idx = rng.random_range(0..SEAT_PRICES_CENTS.len());
        let e: f64 = rng.sample(Exp1);
        let seat_price_cents = match kind {
            CustomerKind::Saas if u_sub < 0.75 => SEAT_PRICES_CENTS[price_idx],
            CustomerKind::Mixed if u_sub < 0.20 => SEAT_PRICES_CENTS[price_idx],
            _ => 0,
        };
        let seats = 1 + ((e * 3.0) as u32).min(49);

        // Engagement.
        let u_eng: f64 = rng.random();
        let u_eng_gap: f64 = rng.random();
        let eng_gap_days = match kind {
            CustomerKind::Shop if u_eng < 0.5 => 5.0 + 9.0 * u_eng_gap,
            CustomerKind::Shop | CustomerKind::PurchaseOnly => 0.0,
            _ => 2.0 + 5.0 * u_eng_gap,
        };
        let eng_level = 40.0 + 50.0 * rng.random::<f64>();

        // Decline path.
        let e_onset: f64 = rng.sample(Exp1);
        let u_window: f64 = rng.random();
        let u_window_at: f64 = rng.random();
        let u_path: f64 = rng.random();
        let u_len: f64 = rng.random();
        let u_level: f64 = rng.random();
        let h = cfg.churn_hazard_per_day;
        let min_onset = active_from
            + if acquired.is_some() {
                MIN_TENURE_BEFORE_CHURN
            } else {
                0
            };
        let onset = if kind == CustomerKind::PurchaseOnly || h <= 0.0 {
            None
        } else if let Some((lo, hi)) = cfg.decline_window_days {
            let (lo, hi) = (lo.min(hi).max(0.0), hi.max(lo).max(0.0));
            let t = start + ((lo + (hi - lo) * u_window_at) * DAY as f64) as i64;
            (u_window < 1.0 - (-365.0 * h).exp() && t >= min_onset).then_some(t)
        } else {
            let days = e_onset / h;
            (days < 1.0e5).then(|| min_onset + (days * DAY as f64) as i64)
        };
        let (path, onset, dead_at) = match onset {
            None => (Path::None, i64::MAX, i64::MAX),
            Some(o) if u_path < 0.45 => {
                let ramp_ms = ((21.0 + 49.0 * u_len) * DAY as f64) as i64;
                (Path::Gradual { ramp_ms }, o, o + ramp_ms)
            }
            Some(o) if u_path < 0.85 => {
                let stay = ((14.0 + 42.0 * u_len) * DAY as f64) as i64;
                let level = 0.1 + 0.25 * u_level;
                (Path::Abrupt { level }, o, o + stay)
            }
            Some(o) => (Path::Sudden, o, o),
        };

        // Temporary dip (not churn).
        let u_dip: f64 = rng.random();
        let u_dip_at: f64 = rng.random();
        let u_dip_len: f64 = rng.random();
        let u_dip_level: f64 = rng.random();
        let dip_lo = (start + 14 * DAY).max(min_onset);
        let dip_hi = end - 21 * DAY;
        let dip = if kind != CustomerKind::PurchaseOnly
            && u_dip < TEMPORARY_DIP_DRAW
            && dip_hi > dip_lo
        {
            let from = dip_lo + (u_dip_at * (dip_hi - dip_lo) as f64) as i64;
            Dip {
                from,
                to: from + ((10.0 + 11.0 * u_dip_len) * DAY as f64) as i64,
                level: 0.3 + 0.2 * u_dip_level,
            }
        } else {
            Dip::NONE
        };

        // Holidays (not churn): 1-2 per calendar year, for every year the
        // simulation may reach (the demo runs past the period).
        let u_hol: f64 = rng.random();
        let mut holidays = Vec::new();
        if u_hol < 0.35 {
            for year in year_of(start - 30 * DAY)..=year_of(end) + 1 {
                let n = if rng.random::<f64>() < 0.4 { 2 } else { 1 };
                for _ in 0..n {
                    let u: f64 = rng.random();
                    let day = if u < 0.55 {
                        days_from_civil(year, 7, 1) + rng.random_range(0..56)
                    } else if u < 0.80 {
                        days_from_civil(year, 12, 18) + rng.random_range(0..13)
                    } else {
                        days_from_civil(year, 1, 1) + rng.random_range(0..365)
                    };
                    let len = rng.random_range(3..=14);
                    let level = if rng.random::<f64>() < 0.3 {
                        0.0
                    } else {
                        0.05 + 0.45 * rng.random::<f64>()
                    };
                    let from = day * DAY - tz_ms;
                    holidays.push(Dip {
                        from,
                        to: from + len * DAY,
                        level,
                    });
                }
            }
        }

        Customer {
            id: format!("c{:06}", idx + 1),
            rng,
            kind,
            tz_ms,
            noise_key: splitmix64(seed ^ 0x0123_4567_89ab_cdef),
            wd,
            wd_max,
            acquired,
            active_from,
            session_rate_max: if kind == CustomerKind::PurchaseOnly {
                0.0
            } else {
                session_rate_max
            },
            usage_mean,
            session_median_s,
            feature_cdf,
            usage_scale,
            first_session: acquired.is_some(),
            purchase_mean_days,
            purchase_shape,
            basket_median_cents,
            checkout_pending: false,
            po_rate_per_day,
            po_dropout,
            seat_price_cents,
            seats,
            eng_gap_days,
            eng_level,
            eng_activity: 1.0,
            path,
            onset,
            dead_at,
            dip,
            holidays,
            seq: 0,
            sessions: 0,
            orders: 0,
            sess_left: 0,
            sess_end: start,
        }
    }

    fn is_purchase_only(&self) -> bool {
        self.kind == CustomerKind::PurchaseOnly
    }

    /// CRM updates stop this long after churn.
    fn eng_stop(&self) -> i64 {
        self.dead_at.saturating_add(ENGAGEMENT_AFTER_CHURN)
    }

    /// Ground truth relative to the period `[start, end)`.
    fn truth(&self, start: i64, end: i64) -> CustomerTruth {
        let from = self.active_from.max(start);
        let churned = self.dead_at < end;
        let churned_at_ms = churned.then_some(self.dead_at);
        let (segment, decline_onset_ms) = if self.is_purchase_only() {
            if self.onset < end && self.onset < self.dead_at {
                (Segment::BuyerDecline, Some(self.onset))
            } else if churned {
                let seg = if self.acquired.is_some() && self.orders == 1 {
                    Segment::OneTimeBuyer
                } else {
                    Segment::BuyerDropout
                };
                (seg, churned_at_ms)
            } else {
                (Segment::BuyerActive, None)
            }
        } else if self.onset < end {
            let seg = match self.path {
                Path::Gradual { .. } => Segment::GradualDecline,
                Path::Abrupt { .. } => Segment::AbruptDrop,
                Path::Sudden | Path::None => Segment::SuddenStop,
            };
            (seg, Some(self.onset))
        } else if self.dip.overlaps(from, end) {
            (Segment::TemporaryDip, None)
        } else if self.holidays.iter().any(|h| h.overlaps(from, end)) {
            (Segment::Holiday, None)
        } else {
            (Segment::Steady, None)
        };
        CustomerTruth {
            customer_id: self.id.clone(),
            kind: self.kind,
            segment,
            acquired_ms: self.acquired,
            churned,
            decline_onset_ms,
            churned_at_ms,
        }
    }

    /// Factor of the decline path alone at time `t` (1 before the onset).
    #[inline]
    fn path_factor(&self, t: i64) -> f64 {
        if t < self.onset {
            return 1.0;
        }
        match self.path {
            Path::None => 1.0,
            Path::Gradual { ramp_ms } => (1.0 - (t - self.onset) as f64 / ramp_ms as f64).max(0.0),
            Path::Abrupt { level } => level,
            Path::Sudden => 0.0,
        }
    }

    /// Activity factor in `[0, 1]` at time `t` (see the module docs).
    #[inline]
    fn activity(&self, t: i64) -> f64 {
        if t < self.active_from || t >= self.dead_at {
            return 0.0;
        }
        let mut a = self.path_factor(t);
        if self.dip.contains(t) {
            a *= self.dip.level;
        }
        for h in &self.holidays {
            if h.contains(t) {
                a *= h.level;
            }
        }
        a * season(t + self.tz_ms)
    }

    /// Per-customer-week noise factor in `[0.7, 1.3]`.
    #[inline]
    fn noise(&self, t: i64) -> f64 {
        let week = (t + self.tz_ms + 3 * DAY).div_euclid(7 * DAY);
        let h = splitmix64(self.noise_key ^ (week as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        0.7 + 0.6 * ((h >> 11) as f64 / (1u64 << 53) as f64)
    }

    /// Seasonal (hour x weekday) intensity relative to its maximum, at `t`.
    #[inline]
    fn relative_intensity(&self, prof: &HourProfile, t: i64) -> f64 {
        let local = t + self.tz_ms;
        let h = (local.rem_euclid(DAY) / HOUR) as usize;
        prof.hour[h] * self.wd[weekday(local.div_euclid(DAY))] / (prof.max * self.wd_max)
    }

    /// Next session start strictly after `from` (thinning), or `None` if the
    /// customer is gone for good.
    fn next_session(&mut self, prof: &HourProfile, from: i64) -> Option<i64> {
        if self.session_rate_max <= 0.0 {
            return None;
        }
        let from = from.max(self.active_from - 1);
        let mut t = from as f64;
        loop {
            let e: f64 = self.rng.sample(Exp1);
            t += e / self.session_rate_max;
            let ti = t as i64;
            if ti >= self.dead_at || t > 9.0e15 {
                return None;
            }
            let p =
                self.relative_intensity(prof, ti) * self.noise(ti) / NOISE_MAX * self.activity(ti);
            if self.rng.random::<f64>() < p {
                return Some(ti.max(from + 1));
            }
        }
    }

    /// A purchase time near `cand`: snapped onto a (weekday-weighted) day and
    /// an hour of the profile, strictly after `from`.
    fn snap(&mut self, prof: &HourProfile, cand: i64, from: i64) -> i64 {
        let mut day = (cand + self.tz_ms).div_euclid(DAY);
        if self.rng.random::<f64>() >= self.wd[weekday(day)] / self.wd_max {
            day += 1;
        }
        let hour = prof.sample_hour(self.rng.random());
        let snapped = day * DAY + hour * HOUR + self.rng.random_range(0..HOUR) - self.tz_ms;
        if snapped <= from {
            from + self.rng.random_range(HOUR..DAY)
        } else {
            snapped
        }
    }

    /// Next shop purchase (checkout) time strictly after `from`.
    fn next_purchase(&mut self, prof: &HourProfile, from: i64) -> Option<i64> {
        if self.purchase_mean_days <= 0.0 {
            return None;
        }
        let mut t = from;
        // The activity factor is 0 only during silent holidays and from
        // `dead_at` on, so this terminates quickly; the bound is a safety net.
        for _ in 0..100_000 {
            let gap_days = gamma(&mut self.rng, self.purchase_shape, self.purchase_mean_days);
            let cand = t + ((gap_days * DAY as f64) as i64).max(HOUR);
            if cand >= self.dead_at {
                return None;
            }
            let snapped = self.snap(prof, cand, from);
            if snapped >= self.dead_at {
                return None;
            }
            if self.rng.random::<f64>() < self.activity(snapped) {
                return Some(snapped);
            }
            t = snapped;
        }
        None
    }

    /// Next purchase of a purchase-only customer strictly after `from`:
    /// exponential gaps at the personal rate, snapped and thinned.
    fn next_po_purchase(&mut self, prof: &HourProfile, from: i64) -> Option<i64> {
        let mut t = from;
        for _ in 0..100_000 {
            let e: f64 = self.rng.sample(Exp1);
            let gap = e / self.po_rate_per_day * DAY as f64;
            if gap > 1.0e13 {
                return None;
            }
            let cand = t + (gap as i64).max(HOUR);
            let snapped = self.snap(prof, cand, from);
            if self.rng.random::<f64>() < self.activity(snapped) {
                return Some(snapped);
            }
            t = snapped;
        }
        None
    }

    fn next_engagement(&mut self, from: i64) -> Option<i64> {
        if self.eng_gap_days <= 0.0 {
            return None;
        }
        let gap = gamma(&mut self.rng, 4.0, self.eng_gap_days);
        let next = from + ((gap * DAY as f64) as i64).max(HOUR);
        (next < self.eng_stop()).then_some(next)
    }

    fn usage_body(&mut self) -> Body {
        let u: f64 = self.rng.random();
        let feature = self.feature_cdf.iter().position(|&c| u < c).unwrap_or(5);
        let e: f64 = self.rng.sample(Exp1);
        let qty = match feature {
            0 => {
                let z: f64 = self.rng.sample(StandardNormal);
                Qty::Int((40.0 * self.usage_scale * (z).exp()).round() as u32)
            }
            1 => Qty::Int(1 + (e * 3.0) as u32),
            2 => Qty::Int(1 + (e * 0.7) as u32),
            3 => Qty::Int(1),
            4 => {
                let z: f64 = self.rng.sample(StandardNormal);
                Qty::Hundredths(((50.0 * self.usage_scale * (0.8 * z).exp()).round() as u32).max(1))
            }
            _ => Qty::Int(1 + (e * 8.0) as u32),
        };
        Body::Usage {
            feature: feature as u8,
            qty,
        }
    }

    fn page(&mut self) -> Page {
        if self.first_session {
            self.first_session = false;
            return Page::Static(match self.kind {
                CustomerKind::Shop => "/",
                _ => "/signup",
            });
        }
        let shop = match self.kind {
            CustomerKind::Saas => false,
            CustomerKind::Shop | CustomerKind::PurchaseOnly => true,
            CustomerKind::Mixed => self.rng.random::<bool>(),
        };
        if shop {
            if self.rng.random::<f64>() < 0.45 {
                Page::Product(self.rng.random_range(1..5000))
            } else {
                Page::Static(SHOP_PAGES[self.rng.random_range(0..SHOP_PAGES.len())])
            }
        } else {
            Page::Static(SAAS_PAGES[self.rng.random_range(0..SAAS_PAGES.len())])
        }
    }

    fn purchase_body(&mut self, median_cents: f64, spread: f64, qty_scale: f64) -> Body {
        self.orders += 1;
        let e: f64 = self.rng.sample(Exp1);
        let qty = 1 + ((e * qty_scale) as u32).min(9);
        let z: f64 = self.rng.sample(StandardNormal);
        let amount = median_cents * (spread * z).exp() * (1.0 + 0.3 * (qty - 1) as f64);
        Body::Purchase {
            amount_cents: (amount.round() as i64).max(99),
            qty,
            order: self.orders,
        }
    }

    /// Process the event of `stream` at `ts`: returns the event body (if any)
    /// and the stream's next event time (if any).
    fn step(&mut self, prof: &HourProfile, ts: i64, stream: u8) -> (Option<Body>, Option<i64>) {
        // The one rule that makes `churned_at` exact: no activity at or after it.
        if stream != STREAM_ENGAGEMENT && ts >= self.dead_at {
            return (None, None);
        }
        match stream {
            STREAM_SESSION => {
                if self.sess_left == 0 {
                    self.sessions += 1;
                    let z: f64 = self.rng.sample(StandardNormal);
                    let dur_s = (self.session_median_s * (0.8 * z).exp()).clamp(10.0, 14_400.0);
                    let dur_s = dur_s as u32;
                    let k = if self.usage_mean > 0.0 {
                        let e: f64 = self.rng.sample(Exp1);
                        ((e * self.usage_mean + 0.5) as u32).min(15)
                    } else {
                        0
                    };
                    self.sess_end = ts + dur_s as i64 * SEC;
                    self.sess_left = k;
                    let body = Body::Visit {
                        page: self.page(),
                        session: self.sessions,
                        duration_s: Some(dur_s),
                    };
                    let next = if k > 0 {
                        Some(self.usage_gap(ts))
                    } else {
                        self.next_session(prof, self.sess_end)
                    };
                    (Some(body), next)
                } else {
                    self.sess_left -= 1;
                    let body = self.usage_body();
                    let next = if self.sess_left > 0 {
                        Some(self.usage_gap(ts))
                    } else {
                        self.next_session(prof, self.sess_end.max(ts))
                    };
                    (Some(body), next)
                }
            }
            STREAM_PURCHASE if self.is_purchase_only() => {
                let body = self.purchase_body(self.basket_median_cents, 0.5, 0.6);
                if self.onset == i64::MAX && self.rng.random::<f64>() < self.po_dropout {
                    if self.orders >= 2 && self.rng.random::<f64>() < PO_DECLINE_SHARE {
                        // Decided to leave: buys rarely for a while, then is gone.
                        let level = self.rng.random_range(0.0..0.3);
                        let days = self.rng.random_range(30.0..120.0);
                        self.onset = ts + 1;
                        self.path = Path::Abrupt { level };
                        self.dead_at = ts + (days * DAY as f64) as i64;
                        (Some(body), self.next_po_purchase(prof, ts))
                    } else {
                        // Gone for good right after this purchase.
                        self.dead_at = ts + 1;
                        (Some(body), None)
                    }
                } else {
                    (Some(body), self.next_po_purchase(prof, ts))
                }
            }
            STREAM_PURCHASE => {
                if !self.checkout_pending {
                    self.checkout_pending = true;
                    self.sessions += 1;
                    let body = Body::Visit {
                        page: Page::Static("/checkout"),
                        session: self.sessions,
                        duration_s: None,
                    };
                    (Some(body), Some(ts + self.rng.random_range(MIN..10 * MIN)))
                } else {
                    self.checkout_pending = false;
                    let body = self.purchase_body(self.basket_median_cents, 0.45, 0.8);
                    (Some(body), self.next_purchase(prof, ts))
                }
            }
            STREAM_SUBSCRIPTION => {
                let a = self.path_factor(ts);
                let u: f64 = self.rng.random();
                if a >= 0.99 && u < 0.05 {
                    self.seats += 1;
                } else if a < 0.6 && u < 0.3 && self.seats > 1 {
                    self.seats -= 1;
                }
                self.orders += 1;
                let body = Body::Purchase {
                    amount_cents: self.seat_price_cents * self.seats as i64,
                    qty: self.seats,
                    order: self.orders,
                };
                let next = ts + 30 * DAY + self.rng.random_range(-30 * MIN..30 * MIN);
                (Some(body), Some(next))
            }
            _ => {
                let z: f64 = self.rng.sample(StandardNormal);
                self.eng_level = (self.eng_level + 1.5 * z).clamp(20.0, 98.0);
                self.eng_activity = 0.5 * self.eng_activity + 0.5 * self.activity(ts);
                let z: f64 = self.rng.sample(StandardNormal);
                let score = (self.eng_level * (0.35 + 0.65 * self.eng_activity) + 4.0 * z)
                    .clamp(0.0, 100.0);
                let body = Body::Engagement {
                    score_tenths: (score * 10.0).round() as u32,
                };
                (Some(body), self.next_engagement(ts))
            }
        }
    }

    fn usage_gap(&mut self, ts: i64) -> i64 {
        let remaining = (self.sess_end - ts).max(10 * SEC) as f64;
        let f = 0.5 + self.rng.random::<f64>();
        ts + ((remaining / (self.sess_left + 1) as f64 * f) as i64).max(SEC)
    }
}

/// Gamma sample with the given shape and mean.
fn gamma(rng: &mut Xoshiro256PlusPlus, shape: f64, mean: f64) -> f64 {
    match Gamma::new(shape, mean / shape) {
        Ok(g) => g.sample(rng),
        Err(_) => mean,
    }
}

// ---------------------------------------------------------------------------
// Event bodies and encoding
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Page {
    Static(&'static str),
    Product(u32),
}

#[derive(Clone, Copy, Debug)]
enum Qty {
    Int(u32),
    Hundredths(u32),
}

#[derive(Clone, Copy, Debug)]
enum Body {
    Visit {
        page: Page,
        session: u32,
        duration_s: Option<u32>,
    },
    Usage {
        feature: u8,
        qty: Qty,
    },
    Purchase {
        amount_cents: i64,
        qty: u32,
        order: u32,
    },
    Engagement {
        score_tenths: u32,
    },
}

impl Body {
    fn type_str(&self) -> &'static str {
        match self {
            Body::Visit { .. } => "visit",
            Body::Usage { .. } => "usage",
            Body::Purchase { .. } => "purchase",
            Body::Engagement { .. } => "engagement",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Malform {
    NotJson,
    MissingCustomerId,
    UnknownType,
    BadTs,
    NegativeAmount,
}

const UNKNOWN_TYPES: [&str; 4] = ["refund", "pageview_v2", "VISIT", ""];
const BAD_TS: [&str; 4] = [
    "not-a-timestamp",
    "2026-02-30T25:61:00.000Z",
    "",
    "31/12/2025 10:00",
];
const GARBAGE: [&[u8]; 3] = [
    b"\xff\xfe\x00garbage\x01\x02",
    b"<html><body>502 Bad Gateway</body></html>",
    b"visit;c000001;2026-01-01",
];

struct EventCtx<'a> {
    cid: &'a str,
    seed: u64,
    seq: u64,
    ts: i64,
}

fn push_cents(out: &mut Vec<u8>, cents: i64) {
    if cents < 0 {
        out.push(b'-');
    }
    let c = cents.unsigned_abs();
    let _ = write!(out, "{}.{:02}", c / 100, c % 100);
}

fn encode(out: &mut Vec<u8>, ev: &EventCtx<'_>, body: &Body, mal: Option<(Malform, u32)>) {
    let m = mal.map(|(m, _)| m);
    let variant = mal.map_or(0, |(_, v)| v) as usize;
    let type_str = if m == Some(Malform::UnknownType) {
        UNKNOWN_TYPES[variant % UNKNOWN_TYPES.len()]
    } else {
        body.type_str()
    };
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(type_str.as_bytes());
    out.push(b'"');
    if m != Some(Malform::MissingCustomerId) {
        out.extend_from_slice(b",\"customer_id\":\"");
        out.extend_from_slice(ev.cid.as_bytes());
        out.push(b'"');
    }
    out.extend_from_slice(b",\"ts\":\"");
    if m == Some(Malform::BadTs) {
        out.extend_from_slice(BAD_TS[variant % BAD_TS.len()].as_bytes());
    } else {
        out.extend_from_slice(crate::time::format_rfc3339_ms(ev.ts).as_bytes());
    }
    let _ = write!(
        out,
        "\",\"event_id\":\"e{:x}-{}-{}\"",
        ev.seed, ev.cid, ev.seq
    );
    match *body {
        Body::Visit {
            page,
            session,
            duration_s,
        } => {
            out.extend_from_slice(b",\"page\":\"");
            match page {
                Page::Static(p) => out.extend_from_slice(p.as_bytes()),
                Page::Product(n) => {
                    let _ = write!(out, "/product/{n}");
                }
            }
            let _ = write!(out, "\",\"session_id\":\"{}-s{}\"", ev.cid, session);
            if let Some(d) = duration_s {
                let _ = write!(out, ",\"duration_secs\":{d}");
            }
        }
        Body::Usage { feature, qty } => {
            out.extend_from_slice(b",\"feature\":\"");
            out.extend_from_slice(FEATURES[feature as usize].as_bytes());
            out.extend_from_slice(b"\",\"quantity\":");
            match qty {
                Qty::Int(n) => {
                    let _ = write!(out, "{n}");
                }
                Qty::Hundredths(n) => push_cents(out, n as i64),
            }
        }
        Body::Purchase {
            amount_cents,
            qty,
            order,
        } => {
            out.extend_from_slice(b",\"amount\":");
            push_cents(out, amount_cents);
            let _ = write!(
                out,
                ",\"currency\":\"EUR\",\"quantity\":{qty},\"order_id\":\"{}-o{order}\"",
                ev.cid
            );
        }
        Body::Engagement { score_tenths } => {
            let _ = write!(
                out,
                ",\"score\":{}.{}",
                score_tenths / 10,
                score_tenths % 10
            );
        }
    }
    out.push(b'}');
    if m == Some(Malform::NotJson) {
        if variant % 2 == 0 {
            // Truncated message: any strict prefix of a JSON object is invalid.
            let keep = 1 + (variant / 2) % (out.len() - 1);
            out.truncate(keep);
        } else {
            out.clear();
            out.extend_from_slice(GARBAGE[(variant / 2) % GARBAGE.len()]);
        }
    }
}

/// Civil date (year, month, day) from days since 1970-01-01 (H. Hinnant).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of a civil date (H. Hinnant).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let (m, d) = (m as i64, d as i64);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

// ---------------------------------------------------------------------------
// Simulator
// ---------------------------------------------------------------------------

/// A delivery waiting in the reorder buffer (late events and duplicates),
/// ordered by `(arrival, seq)`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pending {
    seq: u64,
    event: SimEvent,
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.event.arrival_ms, self.seq).cmp(&(other.event.arrival_ms, other.seq))
    }
}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Deterministic, incremental event generator (see the module docs).
#[derive(Clone, Debug)]
pub struct Simulator {
    cfg: SimConfig,
    end_ms: i64,
    customers: Vec<Customer>,
    profiles: [HourProfile; 3],
    /// `(next ts, customer index, stream)`, min-heap.
    heap: BinaryHeap<Reverse<(i64, u32, u8)>>,
    /// Late and duplicate deliveries, min-heap by arrival.
    pending: BinaryHeap<Reverse<Pending>>,
    now_ms: i64,
    mal_rng: Xoshiro256PlusPlus,
    delivery_rng: Xoshiro256PlusPlus,
    /// Delivery sequence number (tie-break of equal arrival times).
    delivery_seq: u64,
    emitted: u64,
    malformed: u64,
    late: u64,
    duplicates: u64,
}

impl Simulator {
    pub fn new(cfg: SimConfig) -> Self {
        let mut cfg = cfg;
        let clamp01 = |x: f64| if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) };
        cfg.existing_share = clamp01(cfg.existing_share);
        cfg.malformed_share = clamp01(cfg.malformed_share);
        cfg.late_share = clamp01(cfg.late_share);
        cfg.duplicate_share = clamp01(cfg.duplicate_share);
        if !cfg.churn_hazard_per_day.is_finite() || cfg.churn_hazard_per_day < 0.0 {
            cfg.churn_hazard_per_day = 0.0;
        }
        if !cfg.days.is_finite() || cfg.days < 0.0 {
            cfg.days = 0.0;
        }
        assert!(
            cfg.customers < u32::MAX as usize,
            "too many simulated customers"
        );
        let profiles = HourProfile::all();
        let start = cfg.start_ms;
        let end_ms = start.saturating_add((cfg.days.min(1.0e6) * DAY as f64) as i64);
        let mut customers = Vec::with_capacity(cfg.customers);
        let mut heap = BinaryHeap::with_capacity(cfg.customers * 4);
        for idx in 0..cfg.customers {
            let mut c = Customer::new(idx, &cfg, end_ms, &profiles);
            let prof = &profiles[c.kind.profile()];
            let i = idx as u32;
            let from = c.active_from;
            let new = c.acquired.is_some();
            if c.session_rate_max > 0.0 {
                // A new customer's first event is the acquisition visit.
                let first = if new {
                    Some(from)
                } else {
                    c.next_session(prof, start - 1)
                };
                if let Some(t) = first {
                    heap.push(Reverse((t, i, STREAM_SESSION)));
                }
            }
            if c.purchase_mean_days > 0.0 {
                let next = if new {
                    c.next_purchase(prof, from)
                } else {
                    // Start in the middle of a purchase cycle (random phase).
                    let back = (c.rng.random::<f64>() * c.purchase_mean_days * DAY as f64) as i64;
                    let mut next = c.next_purchase(prof, start - back);
                    while let Some(t) = next {
                        if t >= start {
                            break;
                        }
                        next = c.next_purchase(prof, t);
                    }
                    next
                };
                if let Some(t) = next {
                    heap.push(Reverse((t, i, STREAM_PURCHASE)));
                }
            }
            if c.po_rate_per_day > 0.0 {
                // A new buyer's first event is their first purchase; the
                // existing ones are at a random phase (memoryless gaps).
                let next = if new {
                    Some(from)
                } else {
                    c.next_po_purchase(prof, start)
                };
                if let Some(t) = next {
                    heap.push(Reverse((t, i, STREAM_PURCHASE)));
                }
            }
            if c.seat_price_cents > 0 {
                let t = if new {
                    from + c.rng.random_range(MIN..10 * MIN)
                } else {
                    start + c.rng.random_range(0..30 * DAY)
                };
                if t < c.dead_at {
                    heap.push(Reverse((t, i, STREAM_SUBSCRIPTION)));
                }
            }
            if c.eng_gap_days > 0.0 {
                let t = from + (c.rng.random::<f64>() * c.eng_gap_days * DAY as f64) as i64;
                if t < c.eng_stop() {
                    heap.push(Reverse((t, i, STREAM_ENGAGEMENT)));
                }
            }
            customers.push(c);
        }
        let mal_rng = Xoshiro256PlusPlus::seed_from_u64(splitmix64(cfg.seed ^ 0xbad_5eed));
        let delivery_rng = Xoshiro256PlusPlus::seed_from_u64(splitmix64(cfg.seed ^ 0x1a7e_d0d0));
        Simulator {
            now_ms: start,
            end_ms,
            cfg,
            customers,
            profiles,
            heap,
            pending: BinaryHeap::new(),
            mal_rng,
            delivery_rng,
            delivery_seq: 0,
            emitted: 0,
            malformed: 0,
            late: 0,
            duplicates: 0,
        }
    }

    fn deliver(&mut self, event: SimEvent, out: &mut Vec<SimEvent>) {
        self.emitted += 1;
        match event.delivery {
            Delivery::OnTime => {}
            Delivery::Late => self.late += 1,
            Delivery::Duplicate => self.duplicates += 1,
        }
        out.push(event);
    }

    /// Deliver the waiting messages that arrive at or before `t` (`inclusive`)
    /// or before `t`.
    fn release(&mut self, t: i64, inclusive: bool, out: &mut Vec<SimEvent>) {
        while let Some(Reverse(p)) = self.pending.peek() {
            let a = p.event.arrival_ms;
            if a > t || (a == t && !inclusive) {
                break;
            }
            let Some(Reverse(p)) = self.pending.pop() else {
                break;
            };
            self.deliver(p.event, out);
        }
    }

    /// Delay of a late delivery: 1 min to 6 h (log-uniform), a tenth 6 h to 2 days.
    fn late_delay(&mut self) -> i64 {
        let (lo, hi) = if self.delivery_rng.random::<f64>() < 0.1 {
            (6.0 * HOUR as f64, 48.0 * HOUR as f64)
        } else {
            (MIN as f64, 6.0 * HOUR as f64)
        };
        let u: f64 = self.delivery_rng.random();
        (lo * (hi / lo).powf(u)) as i64
    }

    /// Generate every event with `ts < to_ms` not yet generated and append to
    /// `out`, in arrival order, the messages that arrive before `to_ms` (late
    /// ones and duplicates may arrive later: they wait in a reorder buffer,
    /// see [`flush`](Simulator::flush)). Calling repeatedly with increasing
    /// `to_ms` continues the stream exactly as one call would; a `to_ms` not
    /// beyond [`now_ms`](Simulator::now_ms) is a no-op.
    pub fn advance(&mut self, to_ms: i64, out: &mut Vec<SimEvent>) {
        if to_ms <= self.now_ms {
            return;
        }
        let seed = self.cfg.seed;
        let mal_share = self.cfg.malformed_share;
        let late_share = self.cfg.late_share;
        let dup_share = self.cfg.duplicate_share;
        while let Some(&Reverse((ts, idx, stream))) = self.heap.peek() {
            if ts >= to_ms {
                break;
            }
            self.heap.pop();
            let c = &mut self.customers[idx as usize];
            let prof = &self.profiles[c.kind.profile()];
            let (body, next) = c.step(prof, ts, stream);
            if let Some(n) = next {
                debug_assert!(n > ts);
                self.heap.push(Reverse((n, idx, stream)));
            }
            let Some(mut body) = body else { continue };
            let mal = if mal_share > 0.0 && self.mal_rng.random::<f64>() < mal_share {
                let kind = match self.mal_rng.random_range(0..5u32) {
                    0 => Malform::NotJson,
                    1 => Malform::MissingCustomerId,
                    2 => Malform::UnknownType,
                    3 => Malform::BadTs,
                    _ => Malform::NegativeAmount,
                };
                let variant = self.mal_rng.random::<u32>();
                if kind == Malform::NegativeAmount {
                    let order = match body {
                        Body::Purchase { order, .. } => order,
                        _ => 0,
                    };
                    body = Body::Purchase {
                        amount_cents: -(1 + (variant % 20_000) as i64),
                        qty: 1,
                        order,
                    };
                }
                self.malformed += 1;
                Some((kind, variant))
            } else {
                None
            };
            c.seq += 1;
            let mut payload = Vec::with_capacity(200);
            let ctx = EventCtx {
                cid: &c.id,
                seed,
                seq: c.seq,
                ts,
            };
            encode(&mut payload, &ctx, &body, mal);
            let customer_id = c.id.clone();

            // Delivery: everything waiting that arrives up to now goes first.
            self.release(ts, true, out);
            let late = late_share > 0.0 && self.delivery_rng.random::<f64>() < late_share;
            let dup = dup_share > 0.0 && self.delivery_rng.random::<f64>() < dup_share;
            let arrival = if late { ts + self.late_delay() } else { ts };
            let seq = self.delivery_seq;
            self.delivery_seq += 2;
            let event = SimEvent {
                customer_id,
                ts_ms: ts,
                arrival_ms: arrival,
                delivery: if late {
                    Delivery::Late
                } else {
                    Delivery::OnTime
                },
                payload,
            };
            if dup {
                let again = arrival + self.delivery_rng.random_range(0..=30 * MIN);
                let copy = SimEvent {
                    arrival_ms: again,
                    delivery: Delivery::Duplicate,
                    ..event.clone()
                };
                self.pending.push(Reverse(Pending {
                    seq: seq + 1,
                    event: copy,
                }));
            }
            if late {
                self.pending.push(Reverse(Pending { seq, event }));
            } else {
                self.deliver(event, out);
            }
        }
        self.release(to_ms, false, out);
        self.now_ms = to_ms;
    }

    /// Deliver every message still waiting in the reorder buffer (late events
    /// and duplicates arriving at or after [`now_ms`](Simulator::now_ms)), in
    /// arrival order: the end of a finite dataset.
    pub fn flush(&mut self, out: &mut Vec<SimEvent>) {
        self.release(i64::MAX, true, out);
    }

    /// The event time generated up to (exclusive).
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    /// Start of the simulated period.
    pub fn start_ms(&self) -> i64 {
        self.cfg.start_ms
    }

    /// End of the simulated period (exclusive): `start + days`.
    pub fn end_ms(&self) -> i64 {
        self.end_ms
    }

    /// Arrival time of the next message that [`advance`](Simulator::advance)
    /// would emit (ignoring events that a customer's stream may still drop).
    pub fn next_event_ms(&self) -> Option<i64> {
        let generated = self.heap.peek().map(|r| r.0 .0);
        let waiting = self.pending.peek().map(|r| r.0.event.arrival_ms);
        match (generated, waiting) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The configuration (with shares clamped to `[0, 1]`).
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// Number of messages emitted so far (including malformed ones, late ones
    /// and duplicates).
    pub fn events_emitted(&self) -> u64 {
        self.emitted
    }

    /// Number of deliberately malformed messages generated so far.
    pub fn malformed_emitted(&self) -> u64 {
        self.malformed
    }

    /// Number of late messages emitted so far.
    pub fn late_emitted(&self) -> u64 {
        self.late
    }

    /// Number of duplicate deliveries emitted so far.
    pub fn duplicates_emitted(&self) -> u64 {
        self.duplicates
    }

    /// Ground truth for every customer relative to the simulated period, in
    /// customer-id order (see the module docs). Final once the simulation has
    /// been advanced to [`end_ms`](Simulator::end_ms): purchase-only dropouts
    /// are only known as their purchases are generated.
    pub fn truth(&self) -> Vec<CustomerTruth> {
        let start = self.cfg.start_ms;
        self.customers
            .iter()
            .map(|c| c.truth(start, self.end_ms))
            .collect()
    }

    /// Number of customers without any event generated so far.
    pub fn silent_customers(&self) -> usize {
        self.customers.iter().filter(|c| c.seq == 0).count()
    }

    /// Kind of every customer, in the same order as [`truth`](Simulator::truth).
    pub fn customer_kinds(&self) -> Vec<CustomerKind> {
        self.customers.iter().map(|c| c.kind).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::collections::{HashMap, HashSet};

    const START: i64 = DEFAULT_START_MS;

    fn cfg(customers: usize, seed: u64, days: f64) -> SimConfig {
        SimConfig {
            customers,
            seed,
            start_ms: START,
            days,
            ..SimConfig::default()
        }
    }

    fn run(cfg: SimConfig) -> (Simulator, Vec<SimEvent>) {
        let mut sim = Simulator::new(cfg);
        let mut out = Vec::new();
        sim.advance(sim.end_ms(), &mut out);
        sim.flush(&mut out);
        (sim, out)
    }

    fn index(customer_id: &str) -> usize {
        customer_id[1..].parse::<usize>().unwrap() - 1
    }

    fn event_type(e: &SimEvent) -> String {
        let v: Value = serde_json::from_slice(&e.payload).unwrap();
        v["type"].as_str().unwrap().to_string()
    }

    #[test]
    fn deterministic_by_seed() {
        let (s1, a) = run(cfg(200, 7, 40.0));
        let (s2, b) = run(cfg(200, 7, 40.0));
        assert!(!a.is_empty());
        assert_eq!(a, b);
        assert_eq!(s1.truth(), s2.truth());
        let (_, c) = run(cfg(200, 8, 40.0));
        assert_ne!(a, c);
    }

    #[test]
    fn arrival_order_late_and_duplicates() {
        let mut c = cfg(600, 3, 90.0);
        c.late_share = 0.01;
        c.duplicate_share = 0.005;
        let (sim, ev) = run(c);
        let end = sim.end_ms();
        assert_eq!(sim.now_ms(), end);
        assert_eq!(sim.events_emitted(), ev.len() as u64);
        assert!(ev.windows(2).all(|w| w[0].arrival_ms <= w[1].arrival_ms));
        assert!(ev.iter().all(|e| e.ts_ms >= START && e.ts_ms < end));
        let mut max_ts = i64::MIN;
        let (mut late, mut dups, mut out_of_order) = (0u64, 0u64, 0u64);
        let mut seen: HashSet<&[u8]> = HashSet::new();
        for e in &ev {
            match e.delivery {
                Delivery::OnTime => assert_eq!(e.arrival_ms, e.ts_ms),
                Delivery::Late => {
                    late += 1;
                    let d = e.arrival_ms - e.ts_ms;
                    assert!((MIN..=48 * HOUR).contains(&d), "{d}");
                }
                Delivery::Duplicate => {
                    dups += 1;
                    assert!(
                        seen.contains(e.payload.as_slice()),
                        "duplicate before original"
                    );
                }
            }
            if e.ts_ms < max_ts {
                out_of_order += 1;
                assert_ne!(
                    e.delivery,
                    Delivery::OnTime,
                    "an on-time event out of order"
                );
            }
            max_ts = max_ts.max(e.ts_ms);
            seen.insert(&e.payload);
        }
        assert_eq!(late, sim.late_emitted());
        assert_eq!(dups, sim.duplicates_emitted());
        let n = ev.len() as f64;
        assert!((0.007..0.013).contains(&(late as f64 / n)), "{late} / {n}");
        assert!(
            (0.0035..0.0065).contains(&(dups as f64 / n)),
            "{dups} / {n}"
        );
        assert!(out_of_order > 0 && out_of_order <= late + dups);
        // Plausible volume: a few events per customer and day of existence.
        let per_cust_day = n / 600.0 / 90.0;
        assert!((0.3..5.0).contains(&per_cust_day), "{per_cust_day}");
    }

    fn check_valid(v: &Value, ev: &SimEvent, ids: &mut HashSet<String>) {
        let o = v.as_object().expect("object");
        let ty = o["type"].as_str().unwrap();
        assert_eq!(o["customer_id"].as_str().unwrap(), ev.customer_id);
        let ts = o["ts"].as_str().unwrap();
        let parsed = chrono::DateTime::parse_from_rfc3339(ts).unwrap();
        assert_eq!(parsed.timestamp_millis(), ev.ts_ms);
        assert_eq!(ts.len(), 24);
        assert!(ts.ends_with('Z'));
        let id = o["event_id"].as_str().unwrap();
        if ev.delivery != Delivery::Duplicate {
            assert!(ids.insert(id.to_string()), "duplicate event id {id}");
        }
        match ty {
            "visit" => {
                assert!(o["page"].as_str().unwrap().starts_with('/'));
                assert!(o["session_id"].is_string());
                if let Some(d) = o.get("duration_secs") {
                    assert!(d.as_f64().unwrap() >= 0.0);
                }
            }
            "usage" => {
                assert!(o["feature"].is_string());
                assert!(o["quantity"].as_f64().unwrap() >= 0.0);
            }
            "purchase" => {
                let a = o["amount"].as_f64().unwrap();
                assert!(a >= 0.0);
                assert!(((a * 100.0).round() - a * 100.0).abs() < 1e-6);
                assert_eq!(o["currency"].as_str().unwrap(), "EUR");
                assert!(o["quantity"].as_u64().unwrap() >= 1);
                assert!(o["order_id"].is_string());
            }
            "engagement" => {
                let s = o["score"].as_f64().unwrap();
                assert!((0.0..=100.0).contains(&s));
            }
            other => panic!("unexpected type {other}"),
        }
    }

    #[test]
    fn payloads_are_valid_json() {
        let (_, ev) = run(cfg(300, 11, 60.0));
        let mut ids = HashSet::new();
        let mut types = HashMap::new();
        for e in &ev {
            let v: Value = serde_json::from_slice(&e.payload).expect("valid JSON");
            check_valid(&v, e, &mut ids);
            *types
                .entry(v["type"].as_str().unwrap().to_string())
                .or_insert(0usize) += 1;
        }
        for t in ["visit", "usage", "purchase", "engagement"] {
            assert!(types.get(t).copied().unwrap_or(0) > 50, "{t}: {types:?}");
        }
    }

    fn is_valid(e: &SimEvent) -> bool {
        let Ok(v) = serde_json::from_slice::<Value>(&e.payload) else {
            return false;
        };
        let Some(o) = v.as_object() else { return false };
        let known = matches!(
            o.get("type").and_then(Value::as_str),
            Some("visit" | "usage" | "purchase" | "engagement")
        );
        let cid = o.get("customer_id").and_then(Value::as_str) == Some(&e.customer_id);
        let ts = o
            .get("ts")
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .is_some();
        let amount_ok = o
            .get("amount")
            .and_then(Value::as_f64)
            .is_none_or(|a| a >= 0.0);
        known && cid && ts && amount_ok
    }

    #[test]
    fn malformed_share_is_respected() {
        let mut c = cfg(400, 5, 30.0);
        c.malformed_share = 0.05;
        c.duplicate_share = 0.0;
        let (sim, ev) = run(c);
        let bad = ev.iter().filter(|e| !is_valid(e)).count();
        assert_eq!(bad as u64, sim.malformed_emitted());
        let share = bad as f64 / ev.len() as f64;
        assert!((0.035..0.065).contains(&share), "{share}");
        let not_json = ev
            .iter()
            .filter(|e| serde_json::from_slice::<Value>(&e.payload).is_err())
            .count();
        assert!(not_json > 0 && not_json < bad);

        // No malformation when the share is 0; the underlying behaviour is
        // the same (same timestamps).
        let mut c = cfg(400, 5, 30.0);
        c.duplicate_share = 0.0;
        let (_, clean) = run(c);
        assert!(clean.iter().all(is_valid));
        assert_eq!(clean.len(), ev.len());
        assert!(clean.iter().zip(&ev).all(|(a, b)| a.ts_ms == b.ts_ms));
    }

    #[test]
    fn incremental_equals_one_shot() {
        let mut c = cfg(300, 9, 45.0);
        c.malformed_share = 0.02;
        c.late_share = 0.05;
        c.duplicate_share = 0.05;
        let (_, one) = run(c.clone());
        let mut sim = Simulator::new(c);
        let mut inc = Vec::new();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(99);
        let mut t = START;
        let end = sim.end_ms();
        // A stretch of 100 ms steps, then random steps up to 6 hours.
        for _ in 0..2000 {
            t += 100;
            sim.advance(t, &mut inc);
        }
        while t < end {
            t = (t + rng.random_range(1..6 * HOUR)).min(end);
            sim.advance(t, &mut inc);
            sim.advance(t - 5, &mut inc); // going back is a no-op
            assert!(inc.iter().all(|e| e.arrival_ms < t));
        }
        sim.flush(&mut inc);
        assert_eq!(sim.now_ms(), end);
        assert_eq!(one.len(), inc.len());
        assert!(one == inc);
    }

    #[test]
    fn kinds_acquisition_and_hazard_follow_the_model() {
        let sim = Simulator::new(cfg(20_000, 2, 365.0));
        let truth = sim.truth();
        let n = truth.len() as f64;
        let share = |k: CustomerKind| truth.iter().filter(|t| t.kind == k).count() as f64 / n;
        for (k, s) in [
            (CustomerKind::Saas, 0.30),
            (CustomerKind::Shop, 0.22),
            (CustomerKind::Mixed, 0.13),
            (CustomerKind::PurchaseOnly, 0.35),
        ] {
            assert!((share(k) - s).abs() < 0.015, "{k}: {}", share(k));
        }
        let acquired: Vec<i64> = truth.iter().filter_map(|t| t.acquired_ms).collect();
        let existing = 1.0 - acquired.len() as f64 / n;
        assert!((existing - 0.35).abs() < 0.015, "{existing}");
        let end = sim.end_ms();
        assert!(acquired.iter().all(|&a| a >= START && a < end));
        let mean_day = acquired
            .iter()
            .map(|&a| (a - START) as f64 / DAY as f64)
            .sum::<f64>()
            / acquired.len() as f64;
        assert!((mean_day - 182.5).abs() < 5.0, "{mean_day}");
        assert_eq!(truth[41].customer_id, "c000042");

        // Decline paths (known in advance for all but purchase-only customers).
        let subs: Vec<&CustomerTruth> = truth
            .iter()
            .filter(|t| t.kind != CustomerKind::PurchaseOnly)
            .collect();
        let churned = subs.iter().filter(|t| t.churned).count() as f64 / subs.len() as f64;
        assert!((0.19..0.25).contains(&churned), "churned share {churned}");
        let seg = |s: Segment| subs.iter().filter(|t| t.segment == s).count() as f64;
        let paths =
            seg(Segment::GradualDecline) + seg(Segment::AbruptDrop) + seg(Segment::SuddenStop);
        assert!((seg(Segment::GradualDecline) / paths - 0.45).abs() < 0.04);
        assert!((seg(Segment::AbruptDrop) / paths - 0.40).abs() < 0.04);
        assert!((seg(Segment::SuddenStop) / paths - 0.15).abs() < 0.03);
        assert!((seg(Segment::TemporaryDip) / subs.len() as f64) > 0.008);
        let holiday = seg(Segment::Holiday) / subs.len() as f64;
        assert!((0.2..0.35).contains(&holiday), "{holiday}");
    }

    /// Per customer: (ts, type) of every event except duplicate deliveries.
    fn by_customer(n: usize, ev: &[SimEvent]) -> Vec<Vec<(i64, String)>> {
        let mut out = vec![Vec::new(); n];
        for e in ev.iter().filter(|e| e.delivery != Delivery::Duplicate) {
            out[index(&e.customer_id)].push((e.ts_ms, event_type(e)));
        }
        for v in out.iter_mut() {
            v.sort();
        }
        out
    }

    fn is_activity(ty: &str) -> bool {
        matches!(ty, "visit" | "usage" | "purchase")
    }

    #[test]
    fn labels_are_exact_and_consistent_with_the_events() {
        let (sim, ev) = run(cfg(3000, 5, 365.0));
        let end = sim.end_ms();
        let truth = sim.truth();
        let events = by_customer(truth.len(), &ev);
        let mut segs: HashMap<Segment, usize> = HashMap::new();
        for (t, evs) in truth.iter().zip(&events) {
            *segs.entry(t.segment).or_default() += 1;
            let id = &t.customer_id;
            // Nothing before acquisition; the first event is at acquisition.
            if let Some(a) = t.acquired_ms {
                assert_eq!(evs.first().map(|e| e.0), Some(a), "{id}: acquisition");
            }
            assert_eq!(t.churned, t.churned_at_ms.is_some(), "{id}");
            assert_eq!(t.churned, t.segment.churns() && t.churned_at_ms.is_some());
            let activity: Vec<i64> = evs
                .iter()
                .filter(|e| is_activity(&e.1))
                .map(|e| e.0)
                .collect();
            if let Some(ch) = t.churned_at_ms {
                assert!(ch < end && ch >= START, "{id}");
                let onset = t.decline_onset_ms.expect("a churner has an onset");
                assert!(onset <= ch, "{id}");
                assert!(
                    activity.iter().all(|&a| a < ch),
                    "{id} ({}) has activity at or after churned_at",
                    t.segment
                );
                // CRM updates stop 30 days after the churn.
                assert!(evs.iter().all(|e| e.0 < ch + 30 * DAY), "{id}");
            } else if let Some(onset) = t.decline_onset_ms {
                // A decline that ends after the period.
                assert!(onset < end && t.segment.churns(), "{id}");
            }
            match t.segment {
                Segment::SuddenStop | Segment::OneTimeBuyer | Segment::BuyerDropout
                    if t.churned =>
                {
                    assert_eq!(t.decline_onset_ms, t.churned_at_ms, "{id}");
                }
                Segment::Steady
                | Segment::Holiday
                | Segment::TemporaryDip
                | Segment::BuyerActive => {
                    assert!(!t.churned && t.decline_onset_ms.is_none(), "{id}");
                }
                _ => {}
            }
            if t.kind == CustomerKind::PurchaseOnly {
                assert!(evs.iter().all(|e| e.1 == "purchase"), "{id}");
                if let Some(ch) = t.churned_at_ms {
                    if t.segment == Segment::BuyerDecline {
                        // Bought less and less, then left: the last purchase precedes the exit.
                        assert!(activity.last().is_none_or(|&a| a < ch), "{id}");
                        assert!(t.decline_onset_ms.is_some_and(|o| o < ch), "{id}");
                    } else {
                        assert_eq!(activity.last().map(|&a| a + 1), Some(ch), "{id}");
                    }
                }
                if t.segment == Segment::OneTimeBuyer {
                    assert_eq!(activity.len(), 1, "{id}");
                    assert!(t.acquired_ms.is_some());
                }
            } else {
                assert!(
                    matches!(
                        t.segment,
                        Segment::Steady
                            | Segment::Holiday
                            | Segment::TemporaryDip
                            | Segment::GradualDecline
                            | Segment::AbruptDrop
                            | Segment::SuddenStop
                    ),
                    "{id}"
                );
            }
        }
        for s in Segment::ALL {
            assert!(segs.get(&s).copied().unwrap_or(0) > 10, "{s}: {segs:?}");
        }
        // Many one-time buyers among the purchase-only customers acquired in the period.
        let po_new = truth
            .iter()
            .filter(|t| t.kind == CustomerKind::PurchaseOnly && t.acquired_ms.is_some())
            .count() as f64;
        let otb = segs[&Segment::OneTimeBuyer] as f64 / po_new;
        assert!((0.2..0.45).contains(&otb), "{otb}");
    }

    /// Activity events of customer `i` with `a <= ts < b`.
    fn count(evs: &[(i64, String)], a: i64, b: i64) -> usize {
        evs.iter()
            .filter(|e| e.0 >= a && e.0 < b && is_activity(&e.1))
            .count()
    }

    #[test]
    fn declines_and_dips_change_activity_as_labelled() {
        let (sim, ev) = run(cfg(4000, 21, 365.0));
        let truth = sim.truth();
        let events = by_customer(truth.len(), &ev);
        // (before, during) activity per segment, per day.
        let mut acc: HashMap<Segment, (f64, f64)> = HashMap::new();
        let mut back = (0.0, 0.0);
        for ((t, evs), c) in truth.iter().zip(&events).zip(&sim.customers) {
            let from = c.active_from;
            let (before, during) = match t.segment {
                Segment::GradualDecline | Segment::AbruptDrop | Segment::SuddenStop
                    if t.churned =>
                {
                    let (on, ch) = (t.decline_onset_ms.unwrap(), t.churned_at_ms.unwrap());
                    if on - from < 28 * DAY {
                        continue;
                    }
                    let during = if t.segment == Segment::SuddenStop {
                        count(evs, ch, ch + 28 * DAY) as f64 / 28.0
                    } else {
                        // The second half of the decline.
                        let mid = on + (ch - on) / 2;
                        count(evs, mid, ch) as f64 / ((ch - mid) as f64 / DAY as f64)
                    };
                    (count(evs, on - 28 * DAY, on) as f64 / 28.0, during)
                }
                Segment::TemporaryDip => {
                    let d = c.dip;
                    if d.from - from < 28 * DAY || d.to > sim.end_ms() - 28 * DAY {
                        continue;
                    }
                    let days = (d.to - d.from) as f64 / DAY as f64;
                    back.0 += count(evs, d.from - 28 * DAY, d.from) as f64 / 28.0;
                    back.1 += count(evs, d.to, d.to + 28 * DAY) as f64 / 28.0;
                    (
                        count(evs, d.from - 28 * DAY, d.from) as f64 / 28.0,
                        count(evs, d.from, d.to) as f64 / days,
                    )
                }
                Segment::Steady if t.acquired_ms.is_none() => (
                    count(evs, START + 60 * DAY, START + 120 * DAY) as f64 / 60.0,
                    count(evs, START + 240 * DAY, START + 300 * DAY) as f64 / 60.0,
                ),
                _ => continue,
            };
            let e = acc.entry(t.segment).or_default();
            e.0 += before;
            e.1 += during;
        }
        let ratio = |s: Segment| {
            let (b, d) = acc[&s];
            d / b
        };
        assert!(
            (0.85..1.15).contains(&ratio(Segment::Steady)),
            "{}",
            ratio(Segment::Steady)
        );
        assert!(
            ratio(Segment::GradualDecline) < 0.35,
            "{}",
            ratio(Segment::GradualDecline)
        );
        assert!(
            ratio(Segment::AbruptDrop) < 0.35,
            "{}",
            ratio(Segment::AbruptDrop)
        );
        assert_eq!(ratio(Segment::SuddenStop), 0.0);
        let dip = ratio(Segment::TemporaryDip);
        assert!((0.2..0.65).contains(&dip), "{dip}");
        let recovered = back.1 / back.0;
        assert!((0.8..1.25).contains(&recovered), "{recovered}");

        // Holidays: customers are quieter during their own holidays, and
        // everybody is in the Christmas week.
        let (mut normal, mut hol) = (0.0, 0.0);
        for (c, evs) in sim.customers.iter().zip(&events) {
            if c.kind == CustomerKind::PurchaseOnly
                || c.acquired.is_some()
                || c.onset < sim.end_ms()
            {
                continue;
            }
            for h in c
                .holidays
                .iter()
                .filter(|h| h.from > START + 28 * DAY && h.to < sim.end_ms())
            {
                let days = (h.to - h.from) as f64 / DAY as f64;
                normal += count(evs, h.from - 28 * DAY, h.from) as f64 / 28.0;
                hol += count(evs, h.from, h.to) as f64 / days;
            }
        }
        assert!(hol / normal < 0.4, "holiday ratio {}", hol / normal);
        let day = |m, d| START + (days_from_civil(2026, m, d) - days_from_civil(2026, 1, 1)) * DAY;
        let all = |a, b| events.iter().map(|e| count(e, a, b)).sum::<usize>() as f64;
        let xmas = all(day(12, 25), day(12, 30));
        let before = all(day(12, 4), day(12, 9));
        assert!(xmas / before < 0.7, "christmas {}", xmas / before);
    }

    #[test]
    fn weekday_seasonality_by_kind() {
        let (sim, ev) = run(cfg(2000, 4, 56.0));
        let kinds = sim.customer_kinds();
        // [kind][weekday] visit counts.
        let mut n = [[0.0f64; 7]; 4];
        for e in ev.iter().filter(|e| event_type(e) == "visit") {
            let k = kinds[index(&e.customer_id)] as usize;
            n[k][weekday(e.ts_ms.div_euclid(DAY))] += 1.0;
        }
        let weekend = |k: usize| (n[k][5] + n[k][6]) / 2.0;
        let weekdays = |k: usize| n[k][..5].iter().sum::<f64>() / 5.0;
        let saas = weekend(0) / weekdays(0);
        let shop = weekend(1) / weekdays(1);
        assert!(saas < 0.55, "saas weekend/weekday {saas}");
        assert!(shop > 1.1, "shop weekend/weekday {shop}");
        // Some SaaS users are weekday-only.
        let weekday_only = sim
            .customers
            .iter()
            .filter(|c| c.kind == CustomerKind::Saas && c.wd[5] + c.wd[6] < 0.3)
            .count() as f64
            / kinds.iter().filter(|&&k| k == CustomerKind::Saas).count() as f64;
        assert!((0.25..0.45).contains(&weekday_only), "{weekday_only}");
    }

    #[test]
    fn demo_window_places_the_onsets() {
        let sim = Simulator::new(SimConfig {
            customers: 3000,
            existing_share: 1.0,
            decline_window_days: Some((20.0, 50.0)),
            ..cfg(3000, 2, 365.0)
        });
        let truth = sim.truth();
        let declining: Vec<_> = truth
            .iter()
            .filter(|t| t.decline_onset_ms.is_some())
            .collect();
        let subs = truth
            .iter()
            .filter(|t| t.kind != CustomerKind::PurchaseOnly)
            .count() as f64;
        let share = declining.len() as f64 / subs;
        assert!((0.32..0.44).contains(&share), "{share}");
        for t in &declining {
            let o = t.decline_onset_ms.unwrap();
            assert!((START + 20 * DAY..=START + 50 * DAY).contains(&o));
        }
        assert!(truth.iter().all(|t| t.acquired_ms.is_none()));
    }

    #[test]
    fn civil_dates_round_trip() {
        for days in [-800_000i64, -1, 0, 1, 20_454, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(days_from_civil(2026, 1, 1) * DAY, START);
        assert_eq!(season(START + 12 * HOUR), CHRISTMAS_FACTOR);
        assert_eq!(season(START + 2 * DAY), 1.0);
    }
}
