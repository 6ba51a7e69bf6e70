//! Rolling windows in event time: a fixed ring of buckets per customer.
//!
//! Buckets are aligned to absolute bucket indices (`ts / bucket_ms`), so two customers' windows
//! line up and a late event lands in the bucket of its own time. The ring holds the recent and
//! the baseline window together; a bucket that falls off the end is recycled for the newest one.
//!
//! The ring is most of a customer's state, so its buckets are packed. Counters take 2 bytes
//! a bucket (`Slim`) while no bucket has more than 15 visits: the visits, whether there was a
//! purchase, and the usage quantity as an 11-bit fixed-point number whose scale is the
//! customer's own: it starts at 1/256 of a unit and halves whenever a bucket would overflow,
//! so the quantity keeps 11 significant bits of the customer's largest bucket (integers exact
//! up to 2,047 a bucket). A bucket of more visits turns the ring, exactly, into 3-byte buckets
//! (`Packed`): visits as a saturating byte (255 a bucket; more count as that many), and 15
//! bits of quantity on the same kind of scale. Changelog records (from format 7 on) hold a ring
//! in the form it is kept in; those of format 6, which held every ring of counters or visits
//! in the 3-byte form, are read back as slim, or as visits, as they fit. Readers see the plain
//! [`Bucket`].
//!
//! The number of usage reports is not kept per bucket. What the usage test needs of it is the
//! customer's typical report size, the unit its counts are in: [`UsageUnit`], a running mean
//! kept in the first 6 bytes of the ring's allocation, before the buckets.
//!
//! Rings hold only what the customer has shown: purchase marks (one bit a bucket, inline) for
//! a purchase-only customer, visits and marks (half a byte a bucket while no bucket has more
//! than 7 visits, then a byte) for one who visits but has reported no usage, the counters above
//! once usage is reported ([`Windows`]).

use std::ptr::NonNull;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::bits;
use crate::ring_pool;
use crate::time::bucket_index;

/// Counts for one bucket of event time, as readers see it (the ring keeps it packed).
///
/// Only what the windowed signals read is kept here. Purchases are judged by their rhythm
/// (the gaps between purchase days, kept in [`crate::customer::PurchaseRhythm`]); the bucket
/// only notes that there was one, for the count of active days.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Bucket {
    pub visits: u16,
    purchased: bool,
    pub usage_qty: f32,
}

/// A bucket as the ring keeps it (see the module doc): visits, then the quantity in units of
/// 2^-shift (low 15 bits) and the purchase mark (top bit) as a little-endian `u16`. Written
/// to changelog records as `(visits: u8, qty_and_purchase: u16)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "PackedRecord", into = "PackedRecord")]
#[repr(transparent)]
struct Packed([u8; 3]);

#[derive(Serialize, Deserialize)]
struct PackedRecord {
    visits: u8,
    qty_and_purchase: u16,
}

impl From<PackedRecord> for Packed {
    fn from(r: PackedRecord) -> Packed {
        let [lo, hi] = r.qty_and_purchase.to_le_bytes();
        Packed([r.visits, lo, hi])
    }
}

impl From<Packed> for PackedRecord {
    fn from(p: Packed) -> PackedRecord {
        PackedRecord {
            visits: p.visits(),
            qty_and_purchase: p.qty_and_purchase(),
        }
    }
}

const PACKED_PURCHASED: u16 = 1 << 15;
/// The largest quantity a packed bucket holds, in units of its scale.
const MAX_UNITS: u16 = PACKED_PURCHASED - 1;
/// The scale a ring of counters starts with: quantities in 1/256ths.
const FIRST_SHIFT: i8 = 8;

/// 2^-shift: the quantity one unit of a packed bucket stands for.
fn unit_of(shift: i8) -> f32 {
    match i32::from(shift) {
        // Built from its exponent bits where that is a normal f32 (every scale in practice).
        s @ -127..=126 => f32::from_bits(((127 - s) as u32) << 23),
        s => 2f32.powi(-s),
    }
}

impl Packed {
    const fn new(visits: u8, qty_and_purchase: u16) -> Packed {
        let [lo, hi] = qty_and_purchase.to_le_bytes();
        Packed([visits, lo, hi])
    }

    fn visits(self) -> u8 {
        self.0[0]
    }

    fn qty_and_purchase(self) -> u16 {
        u16::from_le_bytes([self.0[1], self.0[2]])
    }

    fn qty(self) -> u16 {
        self.qty_and_purchase() & MAX_UNITS
    }

    /// The bucket, with quantities in units of `unit` ([`unit_of`]).
    fn unpack(self, unit: f32) -> Bucket {
        Bucket {
            visits: u16::from(self.visits()),
            purchased: self.qty_and_purchase() & PACKED_PURCHASED != 0,
            // A power of two times an integer below 2^15: exact in an f32.
            usage_qty: f32::from(self.qty()) * unit,
        }
    }
}

/// A bucket of a ring of [`Kind::Slim`]: visits in the low 4 bits, the purchase mark in bit 4
/// and the quantity in units of 2^-shift in the top 11 bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(transparent)]
struct Slim(u16);

/// The most visits a slim bucket holds; a bucket with more turns the ring into one of packed
/// buckets.
const SLIM_MAX_VISITS: u16 = 0xf;
const SLIM_PURCHASED: u16 = 1 << 4;
/// Where a slim bucket's quantity begins.
const SLIM_QTY_AT: u32 = 5;
/// The largest quantity a slim bucket holds, in units of its scale.
const SLIM_MAX_UNITS: u16 = (1 << 11) - 1;
/// A slim bucket's quantity at scale `s` is its packed bucket's at scale `s + SLIM_WIDENING`
/// (15 bits against 11).
const SLIM_WIDENING: i8 = 4;

impl Slim {
    fn qty(self) -> u16 {
        self.0 >> SLIM_QTY_AT
    }

    /// The same bucket packed, at `SLIM_WIDENING` scale steps more: exactly.
    fn widened(self) -> Packed {
        Packed::of_units(&self.unpack(1.0), self.qty() << SLIM_WIDENING)
    }

    /// The packed bucket `p` at `SLIM_WIDENING` scale steps less, when it is exactly one.
    fn narrowed(p: Packed) -> Option<Slim> {
        let b = p.unpack(1.0);
        (b.visits <= SLIM_MAX_VISITS && p.qty().trailing_zeros() >= SLIM_WIDENING as u32)
            .then(|| Slim::of_units(&b, p.qty() >> SLIM_WIDENING))
    }
}

/// A packed bucket of a ring of counters ([`Packed`] or [`Slim`]).
trait Cell: Copy {
    /// The most units of quantity it holds.
    const MAX_UNITS: u16;
    /// The ring's kind when it holds these.
    const KIND: Kind;
    /// Cells at the start of the ring's allocation that hold its [`UsageUnit`] (its
    /// [`UNIT_BYTES`] bytes).
    const HEADER: usize;
    /// The allocation as [`Windows::data`] holds it.
    fn data(ptr: NonNull<Self>) -> Data;
    /// The cell that holds these bytes of the header.
    fn of_header_bytes(bytes: &[u8]) -> Self;
    fn unpack(self, unit: f32) -> Bucket;
    /// `b` with `units` of quantity (at most `MAX_UNITS`); its visits must fit.
    fn of_units(b: &Bucket, units: u16) -> Self;
    fn units(self) -> u16;

    /// `b` at scale `shift`; `None` when its quantity does not fit.
    fn pack(b: &Bucket, shift: i8) -> Option<Self> {
        // 2^shift, built from its exponent bits (a normal f64 for every i8).
        let per_unit = f64::from_bits(((1023 + i64::from(shift)) as u64) << 52);
        let units = (f64::from(b.usage_qty) * per_unit).round();
        (0.0..=f64::from(Self::MAX_UNITS))
            .contains(&units)
            .then(|| Self::of_units(b, units as u16))
    }

    /// The same bucket at half the scale (one shift less), rounded to the nearest unit, ties
    /// to even (unbiased: a run of halvings takes a lone unit to nothing).
    fn halved(self) -> Self {
        let (half, tie) = (self.units() >> 1, self.units() & 1 == 1);
        Self::of_units(&self.unpack(1.0), half + u16::from(tie && half & 1 == 1))
    }
}

impl Cell for Packed {
    const MAX_UNITS: u16 = MAX_UNITS;
    const KIND: Kind = Kind::Counters;
    const HEADER: usize = 2;

    fn data(buckets: NonNull<Packed>) -> Data {
        Data { buckets }
    }

    fn of_header_bytes(bytes: &[u8]) -> Packed {
        Packed([bytes[0], bytes[1], bytes[2]])
    }

    fn unpack(self, unit: f32) -> Bucket {
        Packed::unpack(self, unit)
    }

    fn of_units(b: &Bucket, units: u16) -> Packed {
        let mark = if b.purchased { PACKED_PURCHASED } else { 0 };
        Packed::new(b.visits.min(u16::from(u8::MAX)) as u8, units | mark)
    }

    fn units(self) -> u16 {
        self.qty()
    }
}

impl Cell for Slim {
    const MAX_UNITS: u16 = SLIM_MAX_UNITS;
    const KIND: Kind = Kind::Slim;
    const HEADER: usize = 3;

    fn data(slim: NonNull<Slim>) -> Data {
        Data { slim }
    }

    fn of_header_bytes(bytes: &[u8]) -> Slim {
        // In memory as the bytes were.
        Slim(u16::from_ne_bytes([bytes[0], bytes[1]]))
    }

    fn unpack(self, unit: f32) -> Bucket {
        Bucket {
            visits: self.0 & SLIM_MAX_VISITS,
            purchased: self.0 & SLIM_PURCHASED != 0,
            // A power of two times an integer below 2^11: exact in an f32.
            usage_qty: f32::from(self.qty()) * unit,
        }
    }

    fn of_units(b: &Bucket, units: u16) -> Slim {
        debug_assert!(b.visits <= SLIM_MAX_VISITS && units <= SLIM_MAX_UNITS);
        let mark = if b.purchased { SLIM_PURCHASED } else { 0 };
        Slim(b.visits | mark | units << SLIM_QTY_AT)
    }

    fn units(self) -> u16 {
        self.qty()
    }
}

/// A bucket as changelog format 5 held it (4 bytes, with the count of usage reports).
#[derive(Debug, Clone, Copy, Deserialize)]
struct Packed4 {
    visits: u8,
    /// Usage reports (low 7 bits) and the purchase mark (top bit).
    usage_and_purchase: u8,
    qty: u16,
}

/// A bucket as changelog format 4 held it (8 bytes).
#[derive(Debug, Clone, Copy, Deserialize)]
struct WideBucket {
    visits: u16,
    /// Usage reports (low 15 bits) and the purchase mark (top bit).
    usage_and_purchase: u16,
    usage_qty: f32,
}

/// The customer's typical usage report: the mean quantity of their reports, over all of them
/// at first and then (from the 64th on) exponentially weighted towards the latest 64 or so.
///
/// The usage test counts usage in these units, so that fewer and smaller reports both count
/// and its counts are about as many as the reports were. Kept with a ring of counters (a
/// customer whose ring holds only purchase marks has reported no usage worth counting).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageUnit {
    /// Reports folded in (saturating).
    pub reports: u16,
    pub mean: f32,
}

impl UsageUnit {
    /// Reports beyond which the mean follows the latest ones (weight 1/64 each).
    const WINDOW: u16 = 64;

    fn record(&mut self, qty: f64) {
        self.reports = self.reports.saturating_add(1);
        let n = self.reports.min(UsageUnit::WINDOW);
        let mean = f64::from(self.mean);
        self.mean = (mean + (qty - mean) / f64::from(n)) as f32;
    }

    /// The unit of old records' rings, which counted reports per bucket: their mean report.
    fn of_counts(reports: u64, qty: f64) -> UsageUnit {
        UsageUnit {
            reports: u16::try_from(reports).unwrap_or(u16::MAX),
            mean: if reports > 0 {
                (qty / reports as f64) as f32
            } else {
                0.0
            },
        }
    }

    /// As the first [`UNIT_BYTES`] bytes of a ring of counters' allocation hold it.
    fn to_bytes(self) -> [u8; UNIT_BYTES] {
        let [a, b] = self.reports.to_le_bytes();
        let [c, d, e, f] = self.mean.to_le_bytes();
        [a, b, c, d, e, f]
    }

    fn of_bytes(h: &[u8; UNIT_BYTES]) -> UsageUnit {
        let [a, b, c, d, e, f] = *h;
        UsageUnit {
            reports: u16::from_le_bytes([a, b]),
            mean: f32::from_le_bytes([c, d, e, f]),
        }
    }
}

/// Bytes at the start of a ring of counters' allocation that hold its [`UsageUnit`].
const UNIT_BYTES: usize = 6;

/// A copy of a run of buckets, for one assessment: on the stack for the default windows (35
/// buckets and the current one), so an assessment allocates nothing.
pub type BucketRun = SmallVec<[Bucket; 48]>;

/// Sums over a range of buckets.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub visits: u64,
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
/// rhythm): their ring is one bit per bucket, whether it saw a purchase, held inline (no
/// allocation) up to 64 buckets, which the default windows (36) are. Most of a retailer's
/// customers are such. A customer who visits but has reported no usage (a shop's visitor) needs
/// no quantities: their ring is the visits and the purchase mark of each bucket, in half a byte
/// while every bucket holds at most 7 visits (most shoppers' days), else in a byte. The first
/// usage report, or a bucket of more than 127 visits, turns it into one of counters: slim
/// (2 bytes a bucket) while every bucket holds at most 15 visits, else 3 bytes a bucket. For
/// the default windows (37 buckets with the current one) the allocations are 20, 40, 80 and
/// 120 bytes. Records (from format 7 on) hold a ring in the form it is kept in.
///
/// Every customer has one, so it is kept in 16 bytes: the inline marks or a *thin* pointer to
/// the ring's allocation (its length is kept here, not beside the pointer), the head as an
/// `i32` (bucket indices of valid event times are below 2^27: buckets are at least a minute),
/// the length, the scale and the kind. The allocation is a slot of the rings' pool
/// ([`ring_pool`]), made and freed as one (`set_marks`, `set_visits`, `set_counters`,
/// `Drop`): of marks, of visit bytes, or of counters
/// after the customer's [`UsageUnit`] in its first 6 bytes. Everything else reads it through
/// `store`, `store_mut` and `unit_bytes` (which `usage_unit` and `record_usage` read), the only
/// places that rebuild a slice or a reference from the pointer.
pub struct Windows {
    data: Data,
    head: i32,
    len: u16,
    /// Scale of a ring of counters: quantities in units of 2^-`shift` (see the module doc).
    shift: i8,
    kind: Kind,
}

/// What [`Windows::data`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    /// Purchases only, at most 64 buckets: bit `s` of `marks` is slot `s`.
    Marks,
    /// Purchases only, a longer ring: `words` points to `len.div_ceil(64)` words of marks.
    LongMarks,
    /// Visits and purchases, no usage yet, at most [`MAX_VISIT_NIBBLE`] visits a bucket:
    /// `visits` points to `len.div_ceil(2)` bytes, two buckets each (slot `s` in the low half
    /// of byte `s / 2` when `s` is even), each the visits with the purchase mark in its top bit.
    Nibbles,
    /// Visits and purchases, no usage yet: `visits` points to `len` bytes, each a bucket's
    /// visits (at most [`MAX_VISIT_BYTE`]) with its purchase mark in the top bit.
    Visits,
    /// Counters in 2 bytes a bucket (at most [`SLIM_MAX_VISITS`] visits): `slim` points to the
    /// [`UsageUnit`] in [`Slim::HEADER`] slots, then `len` buckets.
    Slim,
    /// Counters in 3 bytes a bucket: `buckets` points to the [`UsageUnit`] in
    /// [`Packed::HEADER`] slots, then `len` buckets.
    Counters,
}

/// How a ring is kept, from the smallest: what the customer has shown so far decides it (see
/// the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingStorage {
    /// Purchase marks only, one bit a bucket (inline up to 64 buckets).
    Marks,
    /// Visits and purchase marks, half a byte a bucket (at most 7 visits).
    Nibbles,
    /// Visits and purchase marks, one byte a bucket.
    Visits,
    /// Counters in 2 bytes a bucket.
    Slim,
    /// Counters in 3 bytes a bucket.
    Counters,
}

/// The inline marks, or the ring's allocation (see [`Kind`]).
union Data {
    marks: u64,
    words: NonNull<u64>,
    visits: NonNull<u8>,
    slim: NonNull<Slim>,
    buckets: NonNull<Packed>,
}

/// The most visits a bucket of a ring of [`Kind::Visits`] holds; a bucket with more turns the
/// ring into one of counters.
const MAX_VISIT_BYTE: u16 = 0x7f;
/// The purchase mark of a bucket of a ring of [`Kind::Visits`].
const VISIT_BYTE_PURCHASED: u8 = 0x80;
/// The most visits a bucket of a ring of [`Kind::Nibbles`] holds; a bucket with more turns the
/// ring into one of bytes.
const MAX_VISIT_NIBBLE: u8 = 0x7;
/// The purchase mark of a bucket of a ring of [`Kind::Nibbles`].
const VISIT_NIBBLE_PURCHASED: u8 = 0x8;

/// The buckets of a ring of visits, read in the form of [`Kind::Visits`] (a byte: the visits,
/// the purchase mark in the top bit) whether the ring keeps a byte a bucket or a nibble.
#[derive(Clone, Copy)]
struct VisitCells<'a> {
    bytes: &'a [u8],
    len: usize,
    nibbles: bool,
}

/// A bucket's nibble, as the visit byte it stands for.
fn nibble_as_byte(n: u8) -> u8 {
    (n & MAX_VISIT_NIBBLE)
        | if n & VISIT_NIBBLE_PURCHASED != 0 {
            VISIT_BYTE_PURCHASED
        } else {
            0
        }
}

/// A visit byte as a nibble, when its visits fit one.
fn byte_as_nibble(v: u8) -> Option<u8> {
    let visits = v & !VISIT_BYTE_PURCHASED;
    let mark = if v & VISIT_BYTE_PURCHASED != 0 {
        VISIT_NIBBLE_PURCHASED
    } else {
        0
    };
    (visits <= MAX_VISIT_NIBBLE).then_some(visits | mark)
}

impl VisitCells<'_> {
    #[inline]
    fn get(&self, s: usize) -> u8 {
        if self.nibbles {
            nibble_as_byte(self.bytes[s / 2] >> ((s & 1) * 4))
        } else {
            self.bytes[s]
        }
    }

    fn iter(&self) -> impl Iterator<Item = u8> + '_ {
        (0..self.len).map(|s| self.get(s))
    }
}

/// [`VisitCells`], to change them.
struct VisitCellsMut<'a> {
    bytes: &'a mut [u8],
    nibbles: bool,
}

impl VisitCellsMut<'_> {
    /// Write the visit byte `v` to slot `s`; false (and nothing written) when the ring keeps
    /// nibbles and `v`'s visits do not fit one.
    #[inline]
    fn set(&mut self, s: usize, v: u8) -> bool {
        if !self.nibbles {
            self.bytes[s] = v;
            return true;
        }
        let Some(n) = byte_as_nibble(v) else {
            return false;
        };
        let shift = (s & 1) * 4;
        let b = &mut self.bytes[s / 2];
        *b = (*b & !(0xf << shift)) | (n << shift);
        true
    }
}

/// The bytes a ring of visits of `len` buckets takes: half a byte a bucket in nibbles, else one.
fn visit_bytes(len: usize, nibbles: bool) -> usize {
    if nibbles {
        len.div_ceil(2)
    } else {
        len
    }
}

/// Visit bytes as a ring keeps them: nibbles when every one fits (`true`), else as they are.
fn visit_cells_of(bytes: &[u8]) -> (SmallVec<[u8; RING_ON_STACK]>, bool) {
    if bytes.iter().all(|&v| byte_as_nibble(v).is_some()) {
        let mut packed: SmallVec<[u8; RING_ON_STACK]> =
            SmallVec::from_elem(0, visit_bytes(bytes.len(), true));
        let mut cells = VisitCellsMut {
            bytes: &mut packed,
            nibbles: true,
        };
        for (s, &v) in bytes.iter().enumerate() {
            cells.set(s, v);
        }
        (packed, true)
    } else {
        (bytes.into(), false)
    }
}

/// `head` of a ring that has seen nothing.
const EMPTY: i32 = i32::MIN;

/// Cells of a ring built on the stack before it is copied to its allocation (more go to the
/// heap first): the default windows' rings have 37 buckets.
const RING_ON_STACK: usize = 128;

/// A copy of `cells` in an allocation of the rings' pool ([`ring_pool`]), freed by [`unpool`].
fn pooled<T: Copy>(cells: &[T]) -> NonNull<T> {
    assert!(align_of::<T>() <= ring_pool::align(size_of_val(cells)));
    let p = ring_pool::alloc(size_of_val(cells)).cast::<T>();
    // SAFETY: a fresh allocation of `cells`' size, aligned for `T` (above).
    unsafe { std::ptr::copy_nonoverlapping(cells.as_ptr(), p.as_ptr(), cells.len()) };
    p
}

/// The cells of `cells` in an allocation of the rings' pool, and how many there are: written
/// in place when the iterator says exactly how many it yields (copies and most conversions),
/// else gathered on the stack first.
fn pooled_from<T: Copy>(cells: impl Iterator<Item = T>) -> (NonNull<T>, usize) {
    match cells.size_hint() {
        (n, Some(max)) if n == max => {
            assert!(align_of::<T>() <= ring_pool::align(n * size_of::<T>()));
            let p = ring_pool::alloc(n * size_of::<T>()).cast::<T>();
            let mut written = 0;
            for (i, c) in cells.take(n).enumerate() {
                // SAFETY: `i < n`, inside the fresh allocation of `n` cells, aligned for `T`.
                unsafe { p.as_ptr().add(i).write(c) };
                written += 1;
            }
            // A size hint is a promise, not a guarantee: never hand out unwritten cells.
            assert_eq!(
                written, n,
                "an iterator yielded fewer items than its exact size hint"
            );
            (p, n)
        }
        _ => {
            let cells: SmallVec<[T; RING_ON_STACK]> = cells.collect();
            (pooled(&cells), cells.len())
        }
    }
}

/// Give back an allocation of `len` cells made by [`pooled`].
///
/// # Safety
///
/// `p` must come from [`pooled`] with `len` cells, and must not be used afterwards.
unsafe fn unpool<T>(p: NonNull<T>, len: usize) {
    // SAFETY: the caller's promise; `pooled` allocated `len` cells' bytes.
    unsafe { ring_pool::free(p.cast(), len * size_of::<T>()) }
}

// SAFETY: `Windows` owns its allocation as a `Box` would (no sharing, no interior
// mutability), so it may move to and be read from other threads like one.
unsafe impl Send for Windows {}
unsafe impl Sync for Windows {}

/// A ring's contents, borrowed.
enum Store<'a> {
    /// Purchase marks, one bit a bucket.
    Marks(&'a [u64]),
    /// Visits and purchase marks, a byte or half of one a bucket.
    Visits(VisitCells<'a>),
    /// Counters and their scale.
    Slim(&'a [Slim], i8),
    Counters(&'a [Packed], i8),
}

/// A ring's contents, borrowed to change them.
enum StoreMut<'a> {
    Marks(&'a mut [u64]),
    Visits(VisitCellsMut<'a>),
    Slim(&'a mut [Slim], &'a mut i8),
    Counters(&'a mut [Packed], &'a mut i8),
}

impl Windows {
    /// The ring's contents.
    #[inline]
    fn store(&self) -> Store<'_> {
        let len = usize::from(self.len);
        // SAFETY: `kind` says which field of `data` is set; a pointer is to an allocation of
        // the length given (made by `set_marks`, `set_visits` or `set_counters`) owned by `self`.
        unsafe {
            match self.kind {
                Kind::Marks => Store::Marks(std::slice::from_ref(&self.data.marks)),
                Kind::LongMarks => Store::Marks(std::slice::from_raw_parts(
                    self.data.words.as_ptr(),
                    len.div_ceil(64),
                )),
                Kind::Nibbles | Kind::Visits => {
                    let nibbles = self.kind == Kind::Nibbles;
                    let n = visit_bytes(len, nibbles);
                    Store::Visits(VisitCells {
                        bytes: std::slice::from_raw_parts(self.data.visits.as_ptr(), n),
                        len,
                        nibbles,
                    })
                }
                Kind::Slim => Store::Slim(
                    std::slice::from_raw_parts(self.data.slim.as_ptr().add(Slim::HEADER), len),
                    self.shift,
                ),
                Kind::Counters => Store::Counters(
                    std::slice::from_raw_parts(self.data.buckets.as_ptr().add(Packed::HEADER), len),
                    self.shift,
                ),
            }
        }
    }

    /// The ring's contents, to change them.
    #[inline]
    fn store_mut(&mut self) -> StoreMut<'_> {
        let len = usize::from(self.len);
        // SAFETY: as in `store`, and `&mut self` makes the borrow exclusive.
        unsafe {
            match self.kind {
                Kind::Marks => StoreMut::Marks(std::slice::from_mut(&mut self.data.marks)),
                Kind::LongMarks => StoreMut::Marks(std::slice::from_raw_parts_mut(
                    self.data.words.as_ptr(),
                    len.div_ceil(64),
                )),
                Kind::Nibbles | Kind::Visits => {
                    let nibbles = self.kind == Kind::Nibbles;
                    let n = visit_bytes(len, nibbles);
                    StoreMut::Visits(VisitCellsMut {
                        bytes: std::slice::from_raw_parts_mut(self.data.visits.as_ptr(), n),
                        nibbles,
                    })
                }
                Kind::Slim => StoreMut::Slim(
                    std::slice::from_raw_parts_mut(self.data.slim.as_ptr().add(Slim::HEADER), len),
                    &mut self.shift,
                ),
                Kind::Counters => StoreMut::Counters(
                    std::slice::from_raw_parts_mut(
                        self.data.buckets.as_ptr().add(Packed::HEADER),
                        len,
                    ),
                    &mut self.shift,
                ),
            }
        }
    }

    /// The first bytes of a ring of counters' allocation, which hold its [`UsageUnit`].
    fn unit_bytes(&self) -> Option<*mut [u8; UNIT_BYTES]> {
        // SAFETY: as in `store`; both kinds of counters begin their allocation (of cells
        // without padding: `repr(transparent)`) with `UNIT_BYTES` bytes of header.
        unsafe {
            match self.kind {
                Kind::Slim => Some(self.data.slim.as_ptr().cast()),
                Kind::Counters => Some(self.data.buckets.as_ptr().cast()),
                Kind::Marks | Kind::LongMarks | Kind::Nibbles | Kind::Visits => None,
            }
        }
    }

    /// Free the ring's allocation, if it has one, leaving an empty ring of inline marks.
    fn release(&mut self) {
        let len = usize::from(self.len);
        let kind = std::mem::replace(&mut self.kind, Kind::Marks);
        // SAFETY: the pointer came from `pooled` with this many cells (`set_marks`,
        // `set_visits`, `set_counters`), and `kind` no longer points to it.
        unsafe {
            match kind {
                Kind::Marks => {}
                Kind::LongMarks => unpool(self.data.words, len.div_ceil(64)),
                Kind::Nibbles => unpool(self.data.visits, visit_bytes(len, true)),
                Kind::Visits => unpool(self.data.visits, visit_bytes(len, false)),
                Kind::Slim => unpool(self.data.slim, Slim::HEADER + len),
                Kind::Counters => unpool(self.data.buckets, Packed::HEADER + len),
            }
        }
        self.data = Data { marks: 0 };
    }

    /// Hold purchase marks for a ring of `len` buckets (`words`: one bit a bucket, at least
    /// `len.div_ceil(64)` words): inline up to 64 buckets.
    fn set_marks(&mut self, words: &[u64], len: u16) {
        self.release();
        self.len = len;
        if len <= 64 {
            self.data = Data {
                marks: words.first().copied().unwrap_or(0),
            };
        } else {
            self.data = Data {
                words: pooled(&words[..usize::from(len).div_ceil(64)]),
            };
            self.kind = Kind::LongMarks;
        }
    }

    /// Hold `bytes` (a visit byte a bucket: see [`Kind::Visits`]) as the ring: in nibbles
    /// when every bucket fits one.
    fn set_visits(&mut self, bytes: &[u8]) {
        let (cells, nibbles) = visit_cells_of(bytes);
        self.set_visit_cells(&cells, bytes.len(), nibbles);
    }

    /// Hold `cells` as a ring of visits of `len` buckets, in nibbles or bytes as `nibbles` says.
    fn set_visit_cells(&mut self, cells: &[u8], len: usize, nibbles: bool) {
        let len = u16::try_from(len).expect("a ring of at most u16::MAX buckets");
        self.release();
        self.len = len;
        self.data = Data {
            visits: pooled(cells),
        };
        self.kind = if nibbles { Kind::Nibbles } else { Kind::Visits };
    }

    /// Hold the ring `buckets` as counters at scale `shift`, with usage unit `unit`: one
    /// allocation, the unit in its first `C::HEADER` cells then the buckets, built at once
    /// from the iterator (restores make millions of these).
    fn set_counters<C: Cell>(
        &mut self,
        buckets: impl IntoIterator<Item = C>,
        shift: i8,
        unit: UsageUnit,
    ) {
        let header = unit.to_bytes();
        let cells = header
            .chunks(UNIT_BYTES / C::HEADER)
            .map(C::of_header_bytes)
            .chain(buckets);
        let (ptr, n) = pooled_from(cells);
        let len = u16::try_from(n - C::HEADER).expect("a ring of at most u16::MAX buckets");
        self.release();
        self.len = len;
        self.data = C::data(ptr);
        self.shift = shift;
        self.kind = C::KIND;
    }

    /// Hold the ring `buckets` (at scale `shift`, with usage unit `unit`) as it was before it
    /// was written: as visits when that is all they hold (no usage reported, no quantity, at
    /// most [`MAX_VISIT_BYTE`] visits a bucket, the first scale; in nibbles when every bucket
    /// fits one); else slim when every bucket's
    /// visits fit one, exactly if the quantities are those of slim buckets, else rounded to
    /// the 11 bits a slim ring keeps of its largest bucket; else as they are.
    fn set_restored(&mut self, buckets: &[Packed], shift: i8, unit: UsageUnit) {
        let visit_byte = |p: &Packed| p.unpack(1.0).visit_byte();
        if unit == UsageUnit::default()
            && shift == FIRST_SHIFT
            && buckets.iter().all(|p| visit_byte(p).is_some())
        {
            let bytes = buckets.iter().map(|p| visit_byte(p).unwrap_or_default());
            return self.set_visits(&bytes.collect::<SmallVec<[u8; RING_ON_STACK]>>());
        }
        if buckets
            .iter()
            .any(|p| u16::from(p.visits()) > SLIM_MAX_VISITS)
        {
            return self.set_counters(buckets.iter().copied(), shift, unit);
        }
        let exact = buckets.iter().all(|&p| Slim::narrowed(p).is_some());
        match (exact, shift.checked_sub(SLIM_WIDENING)) {
            (true, Some(slim_shift)) => {
                let slim = buckets
                    .iter()
                    .map(|&p| Slim::narrowed(p).unwrap_or_default());
                self.set_counters(slim, slim_shift, unit)
            }
            _ => {
                let (mut slim, mut slim_shift) = (vec![Slim::default(); buckets.len()], shift);
                let unit_of_shift = unit_of(shift);
                for (s, p) in buckets.iter().enumerate() {
                    write_cell(&mut slim, &mut slim_shift, s, &p.unpack(unit_of_shift));
                }
                self.set_counters(slim, slim_shift, unit);
            }
        }
    }

    /// The customer's typical usage report, when the ring holds counters.
    pub fn usage_unit(&self) -> Option<UsageUnit> {
        // SAFETY: `unit_bytes` points into the ring's allocation, borrowed with `self`.
        self.unit_bytes()
            .map(|b| UsageUnit::of_bytes(unsafe { &*b }))
    }

    /// Fold a usage report's quantity into the [`UsageUnit`] (a ring of purchase marks has
    /// none: the report counted nothing). A ring of visits becomes one of counters, which
    /// keeps the unit.
    pub fn record_usage(&mut self, qty: f64) {
        if matches!(self.kind, Kind::Nibbles | Kind::Visits) {
            self.become_counters(0);
        }
        if let Some(bytes) = self.unit_bytes() {
            // SAFETY: as in `usage_unit`, and `&mut self` makes the borrow exclusive.
            let bytes = unsafe { &mut *bytes };
            let mut unit = UsageUnit::of_bytes(bytes);
            unit.record(qty);
            *bytes = unit.to_bytes();
        }
    }

    /// An empty ring of purchase marks of `len` buckets, which read as `words` say.
    fn of_marks(head: i32, words: &[u64], len: u16) -> Windows {
        let mut w = Windows {
            data: Data { marks: 0 },
            head,
            len: 0,
            shift: FIRST_SHIFT,
            kind: Kind::Marks,
        };
        w.set_marks(words, len);
        w
    }

    /// Turn a ring of marks or visits into one of counters at the first scale, with no usage
    /// reported yet, keeping what it holds: slim unless a bucket, or `visits` about to be
    /// written, holds more visits than a slim bucket.
    fn become_counters(&mut self, visits: u16) {
        let buckets: Vec<Bucket> = (0..self.len()).map(|s| self.read(s)).collect();
        let most = buckets.iter().map(|b| b.visits).fold(visits, u16::max);
        let unit = UsageUnit::default();
        if most <= SLIM_MAX_VISITS {
            let slim = buckets.iter().map(|b| Slim::of_units(b, 0));
            self.set_counters(slim, FIRST_SHIFT, unit);
        } else {
            let packed = buckets.iter().map(|b| Packed::of_units(b, 0));
            self.set_counters(packed, FIRST_SHIFT, unit);
        }
    }

    /// Turn a slim ring into one of 3-byte buckets, exactly (the scale moves by
    /// [`SLIM_WIDENING`]), keeping its usage unit.
    fn widen(&mut self) {
        let (buckets, shift) = match self.store() {
            Store::Slim(buckets, shift) => (
                buckets.iter().map(|b| b.widened()).collect::<Vec<_>>(),
                shift,
            ),
            _ => return,
        };
        let unit = self.usage_unit().unwrap_or_default();
        self.set_counters(buckets, shift.saturating_add(SLIM_WIDENING), unit);
    }

    /// Hold the buckets of an old record (each with its count of usage reports) as counters,
    /// starting at scale `shift`; the usage unit is their mean report.
    fn set_converted(
        &mut self,
        old: impl Iterator<Item = (Bucket, u16)>,
        len: usize,
        shift: i8,
    ) -> Result<(), std::num::TryFromIntError> {
        u16::try_from(len)?;
        let mut buckets = vec![Packed::default(); len];
        let mut shift = shift;
        let (mut reports, mut qty) = (0u64, 0f64);
        for (s, (b, usage)) in old.enumerate() {
            write_cell(&mut buckets, &mut shift, s, &b);
            reports += u64::from(usage);
            qty += f64::from(b.usage_qty);
        }
        self.set_restored(&buckets, shift, UsageUnit::of_counts(reports, qty));
        Ok(())
    }
}

impl Drop for Windows {
    fn drop(&mut self) {
        self.release();
    }
}

impl Clone for Windows {
    fn clone(&self) -> Windows {
        let mut w = Windows::of_marks(self.head, &[], 0);
        let unit = self.usage_unit().unwrap_or_default();
        match self.store() {
            Store::Marks(marks) => w.set_marks(marks, self.len),
            Store::Visits(c) => w.set_visit_cells(c.bytes, c.len, c.nibbles),
            Store::Slim(buckets, shift) => w.set_counters(buckets.iter().copied(), shift, unit),
            Store::Counters(buckets, shift) => w.set_counters(buckets.iter().copied(), shift, unit),
        }
        w
    }
}

impl PartialEq for Windows {
    fn eq(&self, other: &Windows) -> bool {
        self.head == other.head
            && self.len == other.len
            && match (self.store(), other.store()) {
                (Store::Marks(a), Store::Marks(b)) => a == b,
                (Store::Visits(a), Store::Visits(b)) => a.iter().eq(b.iter()),
                (Store::Slim(a, sa), Store::Slim(b, sb)) => {
                    sa == sb && a == b && self.usage_unit() == other.usage_unit()
                }
                (Store::Counters(a, sa), Store::Counters(b, sb)) => {
                    sa == sb && a == b && self.usage_unit() == other.usage_unit()
                }
                _ => false,
            }
    }
}

impl std::fmt::Debug for Windows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Windows");
        d.field("head", &self.head).field("len", &self.len);
        match self.store() {
            Store::Marks(marks) => d.field("marks", &marks),
            Store::Visits(c) => d
                .field("visits", &c.iter().collect::<Vec<_>>())
                .field("nibbles", &c.nibbles),
            Store::Slim(buckets, shift) => d
                .field("slim", &buckets)
                .field("shift", &shift)
                .field("usage_unit", &self.usage_unit()),
            Store::Counters(buckets, shift) => d
                .field("buckets", &buckets)
                .field("shift", &shift)
                .field("usage_unit", &self.usage_unit()),
        };
        d.finish()
    }
}

/// As a `WindowsRecord` (head, length, store): the head as the `i64` records have always
/// held (`i64::MIN` for an empty ring).
impl Serialize for Windows {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let head = match self.head {
            EMPTY => i64::MIN,
            h => i64::from(h),
        };
        let mut w = s.serialize_struct("Windows", 3)?;
        w.serialize_field("head", &head)?;
        w.serialize_field("len", &u32::from(self.len))?;
        w.serialize_field(
            "store",
            &StoreRef {
                store: self.store(),
                unit: self.usage_unit().unwrap_or_default(),
            },
        )?;
        w.end()
    }
}

/// A ring's contents and usage unit, to be written.
struct StoreRef<'a> {
    store: Store<'a>,
    unit: UsageUnit,
}

/// As a [`StoreRecord`], in the form the ring keeps (changelog format 7): purchase marks
/// (variant 0), a ring of visits in nibbles (5) or bytes (4), a slim ring (6) as its 2-byte
/// cells, and 3-byte counters (3). Variants 1 and 2 are the 8- and 4-byte buckets of formats 4
/// and 5, read but no longer written; format 6 wrote every ring of visits and slim ring as
/// 3-byte counters, which [`Windows::set_restored`] still reads.
impl Serialize for StoreRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bytes = serde_bytes::Bytes::new;
        match self.store {
            Store::Marks(marks) => s.serialize_newtype_variant("Store", 0, "Purchases", marks),
            Store::Visits(c) => {
                let (index, name) = if c.nibbles {
                    (5, "Nibbles")
                } else {
                    (4, "Visits")
                };
                s.serialize_newtype_variant("Store", index, name, bytes(c.bytes))
            }
            Store::Slim(cells, shift) => {
                let le: SmallVec<[u8; 2 * RING_ON_STACK]> =
                    cells.iter().flat_map(|c| c.0.to_le_bytes()).collect();
                counters_variant(s, (6, "Slim"), bytes(&le), shift, self.unit)
            }
            Store::Counters(buckets, shift) => {
                counters_variant(s, (3, "Counters"), buckets, shift, self.unit)
            }
        }
    }
}

/// A ring of counters' variant of [`StoreRecord`]: its cells, scale and usage unit.
fn counters_variant<S: serde::Serializer>(
    s: S,
    (index, name): (u32, &'static str),
    cells: impl Serialize,
    shift: i8,
    unit: UsageUnit,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStructVariant;
    let mut v = s.serialize_struct_variant("Store", index, name, 3)?;
    v.serialize_field("cells", &cells)?;
    v.serialize_field("shift", &shift)?;
    v.serialize_field("unit", &unit)?;
    v.end()
}

/// [`Windows`] as changelog records hold it.
#[derive(Deserialize)]
struct WindowsRecord {
    head: i64,
    len: u32,
    store: StoreRecord,
}

/// The store as changelog records hold it, the buckets of formats 4 and 5 included.
#[derive(Deserialize)]
enum StoreRecord {
    Purchases(Box<[u64]>),
    Buckets(Box<[WideBucket]>),
    Counters4 {
        buckets: Box<[Packed4]>,
        shift: i8,
    },
    Counters {
        buckets: Box<[Packed]>,
        shift: i8,
        unit: UsageUnit,
    },
    /// From format 7 on: a ring of visits, a byte a bucket.
    Visits(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A ring of visits in nibbles: the ring's `len`, two buckets a byte.
    Nibbles(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A slim ring: its cells, two little-endian bytes each.
    Slim {
        #[serde(with = "serde_bytes")]
        cells: Vec<u8>,
        shift: i8,
        unit: UsageUnit,
    },
}

impl<'de> Deserialize<'de> for Windows {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Windows, D::Error> {
        use serde::de::Error;
        let r = WindowsRecord::deserialize(d)?;
        let too_long = |n: usize| D::Error::custom(format!("a ring of {n} buckets"));
        // A head no valid event time gives (beyond an `i32`) is a ring that has seen nothing.
        let head = i32::try_from(r.head).ok().filter(|&h| h != EMPTY);
        let mut w = Windows::of_marks(head.unwrap_or(EMPTY), &[], 0);
        match r.store {
            StoreRecord::Purchases(marks) => {
                // No longer than its marks (a record that says otherwise is not trusted).
                let len = (r.len as usize).min(marks.len() * 64);
                w.set_marks(&marks, u16::try_from(len).map_err(|_| too_long(len))?);
            }
            StoreRecord::Counters {
                buckets,
                shift,
                unit,
            } => {
                if u16::try_from(buckets.len()).is_err() {
                    return Err(too_long(buckets.len()));
                }
                w.set_restored(&buckets, shift, unit)
            }
            StoreRecord::Visits(bytes) => {
                if u16::try_from(bytes.len()).is_err() {
                    return Err(too_long(bytes.len()));
                }
                // In nibbles when they fit (a ring's bytes may be from before its buckets
                // emptied).
                w.set_visits(&bytes);
            }
            StoreRecord::Nibbles(bytes) => {
                let len = r.len as usize;
                if bytes.len() != visit_bytes(len, true) {
                    return Err(D::Error::custom(format!(
                        "{} bytes of nibbles for a ring of {len} buckets",
                        bytes.len()
                    )));
                }
                if u16::try_from(len).is_err() {
                    return Err(too_long(len));
                }
                w.set_visit_cells(&bytes, len, true);
            }
            StoreRecord::Slim { cells, shift, unit } => {
                if cells.len() % 2 != 0 {
                    return Err(D::Error::custom("a slim ring of an odd number of bytes"));
                }
                if u16::try_from(cells.len() / 2).is_err() {
                    return Err(too_long(cells.len() / 2));
                }
                let cells = cells
                    .chunks_exact(2)
                    .map(|c| Slim(u16::from_le_bytes([c[0], c[1]])));
                w.set_counters(cells, shift, unit);
            }
            StoreRecord::Counters4 { buckets, shift } => {
                let unit = unit_of(shift);
                let old = buckets.iter().map(|p| {
                    let usage = u16::from(p.usage_and_purchase & 0x7f);
                    let b = Bucket {
                        visits: u16::from(p.visits),
                        purchased: p.usage_and_purchase & 0x80 != 0,
                        usage_qty: f32::from(p.qty) * unit,
                    };
                    (b, usage)
                });
                w.set_converted(old, buckets.len(), shift)
                    .map_err(|_| too_long(buckets.len()))?;
            }
            StoreRecord::Buckets(wide) => {
                let old = wide.iter().map(|b| {
                    let usage = b.usage_and_purchase & 0x7fff;
                    let bucket = Bucket {
                        visits: b.visits,
                        purchased: b.usage_and_purchase & 0x8000 != 0,
                        usage_qty: b.usage_qty,
                    };
                    (bucket, usage)
                });
                w.set_converted(old, wide.len(), FIRST_SHIFT)
                    .map_err(|_| too_long(wide.len()))?;
            }
        }
        if head.is_none() {
            w.clear_all();
        }
        Ok(w)
    }
}

/// Write `b` into slot `s`, halving the scale of the whole ring until its quantity fits.
fn write_cell<C: Cell>(buckets: &mut [C], shift: &mut i8, s: usize, b: &Bucket) {
    loop {
        match C::pack(b, *shift) {
            Some(p) => {
                buckets[s] = p;
                return;
            }
            None if *shift > i8::MIN => {
                *shift -= 1;
                for p in buckets.iter_mut() {
                    *p = p.halved();
                }
            }
            // No scale holds it (an infinite quantity: a report is at most 1e12): the most
            // there is.
            None => {
                buckets[s] = C::of_units(b, C::MAX_UNITS);
                return;
            }
        }
    }
}

/// Fill `out` with the buckets of `slots[s..s + first]`, then of `slots` from 0 on, as `read`
/// gives them (two runs of a slice: no index arithmetic or bounds check per bucket).
#[inline]
fn fill_runs<T>(
    out: &mut [Bucket],
    slots: &[T],
    s: usize,
    first: usize,
    read: impl Fn(&T) -> Bucket,
) {
    let held = slots[s..s + first]
        .iter()
        .chain(&slots[..out.len() - first]);
    for (to, p) in out.iter_mut().zip(held) {
        *to = read(p);
    }
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
        let len = u16::try_from(len).expect("a ring of at most u16::MAX buckets");
        Windows::of_marks(EMPTY, &vec![0; usize::from(len).div_ceil(64)], len)
    }

    /// A ring without buckets (no allocation): the placeholder of a vacant customer slot.
    pub fn unallocated() -> Self {
        Windows::of_marks(EMPTY, &[], 0)
    }

    /// Whether the ring holds counters (the customer has visited or used the product), not only
    /// purchase marks.
    #[cfg(test)]
    fn has_counters(&self) -> bool {
        !matches!(self.kind, Kind::Marks | Kind::LongMarks)
    }

    pub fn is_empty(&self) -> bool {
        self.head == EMPTY || self.len == 0
    }

    /// Start loading the ring's buckets (a hint: see [`crate::prefetch`]).
    #[inline]
    pub fn prefetch(&self) {
        match self.kind {
            Kind::Marks => {} // in the customer's state
            _ => match self.store() {
                Store::Counters(buckets, _) => crate::prefetch::read_slice(buckets),
                Store::Slim(buckets, _) => crate::prefetch::read_slice(buckets),
                Store::Visits(c) => crate::prefetch::read_slice(c.bytes),
                Store::Marks(marks) => crate::prefetch::read_slice(marks),
            },
        }
    }

    fn slot(&self, idx: i64) -> usize {
        idx.rem_euclid(self.len() as i64) as usize
    }

    /// The head as the `i64` bucket indices are (meaningless while empty).
    fn head(&self) -> i64 {
        i64::from(self.head)
    }

    fn holds(&self, idx: i64) -> bool {
        !self.is_empty() && idx <= self.head() && idx > self.head() - self.len() as i64
    }

    /// The bucket in slot `s`.
    #[inline]
    fn read(&self, s: usize) -> Bucket {
        match self.store() {
            Store::Counters(buckets, shift) => buckets[s].unpack(unit_of(shift)),
            Store::Slim(buckets, shift) => buckets[s].unpack(unit_of(shift)),
            Store::Visits(c) => Bucket::of_visit_byte(c.get(s)),
            Store::Marks(marks) => Bucket::marked(bits::get(marks, s)),
        }
    }

    fn clear_slot(&mut self, s: usize) {
        match self.store_mut() {
            StoreMut::Counters(buckets, _) => buckets[s] = Packed::default(),
            StoreMut::Slim(buckets, _) => buckets[s] = Slim::default(),
            StoreMut::Visits(mut c) => {
                c.set(s, 0);
            }
            StoreMut::Marks(marks) => bits::put(marks, s, false),
        }
    }

    fn clear_all(&mut self) {
        match self.store_mut() {
            StoreMut::Counters(buckets, _) => buckets.fill(Packed::default()),
            StoreMut::Slim(buckets, _) => buckets.fill(Slim::default()),
            StoreMut::Visits(c) => c.bytes.fill(0),
            StoreMut::Marks(marks) => marks.fill(0),
        }
    }

    /// Apply `f` to slot `s`. A purchase-only ring becomes one of visits when `f` counts
    /// visits, and a ring of either becomes one of counters when `f` counts what it cannot
    /// hold (usage, or more visits than a ring of visits holds).
    fn update(&mut self, s: usize, f: impl FnOnce(&mut Bucket)) {
        let mut b = self.read(s);
        f(&mut b);
        let len = self.len();
        match self.store_mut() {
            StoreMut::Counters(buckets, shift) => return write_cell(buckets, shift, s, &b),
            StoreMut::Slim(buckets, shift) if b.visits <= SLIM_MAX_VISITS => {
                return write_cell(buckets, shift, s, &b)
            }
            StoreMut::Slim(..) => self.widen(),
            StoreMut::Visits(mut c) => match b.visit_byte() {
                Some(v) if c.set(s, v) => return,
                Some(v) => {
                    // More visits than a nibble holds: a byte a bucket from now on.
                    let mut bytes: SmallVec<[u8; RING_ON_STACK]> = (0..len)
                        .map(|i| self.read(i).visit_byte().unwrap_or_default())
                        .collect();
                    bytes[s] = v;
                    return self.set_visit_cells(&bytes, len, false);
                }
                None => self.become_counters(b.visits),
            },
            StoreMut::Marks(marks) => match (b.only_marked(), b.visit_byte()) {
                (Some(mark), _) => return bits::put(marks, s, mark),
                (None, Some(v)) => {
                    let mark = |i| match bits::get(marks, i) {
                        true => VISIT_BYTE_PURCHASED,
                        false => 0,
                    };
                    let mut bytes: SmallVec<[u8; RING_ON_STACK]> = (0..len).map(mark).collect();
                    bytes[s] = v;
                    return self.set_visits(&bytes);
                }
                (None, None) => self.become_counters(b.visits),
            },
        }
        match self.store_mut() {
            StoreMut::Counters(buckets, shift) => write_cell(buckets, shift, s, &b),
            StoreMut::Slim(buckets, shift) => write_cell(buckets, shift, s, &b),
            _ => unreachable!("the ring holds counters"),
        }
    }

    /// Move the head forward to `idx`, clearing the buckets it passes.
    ///
    /// Indices beyond an `i32` (no valid event time has one) are taken as the nearest one.
    pub fn advance_to(&mut self, idx: i64) {
        let idx = idx.clamp(i64::from(EMPTY) + 1, i64::from(i32::MAX));
        if self.is_empty() {
            self.head = idx as i32;
            return;
        }
        if idx <= self.head() {
            return;
        }
        let len = self.len() as i64;
        if idx - self.head() >= len {
            self.clear_all();
        } else {
            for i in (self.head() + 1)..=idx {
                let s = self.slot(i);
                self.clear_slot(s);
            }
        }
        self.head = idx as i32;
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
        let lo = from.max(self.head() - self.len() as i64 + 1);
        let hi = to.min(self.head());
        for idx in lo..=hi {
            m.add(&self.read(self.slot(idx)));
        }
        m
    }

    /// Number of buckets the ring holds.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// How the ring is kept, and the bytes its allocation takes (its slot in the rings' pool,
    /// [`ring_pool::slot_bytes`]; 0 for inline marks): what `churnwatch bench` reports of the
    /// customers' rings.
    pub fn storage(&self) -> (RingStorage, usize) {
        let (storage, bytes) = self.cell_bytes();
        (storage, ring_pool::slot_bytes(bytes))
    }

    /// How the ring is kept, and the bytes of its cells.
    fn cell_bytes(&self) -> (RingStorage, usize) {
        let len = self.len();
        match self.kind {
            Kind::Marks => (RingStorage::Marks, 0),
            Kind::LongMarks => (RingStorage::Marks, len.div_ceil(64) * size_of::<u64>()),
            Kind::Nibbles => (RingStorage::Nibbles, visit_bytes(len, true)),
            Kind::Visits => (RingStorage::Visits, visit_bytes(len, false)),
            Kind::Slim => (RingStorage::Slim, (Slim::HEADER + len) * size_of::<Slim>()),
            Kind::Counters => (
                RingStorage::Counters,
                (Packed::HEADER + len) * size_of::<Packed>(),
            ),
        }
    }

    /// The same history in a ring of `len` buckets (`len` >= 1): the newest buckets that fit
    /// are kept. Used when a restored state was written under other window settings.
    pub fn resized(&self, len: usize) -> Windows {
        if len == self.len() {
            return self.clone();
        }
        let mut w = Windows::new(len);
        if let Some(unit) = self.usage_unit() {
            // Counters stay counters, with their usage unit (slim until a bucket needs more).
            w.set_counters(std::iter::repeat_n(Slim::default(), len), FIRST_SHIFT, unit);
        }
        if !self.is_empty() {
            w.head = self.head;
            for idx in (self.head() - len as i64 + 1)..=self.head() {
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
        let held_from = from.max(self.head() - (len as i64 - 1));
        let held_to = to.min(self.head());
        if self.is_empty() || held_from > held_to {
            out.resize(n, Bucket::default());
            return;
        }
        out.resize((held_from - from) as usize, Bucket::default());
        // The held part is at most two runs of slots: up to the ring's end, then from its start.
        let (s, k) = (self.slot(held_from), (held_to - held_from + 1) as usize);
        let first = k.min(len - s);
        let at = out.len();
        out.resize(at + k, Bucket::default());
        let run = &mut out[at..];
        match self.store() {
            Store::Counters(buckets, shift) => {
                let unit = unit_of(shift);
                fill_runs(run, buckets, s, first, |p| p.unpack(unit));
            }
            Store::Slim(buckets, shift) => {
                let unit = unit_of(shift);
                fill_runs(run, buckets, s, first, |p| p.unpack(unit));
            }
            Store::Visits(c) if !c.nibbles => {
                fill_runs(run, c.bytes, s, first, |&v| Bucket::of_visit_byte(v))
            }
            Store::Visits(c) => {
                let slots = (s..s + first).chain(0..k - first);
                for (to, i) in run.iter_mut().zip(slots) {
                    *to = Bucket::of_visit_byte(c.get(i));
                }
            }
            Store::Marks(marks) => {
                let slots = (s..s + first).chain(0..k - first);
                for (to, i) in run.iter_mut().zip(slots) {
                    *to = Bucket::marked(bits::get(marks, i));
                }
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
        t.usage_qty += b.usage_qty as f64;
        self.visits_sq += (b.visits as f64).powi(2);
        self.usage_qty_sq += (b.usage_qty as f64).powi(2);
    }
}

impl Bucket {
    /// An empty bucket, marked as having seen a purchase when `purchased`.
    fn marked(purchased: bool) -> Bucket {
        Bucket {
            purchased,
            ..Bucket::default()
        }
    }

    /// A bucket of a ring of [`Kind::Visits`].
    fn of_visit_byte(v: u8) -> Bucket {
        Bucket {
            visits: u16::from(v & !VISIT_BYTE_PURCHASED),
            purchased: v & VISIT_BYTE_PURCHASED != 0,
            usage_qty: 0.0,
        }
    }

    /// The bucket as a ring of [`Kind::Visits`] holds it, when such a ring can.
    fn visit_byte(&self) -> Option<u8> {
        let mark = if self.purchased {
            VISIT_BYTE_PURCHASED
        } else {
            0
        };
        (self.usage_qty == 0.0 && self.visits <= MAX_VISIT_BYTE).then_some(self.visits as u8 | mark)
    }

    /// Whether the purchase mark is all the bucket holds (`Some(mark)`), or it counts more.
    fn only_marked(&self) -> Option<bool> {
        (self.visits == 0 && self.usage_qty == 0.0).then_some(self.purchased)
    }

    /// Whether anything (a visit, usage, a purchase) happened in the bucket.
    pub fn is_active(&self) -> bool {
        self.visits > 0 || self.usage_qty > 0.0 || self.purchased
    }

    pub fn purchased(&self) -> bool {
        self.purchased
    }

    pub fn add_visit(&mut self) {
        self.visits = self.visits.saturating_add(1);
    }

    pub fn add_usage(&mut self, qty: f64) {
        self.usage_qty += qty as f32;
    }

    pub fn add_purchase(&mut self) {
        self.purchased = true;
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
        let mut w = Windows::new(len);
        w.set_counters(
            std::iter::repeat_n(Packed::default(), len),
            FIRST_SHIFT,
            UsageUnit::default(),
        );
        w
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
    fn a_ring_of_few_visits_keeps_half_a_byte_a_bucket() {
        for len in [7usize, 36, 37, 130] {
            let (mut v, mut c) = (Windows::new(len), counters(len));
            for t in 0..(2 * len as i64) {
                let f = |b: &mut Bucket| {
                    (0..t % 8).for_each(|_| b.add_visit());
                    if t % 3 == 0 {
                        b.add_purchase();
                    }
                };
                assert_eq!(v.add(t * B, B, f), c.add(t * B, B, f), "{len} {t}");
                assert_same_reads(&v, &c);
            }
            assert_eq!(v.kind, Kind::Nibbles, "{len}");
            assert_eq!(
                v.storage(),
                (
                    RingStorage::Nibbles,
                    crate::ring_pool::slot_bytes(len.div_ceil(2))
                )
            );
            // Written in nibbles, read back in nibbles; and so is the record of the ring of
            // counters it stands for (as format 6 wrote it). Copies and equality see the
            // buckets.
            let record = postcard::to_allocvec(&v).unwrap();
            let as_counters = postcard::to_allocvec(&c).unwrap();
            assert!(record.len() < as_counters.len(), "{len}");
            for r in [&record, &as_counters] {
                let back: Windows = postcard::from_bytes(r).unwrap();
                assert_eq!((back.kind, &back), (Kind::Nibbles, &v), "{len}");
            }
            assert_eq!(v.clone(), v);
            let (mut from, mut to) = (BucketRun::new(), BucketRun::new());
            let head = v.head();
            v.copy_range(head - len as i64 + 1, head, &mut from);
            c.copy_range(head - len as i64 + 1, head, &mut to);
            assert_eq!(from, to);
            // A bucket of 8 visits, in an odd slot and then an even one, turns it into a byte a
            // bucket, exactly.
            for t in [head - 1, head] {
                let (mut more, mut more_c) = (v.clone(), c.clone());
                more.add(t * B, B, |b| b.visits = 8);
                more_c.add(t * B, B, |b| b.visits = 8);
                assert_eq!(more.kind, Kind::Visits, "{len} {t}");
                assert_same_reads(&more, &more_c);
                // Which reads back in bytes while that bucket is held, in nibbles once it has
                // left the ring.
                let back: Windows =
                    postcard::from_bytes(&postcard::to_allocvec(&more).unwrap()).unwrap();
                assert_eq!((back.kind, &back), (Kind::Visits, &more));
                more.add((t + len as i64) * B, B, |b| b.add_visit());
                let back: Windows =
                    postcard::from_bytes(&postcard::to_allocvec(&more).unwrap()).unwrap();
                assert_eq!((back.kind, &back), (Kind::Nibbles, &more));
            }
            // Clearing the ring as it moves clears both halves of a byte.
            v.add((head + 3 * len as i64) * B, B, |b| b.add_visit());
            c.add((head + 3 * len as i64) * B, B, |b| b.add_visit());
            assert_same_reads(&v, &c);
        }
    }

    #[test]
    fn a_ring_of_visits_keeps_a_byte_a_bucket_and_reads_back_from_either_record() {
        // (bucket, visits, purchase): late ones, a full byte, jumps past the ring.
        let events = [
            (3i64, 1u16, false),
            (3, 2, true),
            (5, 0, true),
            (9, 127, false),
            (8, 1, false),
            (40, 3, false),
            (12, 1, true),
            (41, 0, true),
            (300, 5, false),
        ];
        for len in [7usize, 36, 130] {
            let (mut v, mut c) = (Windows::new(len), counters(len));
            let (mut out_v, mut out_c) = (BucketRun::new(), BucketRun::new());
            let mut bytes = false;
            for &(t, visits, purchase) in &events {
                let f = |b: &mut Bucket| {
                    (0..visits).for_each(|_| b.add_visit());
                    if purchase {
                        b.add_purchase();
                    }
                };
                assert_eq!(v.add(t * B, B, f), c.add(t * B, B, f), "{len} {t}");
                // Nibbles until a bucket holds more than 7 visits, bytes from then on.
                bytes |= (0..len).any(|s| c.read(s).visits > 7);
                let kind = if bytes { Kind::Visits } else { Kind::Nibbles };
                assert_eq!(v.kind, kind, "{len} {t}");
                for from in [t - 140, t - 5, t] {
                    v.copy_range(from, t + 2, &mut out_v);
                    c.copy_range(from, t + 2, &mut out_c);
                    assert_eq!(out_v, out_c, "{len} {t} {from}");
                    assert_eq!(v.moments(from, t), c.moments(from, t));
                }
            }
            // Its record, and the ring of counters' record it stands for (as format 6 wrote
            // it), read back as a ring of visits: in nibbles when the buckets it still holds
            // fit them.
            let record = postcard::to_allocvec(&v).unwrap();
            let as_counters = postcard::to_allocvec(&c).unwrap();
            assert!(record.len() <= as_counters.len(), "{len}");
            let fits = (0..len).all(|s| v.read(s).visits <= 7);
            let kind = if fits { Kind::Nibbles } else { Kind::Visits };
            for r in [&record, &as_counters] {
                let back: Windows = postcard::from_bytes(r).unwrap();
                assert_eq!((back.kind, &back), (kind, &v), "{len}");
                assert_same_reads(&back, &c);
            }
            assert_eq!(v.clone(), v);
            assert_eq!(v.usage_unit(), None);
            // A bucket of more visits than seven bits hold, or a usage report (even an empty
            // one), turns it into counters that keep the buckets.
            let (mut more, mut more_c) = (v.clone(), c.clone());
            more.add(300 * B, B, |b| b.visits = 200);
            more_c.add(300 * B, B, |b| b.visits = 200);
            assert_eq!((more.kind, &more), (Kind::Counters, &more_c), "{len}");
            let (mut used, mut used_c) = (v.clone(), c.clone());
            used.add(300 * B, B, |b| b.add_usage(0.0));
            assert_eq!(used.kind, Kind::Visits);
            used.record_usage(0.0);
            used_c.record_usage(0.0);
            assert_eq!(used.kind, Kind::Slim, "{len}");
            assert_same_reads(&used, &used_c);
            assert_eq!(used.usage_unit().map(|u| u.reports), Some(1));
            // Those counters are written and read back as they are.
            let back: Windows =
                postcard::from_bytes(&postcard::to_allocvec(&used).unwrap()).unwrap();
            assert_eq!((back.kind, &back), (Kind::Slim, &used), "{len}");
            // Resizing keeps a ring of visits one of visits.
            assert!(matches!(
                v.resized(len + 5).kind,
                Kind::Nibbles | Kind::Visits
            ));
            assert_eq!(v.resized(len + 5).get(300), c.get(300));
        }
    }

    /// `a` and `b` read alike, whatever their kinds.
    fn assert_same_reads(a: &Windows, b: &Windows) {
        assert_eq!((a.head, a.len), (b.head, b.len));
        for s in 0..a.len() {
            assert_eq!(a.read(s), b.read(s), "slot {s}: {a:?} {b:?}");
        }
        assert_eq!(
            a.usage_unit().unwrap_or_default(),
            b.usage_unit().unwrap_or_default()
        );
    }

    #[test]
    fn a_slim_ring_keeps_two_bytes_a_bucket_and_widens_exactly() {
        assert_eq!(std::mem::size_of::<Slim>(), 2);
        // Up to 15 visits and integer quantities up to 2,047 a bucket: a slim ring reads as a
        // ring of 3-byte buckets does (both exact).
        let (mut slim, mut wide) = (Windows::new(36), counters(36));
        for t in 0..200i64 {
            let (visits, qty) = ((t * 7 % 16) as u16, ((t * 131) % 2048) as f64);
            for w in [&mut slim, &mut wide] {
                w.add(t * B, B, |b| {
                    b.visits = visits;
                    b.add_usage(qty);
                    if t % 5 == 0 {
                        b.add_purchase();
                    }
                });
                if t > 0 {
                    w.record_usage(qty);
                }
            }
            // (The first bucket is a purchase alone: a mark.)
            assert_eq!(slim.kind == Kind::Slim, t > 0, "{t}");
            assert_same_reads(&slim, &wide);
        }
        // It is written slim and read back slim, exactly; and so is the record of the 3-byte
        // buckets it stands for (as format 6 wrote it).
        let record = postcard::to_allocvec(&slim).unwrap();
        let as_counters = postcard::to_allocvec(&wide).unwrap();
        assert!(record.len() < as_counters.len());
        for r in [&record, &as_counters] {
            let back: Windows = postcard::from_bytes(r).unwrap();
            assert_eq!((back.kind, &back), (Kind::Slim, &slim));
        }
        assert_eq!(slim.clone(), slim);
        assert_same_reads(&slim.resized(40), &wide.resized(40));
        // A bucket of 16 visits turns it into 3-byte buckets, exactly.
        slim.add(199 * B, B, |b| b.visits = 16);
        wide.add(199 * B, B, |b| b.visits = 16);
        assert_eq!((slim.kind, &slim), (Kind::Counters, &wide));
        // A 3-byte ring's record with more precision than a slim ring keeps reads back slim,
        // each quantity rounded to 11 bits of the largest bucket.
        let mut fine = counters(8);
        fine.add(0, B, |b| b.add_usage(1000.0));
        fine.add(B, B, |b| b.add_usage(0.37));
        fine.record_usage(1.0);
        let back: Windows = postcard::from_bytes(&postcard::to_allocvec(&fine).unwrap()).unwrap();
        assert_eq!(back.kind, Kind::Slim);
        assert_eq!(back.get(0).usage_qty, 1000.0);
        assert!((back.get(1).usage_qty - 0.37).abs() <= 1000.0 / 2048.0);
        assert_eq!(back.usage_unit(), fine.usage_unit());
        // One with more visits than a slim bucket holds stays as it is.
        fine.add(B, B, |b| b.visits = 40);
        let back: Windows = postcard::from_bytes(&postcard::to_allocvec(&fine).unwrap()).unwrap();
        assert_eq!((back.kind, &back), (Kind::Counters, &fine));
    }

    #[test]
    fn the_ring_keeps_three_bytes_per_bucket() {
        assert_eq!(std::mem::size_of::<Packed>(), 3);
        assert_eq!(std::mem::size_of::<Bucket>(), 8);
        assert_eq!(std::mem::size_of::<Windows>(), 16);
    }

    #[test]
    fn units_are_the_powers_of_two_of_every_scale() {
        for shift in i8::MIN..=i8::MAX {
            assert_eq!(
                unit_of(shift),
                2f32.powi(-i32::from(shift)),
                "shift {shift}"
            );
        }
    }

    #[test]
    fn quantities_keep_fifteen_bits_of_the_largest_bucket() {
        let mut w = counters(8);
        // Integer quantities are exact, fractions to 1/256 while the buckets are small.
        w.add(0, B, |b| b.add_usage(3.0));
        w.add(0, B, |b| b.add_usage(0.37));
        assert_eq!(w.get(0).usage_qty, 3.0 + 95.0 / 256.0); // 0.37 rounds to 95/256
                                                            // A bucket of 1,000 takes three halvings (scale 1/32): the others are rounded to that
                                                            // scale (863/256 -> 432/128 -> 216/64 -> 108/32), integers stay exact.
        for _ in 0..40 {
            w.add(B, B, |b| b.add_usage(25.0));
        }
        assert_eq!(w.get(1).usage_qty, 1000.0);
        assert_eq!(w.get(0).usage_qty, 3.0 + 12.0 / 32.0);
        assert!(matches!(w.store(), Store::Counters(_, 5)));
        // Beyond 32,767 a bucket still holds its quantity to 15 bits (scale 2^15: 30,518
        // units); buckets below 2^-15 of it round to nothing.
        w.add(2 * B, B, |b| b.add_usage(1.0e9));
        assert_eq!(w.get(2).usage_qty, 30_518.0 * 32_768.0);
        assert_eq!(w.get(1).usage_qty, 0.0);
        assert!(matches!(w.store(), Store::Counters(_, -15)));
        // Counts saturate at what a byte holds; the purchase mark is kept.
        for _ in 0..300 {
            w.add(3 * B, B, |b| {
                b.add_visit();
                b.add_usage(1.0);
            });
        }
        w.add(3 * B, B, |b| b.add_purchase());
        let b = w.get(3);
        assert_eq!((b.visits, b.purchased()), (255, true));
        // An infinite quantity (not from validated events, at most 1e12 each) is the most
        // the smallest scale holds, and the counts stay.
        w.add(4 * B, B, |b| {
            b.add_visit();
            b.usage_qty = f32::INFINITY;
        });
        assert!(matches!(w.store(), Store::Counters(_, i8::MIN)));
        assert_eq!(w.get(4).visits, 1);
        assert!(w.get(4).usage_qty.is_infinite());
    }

    #[test]
    fn purchase_marks_of_a_default_ring_need_no_allocation_and_are_written_as_before() {
        for len in [36usize, 64, 65, 150] {
            let mut w = Windows::new(len);
            assert_eq!(w.kind == Kind::Marks, len <= 64, "{len}");
            let days = [3i64, 40, 63, 64, 100, 149];
            for d in days {
                w.add(d * 10, 10, |b| b.add_purchase());
            }
            assert!(!w.has_counters());
            let head = 149;
            for idx in head - len as i64 + 1..=head {
                assert_eq!(w.get(idx).purchased(), days.contains(&idx), "{len}: {idx}");
            }
            // The record is the one a boxed ring of marks wrote (changelog format 5).
            let mut words = vec![0u64; len.div_ceil(64)];
            for idx in head - len as i64 + 1..=head {
                if days.contains(&idx) {
                    bits::put(&mut words, w.slot(idx), true);
                }
            }
            let old = OldWindows {
                head,
                len: len as u32,
                store: OldStore::Purchases(words.into_boxed_slice()),
            };
            let bytes = postcard::to_allocvec(&w).unwrap();
            assert_eq!(bytes, postcard::to_allocvec(&old).unwrap(), "{len}");
            let back: Windows = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(back, w);
            // A visit turns the marks into counters, keeping them.
            w.add(head * 10, 10, |b| b.add_visit());
            assert!(w.has_counters());
            assert!(w.get(head).purchased() && w.get(head).visits == 1);
            assert!(w.get(100).purchased() == (head - 100 < len as i64));
        }
        assert_eq!(std::mem::size_of::<Windows>(), 16);
    }

    /// The stores of old records: 8-byte buckets (format 4), 4-byte buckets (format 5).
    #[derive(Serialize)]
    enum OldStore {
        Purchases(Box<[u64]>),
        Buckets(Box<[OldWide]>),
        Counters4 {
            buckets: Box<[OldPacked4]>,
            shift: i8,
        },
    }

    #[derive(Serialize)]
    struct OldWide {
        visits: u16,
        usage_and_purchase: u16,
        usage_qty: f32,
    }

    #[derive(Serialize)]
    struct OldPacked4 {
        visits: u8,
        usage_and_purchase: u8,
        qty: u16,
    }

    #[derive(Serialize)]
    struct OldWindows {
        head: i64,
        len: u32,
        store: OldStore,
    }

    fn read_old(old: &OldWindows) -> Windows {
        postcard::from_bytes(&postcard::to_allocvec(old).unwrap()).unwrap()
    }

    #[test]
    fn rings_of_old_records_read_packed_with_their_mean_report_as_the_unit() {
        let want = |visits: u16, qty: f32, purchased: bool| Bucket {
            visits,
            purchased,
            usage_qty: qty,
        };
        // Format 4: buckets of 8 bytes; 2 + 4 usage reports of 7.5 and 4.5 in all.
        let wide = OldWindows {
            head: 9,
            len: 4,
            store: OldStore::Buckets(Box::new([
                OldWide {
                    visits: 0,
                    usage_and_purchase: 0,
                    usage_qty: 0.0,
                },
                OldWide {
                    visits: 3,
                    usage_and_purchase: 2,
                    usage_qty: 7.5,
                },
                OldWide {
                    visits: 0,
                    usage_and_purchase: 0x8000 | 4,
                    usage_qty: 4.5,
                },
                OldWide {
                    visits: 1,
                    usage_and_purchase: 0,
                    usage_qty: 0.0,
                },
            ])),
        };
        // Format 5: the same in 4-byte buckets at scale 1/4.
        let packed = OldWindows {
            head: 9,
            len: 4,
            store: OldStore::Counters4 {
                buckets: Box::new([
                    OldPacked4 {
                        visits: 0,
                        usage_and_purchase: 0,
                        qty: 0,
                    },
                    OldPacked4 {
                        visits: 3,
                        usage_and_purchase: 2,
                        qty: 30,
                    },
                    OldPacked4 {
                        visits: 0,
                        usage_and_purchase: 0x80 | 4,
                        qty: 18,
                    },
                    OldPacked4 {
                        visits: 1,
                        usage_and_purchase: 0,
                        qty: 0,
                    },
                ]),
                shift: 2,
            },
        };
        for old in [&wide, &packed] {
            let w = read_old(old);
            assert!(w.has_counters());
            let expected = [
                want(0, 0.0, false),
                want(3, 7.5, false),
                want(0, 4.5, true),
                want(1, 0.0, false),
            ];
            for idx in 6..=9 {
                assert_eq!(w.get(idx), expected[w.slot(idx)], "bucket {idx}");
            }
            assert_eq!(
                w.usage_unit(),
                Some(UsageUnit {
                    reports: 6,
                    mean: 2.0
                })
            );
            // And the packed ring comes back as written.
            let again: Windows = postcard::from_bytes(&postcard::to_allocvec(&w).unwrap()).unwrap();
            assert_eq!(again, w);
        }
        // A ring of marks is no longer than its marks, whatever its record says.
        let marks = OldWindows {
            head: 9,
            len: 1000,
            store: OldStore::Purchases(Box::new([1])),
        };
        let w = read_old(&marks);
        assert_eq!(w.len(), 64);
        assert!(w.get(0).purchased() && !w.get(1).purchased());
    }

    #[test]
    fn the_usage_unit_is_the_mean_report_then_follows_the_latest() {
        let mut w = Windows::new(8);
        w.record_usage(5.0);
        assert_eq!(w.usage_unit(), None, "a ring of marks has no unit");
        w.add(0, B, |b| b.add_usage(3.0));
        for q in [3.0, 0.37, 2.63] {
            w.record_usage(q);
        }
        let u = w.usage_unit().unwrap();
        assert_eq!((u.reports, u.mean), (3, 2.0));
        // From the 64th report on, each weighs 1/64.
        for _ in 3..64 {
            w.record_usage(2.0);
        }
        w.record_usage(66.0);
        let u = w.usage_unit().unwrap();
        assert_eq!(u.reports, 65);
        assert!((u.mean - 3.0).abs() < 1e-5, "{}", u.mean);
        // It moves with the ring when resized, and survives a round trip.
        assert_eq!(w.resized(12).usage_unit(), Some(u));
        let back: Windows = postcard::from_bytes(&postcard::to_allocvec(&w).unwrap()).unwrap();
        assert_eq!(back.usage_unit(), Some(u));
    }

    #[test]
    fn clones_are_equal_and_independent_for_every_kind_of_ring() {
        // Inline marks, marks of a longer ring, and counters: each clone owns its own copy.
        for (len, visit) in [(36usize, false), (130, false), (36, true), (130, true)] {
            let mut w = Windows::new(len);
            w.add(5 * B, B, |b| b.add_purchase());
            if visit {
                w.add(6 * B, B, |b| b.add_visit());
            }
            let copy = w.clone();
            assert_eq!(copy, w, "{len} {visit}");
            w.add(7 * B, B, |b| b.add_purchase());
            assert_ne!(copy, w, "{len} {visit}");
            assert!(copy.get(5).purchased() && !copy.get(7).purchased());
            assert_eq!(copy.get(6).visits, u16::from(visit));
            drop(w);
            assert!(copy.get(5).purchased(), "the clone outlives the original");
        }
    }

    #[test]
    fn a_record_whose_head_no_event_time_gives_is_an_empty_ring() {
        for head in [i64::MIN, i64::from(i32::MIN), 1 << 40] {
            let old = OldWindows {
                head,
                len: 36,
                store: OldStore::Purchases(Box::new([u64::MAX])),
            };
            let w: Windows = postcard::from_bytes(&postcard::to_allocvec(&old).unwrap()).unwrap();
            assert!(w.is_empty(), "{head}");
            assert_eq!(w, Windows::new(36), "{head}");
        }
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
        assert!(b.purchased());
        assert_eq!(b.usage_qty, 40_000.0);
        let mut fresh = Bucket::default();
        fresh.add_usage(0.0);
        assert!(!fresh.is_active(), "an empty usage report is not activity");
        fresh.add_purchase();
        assert!(fresh.is_active());
    }
}
