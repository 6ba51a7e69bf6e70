//! Everything one Kafka partition owns: its customers, its stream time and watermark, its
//! timers. This is the single per-event entry point, used alike by the live pipeline, the demo
//! and the tests; it does no I/O.
//!
//! Event time:
//! - the partition's *stream time* is the newest event time it has seen;
//! - its *watermark* is stream time minus `input.allowed_lateness_secs`; timers fire when the
//!   watermark passes them, so an event up to the allowance late still counts before the
//!   decisions for its period are taken;
//! - an event older than the watermark is *late*: counted, folded into its bucket if the bucket
//!   is still held, but it neither moves time nor re-scores its customer;
//! - when a partition receives nothing for `input.idle_partition_timeout_secs` of wall-clock
//!   time (counted from the first idle check after its latest event), its stream time advances
//!   with the wall clock ([`PartitionState::on_idle`]).
//!
//! Assessments: every customer is re-scored by a timer on a grid of
//! `windows.check_interval_secs` (the first grid time after their latest event), and by each
//! on-time event, except one case. A *healthy* customer's own activity that lands in the
//! bucket of their latest assessment, made under the config in force, is not re-assessed
//! when the scorer says such activity does not raise the risk
//! ([`crate::scoring::Scorer::activity_may_raise_risk`]): only their lifecycle gauge is
//! brought up to date. What time alone raises within the bucket, such as an overdue
//! purchase, waits for the next timer, at most one bucket. Most events are a customer's second
//! or later of the day, after the midnight timer, so this spares most assessments of the
//! per-event path. At-risk and lapsed customers, engagement scores, a risk waiting for
//! confirmation and late events into earlier buckets are assessed as always.

use std::sync::Arc;
use std::time::Instant;

use std::hash::Hasher;

use ecow::EcoString;
use rustc_hash::{FxHashMap, FxHasher};

use crate::alert::{Alert, SourceRef, Trigger};
use crate::alerting::{AlertKind, Phase, Suppressed};
use crate::bits;
use crate::config::Config;
use crate::customer::{CustomerState, GaugeContribution};
use crate::event::Event;
use crate::id_table::IdTable;
use crate::kpi::{revenue_per_period, PeriodKpis};
use crate::metrics::{EvictReason, HotMetrics, Metrics};
use crate::scoring::{inactivity_reason, Lifecycle, Scorer, SignalScorer};
use crate::slot_index::{IdHash, SlotIndex};
use crate::state::record::{StoredCustomer, StoredPartition};
use crate::time::{bucket_index, MaybeStamp};
use crate::timers::{next_grid_time, rearmed, Timers};
use crate::window::Placement;

/// Due timers fired per event at most, on average. Every customer's daily re-score falls due at
/// the same grid time, so a million of them fall due at once: fired in one go they would hold
/// up the events behind them for a second or two; this many per event, they are worked off
/// between those events. A customer's own due timer fires before their event all the same, and
/// every due timer before a KPI period ends or a reloaded config takes over; a checkpoint
/// records how far they have fired ([`StoredPartition::timers_fired_to_ms`]).
const TIMERS_PER_EVENT: usize = 8;
/// Due timers fired in one run: a run fires whenever the allowance that events earn at
/// [`TIMERS_PER_EVENT`] each (and that runs spend) is full, so timers that fall due after a
/// quiet spell fire at the next event, and a burst in runs every 32 events. Timers fire in slot
/// order, so a long run walks the customers' states in memory order, which the caches reward
/// (runs of 8 between events cost a quarter of the in-process throughput); 256 take about
/// 0.4 ms.
const TIMER_RUN: usize = 256;

/// How many customers ahead of the one at hand a run of timers (or of changed customers
/// drained for the changelog) loads the customer's state, and their ring.
const STATE_AHEAD: usize = 8;
const RING_AHEAD: usize = 4;

/// What happened to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventOutcome {
    pub late: bool,
    pub outside_window: bool,
    /// A redelivery of one of the customer's latest events (same `event_id`): dropped.
    pub duplicate: bool,
}

/// One customer looked at by [`PartitionState::inspect`].
pub struct Inspection<'a> {
    pub customer: &'a CustomerState,
    pub assessment: crate::scoring::Assessment,
    pub lifecycle: Lifecycle,
    /// The config in force.
    pub cfg: &'a Config,
}

/// How many items ahead [`PartitionState::prefetching`] starts loading a customer's index
/// entry; their state follows at half the distance, their ring one item ahead.
pub const LOOKAHEAD: usize = 8;

/// A stage of prefetching one customer (each needs the previous one's memory to be loaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookahead {
    /// The index entry (from the id's hash alone).
    Index,
    /// The customer's state (through the index).
    State,
    /// The customer's bucket ring (through the state).
    Ring,
}

/// A customer on their way through the prefetch stages: the id's hash (computed once), then
/// the slot found for it.
#[derive(Debug, Clone, Copy)]
pub struct Ahead {
    hash: IdHash,
    slot: Option<u32>,
}

/// What [`lookahead`]'s stages carry for the items in flight, by item: no more than
/// `LOOKAHEAD + 1` are (from the one processed to the one whose index entry is loading), so
/// item `i` lives at `i % (LOOKAHEAD + 1)`.
#[derive(Debug)]
pub struct AheadRing<T>([Option<T>; LOOKAHEAD + 1]);

impl<T> Default for AheadRing<T> {
    fn default() -> Self {
        AheadRing(std::array::from_fn(|_| None))
    }
}

impl<T> AheadRing<T> {
    /// Item `i`'s entry.
    pub fn at(&mut self, i: usize) -> &mut Option<T> {
        &mut self.0[i % (LOOKAHEAD + 1)]
    }
}

/// One step of [`lookahead`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Prefetch item `i`'s customer, at this stage.
    Prefetch(usize, Lookahead),
    /// Process item `i`.
    Process(usize),
}

/// Drive the processing of `len` items in order with their customers prefetched in stages, so
/// that the cache misses of several customers overlap: the index entry of the item
/// [`LOOKAHEAD`] ahead, the state of the one half as far, the ring of the next one. Stops at
/// the first error `step` returns.
pub fn lookahead<E>(len: usize, mut step: impl FnMut(Step) -> Result<(), E>) -> Result<(), E> {
    for i in 0..LOOKAHEAD.min(len) {
        step(Step::Prefetch(i, Lookahead::Index))?;
    }
    for i in 0..len {
        for (ahead, stage) in [
            (LOOKAHEAD, Lookahead::Index),
            (LOOKAHEAD / 2, Lookahead::State),
            (1, Lookahead::Ring),
        ] {
            if i + ahead < len {
                step(Step::Prefetch(i + ahead, stage))?;
            }
        }
        step(Step::Process(i))?;
    }
    Ok(())
}

/// State of one partition.
pub struct PartitionState {
    cfg: Arc<Config>,
    scorer: Arc<dyn Scorer>,
    hot: HotMetrics,
    /// Customer id -> slot: the table holds hashes and slots (8 bytes each); the ids live in
    /// `ids`, 8 bytes each and inline up to 7 bytes ([`IdTable`]), so a lookup of such an id
    /// touches nothing else.
    index: SlotIndex,
    /// Per slot: the customer id (empty: a vacant slot).
    ids: IdTable,
    customers: Vec<CustomerState>,
    timers: Timers,
    stream_time_ms: Option<i64>,
    /// Wall-clock time of the first idle check ([`PartitionState::on_idle`]) after the latest
    /// on-time event (the event itself does not read the clock: a clock read was ~3 % of the
    /// per-event path), and of the latest step of stream time with the wall clock.
    last_event_wall: Instant,
    last_advance_wall: Instant,
    /// An on-time event came since the latest idle check.
    events_since_idle_check: bool,
    /// Whether changed customers are tracked for a changelog ([`PartitionState::track_changes`]).
    tracking: bool,
    /// Timers the events have earned and not spent ([`TIMER_RUN`] at most).
    timer_allowance: usize,
    /// Customers changed since the last [`PartitionState::drain_dirty`] (slots, and a bit
    /// per slot).
    dirty: Vec<u32>,
    dirty_bits: Vec<u64>,
    /// A bit per slot: raised an alert since the last checkpoint's drain.
    alerted_bits: Vec<u64>,
    /// After a restore: per customer, the input offset its restored state already holds.
    applied: FxHashMap<u32, i64>,
    /// After a restore: the input offset every customer's restored state holds (the
    /// partition's progress record), evicted customers included.
    applied_by_all: i64,
    /// The largest of `applied` and `applied_by_all` (input beyond it is new to everyone).
    applied_until: i64,
    /// Slots of evicted customers, reused by the next new ones.
    free: Vec<u32>,
    /// Customers evicted since the last [`PartitionState::drain_dirty`] (changelog tombstones).
    evicted: Vec<EcoString>,
    /// Churn and retention per event-time period.
    kpi: PeriodKpis,
    /// Stream time from which assessments count as made under the config in force: the first
    /// event's time, or the stream time when a reloaded config took over. Only a customer
    /// assessed after it may skip a re-assessment (module doc, "Assessments").
    config_since_ms: Option<i64>,
}

impl PartitionState {
    pub fn new(cfg: Arc<Config>, metrics: &Metrics) -> Self {
        Self::with_scorer(cfg, Arc::new(SignalScorer), metrics)
    }

    pub fn with_scorer(cfg: Arc<Config>, scorer: Arc<dyn Scorer>, metrics: &Metrics) -> Self {
        let now = Instant::now();
        let hot = HotMetrics::new(metrics);
        PartitionState {
            cfg,
            scorer,
            kpi: PeriodKpis::new(hot.period.clone()),
            hot,
            index: SlotIndex::new(),
            ids: IdTable::new(),
            customers: Vec::new(),
            timers: Timers::new(),
            stream_time_ms: None,
            last_event_wall: now,
            last_advance_wall: now,
            events_since_idle_check: false,
            tracking: false,
            timer_allowance: TIMER_RUN,
            dirty: Vec::new(),
            dirty_bits: Vec::new(),
            alerted_bits: Vec::new(),
            applied: FxHashMap::default(),
            applied_by_all: i64::MIN,
            applied_until: i64::MIN,
            free: Vec::new(),
            evicted: Vec::new(),
            config_since_ms: None,
        }
    }

    /// Put a reloaded config in force (its restart-only settings equal the old ones: see
    /// [`crate::reload`]); the next event or timer is scored with it.
    pub fn set_config(&mut self, cfg: Arc<Config>) {
        self.cfg = cfg;
        self.config_since_ms = self.stream_time_ms;
    }

    /// Track which customers change, for [`PartitionState::drain_dirty`] (the live pipeline
    /// with a changelog; replays and the offline tools do without).
    pub fn track_changes(&mut self) {
        self.tracking = true;
    }

    fn mark_dirty(&mut self, slot: u32) {
        if self.tracking && bits::insert(&mut self.dirty_bits, slot as usize) {
            self.dirty.push(slot);
        }
    }

    /// Number of customers changed or evicted since the last drain.
    pub fn dirty_len(&self) -> usize {
        self.dirty.len() + self.evicted.len()
    }

    /// Number of customers changed since the last drain.
    pub fn changed_len(&self) -> usize {
        self.dirty.len()
    }

    /// Hand every customer evicted since the last checkpoint to `f` (with `None`: a
    /// tombstone), then every customer changed, with the input offset its state holds
    /// (`processed`, the partition's last processed offset, or more for a customer whose
    /// restored state held more than the partition has re-read since), and forget them.
    ///
    /// Between checkpoints (`at_checkpoint` false, the records are written ahead of the
    /// partition's progress record), two kinds wait for the checkpoint:
    /// - tombstones: a tombstone says nothing of the input offset up to which the customer's
    ///   events are accounted for, so a restore that re-read input before it would bring the
    ///   evicted customer back. A customer who came back meanwhile needs none: their new
    ///   record replaces the old state.
    /// - customers who raised an alert since the last checkpoint: their record must not become
    ///   durable long before the alert (a restore would not raise it again); at the
    ///   checkpoint the alert has had time to be acknowledged.
    pub fn drain_dirty(
        &mut self,
        processed: i64,
        at_checkpoint: bool,
        mut f: impl FnMut(&str, Option<&CustomerState>, i64),
    ) {
        let mut held = Vec::new();
        if at_checkpoint {
            // Tombstones first: an evicted customer who came back is written after them.
            for id in std::mem::take(&mut self.evicted) {
                if self.slot_of(&id).is_none() {
                    f(&id, None, processed);
                }
            }
        }
        while let Some(slot) = self.dirty.pop() {
            // The changed customers are scattered over memory: load those a few ahead (their
            // id and state, then their ring) while this one is handed on.
            let upcoming = |ahead: usize| {
                let n = self.dirty.len();
                n.checked_sub(ahead).map(|i| self.dirty[i])
            };
            self.prefetch_slot_state(upcoming(STATE_AHEAD));
            self.prefetch_slot_ring(upcoming(RING_AHEAD));
            if !at_checkpoint && bits::get(&self.alerted_bits, slot as usize) {
                held.push(slot);
                continue;
            }
            bits::put(&mut self.dirty_bits, slot as usize, false);
            if self.is_vacant(slot) {
                continue; // evicted after it changed: its tombstone went above
            }
            let applied = self
                .applied
                .get(&slot)
                .map_or(processed, |&a| a.max(processed));
            f(
                self.ids.get(slot as usize),
                Some(&self.customers[slot as usize]),
                applied,
            );
        }
        if at_checkpoint {
            self.alerted_bits.clear();
        } else {
            self.dirty.append(&mut held);
        }
    }

    /// Whether the event at input `offset`, for customer `slot` (`None`: not tracked), is
    /// already part of the restored state (re-read after a restore): input up to the
    /// partition's progress is held by every customer, evicted ones included; beyond it, by
    /// the customers whose records were written later. Forgets the restored offsets once input
    /// passes them.
    fn already_applied(&mut self, slot: Option<u32>, offset: Option<i64>) -> bool {
        let Some(o) = offset else {
            return false;
        };
        if o > self.applied_until {
            if self.applied_until != i64::MIN {
                self.applied = FxHashMap::default();
                self.applied_by_all = i64::MIN;
                self.applied_until = i64::MIN;
            }
            return false;
        }
        o <= self.applied_by_all
            || slot
                .and_then(|s| self.applied.get(&s))
                .is_some_and(|&a| o <= a)
    }

    fn is_vacant(&self, slot: u32) -> bool {
        self.ids.is_vacant(slot as usize)
    }

    /// Prefetch stage [`Lookahead::Index`] for customer `id`: hash the id once and start
    /// loading its index entry. The returned [`Ahead`] carries the customer through the later
    /// stages (a hint throughout: nothing changes).
    #[inline]
    pub fn prefetch_index(&self, id: &str) -> Ahead {
        let hash = id_hash(id);
        self.index.prefetch(hash);
        Ahead { hash, slot: None }
    }

    /// Stage [`Lookahead::State`]: find the slot by hash alone (comparing the id would wait
    /// for its load; a rare other customer with the same hash half only gets prefetched
    /// instead) and start loading the customer's id and state.
    #[inline]
    pub fn prefetch_state(&self, a: &mut Ahead) {
        a.slot = self.index.find(a.hash, |_| true);
        self.prefetch_slot_state(a.slot);
    }

    /// Stage [`Lookahead::Ring`]: start loading the customer's bucket ring (and their parts
    /// kept apart).
    #[inline]
    pub fn prefetch_ring(&self, a: &Ahead) {
        self.prefetch_slot_ring(a.slot);
    }

    /// Start loading the id and state of the customer in `slot`, if any.
    #[inline]
    fn prefetch_slot_state(&self, slot: Option<u32>) {
        if let Some(slot) = slot {
            self.ids.prefetch(slot as usize);
            crate::prefetch::read(&self.customers[slot as usize]);
        }
    }

    /// Start loading the bucket ring and the parts kept apart of the customer in `slot`, if
    /// any (a slot vacated and reused since is still a valid slot).
    #[inline]
    fn prefetch_slot_ring(&self, slot: Option<u32>) {
        if let Some(c) = slot.and_then(|s| self.customers.get(s as usize)) {
            c.windows.prefetch();
            c.prefetch_parts();
        }
    }

    /// Run `each` on every item in order, with the customers of the items a few places ahead
    /// prefetched ([`lookahead`]). `id` is an item's customer id, where it has one.
    pub fn prefetching<T>(
        &mut self,
        items: &[T],
        id: impl Fn(&T) -> Option<&str>,
        mut each: impl FnMut(&mut Self, &T),
    ) {
        let mut ahead = AheadRing::default();
        let steps = lookahead(items.len(), |step| {
            match step {
                Step::Prefetch(i, Lookahead::Index) => {
                    *ahead.at(i) = id(&items[i]).map(|x| self.prefetch_index(x));
                }
                Step::Prefetch(i, Lookahead::State) => {
                    if let Some(a) = ahead.at(i) {
                        self.prefetch_state(a);
                    }
                }
                Step::Prefetch(i, Lookahead::Ring) => {
                    if let Some(a) = ahead.at(i) {
                        self.prefetch_ring(a);
                    }
                }
                Step::Process(i) => each(self, &items[i]),
            }
            Ok::<(), std::convert::Infallible>(())
        });
        let Ok(()) = steps;
    }

    /// The slot of customer `id`, if tracked.
    fn slot_of(&self, id: &str) -> Option<u32> {
        let ids = &self.ids;
        self.index.find(id_hash(id), |s| ids.get(s as usize) == id)
    }

    /// Track a new customer, in a vacant slot if there is one.
    fn insert(&mut self, id: &str, c: CustomerState) -> u32 {
        let h = id_hash(id);
        let slot = match self.free.pop() {
            Some(s) => {
                self.ids.set(s as usize, id);
                self.customers[s as usize] = c;
                s
            }
            None => {
                self.ids.push(id);
                self.customers.push(c);
                (self.customers.len() - 1) as u32
            }
        };
        self.index.insert(h, slot);
        slot
    }

    /// Forget a customer: out of the gauges, the index and (with a changelog) the durable
    /// state. Its slot's timer entries go stale; the slot is reused.
    fn evict(&mut self, slot: u32, reason: EvictReason) {
        let c = std::mem::replace(&mut self.customers[slot as usize], CustomerState::vacant());
        apply_gauge_delta(
            &self.hot,
            &mut self.kpi.periods.current.end,
            Some(&c.gauge()),
            None,
        );
        self.kpi.publish();
        self.hot.evicted[reason as usize].inc();
        let id = self.ids.take(slot as usize);
        self.index.remove(id_hash(&id), slot);
        self.applied.remove(&slot);
        if self.tracking {
            self.evicted.push(id);
        }
        self.free.push(slot);
    }

    /// Evict the `n` least recently active customers (the instance is over
    /// `state.max_customers`). Returns how many were evicted.
    pub fn evict_least_active(&mut self, n: usize) -> usize {
        let mut by_activity: Vec<(i64, u32)> = (0..self.customers.len() as u32)
            .filter(|&s| !self.is_vacant(s))
            .map(|s| (self.customers[s as usize].last_active_ms(), s))
            .collect();
        let n = n.min(by_activity.len());
        if n == 0 {
            return 0;
        }
        if n < by_activity.len() {
            by_activity.select_nth_unstable(n - 1);
        }
        for &(_, slot) in &by_activity[..n] {
            self.evict(slot, EvictReason::Capacity);
        }
        n
    }

    /// Install restored state: the customers (in any order, each once) and the partition's
    /// progress. Due timers are re-armed where an uninterrupted run would have them, and input
    /// re-read up to each customer's `applied_offset` will not be applied to it again.
    pub fn restore(
        &mut self,
        customers: impl IntoIterator<Item = (String, StoredCustomer)>,
        progress: Option<StoredPartition>,
    ) {
        self.release();
        let mut fired_to = None;
        if let Some(p) = progress {
            fired_to = p.timers_fired_to_ms;
            self.stream_time_ms = p.stream_time_ms;
            self.applied_by_all = p.applied_offset;
            self.applied_until = p.applied_offset;
            // The current period's `end` is counted again below, from the customers.
            self.kpi.periods = p.periods;
            self.kpi.periods.current.end = 0;
        }
        let fired_to = fired_to.or(self.watermark_ms());
        let interval = self.cfg.windows.check_interval_ms;
        let ring = self.cfg.windows.total_buckets() as usize + 1;
        for (id, stored) in customers {
            if id.is_empty() {
                continue; // not a customer id (the decoder rejects empty ones)
            }
            let mut c = stored.state;
            if c.windows.len() != ring {
                c.windows = c.windows.resized(ring);
            }
            // Timers that fired since this state was written without changing it: move the
            // due time past the time up to which all timers had fired, on the shared grid, as
            // the firing would have. (One that fired after that time, unchanged, fires again:
            // it changes nothing again.)
            if let (Some(due), Some(fired_to)) = (c.next_check.get(), fired_to) {
                c.next_check = MaybeStamp::some(rearmed(due, fired_to, interval));
            }
            apply_gauge_delta(
                &self.hot,
                &mut self.kpi.periods.current.end,
                None,
                Some(&c.gauge()),
            );
            let due = c.next_check.get();
            let slot = self.insert(&id, c);
            if let Some(due) = due {
                self.timers.schedule(due, slot);
            }
            if stored.applied_offset > self.applied_by_all {
                self.applied.insert(slot, stored.applied_offset);
                self.applied_until = self.applied_until.max(stored.applied_offset);
            }
        }
        self.kpi.publish();
    }

    /// This partition's progress, for its changelog.
    pub fn progress(&self, applied_offset: i64) -> StoredPartition {
        StoredPartition {
            applied_offset,
            stream_time_ms: self.stream_time_ms,
            timers_fired_to_ms: self.timers_fired_to_ms(),
            periods: self.kpi.periods,
        }
    }

    /// Event time up to which every timer has fired: the watermark, or just before the
    /// earliest timer still waiting to fire.
    fn timers_fired_to_ms(&self) -> Option<i64> {
        let wm = self.watermark_ms()?;
        Some(match self.timers.next_due() {
            Some(due) if due <= wm => due - 1,
            _ => wm,
        })
    }

    /// Newest event time seen.
    pub fn stream_time_ms(&self) -> Option<i64> {
        self.stream_time_ms
    }

    /// Event time up to which timers have fired.
    pub fn watermark_ms(&self) -> Option<i64> {
        self.stream_time_ms
            .map(|t| t - self.cfg.input.allowed_lateness_ms)
    }

    pub fn customer(&self, id: &str) -> Option<&CustomerState> {
        self.slot_of(id).map(|s| &self.customers[s as usize])
    }

    /// Process one valid event; alerts it causes (its own, and those of timers it lets fire)
    /// are appended to `out`.
    pub fn on_event(
        &mut self,
        ev: &Event<'_>,
        source: Option<SourceRef<'_>>,
        out: &mut Vec<Alert>,
    ) -> EventOutcome {
        self.hot.events[ev.activity.event_type() as usize].inc();
        let late = self.watermark_ms().is_some_and(|wm| ev.ts_ms < wm);
        let mut time_moved = false;
        if !late {
            self.events_since_idle_check = true;
            if self.stream_time_ms.is_none_or(|t| ev.ts_ms > t) {
                self.stream_time_ms = Some(ev.ts_ms);
                time_moved = true;
            }
        }
        // Time moves first: timers due before this event fire on the state as it was. In runs,
        // whenever the allowance they earn (8 per event) is full, so that a burst of them does
        // not hold up the events behind it; this customer's own, if due, right away.
        self.timer_allowance = (self.timer_allowance + TIMERS_PER_EVENT).min(TIMER_RUN);
        let run = if self.timer_allowance == TIMER_RUN {
            TIMER_RUN
        } else {
            0 // (a KPI period that ends is still closed)
        };
        if run > 0 || time_moved {
            self.timer_allowance -= self.fire_timers(out, Some(run));
        }
        let mut known = self.slot_of(&ev.customer_id);
        if let Some(slot) = known {
            if self.fire_if_due(slot, out) {
                // The timer may have forgotten a lapsed customer.
                known = self.slot_of(&ev.customer_id);
            }
        }
        if self.already_applied(known, source.as_ref().map(|s| s.offset)) {
            // Time has moved; the customer's restored state holds the rest.
            return EventOutcome {
                late,
                outside_window: false,
                duplicate: false,
            };
        }
        let slot = match known {
            Some(s) => s,
            None => {
                let c = CustomerState::new(&self.cfg, ev.ts_ms);
                apply_gauge_delta(
                    &self.hot,
                    &mut self.kpi.periods.current.end,
                    None,
                    Some(&c.gauge()),
                );
                self.kpi.periods.current.new += 1;
                self.kpi.publish();
                self.insert(&ev.customer_id, c)
            }
        };
        let config_since = *self.config_since_ms.get_or_insert(ev.ts_ms);
        let c = &mut self.customers[slot as usize];
        if c.is_duplicate(ev) {
            self.hot.duplicate.inc();
            return EventOutcome {
                late,
                outside_window: false,
                duplicate: true,
            };
        }
        let settled = !late
            && settled_for_activity(c, ev, config_since, &self.cfg)
            && !self.scorer.activity_may_raise_risk();
        let placement = c.apply(ev, &self.cfg);
        let outside_window = placement == Placement::TooOld;
        if late {
            self.hot.late.inc();
            if outside_window {
                self.hot.outside_window.inc();
            }
        }
        // A customer's re-score is due no later than the first grid time after their latest
        // on-time event. Due times are on the grid, so `due - interval > last_seen` says it is
        // later; only the eviction timer of a lapsed customer can be, and one who shows up
        // again is re-scored daily again.
        let interval = self.cfg.windows.check_interval_ms;
        let rearm = match c.next_check.get() {
            None => true,
            Some(due) => !late && due - interval > c.last_seen_ms(),
        };
        if rearm {
            let due = next_grid_time(c.last_seen_ms(), interval);
            let due = c.arm_check(due);
            self.timers.schedule(due, slot);
        }
        if !late {
            let as_of = c.last_seen_ms();
            if settled {
                self.refresh_lifecycle(slot, as_of, source, out);
            } else {
                self.evaluate(slot, as_of, Trigger::Event, source, out);
            }
        }
        self.mark_dirty(slot);
        EventOutcome {
            late,
            outside_window,
            duplicate: false,
        }
    }

    /// Advance stream time to `ts_ms` without an event (replays, tests), firing due timers.
    pub fn advance_to(&mut self, ts_ms: i64, out: &mut Vec<Alert>) {
        if self.stream_time_ms.is_none_or(|t| ts_ms > t) {
            self.stream_time_ms = Some(ts_ms);
        }
        self.fire_timers(out, None);
    }

    /// Wall-clock fallback: if the partition has been idle for the configured timeout, move
    /// stream time forward by the wall-clock time elapsed. Returns whether time moved.
    ///
    /// Called periodically (the pipeline: every 0.5 s); idle time counts from the first call
    /// after the latest on-time event, so it is at most one period late.
    pub fn on_idle(&mut self, now_wall: Instant, out: &mut Vec<Alert>) -> bool {
        if std::mem::take(&mut self.events_since_idle_check) {
            self.last_event_wall = now_wall;
            self.last_advance_wall = now_wall;
            return false;
        }
        let Some(st) = self.stream_time_ms else {
            return false;
        };
        if now_wall.duration_since(self.last_event_wall) < self.cfg.input.idle_partition_timeout {
            return false;
        }
        let step = now_wall.duration_since(self.last_advance_wall).as_millis() as i64;
        self.last_advance_wall = now_wall;
        if step <= 0 {
            return false;
        }
        self.stream_time_ms = Some(st + step);
        self.fire_timers(out, None);
        true
    }

    /// Fire the timers due up to the watermark, at most `budget` of them (all when `None`);
    /// returns how many of those fired. KPI periods end on their boundary, after all the
    /// timers due before it (those fire whatever the budget).
    pub fn fire_timers(&mut self, out: &mut Vec<Alert>, budget: Option<usize>) -> usize {
        let Some(wm) = self.watermark_ms() else {
            return 0;
        };
        let period = self.cfg.lifecycle.kpi_period_ms;
        if self.kpi.periods.index.is_none() {
            self.kpi.periods.index = Some(wm.div_euclid(period));
        }
        while let Some(boundary) = self.kpi.periods.boundary_passed(wm, period) {
            self.fire_timers_until(boundary - 1, out, None);
            self.end_period(boundary);
        }
        self.fire_timers_until(wm, out, budget)
    }

    /// Whether timers due at or before the watermark are still waiting to fire.
    pub fn timers_due(&self) -> bool {
        self.watermark_ms()
            .is_some_and(|wm| self.timers.next_due().is_some_and(|due| due <= wm))
    }

    /// Close the current KPI period at `boundary`: the next one starts with the customers not
    /// lapsed now, and their revenue.
    fn end_period(&mut self, boundary: i64) {
        let cfg = &*self.cfg;
        let revenue: f64 = self
            .customers()
            .filter(|(_, c)| c.lifecycle != Lifecycle::Lapsed)
            .map(|(_, c)| revenue_per_period(c, boundary, cfg))
            .sum();
        self.kpi.periods.roll(revenue);
        self.kpi.publish();
    }

    fn fire_timers_until(&mut self, wm: i64, out: &mut Vec<Alert>, budget: Option<usize>) -> usize {
        let budget = budget.unwrap_or(usize::MAX);
        let mut fired = 0;
        while fired < budget {
            let Some((due, slot)) = self.timers.pop_due(wm) else {
                break;
            };
            // A run of timers walks the customers in slot order, which the hardware follows;
            // their rings are scattered: load the ring of one a few timers ahead (and that
            // customer's state, further ahead) while this one is scored.
            self.prefetch_slot_state(self.timers.upcoming(STATE_AHEAD));
            self.prefetch_slot_ring(self.timers.upcoming(RING_AHEAD));
            if self.customers[slot as usize].next_check.get() != Some(due) {
                continue; // stale entry
            }
            self.fire_timer(slot, due, out);
            fired += 1;
        }
        fired
    }

    /// Fire the customer's timer if it is due (an event of theirs is next: the state it meets
    /// must be the one it would meet had every due timer fired at once). Returns whether it
    /// fired; the queue's entry for it is then stale.
    fn fire_if_due(&mut self, slot: u32, out: &mut Vec<Alert>) -> bool {
        let due = self.customers[slot as usize].next_check.get();
        match (due, self.watermark_ms()) {
            (Some(due), Some(wm)) if due <= wm => {
                self.fire_timer(slot, due, out);
                true
            }
            _ => false,
        }
    }

    /// Fire the customer's timer due at `due` (their `next_check`).
    fn fire_timer(&mut self, slot: u32, due: i64, out: &mut Vec<Alert>) {
        let interval = self.cfg.windows.check_interval_ms;
        let c = &mut self.customers[slot as usize];
        c.next_check = MaybeStamp::NONE;
        self.hot.timers_fired.inc();
        if let Some(evict_at) = eviction_due(&self.cfg, c) {
            // A lapsed customer's only timer: forget them, or wait longer if a late
            // event moved their last activity.
            if due >= evict_at {
                self.evict(slot, EvictReason::Lapsed);
            } else {
                let due = c.arm_check(evict_at);
                self.timers.schedule(due, slot);
                self.mark_dirty(slot);
            }
            return;
        }
        let as_of = due.max(c.last_seen_ms());
        let before = (*c.alert(), c.gauge());
        self.evaluate(slot, as_of, Trigger::Timer, None, out);
        let c = &self.customers[slot as usize];
        // Lapsed customers need no re-score until they are seen again; only, with
        // eviction on, the timer that forgets them.
        let next = if c.alert().phase != Phase::Lapsed {
            Some(due + interval)
        } else {
            eviction_due(&self.cfg, c)
        };
        let c = &mut self.customers[slot as usize];
        if let Some(next) = next {
            let due = c.arm_check(next);
            self.timers.schedule(due, slot);
        }
        // A timer that changed nothing but its own due time is not worth a changelog
        // record: a restore re-arms it on the same grid.
        if before != (*c.alert(), c.gauge()) || c.next_check.is_none() {
            self.mark_dirty(slot);
        }
    }

    fn evaluate(
        &mut self,
        slot: u32,
        as_of_ms: i64,
        trigger: Trigger,
        source: Option<SourceRef<'_>>,
        out: &mut Vec<Alert>,
    ) {
        let cfg = &*self.cfg;
        let c = &mut self.customers[slot as usize];
        let a = self.scorer.assess(c, as_of_ms, cfg);
        // Decided on a copy, handed back once settled: most customers' alert state stays the
        // default, which takes no memory of its own ([`CustomerState::set_alert`]).
        let mut alert = *c.alert();
        let episode_since = alert.at_risk_since();
        let decision = alert.decide(&a, c.last_active_ms(), cfg);
        let kind = decision.ok().flatten().map(|t| t.kind);
        let winback = alert.winback(episode_since, kind, as_of_ms, cfg.churn.horizon_ms);
        c.set_alert(alert);
        let lifecycle = lifecycle_of(c, as_of_ms, cfg);
        if let Some(w) = winback {
            self.hot.winback[w as usize].inc();
        }
        match decision {
            Ok(Some(t)) => {
                let mut reasons = a.ranked_reasons();
                let lapsed = t.kind == AlertKind::Lapsed;
                if lapsed || reasons.is_empty() {
                    reasons.insert(0, inactivity_reason(a.days_since_last_active, lapsed, cfg));
                }
                self.hot.alerts[t.kind as usize].inc();
                if self.tracking {
                    bits::insert(&mut self.alerted_bits, slot as usize);
                }
                if matches!(t.kind, AlertKind::AtRisk | AlertKind::Escalated) {
                    self.hot.top_reason[reasons[0].signal as usize].inc();
                }
                out.push(Alert::build(
                    self.ids.get(slot as usize),
                    c,
                    &a,
                    &t,
                    reasons,
                    lifecycle,
                    trigger,
                    source,
                    cfg,
                ));
            }
            Ok(None) => {}
            Err(Suppressed::Cooldown) => self.hot.suppressed_cooldown.inc(),
        }
        let tier = c.alert().current_tier();
        let new = GaugeContribution {
            lifecycle,
            at_risk_tier: tier,
            value_at_risk: if tier.is_some() {
                a.value_at_risk() as f32
            } else {
                0.0
            },
        };
        self.set_gauge(slot, new, as_of_ms);
    }

    /// A healthy customer's event that needs no re-assessment (module doc, "Assessments"):
    /// bring their lifecycle up to date, or assess them after all if it has changed beyond
    /// what a healthy customer's can (lapsed).
    fn refresh_lifecycle(
        &mut self,
        slot: u32,
        as_of_ms: i64,
        source: Option<SourceRef<'_>>,
        out: &mut Vec<Alert>,
    ) {
        let c = &self.customers[slot as usize];
        let lifecycle = lifecycle_of(c, as_of_ms, &self.cfg);
        if lifecycle == Lifecycle::Lapsed {
            return self.evaluate(slot, as_of_ms, Trigger::Event, source, out);
        }
        let new = GaugeContribution {
            lifecycle,
            ..c.gauge()
        };
        self.set_gauge(slot, new, as_of_ms);
    }

    /// Make `new` the customer's contribution to the gauges and the period's counts.
    fn set_gauge(&mut self, slot: u32, new: GaugeContribution, as_of_ms: i64) {
        let c = &mut self.customers[slot as usize];
        let old = c.replace_gauge(new);
        if old.lifecycle != Lifecycle::Lapsed && new.lifecycle == Lifecycle::Lapsed {
            let current = &mut self.kpi.periods.current;
            current.lost += 1;
            current.lost_revenue += revenue_per_period(c, as_of_ms, &self.cfg);
        }
        apply_gauge_delta(
            &self.hot,
            &mut self.kpi.periods.current.end,
            Some(&old),
            Some(&new),
        );
        if old.lifecycle != new.lifecycle {
            self.kpi.publish();
        }
    }

    /// The customers currently at risk, with their value at risk (as of their latest
    /// assessment), for the status page.
    pub fn at_risk(&self) -> impl Iterator<Item = (&str, f64)> {
        self.customers().filter_map(|(id, c)| {
            let g = c.gauge();
            g.at_risk_tier.map(|_| (id, f64::from(g.value_at_risk)))
        })
    }

    /// A fresh look at one customer, at the partition's stream time (or their latest event,
    /// if later), without changing any state.
    pub fn inspect(&self, id: &str) -> Option<Inspection<'_>> {
        let c = self.customer(id)?;
        let as_of_ms = self
            .stream_time_ms
            .unwrap_or(c.last_seen_ms())
            .max(c.last_seen_ms());
        let cfg = &*self.cfg;
        Some(Inspection {
            customer: c,
            assessment: self.scorer.assess(c, as_of_ms, cfg),
            lifecycle: lifecycle_of(c, as_of_ms, cfg),
            cfg,
        })
    }

    /// Number of customers tracked.
    pub fn len(&self) -> usize {
        self.customers.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every customer's state, with its id.
    pub fn customers(&self) -> impl Iterator<Item = (&str, &CustomerState)> {
        self.ids
            .iter()
            .zip(&self.customers)
            .filter(|(id, _)| !id.is_empty())
    }

    /// Assess every customer at `as_of_ms` with the partition's scorer, without changing any
    /// state (replays, `churnwatch score`, the backtest's cut-off dates).
    pub fn for_each_assessment(
        &self,
        as_of_ms: i64,
        mut f: impl FnMut(&str, &CustomerState, &crate::scoring::Assessment, Lifecycle),
    ) {
        let cfg = &*self.cfg;
        for (id, c) in self.customers() {
            let a = self.scorer.assess(c, as_of_ms, cfg);
            f(id, c, &a, lifecycle_of(c, as_of_ms, cfg));
        }
    }

    /// Withdraw this partition's customers from the population gauges (on revoke or shutdown).
    pub fn release(&mut self) {
        for (_, c) in self.customers() {
            apply_gauge_delta(&self.hot, &mut 0, Some(&c.gauge()), None);
        }
        self.kpi.clear();
        self.customers.clear();
        self.ids.clear();
        self.index.clear();
        self.timers = Timers::new();
        self.dirty.clear();
        self.dirty_bits.clear();
        self.alerted_bits.clear();
        self.applied = FxHashMap::default();
        self.applied_by_all = i64::MIN;
        self.applied_until = i64::MIN;
        self.free.clear();
        self.evicted.clear();
    }
}

impl Drop for PartitionState {
    fn drop(&mut self) {
        self.release();
    }
}

/// Hash of a customer id for the index (FxHash: fast on short keys, then a multiplication
/// that mixes every bit into the upper half the index uses; the table compares the ids
/// themselves on a match).
fn id_hash(id: &str) -> IdHash {
    let mut h = FxHasher::default();
    h.write(id.as_bytes());
    IdHash::of(h.finish().wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// When a lapsed customer is forgotten (`None`: not lapsed, or eviction is off): on the timer
/// grid, once inactive for `state.evict_lapsed_after_days`.
fn eviction_due(cfg: &Config, c: &CustomerState) -> Option<i64> {
    let after = cfg.state.evict_lapsed_after_ms;
    (after > 0 && c.alert().phase == Phase::Lapsed).then(|| {
        next_grid_time(
            c.last_active_ms().saturating_add(after - 1),
            cfg.windows.check_interval_ms,
        )
    })
}

/// Whether `ev`, on time, needs no re-assessment of `c` (before it is applied) by a scorer
/// whose risk the customer's own activity does not raise (module doc, "Assessments"): it is
/// activity, `c` is healthy with no risk waiting for confirmation (so their latest assessment
/// found the risk below the enter threshold), and that assessment was in `ev`'s bucket, after
/// `config_since_ms`.
///
/// The latest assessment is known from the pending re-score timer: one due at `due` was armed
/// by an assessment at `due - interval` or later (a timer firing, or an on-time event), and
/// only a restore re-arms one without it, which `config_since_ms` (the first event after it)
/// rules out. The event must also land in the bucket of the assessment time (the customer's
/// latest event), else it changes a bucket that assessment read as complete.
fn settled_for_activity(
    c: &CustomerState,
    ev: &Event<'_>,
    config_since_ms: i64,
    cfg: &Config,
) -> bool {
    let (interval, b) = (cfg.windows.check_interval_ms, cfg.windows.bucket_ms);
    let Some(due) = c.next_check.get() else {
        return false;
    };
    let assessed_from = due - interval;
    let bucket = || bucket_index(ev.ts_ms, b);
    ev.activity.is_customer_activity()
        && c.alert().phase == Phase::Healthy
        && c.alert().pending_since.is_none()
        && assessed_from > config_since_ms
        && due == next_grid_time(ev.ts_ms, interval)
        && bucket_index(assessed_from, b) == bucket()
        && bucket_index(c.last_seen_ms().max(ev.ts_ms), b) == bucket()
}

/// Lifecycle stage at `as_of_ms`.
pub fn lifecycle_of(c: &CustomerState, as_of_ms: i64, cfg: &Config) -> Lifecycle {
    if c.alert().phase == Phase::Lapsed
        || as_of_ms - c.last_active_ms() >= cfg.lifecycle.lapse_after_ms
    {
        Lifecycle::Lapsed
    } else if c.alert().phase == Phase::AtRisk {
        Lifecycle::Declining
    } else if as_of_ms - c.first_seen.ms() < cfg.lifecycle.new_customer_ms {
        Lifecycle::New
    } else {
        Lifecycle::Active
    }
}

/// Move a customer's contribution to the population gauges from `old` to `new` (`None`: not
/// tracked), and to `not_lapsed`, the partition's count of customers not lapsed.
fn apply_gauge_delta(
    hot: &HotMetrics,
    not_lapsed: &mut i64,
    old: Option<&GaugeContribution>,
    new: Option<&GaugeContribution>,
) {
    if old == new {
        return;
    }
    if let Some(o) = old {
        hot.customers[o.lifecycle as usize].dec();
        *not_lapsed -= i64::from(o.lifecycle != Lifecycle::Lapsed);
        if let Some(t) = o.at_risk_tier {
            hot.at_risk[t as usize - 1].dec();
            if o.value_at_risk != 0.0 {
                hot.revenue_at_risk[t as usize - 1].sub(f64::from(o.value_at_risk));
            }
        }
    }
    if let Some(n) = new {
        hot.customers[n.lifecycle as usize].inc();
        *not_lapsed += i64::from(n.lifecycle != Lifecycle::Lapsed);
        if let Some(t) = n.at_risk_tier {
            hot.at_risk[t as usize - 1].inc();
            if n.value_at_risk != 0.0 {
                hot.revenue_at_risk[t as usize - 1].add(f64::from(n.value_at_risk));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lookahead_prefetches_every_item_in_stage_order_before_processing_it() {
        for len in [0, 1, 3, LOOKAHEAD, 50] {
            let mut seen: Vec<Vec<Step>> = vec![Vec::new(); len];
            lookahead(len, |step| {
                let i = match step {
                    Step::Prefetch(i, _) | Step::Process(i) => i,
                };
                seen[i].push(step);
                Ok::<(), ()>(())
            })
            .unwrap();
            for (i, steps) in seen.iter().enumerate() {
                assert_eq!(
                    steps.last(),
                    Some(&Step::Process(i)),
                    "processed last, once"
                );
                let stages: Vec<Lookahead> = steps
                    .iter()
                    .filter_map(|s| match s {
                        Step::Prefetch(_, st) => Some(*st),
                        Step::Process(_) => None,
                    })
                    .collect();
                assert_eq!(stages[0], Lookahead::Index, "item {i} of {len}");
                assert!(stages.windows(2).all(|w| w[0] as u8 <= w[1] as u8));
            }
        }
        let mut n = 0;
        let stopped = lookahead(50, |step| {
            n += 1;
            if step == Step::Process(3) {
                Err("stop")
            } else {
                Ok(())
            }
        });
        assert_eq!(stopped, Err("stop"));
        assert!(n < 50);
    }

    use super::*;
    use crate::alerting::Winback;
    use crate::event::Activity;
    use crate::scoring::{Assessment, Signal};
    use crate::time::{DAY_MS, HOUR_MS};
    use std::borrow::Cow;

    const T0: i64 = 1_700_000_000_000 / DAY_MS * DAY_MS;

    fn ev(id: &str, ts_ms: i64, activity: Activity) -> Event<'_> {
        Event {
            customer_id: Cow::Borrowed(id),
            ts_ms,
            activity,
            event_id: None,
        }
    }

    /// Feed `days` of daily activity for each id in `active(day)`.
    fn run(
        p: &mut PartitionState,
        days: i64,
        active: impl Fn(i64, &str) -> bool,
        ids: &[&str],
    ) -> Vec<Alert> {
        let mut out = Vec::new();
        for d in 0..days {
            for h in [9, 13, 18] {
                for id in ids {
                    if active(d, id) {
                        p.on_event(
                            &ev(id, T0 + d * DAY_MS + h * HOUR_MS, Activity::Visit),
                            None,
                            &mut out,
                        );
                    }
                }
            }
        }
        out
    }

    /// The KPI gauges as `(start, new, lost, end, start_revenue, lost_revenue)` of `period`.
    fn period_gauges(m: &Metrics, period: &str) -> (i64, i64, i64, i64, f64, f64) {
        let c = |count| m.period_customers.with_label_values(&[period, count]).get();
        let r = |count| m.period_revenue.with_label_values(&[period, count]).get();
        (
            c("start"),
            c("new"),
            c("lost"),
            c("end"),
            r("start"),
            r("lost"),
        )
    }

    #[test]
    fn churn_retention_and_winback_kpis() {
        let m = Metrics::new();
        let cfg = Arc::new(Config::default());
        let period = cfg.lifecycle.kpi_period_ms;
        assert_eq!(period, 30 * DAY_MS);
        let mut p = PartitionState::new(cfg.clone(), &m);
        let mut alerts = Vec::new();
        // T0 is 5 days before a period boundary (periods are aligned to the epoch).
        assert_eq!((T0 + 5 * DAY_MS) % period, 0);
        let boundary = |k: i64| T0 + (5 + 30 * k) * DAY_MS;
        p.on_event(
            &ev("silent", T0 + HOUR_MS, Activity::Purchase { amount: 300.0 }),
            None,
            &mut alerts,
        );
        for d in 0..130 {
            for h in [9, 13, 18] {
                for id in ["steady", "silent", "returning", "joiner"] {
                    let active = match id {
                        "steady" => true,
                        "silent" => d < 40,
                        "returning" => !(40..50).contains(&d),
                        _ => d >= 100,
                    };
                    if active {
                        let e = ev(id, T0 + d * DAY_MS + h * HOUR_MS, Activity::Visit);
                        p.on_event(&e, None, &mut alerts);
                    }
                }
            }
            if d == 99 {
                // [boundary 2, boundary 3) just ended: "silent" lapsed in it (day ~70).
                assert!(p.watermark_ms().unwrap() >= boundary(3));
                let (start, new, lost, end, start_rev, lost_rev) = period_gauges(&m, "previous");
                assert_eq!((start, new, lost, end), (3, 0, 1, 2));
                // 300 over the tenure at the period's start (65 days less an hour), per 30
                // days; lost at a longer tenure.
                let tenure = 65.0 - 1.0 / 24.0;
                assert!(
                    (start_rev - 300.0 / tenure * 30.0).abs() < 1e-6,
                    "{start_rev}"
                );
                assert!(
                    lost_rev > 300.0 / 75.0 * 30.0 && lost_rev < start_rev,
                    "{lost_rev}"
                );
                assert_eq!(period_gauges(&m, "current").0, 2);
            }
        }
        // [boundary 3, boundary 4): two at its start, "joiner" new, nobody lost.
        let (start, new, lost, end, start_rev, lost_rev) = period_gauges(&m, "previous");
        assert_eq!((start, new, lost, end), (2, 1, 0, 3));
        assert_eq!((start_rev, lost_rev), (0.0, 0.0));
        // The current period: three at its start and now.
        let (start, new, lost, end, _, _) = period_gauges(&m, "current");
        assert_eq!((start, new, lost, end), (3, 0, 0, 3));
        assert_eq!(p.progress(0).periods, p.kpi.periods);

        // "returning" came back within the horizon, "silent" lapsed.
        let of = |id: &str| -> Vec<&str> {
            alerts
                .iter()
                .filter(|a| a.customer_id == id)
                .map(|a| a.kind.as_str())
                .collect()
        };
        assert_eq!(of("returning").first(), Some(&"at_risk"), "{alerts:?}");
        assert_eq!(of("returning").last(), Some(&"recovered"));
        assert_eq!(of("silent").last(), Some(&"lapsed"));
        let winback = |o: Winback| {
            m.winback_outcomes_total
                .with_label_values(&[o.as_str()])
                .get()
        };
        assert_eq!(winback(Winback::Returned), 1);
        assert_eq!(winback(Winback::NotReturned), 1);
        // Every at_risk and escalated alert counts its first reason.
        let raised = alerts
            .iter()
            .filter(|a| matches!(a.kind, AlertKind::AtRisk | AlertKind::Escalated))
            .count() as u64;
        let by_reason: u64 = Signal::ALL
            .iter()
            .map(|s| {
                m.alert_top_reasons_total
                    .with_label_values(&[s.as_str()])
                    .get()
            })
            .sum();
        assert_eq!(by_reason, raised);

        // Released partitions take their contribution out of the gauges.
        drop(p);
        assert_eq!(period_gauges(&m, "previous"), (0, 0, 0, 0, 0.0, 0.0));
        assert_eq!(period_gauges(&m, "current"), (0, 0, 0, 0, 0.0, 0.0));
    }

    #[test]
    fn kpi_periods_survive_a_restore() {
        let m = Metrics::new();
        let cfg = Arc::new(Config::default());
        let mut p = PartitionState::new(cfg.clone(), &m);
        let mut out = Vec::new();
        for d in 0..70 {
            p.on_event(&ev("a", T0 + d * DAY_MS, Activity::Visit), None, &mut out);
            p.on_event(&ev("b", T0 + d * DAY_MS, Activity::Visit), None, &mut out);
        }
        let progress = p.progress(139);
        let customers: Vec<_> = p
            .customers()
            .map(|(id, c)| {
                (
                    id.to_string(),
                    StoredCustomer {
                        applied_offset: 139,
                        state: c.clone(),
                    },
                )
            })
            .collect();
        let before = (period_gauges(&m, "current"), period_gauges(&m, "previous"));
        drop(p);
        let mut q = PartitionState::new(cfg, &m);
        q.restore(customers, Some(progress));
        assert_eq!(
            (period_gauges(&m, "current"), period_gauges(&m, "previous")),
            before
        );
        assert_eq!(before.1 .0, 2);
    }

    #[test]
    fn steady_silent_and_returning_customers() {
        let m = Metrics::new();
        let mut p = PartitionState::new(Arc::new(Config::default()), &m);
        let alerts = run(
            &mut p,
            90,
            |d, id| match id {
                "steady" => true,
                "silent" => d < 40,
                "returning" => !(40..50).contains(&d),
                // Three visits a day, then three every fifth day from day 40 on.
                "stabilised" => d < 40 || d % 5 == 0,
                _ => false,
            },
            &["steady", "silent", "returning", "stabilised"],
        );
        let of = |id: &str| -> Vec<&str> {
            alerts
                .iter()
                .filter(|a| a.customer_id == id)
                .map(|a| a.kind.as_str())
                .collect()
        };
        assert_eq!(of("steady"), Vec::<&str>::new());
        let silent = of("silent");
        assert_eq!(silent[0], "at_risk", "{silent:?}");
        assert_eq!(silent.last(), Some(&"lapsed"), "{silent:?}");
        assert_eq!(silent.iter().filter(|k| **k == "at_risk").count(), 1);
        // Declined and stayed low: at risk once (perhaps escalated as the evidence grew),
        // never "recovered" by its sliding baseline.
        let stabilised = of("stabilised");
        assert_eq!(stabilised.first(), Some(&"at_risk"), "{stabilised:?}");
        assert!(
            stabilised
                .iter()
                .all(|k| *k == "at_risk" || *k == "escalated"),
            "{stabilised:?}"
        );
        assert_eq!(stabilised.iter().filter(|k| **k == "at_risk").count(), 1);
        let returning = of("returning");
        assert_eq!(returning.first(), Some(&"at_risk"), "{returning:?}");
        assert_eq!(returning.last(), Some(&"recovered"), "{returning:?}");
        // The silent customer was flagged by a timer, not by an event of its own.
        let first = alerts.iter().find(|a| a.customer_id == "silent").unwrap();
        assert_eq!(first.trigger, Trigger::Timer);
        assert!(!first.reasons.is_empty());
        assert!(first.reasons[0].summary.starts_with("visits -"));
        // Gauges: one lapsed customer, nobody at risk.
        let text = m.render();
        assert!(
            text.contains("churnwatch_customers{lifecycle=\"lapsed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("churnwatch_customers{lifecycle=\"active\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("churnwatch_customers{lifecycle=\"declining\"} 1"),
            "{text}"
        );
        let at_risk: f64 = ["low", "medium", "high"]
            .iter()
            .map(|t| {
                let key = format!("churnwatch_at_risk_customers{{tier=\"{t}\"}} ");
                text.lines()
                    .find_map(|l| l.strip_prefix(&key))
                    .map_or(0.0, |v| v.parse().unwrap())
            })
            .sum();
        assert_eq!(at_risk, 1.0, "{text}");
        drop(p);
        let text = m.render();
        assert!(
            text.contains("churnwatch_customers{lifecycle=\"active\"} 0"),
            "{text}"
        );
    }

    /// The default scorer, counting its assessments, saying as it does or as the default
    /// (`false`: every event assessed) whether activity may raise its risk.
    struct Counting {
        assessments: std::sync::atomic::AtomicUsize,
        activity_settles: bool,
    }

    impl Counting {
        fn new(activity_settles: bool) -> Arc<Counting> {
            Arc::new(Counting {
                assessments: Default::default(),
                activity_settles,
            })
        }

        fn taken(&self) -> usize {
            self.assessments
                .swap(0, std::sync::atomic::Ordering::Relaxed)
        }
    }

    impl Scorer for Counting {
        fn assess(&self, c: &CustomerState, as_of_ms: i64, cfg: &Config) -> Assessment {
            self.assessments
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            SignalScorer.assess(c, as_of_ms, cfg)
        }

        fn activity_may_raise_risk(&self) -> bool {
            !self.activity_settles
        }
    }

    #[test]
    fn a_healthy_customers_activity_after_their_daily_assessment_is_not_reassessed() {
        let m = Metrics::new();
        let cfg = Arc::new(Config::default());
        let scorer = Counting::new(true);
        let mut p = PartitionState::with_scorer(cfg.clone(), scorer.clone(), &m);
        let mut out = Vec::new();
        let visit = |p: &mut PartitionState, at: i64, out: &mut Vec<Alert>| {
            p.on_event(&ev("a", at, Activity::Visit), None, out);
        };
        // Day 0: the customer is new, and nobody was assessed under this config before the
        // first event: every event is assessed.
        for h in [9, 13, 18] {
            visit(&mut p, T0 + h * HOUR_MS, &mut out);
        }
        assert_eq!(scorer.taken(), 3);
        // Each later day: the midnight timer (fired before the day's first event), then
        // three visits in the bucket it assessed.
        // The lifecycle gauge still follows: "new" for 30 days from the first event (day 0,
        // 9:00), so the midnight timer of day 30 leaves the customer new, and their visit at
        // 9:00 makes them active.
        let gauge = |l: &str| m.customers.with_label_values(&[l]).get();
        for d in 1..40 {
            for h in [9, 13, 18] {
                visit(&mut p, T0 + d * DAY_MS + h * HOUR_MS, &mut out);
            }
            assert_eq!(scorer.taken(), 1, "day {d}");
            let new = if d < 30 { (1, 0) } else { (0, 1) };
            assert_eq!((gauge("new"), gauge("active")), new, "day {d}");
        }
        // An engagement score is assessed, and so is a visit in the first hour of a day,
        // before the midnight timer has fired (the watermark is an hour behind).
        let e = ev("a", T0 + 40 * DAY_MS + 30 * 60_000, Activity::Visit);
        p.on_event(&e, None, &mut out);
        assert_eq!(scorer.taken(), 1);
        let score = Activity::Engagement { score: 80.0 };
        p.on_event(
            &ev("a", T0 + 40 * DAY_MS + 2 * HOUR_MS, score),
            None,
            &mut out,
        );
        assert_eq!(scorer.taken(), 2, "the timer and the score");
        // A reloaded config: the rest of the day is assessed under it; from the next
        // timer on, activity settles again.
        p.set_config(cfg.clone());
        for h in [9, 13] {
            visit(&mut p, T0 + 40 * DAY_MS + h * HOUR_MS, &mut out);
        }
        assert_eq!(scorer.taken(), 2);
        visit(&mut p, T0 + 41 * DAY_MS + 9 * HOUR_MS, &mut out);
        visit(&mut p, T0 + 41 * DAY_MS + 13 * HOUR_MS, &mut out);
        assert_eq!(scorer.taken(), 1);
        // At risk: every event is assessed (it may bring recovery).
        let slot = p.slot_of("a").unwrap();
        let c = &mut p.customers[slot as usize];
        let at_risk = crate::alerting::AlertState {
            phase: Phase::AtRisk,
            ..*c.alert()
        };
        c.set_alert(at_risk);
        visit(&mut p, T0 + 41 * DAY_MS + 18 * HOUR_MS, &mut out);
        assert_eq!(scorer.taken(), 1);
        assert!(out.iter().all(|a| a.customer_id == "a"));
    }

    #[test]
    fn settling_activity_decides_as_assessing_every_event() {
        let ids = ["steady", "silent", "returning", "stabilised", "weekdays"];
        let active = |d: i64, id: &str| match id {
            "steady" => true,
            "silent" => d < 40,
            "returning" => !(40..50).contains(&d),
            "stabilised" => d < 40 || d % 5 == 0,
            _ => d % 7 < 5 && !(60..63).contains(&d),
        };
        let decide = |activity_settles: bool| {
            let m = Metrics::new();
            let scorer = Counting::new(activity_settles);
            let cfg = Arc::new(Config::default());
            let mut p = PartitionState::with_scorer(cfg, scorer.clone(), &m);
            let alerts = run(&mut p, 120, active, &ids);
            (alerts, scorer.taken(), m.render())
        };
        let (every, assessed_every, gauges_every) = decide(false);
        let (settled, assessed_settled, gauges_settled) = decide(true);
        assert!(every.len() >= 5, "{every:?}");
        assert_same_alerts(&every, &settled);
        assert_eq!(gauges_every, gauges_settled);
        assert!(
            assessed_settled * 2 < assessed_every,
            "{assessed_settled} of {assessed_every}"
        );
    }

    #[test]
    fn late_events_are_counted_and_do_not_move_time() {
        let m = Metrics::new();
        let mut p = PartitionState::new(Arc::new(Config::default()), &m);
        let mut out = Vec::new();
        p.on_event(&ev("a", T0 + 10 * DAY_MS, Activity::Visit), None, &mut out);
        // Within the allowance (1 h): not late.
        let o = p.on_event(
            &ev("a", T0 + 10 * DAY_MS - 30 * 60_000, Activity::Visit),
            None,
            &mut out,
        );
        assert!(!o.late);
        // Two hours back: late, but its bucket is held.
        let o = p.on_event(
            &ev("a", T0 + 10 * DAY_MS - 2 * HOUR_MS, Activity::Visit),
            None,
            &mut out,
        );
        assert!(o.late && !o.outside_window);
        // A year back: late and outside the windows.
        let o = p.on_event(&ev("a", T0 - 365 * DAY_MS, Activity::Visit), None, &mut out);
        assert!(o.late && o.outside_window);
        assert_eq!(p.stream_time_ms(), Some(T0 + 10 * DAY_MS));
        assert_eq!(m.events_late_total.get(), 2);
        assert_eq!(m.events_outside_window_total.get(), 1);
    }

    #[test]
    fn idle_partition_advances_with_the_wall_clock() {
        let m = Metrics::new();
        let mut raw = crate::config::RawConfig::default();
        raw.input.idle_partition_timeout_secs = 1;
        let mut p = PartitionState::new(Arc::new(raw.validate().unwrap()), &m);
        let mut out = Vec::new();
        p.on_event(&ev("a", T0, Activity::Visit), None, &mut out);
        let start = Instant::now();
        assert!(!p.on_idle(start, &mut out));
        assert!(p.on_idle(start + std::time::Duration::from_secs(5), &mut out));
        let st = p.stream_time_ms().unwrap();
        assert!((T0 + 5_000..T0 + 10_000).contains(&st), "{st}");
    }

    #[test]
    fn replays_are_deterministic() {
        let ids = ["a", "b", "c"];
        let active = |d: i64, id: &str| match id {
            "a" => true,
            "b" => d < 45 || d % 9 == 0,
            _ => !(30..44).contains(&d),
        };
        let m = Metrics::new();
        let one = run(
            &mut PartitionState::new(Arc::new(Config::default()), &m),
            80,
            active,
            &ids,
        );
        let two = run(
            &mut PartitionState::new(Arc::new(Config::default()), &m),
            80,
            active,
            &ids,
        );
        let id = |v: &[Alert]| v.iter().map(|a| a.alert_id.clone()).collect::<Vec<_>>();
        assert!(!one.is_empty());
        assert_eq!(id(&one), id(&two));
    }

    /// 1,200 customers, each active on their own days, and one who comes back after a silence
    /// right when midnight's re-scores fall due: every day's re-scores fall due together, far
    /// more than fire per event. Events as `(customer, time)`.
    fn burst_stream() -> Vec<(String, i64)> {
        let active = |d: i64, i: usize| match i % 4 {
            0 => true,
            1 => d < 40 || d % 11 == 0,
            2 => !(25..45).contains(&d),
            _ => d % 3 == i as i64 % 3,
        };
        let mut evs = Vec::new();
        for d in 0..90 {
            if d >= 60 || (1..30).contains(&d) {
                // Half a minute after midnight's timers fall due (the allowed lateness is an
                // hour), before their burst is worked off (this customer's slot is the last).
                evs.push(("returner".to_string(), T0 + d * DAY_MS + HOUR_MS + 30_000));
            }
            for h in [9, 13, 18] {
                // Customers come in the reverse order of their timers on odd days: many meet
                // their own due timer before the burst reaches it.
                let order: Vec<usize> = if d % 2 == 1 {
                    (0..1200).rev().collect()
                } else {
                    (0..1200).collect()
                };
                for i in order.into_iter().filter(|&i| active(d, i)) {
                    evs.push((format!("c{i:04}"), T0 + d * DAY_MS + h * HOUR_MS + i as i64));
                }
            }
        }
        evs
    }

    /// The alerts of [`burst_stream`] with every due timer fired before each event (as
    /// before timers fired a few at a time), and the partition.
    fn all_at_once(cfg: &Arc<Config>, m: &Metrics) -> (Vec<Alert>, PartitionState) {
        let mut p = PartitionState::new(cfg.clone(), m);
        let mut out = Vec::new();
        for (id, ts) in burst_stream() {
            p.advance_to(ts, &mut out);
            p.on_event(&ev(&id, ts, Activity::Visit), None, &mut out);
        }
        (out, p)
    }

    /// Two runs' alerts are the same, whole but for the wall-clock time they were built.
    fn assert_same_alerts(a: &[Alert], b: &[Alert]) {
        let sorted = |v: &[Alert]| {
            let mut all: Vec<(String, serde_json::Value)> = v
                .iter()
                .map(|x| {
                    let mut j = serde_json::to_value(x).unwrap();
                    j.as_object_mut().unwrap().remove("emitted_at");
                    (x.alert_id.clone(), j)
                })
                .collect();
            all.sort_by(|x, y| x.0.cmp(&y.0));
            all
        };
        let (sa, sb) = (sorted(a), sorted(b));
        assert_eq!(sa.len(), sb.len(), "alert counts");
        if let Some((x, y)) = sa.iter().zip(&sb).find(|(x, y)| x != y) {
            panic!("first alert that differs:\n{x:?}\n{y:?}");
        }
    }

    #[test]
    fn a_burst_of_due_timers_is_worked_off_between_events_and_decides_the_same() {
        let m = Metrics::new();
        let cfg = Arc::new(Config::default());
        let (reference, at_once) = all_at_once(&cfg, &m);
        let mut p = PartitionState::new(cfg, &m);
        let mut out = Vec::new();
        let mut backlog_seen = false;
        for (id, ts) in burst_stream() {
            p.on_event(&ev(&id, ts, Activity::Visit), None, &mut out);
            backlog_seen |= p.timers_due();
        }
        p.fire_timers(&mut out, None);
        assert!(backlog_seen, "the test must make timers wait");
        assert!(!p.timers_due());
        assert!(reference.len() > 20, "{} alerts", reference.len());
        assert!(
            reference
                .iter()
                .any(|x| x.customer_id == "returner" && x.kind == AlertKind::Recovered),
            "the returner's midnight alert and recovery"
        );
        assert_same_alerts(&out, &reference);
        for (id, _) in p.customers() {
            assert_eq!(p.customer(id), at_once.customer(id), "{id}");
        }
    }

    #[test]
    fn a_restore_in_the_middle_of_a_burst_fires_the_timers_still_waiting() {
        let m = Metrics::new();
        let cfg = Arc::new(Config::default());
        let (reference, _) = all_at_once(&cfg, &m);
        let evs = burst_stream();
        // Stop as a crash would right after the first event of days 41-52 that follows their
        // midnight (a silence's alerts fall due then, among the night's timers that have only
        // begun to fire): checkpoint every 250 events and there, restore, and go on.
        let stops: Vec<usize> = (41..53)
            .map(|d| {
                1 + evs
                    .iter()
                    .position(|(_, ts)| *ts > T0 + d * DAY_MS + HOUR_MS)
                    .unwrap()
            })
            .collect();
        for stop_at in stops {
            let mut p = PartitionState::new(cfg.clone(), &m);
            p.track_changes();
            let mut out = Vec::new();
            let mut changelog = std::collections::HashMap::new();
            for (i, (id, ts)) in evs[..stop_at].iter().enumerate() {
                p.on_event(&ev(id, *ts, Activity::Visit), None, &mut out);
                if (i + 1) % 250 == 0 || i + 1 == stop_at {
                    changelog.extend(checkpoint(&mut p, i as i64));
                }
            }
            assert!(p.timers_due());
            let progress = p.progress(stop_at as i64 - 1);
            assert!(progress.timers_fired_to_ms < p.watermark_ms());
            let mut restored = PartitionState::new(cfg.clone(), &m);
            let customers = changelog
                .into_iter()
                .filter_map(|(id, c): (String, Option<StoredCustomer>)| c.map(|c| (id, c)));
            restored.restore(customers, Some(progress));
            for (id, ts) in &evs[stop_at..] {
                restored.on_event(&ev(id, *ts, Activity::Visit), None, &mut out);
            }
            restored.fire_timers(&mut out, None);
            assert_same_alerts(&out, &reference);
        }
    }

    /// Feed `evs[from..]` (offset = index), returning the alerts with their offsets.
    fn feed(p: &mut PartitionState, evs: &[(&str, i64)], from: usize) -> Vec<(i64, String)> {
        let mut out = Vec::new();
        let mut alerts = Vec::new();
        for (i, (id, ts)) in evs.iter().enumerate().skip(from) {
            let source = SourceRef {
                topic: "events",
                partition: 0,
                offset: i as i64,
            };
            p.on_event(&ev(id, *ts, Activity::Visit), Some(source), &mut alerts);
            out.extend(alerts.drain(..).map(|a| (i as i64, a.alert_id)));
        }
        out
    }

    #[test]
    fn a_restored_partition_holds_each_event_once_and_decides_as_an_uninterrupted_run() {
        let cfg = Arc::new(Config::default());
        let m = Metrics::new();
        // "a" visits daily, "b" stops on day 40, "c" only appears after the checkpoint.
        let mut evs = Vec::new();
        for d in 0..80 {
            for h in [9, 13, 18] {
                let t = T0 + d * DAY_MS + h * HOUR_MS;
                evs.push(("a", t));
                if d < 40 {
                    evs.push(("b", t));
                }
                if d >= 60 {
                    evs.push(("c", t));
                }
            }
        }
        let mut full = PartitionState::new(cfg.clone(), &m);
        let full_alerts = feed(&mut full, &evs, 0);

        // Checkpoint at offset `k`, then a crash; the committed offset was `j` < `k`.
        let (j, k) = (100, 150);
        let mut first = PartitionState::new(cfg.clone(), &m);
        first.track_changes();
        feed(&mut first, &evs[..=k], 0);
        let stored: Vec<(String, StoredCustomer)> = checkpoint(&mut first, k as i64)
            .into_iter()
            .map(|(id, s)| (id, s.expect("nobody evicted")))
            .collect();
        assert_eq!(first.dirty_len(), 0);
        assert!(stored.iter().all(|(_, s)| s.applied_offset == k as i64));

        let mut second = PartitionState::new(cfg.clone(), &m);
        second.track_changes();
        second.restore(stored, Some(first.progress(k as i64)));
        let again = feed(&mut second, &evs, j);
        for id in ["a", "b", "c"] {
            assert_eq!(second.customer(id), full.customer(id), "customer {id}");
        }
        // After the checkpoint, the same alerts at the same offsets; before it, none again.
        let after = |v: &[(i64, String)]| -> Vec<(i64, String)> {
            v.iter().filter(|(o, _)| *o > k as i64).cloned().collect()
        };
        assert!(!after(&full_alerts).is_empty());
        assert_eq!(after(&again), after(&full_alerts));
        assert!(again.iter().all(|(o, _)| *o > k as i64), "{again:?}");
        // What a checkpoint now writes holds everything up to the last offset processed.
        let last = evs.len() as i64 - 1;
        second.drain_dirty(last, true, |_, _, applied| assert_eq!(applied, last));
    }

    #[test]
    fn changes_are_tracked_only_when_asked() {
        let m = Metrics::new();
        let mut p = PartitionState::new(Arc::new(Config::default()), &m);
        p.on_event(&ev("a", T0, Activity::Visit), None, &mut Vec::new());
        assert_eq!(p.dirty_len(), 0);
        p.track_changes();
        p.on_event(
            &ev("a", T0 + HOUR_MS, Activity::Visit),
            None,
            &mut Vec::new(),
        );
        p.on_event(
            &ev("b", T0 + HOUR_MS, Activity::Visit),
            None,
            &mut Vec::new(),
        );
        p.on_event(
            &ev("a", T0 + 2 * HOUR_MS, Activity::Visit),
            None,
            &mut Vec::new(),
        );
        assert_eq!(p.dirty_len(), 2);
    }

    fn evicting_after(days: f64) -> Arc<Config> {
        let mut raw = crate::config::RawConfig::default();
        raw.state.evict_lapsed_after_days = days;
        Arc::new(raw.validate().unwrap())
    }

    /// Drain what a checkpoint would write: `(id, Some(applied offset))`, or `(id, None)` for
    /// a tombstone, with the states.
    fn checkpoint(p: &mut PartitionState, at: i64) -> Vec<(String, Option<StoredCustomer>)> {
        let mut out = Vec::new();
        p.drain_dirty(at, true, |id, c, applied| {
            out.push((
                id.to_string(),
                c.map(|c| StoredCustomer {
                    applied_offset: applied,
                    state: c.clone(),
                }),
            ));
        });
        out
    }

    /// Drain between checkpoints: the ids written.
    fn between_checkpoints(p: &mut PartitionState, at: i64) -> Vec<String> {
        let mut out = Vec::new();
        p.drain_dirty(at, false, |id, c, _| {
            assert!(c.is_some(), "no tombstone between checkpoints");
            out.push(id.to_string());
        });
        out.sort();
        out
    }

    #[test]
    fn between_checkpoints_tombstones_and_alerted_customers_wait() {
        let m = Metrics::new();
        let mut p = PartitionState::new(evicting_after(60.0), &m);
        p.track_changes();
        // "b" goes silent: at risk, lapsed, then evicted; "a" stays.
        let stays = |d: i64, id: &str| id == "a" || d < 40;
        let alerts = run(&mut p, 50, stays, &["a", "b"]);
        assert!(alerts.iter().any(|a| a.customer_id == "b"), "{alerts:?}");
        // "b" alerted since the last checkpoint: held back; "a" is written.
        assert_eq!(between_checkpoints(&mut p, 1), vec!["a"]);
        let at_checkpoint: Vec<String> = checkpoint(&mut p, 2)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert!(
            at_checkpoint.contains(&"b".to_string()),
            "{at_checkpoint:?}"
        );
        // After the checkpoint, b's (timer) changes are written between checkpoints again,
        // until an alert.
        let mut out = Vec::new();
        for d in 50..105 {
            p.on_event(
                &ev("a", T0 + d * DAY_MS + 9 * HOUR_MS, Activity::Visit),
                None,
                &mut out,
            );
            if d == 51 {
                assert_eq!(between_checkpoints(&mut p, 3), vec!["a"]);
            }
        }
        assert!(p.customer("b").is_none(), "evicted");
        // The tombstone waits for the checkpoint.
        assert!(between_checkpoints(&mut p, 4).iter().all(|id| id != "b"));
        assert_eq!(p.evicted.len(), 1, "the tombstone is still due");
        let written = checkpoint(&mut p, 5);
        assert!(
            written.iter().any(|(id, s)| id == "b" && s.is_none()),
            "{written:?}"
        );
        // Evicted, then back before the checkpoint: no tombstone, the new state instead.
        let mut p = PartitionState::new(evicting_after(60.0), &m);
        p.track_changes();
        run(&mut p, 105, stays, &["a", "b"]);
        assert!(p.customer("b").is_none());
        p.on_event(&ev("b", T0 + 106 * DAY_MS, Activity::Visit), None, &mut out);
        let written = checkpoint(&mut p, 6);
        let b: Vec<_> = written.iter().filter(|(id, _)| id == "b").collect();
        assert_eq!(b.len(), 1, "{written:?}");
        assert!(
            b[0].1.is_some(),
            "the returned customer's state, not a tombstone"
        );
    }

    #[test]
    fn a_redelivered_event_is_dropped() {
        let m = Metrics::new();
        let mut p = PartitionState::new(Arc::new(Config::default()), &m);
        let mut out = Vec::new();
        let with_id = |id: &'static str, ts| Event {
            event_id: Some(Cow::Borrowed(id)),
            ..ev("a", ts, Activity::Visit)
        };
        assert!(!p.on_event(&with_id("e1", T0), None, &mut out).duplicate);
        assert!(!p.on_event(&with_id("e2", T0 + 1), None, &mut out).duplicate);
        assert!(p.on_event(&with_id("e1", T0), None, &mut out).duplicate);
        // Events without an id are never taken for duplicates.
        assert!(
            !p.on_event(&ev("a", T0 + 2, Activity::Visit), None, &mut out)
                .duplicate
        );
        assert!(
            !p.on_event(&ev("a", T0 + 2, Activity::Visit), None, &mut out)
                .duplicate
        );
        assert_eq!(p.customer("a").unwrap().events, 4);
        assert_eq!(m.events_duplicate_total.get(), 1);
    }

    #[test]
    fn long_lapsed_customers_are_evicted_with_a_tombstone_and_come_back_as_new() {
        let m = Metrics::new();
        let mut p = PartitionState::new(evicting_after(60.0), &m);
        p.track_changes();
        let stays = |d: i64, id: &str| id == "a" || d < 40;
        run(&mut p, 95, stays, &["a", "b"]);
        checkpoint(&mut p, 0);
        // "b" lapsed (30 days) and is kept until 60 days without activity.
        assert_eq!(p.customer("b").unwrap().alert().phase, Phase::Lapsed);
        assert_eq!(p.len(), 2);
        let out = run(&mut p, 105, stays, &["a"]);
        assert!(out.iter().all(|a| a.customer_id != "b"), "{out:?}");
        assert!(p.customer("b").is_none());
        assert_eq!(p.len(), 1);
        assert_eq!(
            m.customers_evicted_total
                .with_label_values(&["lapsed"])
                .get(),
            1
        );
        let gauge: i64 = Lifecycle::ALL
            .iter()
            .map(|l| m.customers.with_label_values(&[l.as_str()]).get())
            .sum();
        assert_eq!(gauge, 1, "the gauges no longer count b");
        let written = checkpoint(&mut p, 0);
        assert!(
            written.iter().any(|(id, s)| id == "b" && s.is_none()),
            "tombstone"
        );
        // Back after eviction: a new customer, in the vacant slot.
        p.on_event(
            &ev("b", T0 + 106 * DAY_MS, Activity::Visit),
            None,
            &mut Vec::new(),
        );
        assert_eq!(p.customer("b").unwrap().events, 1);
        assert_eq!(p.customers.len(), 2, "slot reused");
        assert_eq!(p.customers().count(), 2);
    }

    #[test]
    fn a_lapsed_customer_who_returns_is_re_scored_on_the_grid_again() {
        let m = Metrics::new();
        let mut p = PartitionState::new(evicting_after(200.0), &m);
        run(
            &mut p,
            120,
            |d, id| id == "a" || !(40..100).contains(&d),
            &["a", "b"],
        );
        let b = p.customer("b").unwrap();
        assert_ne!(b.alert().phase, Phase::Lapsed);
        let due = b.next_check.get().unwrap();
        assert!(due <= T0 + 121 * DAY_MS, "not the eviction timer: {due}");
    }

    #[test]
    fn a_restore_does_not_bring_back_an_evicted_customer_from_re_read_events() {
        let cfg = evicting_after(35.0);
        let m = Metrics::new();
        let mut evs = Vec::new();
        for d in 0..120 {
            for h in [9, 13, 18] {
                let t = T0 + d * DAY_MS + h * HOUR_MS;
                evs.push(("a", t));
                if d < 40 {
                    evs.push(("b", t));
                }
            }
        }
        let mut full = PartitionState::new(cfg.clone(), &m);
        let full_alerts = feed(&mut full, &evs, 0);
        assert!(
            full.customer("b").is_none(),
            "evicted in the uninterrupted run"
        );

        // Committed at `j`, before b's last events; checkpoint at `k`, after the eviction.
        let (j, k) = (200, 420);
        let mut first = PartitionState::new(cfg.clone(), &m);
        first.track_changes();
        feed(&mut first, &evs[..=k], 0);
        assert!(first.customer("b").is_none());
        let stored: Vec<(String, StoredCustomer)> = checkpoint(&mut first, k as i64)
            .into_iter()
            .filter_map(|(id, s)| Some((id, s?)))
            .collect();
        let mut second = PartitionState::new(cfg, &m);
        second.track_changes();
        second.restore(stored, Some(first.progress(k as i64)));
        let again = feed(&mut second, &evs, j);
        assert!(second.customer("b").is_none());
        assert_eq!(second.customer("a"), full.customer("a"));
        let after_k: Vec<_> = full_alerts
            .into_iter()
            .filter(|(o, _)| *o > k as i64)
            .collect();
        assert_eq!(again, after_k);
    }

    #[test]
    fn over_capacity_the_least_recently_active_go_first() {
        let m = Metrics::new();
        let mut p = PartitionState::new(Arc::new(Config::default()), &m);
        let mut out = Vec::new();
        for (i, id) in ["c0", "c1", "c2", "c3", "c4", "c5"].iter().enumerate() {
            p.on_event(
                &ev(id, T0 + i as i64 * HOUR_MS, Activity::Visit),
                None,
                &mut out,
            );
        }
        assert_eq!(p.evict_least_active(2), 2);
        let left: Vec<&str> = p.customers().map(|(id, _)| id).collect();
        assert_eq!(left, ["c2", "c3", "c4", "c5"]);
        assert_eq!(
            m.customers_evicted_total
                .with_label_values(&["capacity"])
                .get(),
            2
        );
        assert_eq!(p.evict_least_active(10), 4);
        assert!(p.is_empty());
    }
}
