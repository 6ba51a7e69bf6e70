//! Rolling windows in event time: a fixed ring of buckets per customer.
//!
//! Buckets are aligned to absolute bucket indices (`ts / bucket_ms`), so two customers' windows
//! line up and a late event lands in the bucket of its own time. The ring holds the recent and
//! the baseline window together; a bucket that falls off the end is recycled for the newest one.

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::bits;
use crate::time::bucket_index;

/// Counts for one bucket of event time. 8 bytes: the ring is most of a customer's state.
///
/// Only what the windowed signals read is kept here. Purchases are judged by their rhythm
/// (the gaps between purchase days, kept in [`crate::customer::PurchaseRhythm`]); the bucket
/// only notes that there was one, for the count of active days.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[repr(C)]
pub struct Bucket {
    pub visits: u16,
    /// Usage events (low 15 bits, saturating) and whether there was a purchase (top bit).
    usage_and_purchase: u16,
    pub usage_qty: f32,
}

const PURCHASED: u16 = 1 << 15;

/// A copy of a run of buckets, for one assessment: on the stack for the default windows (35
/// buckets and the current one), so an assessment allocates nothing.
pub type BucketRun = SmallVec<[Bucket; 48]>;

/// Sums over a range of buckets.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub visits: u64,
    pub usage_events: u64,
    pub usage_qty: f64,
}

/// Sums over a range of buckets plus the sums of squares of the per-bucket visit count and
/// usage quantity (for the spread of the counts from bucket to bucket).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Moments {
    pub totals: Totals,
    pub visits_sq: f64,
    pub usage_qty_sq: f64,
}

/// Ring of buckets; `head` is the absolute index of the newest bucket held.
///
/// A customer who has only ever purchased needs no counters (purchases are judged by their
/// rhythm): their ring is one bit per bucket, whether it saw a purchase. Most of a retailer's
/// customers are such. The first visit or usage turns the ring into one of counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Windows {
    head: i64,
    len: u32,
    store: Store,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Store {
    /// Purchases only: bit `s` ([`bits`]) is slot `s`.
    Purchases(Box<[u64]>),
    Buckets(Box<[Bucket]>),
}

/// Outcome of adding to a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Added to a bucket still held.
    Held,
    /// Older than the oldest bucket held: not added.
    TooOld,
}

impl Windows {
    /// A ring of `len` empty buckets (`len` >= 1).
    pub fn new(len: usize) -> Self {
        assert!(len >= 1);
        Windows {
            head: i64::MIN,
            len: u32::try_from(len).expect("a ring of at most u32::MAX buckets"),
            store: Store::Purchases(vec![0; len.div_ceil(64)].into_boxed_slice()),
        }
    }

    /// A ring without buckets (no allocation): the placeholder of a vacant customer slot.
    pub fn unallocated() -> Self {
        Windows {
            head: i64::MIN,
            len: 0,
            store: Store::Purchases(Box::default()),
        }
    }

    /// Whether the ring holds counters (the customer has visited or used the product), not only
    /// purchase marks.
    #[cfg(test)]
    fn has_counters(&self) -> bool {
        matches!(self.store, Store::Buckets(_))
    }

    pub fn is_empty(&self) -> bool {
        self.head == i64::MIN || self.len == 0
    }

    fn slot(&self, idx: i64) -> usize {
        idx.rem_euclid(self.len as i64) as usize
    }

    fn holds(&self, idx: i64) -> bool {
        !self.is_empty() && idx <= self.head && idx > self.head - self.len as i64
    }

    /// The bucket in slot `s`.
    fn read(&self, s: usize) -> Bucket {
        match &self.store {
            Store::Buckets(b) => b[s],
            Store::Purchases(marks) => Bucket::marked(bits::get(marks, s)),
        }
    }

    fn clear_slot(&mut self, s: usize) {
        match &mut self.store {
            Store::Buckets(b) => b[s] = Bucket::default(),
            Store::Purchases(marks) => bits::put(marks, s, false),
        }
    }

    fn clear_all(&mut self) {
        match &mut self.store {
            Store::Buckets(b) => b.fill(Bucket::default()),
            Store::Purchases(marks) => marks.fill(0),
        }
    }

    /// Apply `f` to slot `s`; a purchase-only ring becomes one of counters when `f` counts
    /// anything else.
    fn update(&mut self, s: usize, f: impl FnOnce(&mut Bucket)) {
        if let Store::Buckets(b) = &mut self.store {
            f(&mut b[s]);
            return;
        }
        let mut b = self.read(s);
        f(&mut b);
        match (b.only_marked(), &mut self.store) {
            (Some(mark), Store::Purchases(marks)) => bits::put(marks, s, mark),
            _ => {
                let mut buckets: Box<[Bucket]> = (0..self.len()).map(|i| self.read(i)).collect();
                buckets[s] = b;
                self.store = Store::Buckets(buckets);
            }
        }
    }

    /// Move the head forward to `idx`, clearing the buckets it passes.
    pub fn advance_to(&mut self, idx: i64) {
        if self.is_empty() {
            self.head = idx;
            return;
        }
        if idx <= self.head {
            return;
        }
        let len = self.len as i64;
        if idx - self.head >= len {
            self.clear_all();
        } else {
            for i in (self.head + 1)..=idx {
                let s = self.slot(i);
                self.clear_slot(s);
            }
        }
        self.head = idx;
    }

    /// Apply `f` to the bucket holding `ts_ms`, advancing the ring when it is newer than the head.
    pub fn add(&mut self, ts_ms: i64, bucket_ms: i64, f: impl FnOnce(&mut Bucket)) -> Placement {
        let idx = bucket_index(ts_ms, bucket_ms);
        self.advance_to(idx);
        if !self.holds(idx) {
            return Placement::TooOld;
        }
        let s = self.slot(idx);
        self.update(s, f);
        Placement::Held
    }

    /// The bucket at absolute index `idx` (empty when not held).
    pub fn get(&self, idx: i64) -> Bucket {
        if self.holds(idx) {
            self.read(self.slot(idx))
        } else {
            Bucket::default()
        }
    }

    /// Sums over absolute bucket indices `from..=to`.
    pub fn sum(&self, from: i64, to: i64) -> Totals {
        self.moments(from, to).totals
    }

    /// Sums and sums of squares over absolute bucket indices `from..=to`, in one pass.
    pub fn moments(&self, from: i64, to: i64) -> Moments {
        let mut m = Moments::default();
        if self.is_empty() || to < from {
            return m;
        }
        let lo = from.max(self.head - self.len as i64 + 1);
        let hi = to.min(self.head);
        for idx in lo..=hi {
            m.add(&self.read(self.slot(idx)));
        }
        m
    }

    /// Number of buckets the ring holds.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// The same history in a ring of `len` buckets (`len` >= 1): the newest buckets that fit
    /// are kept. Used when a restored state was written under other window settings.
    pub fn resized(&self, len: usize) -> Windows {
        if len == self.len() {
            return self.clone();
        }
        let mut w = Windows::new(len);
        if !self.is_empty() {
            w.head = self.head;
            for idx in (self.head - len as i64 + 1)..=self.head {
                let s = w.slot(idx);
                let b = self.get(idx);
                w.update(s, |to| *to = b);
            }
        }
        w
    }

    /// Copy the buckets of absolute indices `from..=to` into `out` (cleared first), oldest
    /// first; buckets not held are empty.
    pub fn copy_range(&self, from: i64, to: i64, out: &mut BucketRun) {
        out.clear();
        if to < from {
            return;
        }
        let n = (to - from + 1) as usize;
        let len = self.len();
        // The part of `from..=to` the ring holds (one modulo per copy, not one per bucket: this
        // runs on every assessment); empty buckets around it.
        let held_from = from.max(self.head.saturating_sub(len as i64 - 1));
        let held_to = to.min(self.head);
        if self.is_empty() || held_from > held_to {
            out.resize(n, Bucket::default());
            return;
        }
        out.resize((held_from - from) as usize, Bucket::default());
        // The held part is at most two runs of slots: up to the ring's end, then from its start.
        let (s, k) = (self.slot(held_from), (held_to - held_from + 1) as usize);
        let first = k.min(len - s);
        match &self.store {
            Store::Buckets(b) => {
                out.extend_from_slice(&b[s..s + first]);
                out.extend_from_slice(&b[..k - first]);
            }
            Store::Purchases(_) => {
                out.extend((s..s + first).chain(0..k - first).map(|i| self.read(i)))
            }
        }
        out.resize(n, Bucket::default());
    }
}

impl Moments {
    /// Sums and sums of squares of a run of buckets.
    pub fn of(buckets: &[Bucket]) -> Moments {
        let mut m = Moments::default();
        for b in buckets {
            m.add(b);
        }
        m
    }

    fn add(&mut self, b: &Bucket) {
        let t = &mut self.totals;
        t.visits += b.visits as u64;
        t.usage_events += b.usage_events() as u64;
        t.usage_qty += b.usage_qty as f64;
        self.visits_sq += (b.visits as f64).powi(2);
        self.usage_qty_sq += (b.usage_qty as f64).powi(2);
    }
}

impl Bucket {
    /// An empty bucket, marked as having seen a purchase when `purchased`.
    fn marked(purchased: bool) -> Bucket {
        Bucket {
            usage_and_purchase: if purchased { PURCHASED } else { 0 },
            ..Bucket::default()
        }
    }

    /// Whether the purchase mark is all the bucket holds (`Some(mark)`), or it counts more.
    fn only_marked(&self) -> Option<bool> {
        (self.visits == 0 && self.usage_events() == 0 && self.usage_qty == 0.0)
            .then(|| self.purchased())
    }

    /// Whether anything (a visit, usage, a purchase) happened in the bucket.
    pub fn is_active(&self) -> bool {
        self.visits > 0 || self.usage_qty > 0.0 || self.purchased()
    }

    pub fn usage_events(&self) -> u16 {
        self.usage_and_purchase & !PURCHASED
    }

    pub fn purchased(&self) -> bool {
        self.usage_and_purchase & PURCHASED != 0
    }

    pub fn add_visit(&mut self) {
        self.visits = self.visits.saturating_add(1);
    }

    pub fn add_usage(&mut self, qty: f64) {
        if self.usage_events() < !PURCHASED {
            self.usage_and_purchase += 1;
        }
        self.usage_qty += qty as f32;
    }

    pub fn add_purchase(&mut self) {
        self.usage_and_purchase |= PURCHASED;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_range_equals_bucket_by_bucket_reads() {
        let mut w = Windows::new(5);
        let mut out = BucketRun::new();
        w.copy_range(-3, 3, &mut out);
        assert_eq!(out.as_slice(), &[Bucket::default(); 7]);
        for (t, n) in [(3, 1u16), (4, 2), (6, 3), (7, 4), (9, 5), (10, 6)] {
            w.add(t, 1, |b| b.visits = n);
        }
        for from in -2..14 {
            for to in from - 1..16 {
                w.copy_range(from, to, &mut out);
                let want: Vec<Bucket> = (from..=to).map(|i| w.get(i)).collect();
                assert_eq!(out.as_slice(), want.as_slice(), "{from}..={to}");
            }
        }
    }
    const B: i64 = 1000;

    fn counters(len: usize) -> Windows {
        Windows {
            store: Store::Buckets(vec![Bucket::default(); len].into_boxed_slice()),
            ..Windows::new(len)
        }
    }

    #[test]
    fn purchase_only_ring_reads_like_a_ring_of_counters() {
        // Purchases at scattered times, late ones, too old ones, and jumps past the ring.
        let times = [
            5, 6, 6, 9, 3, 12, 11, 40, 39, 20, 41, 41, 44, 120, 119, 200, 130, 201, 270,
        ];
        for len in [3usize, 7, 36, 64, 65, 130] {
            let mut bits = Windows::new(len);
            let mut full = counters(len);
            let mut out_bits = BucketRun::new();
            let mut out_full = BucketRun::new();
            for &t in &times {
                let a = bits.add(t * B, B, |b| b.add_purchase());
                let b = full.add(t * B, B, |b| b.add_purchase());
                assert_eq!(a, b, "len {len}, t {t}");
                assert!(!bits.has_counters());
                for from in t - 140..=t {
                    bits.copy_range(from, t + 2, &mut out_bits);
                    full.copy_range(from, t + 2, &mut out_full);
                    assert_eq!(out_bits, out_full, "len {len}, t {t}, from {from}");
                }
                assert_eq!(bits.moments(t - 200, t), full.moments(t - 200, t));
            }
            // The first visit turns the marks into counters, keeping them.
            let before: Vec<Bucket> = (250..=271).map(|i| bits.get(i)).collect();
            bits.add(271 * B, B, |b| b.add_visit());
            assert!(bits.has_counters());
            assert_eq!(bits.get(271).visits, 1);
            let after: Vec<Bucket> = (250..=270).map(|i| bits.get(i)).collect();
            assert_eq!(&before[..21], &after[..]);
            assert_eq!(bits.resized(len + 3).get(270), full.get(270));
        }
        // Resizing a purchase-only ring keeps it one of marks.
        let mut w = Windows::new(4);
        w.add(3 * B, B, |b| b.add_purchase());
        let r = w.resized(9);
        assert!(!r.has_counters() && r.get(3).purchased());
    }

    #[test]
    fn bucket_is_eight_bytes() {
        assert_eq!(std::mem::size_of::<Bucket>(), 8);
    }

    #[test]
    fn adds_to_the_right_bucket_and_rolls() {
        let mut w = Windows::new(4);
        assert_eq!(w.add(500, B, |b| b.add_visit()), Placement::Held); // bucket 0
        w.add(1500, B, |b| b.add_visit()); // bucket 1
        w.add(1600, B, |b| b.add_visit());
        assert_eq!(w.get(0).visits, 1);
        assert_eq!(w.get(1).visits, 2);
        assert_eq!(w.sum(0, 1).visits, 3);
        // A late event for bucket 0 still lands there.
        assert_eq!(w.add(10, B, |b| b.add_visit()), Placement::Held);
        assert_eq!(w.get(0).visits, 2);
        // Jump to bucket 4: bucket 0 falls off (ring of 4 holds 1..=4).
        w.add(4100, B, |b| b.add_usage(2.5));
        assert_eq!(w.get(0).visits, 0);
        assert_eq!(w.get(1).visits, 2);
        assert_eq!(w.sum(0, 4).usage_qty, 2.5);
        let m = w.moments(0, 4);
        assert_eq!((m.totals.visits, m.visits_sq), (2, 4.0));
        assert_eq!(m.usage_qty_sq, 6.25);
        assert_eq!(w.add(200, B, |b| b.add_visit()), Placement::TooOld);
        // A long jump clears everything.
        w.add(100_000, B, |b| b.add_purchase());
        assert_eq!(w.sum(0, 99).visits, 0);
        assert!(w.get(100).is_active() && w.get(100).purchased());
    }

    #[test]
    fn resized_keeps_the_newest_buckets() {
        let mut w = Windows::new(4);
        for i in 0..6 {
            w.add(i * B, B, |b| b.add_visit());
        }
        let small = w.resized(2);
        assert_eq!(small.len(), 2);
        assert_eq!(small.sum(0, 5).visits, 2);
        assert_eq!(small.get(5).visits, 1);
        let big = w.resized(8);
        assert_eq!(big.sum(0, 5).visits, 4); // what the ring of 4 held
        let mut big = big;
        big.add(9 * B, B, |b| b.add_visit());
        assert_eq!(big.sum(2, 9).visits, 5);
        assert!(Windows::new(3).resized(5).is_empty());
    }

    #[test]
    fn reused_slots_are_cleared() {
        let mut w = Windows::new(3);
        for i in 0..3 {
            w.add(i * B, B, |b| b.add_visit());
        }
        w.advance_to(5);
        assert_eq!(w.sum(0, 5).visits, 0);
        w.add(5 * B, B, |b| b.add_visit());
        assert_eq!(w.sum(3, 5).visits, 1);
    }

    #[test]
    fn counters_saturate() {
        let mut b = Bucket::default();
        for _ in 0..70_000 {
            b.add_visit();
        }
        assert_eq!(b.visits, u16::MAX);
        b.add_purchase();
        for _ in 0..40_000 {
            b.add_usage(1.0);
        }
        assert_eq!(b.usage_events(), 0x7fff);
        assert!(b.purchased());
        assert_eq!(b.usage_qty, 40_000.0);
        let mut fresh = Bucket::default();
        fresh.add_usage(0.0);
        assert!(!fresh.is_active(), "an empty usage report is not activity");
        fresh.add_purchase();
        assert!(fresh.is_active());
    }
}
