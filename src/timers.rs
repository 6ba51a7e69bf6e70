//! Event-time timers: which customer is due for a re-score, and when.
//!
//! A calendar queue: the slots due at each due time, by due time. Every timer falls due on the
//! shared grid of `windows.check_interval_ms` (daily re-scores, and evictions rounded up to it),
//! so there are few distinct due times, each with many slots: scheduling is a push onto a
//! `Vec` (4 bytes a timer) and popping the earliest is O(1), where a binary heap of
//! `(due, slot)` paid 16 bytes and a sift-down over cold memory per timer. Timers pop in
//! `(due, slot)` order, as the heap did: the earliest due time's slots are sorted once, when
//! it is first popped from (so a burst walks the customers in slot order, which the caches
//! reward).
//!
//! Each customer has at most one live entry: its `next_check`; an entry whose due time no
//! longer matches it is stale and skipped by the caller. The queue is therefore bounded by the
//! number of tracked customers, plus the stale entries not yet reached.

use std::collections::BTreeMap;

#[derive(Debug, Default, Clone)]
pub struct Timers {
    /// Slots by due time. The slots of `sorted_due` are in descending order (popped from the
    /// end); the others in the order they were scheduled.
    by_due: BTreeMap<i64, Vec<u32>>,
    sorted_due: Option<i64>,
}

impl Timers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn schedule(&mut self, due_ms: i64, slot: u32) {
        let slots = self.by_due.entry(due_ms).or_default();
        if self.sorted_due == Some(due_ms) {
            let at = slots.partition_point(|&s| s > slot);
            slots.insert(at, slot);
        } else {
            slots.push(slot);
        }
    }

    /// Due time of the earliest entry (possibly stale).
    pub fn next_due(&self) -> Option<i64> {
        self.by_due.keys().next().copied()
    }

    /// Pop the earliest entry due at or before `watermark_ms` (the lowest slot among those due
    /// at the same time).
    pub fn pop_due(&mut self, watermark_ms: i64) -> Option<(i64, u32)> {
        let mut first = self.by_due.first_entry()?;
        let due = *first.key();
        if due > watermark_ms {
            return None;
        }
        let slots = first.get_mut();
        if self.sorted_due != Some(due) {
            slots.sort_unstable_by(|a, b| b.cmp(a));
            self.sorted_due = Some(due);
        }
        let slot = slots.pop().expect("no empty lists are kept");
        if slots.is_empty() {
            first.remove();
            self.sorted_due = None;
        }
        Some((due, slot))
    }

    /// The slot `ahead` entries after the next one to pop, among those due at the earliest due
    /// time once popping has begun (for prefetching; `None` otherwise).
    pub fn upcoming(&self, ahead: usize) -> Option<u32> {
        let (due, slots) = self.by_due.first_key_value()?;
        if self.sorted_due != Some(*due) {
            return None;
        }
        slots.len().checked_sub(ahead + 1).map(|i| slots[i])
    }

    /// Timers held (stale ones included).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_due.values().map(Vec::len).sum()
    }
}

/// The first multiple of `interval_ms` strictly after `ts_ms` (timers fire on a shared grid,
/// so replays fire them at the same event times).
pub fn next_grid_time(ts_ms: i64, interval_ms: i64) -> i64 {
    (ts_ms.div_euclid(interval_ms) + 1) * interval_ms
}

/// Where a re-score timer due at `due_ms` stands once the watermark has reached
/// `watermark_ms`: timers fire on a grid of `interval_ms` and each firing re-arms one interval
/// later, so a timer already passed is due at its first grid time after the watermark.
pub fn rearmed(due_ms: i64, watermark_ms: i64, interval_ms: i64) -> i64 {
    if due_ms > watermark_ms {
        due_ms
    } else {
        due_ms + ((watermark_ms - due_ms) / interval_ms + 1) * interval_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_due_order_up_to_the_watermark() {
        let mut t = Timers::new();
        t.schedule(30, 1);
        t.schedule(10, 2);
        t.schedule(20, 3);
        assert_eq!(t.pop_due(5), None);
        assert_eq!(t.pop_due(25), Some((10, 2)));
        assert_eq!(t.pop_due(25), Some((20, 3)));
        assert_eq!(t.pop_due(25), None);
        assert_eq!(t.pop_due(30), Some((30, 1)));
    }

    #[test]
    fn pops_in_due_then_slot_order_as_a_heap_would() {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        // A deterministic jumble of grid due times and slots, scheduled while popping, with
        // duplicates and entries scheduled into the due time being popped.
        let mut t = Timers::new();
        let mut heap = BinaryHeap::new();
        let mut x = 12345u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut wm = 0i64;
        for round in 0..2000 {
            for _ in 0..(next() % 6) {
                let due = wm + (next() % 4) as i64 * 10;
                let slot = (next() % 300) as u32;
                t.schedule(due, slot);
                heap.push(Reverse((due, slot)));
            }
            for _ in 0..(next() % 5) {
                let expected = match heap.peek() {
                    Some(Reverse((due, _))) if *due <= wm => heap.pop().map(|r| r.0),
                    _ => None,
                };
                assert_eq!(t.pop_due(wm), expected, "round {round}");
                assert_eq!(t.next_due(), heap.peek().map(|r| r.0 .0));
            }
            if round % 7 == 0 {
                wm += 10;
            }
        }
        assert_eq!(t.len(), heap.len());
    }

    #[test]
    fn upcoming_names_the_slots_popped_next_once_a_due_time_is_being_popped() {
        let mut t = Timers::new();
        for slot in [7, 3, 9, 1] {
            t.schedule(10, slot);
        }
        t.schedule(20, 2);
        assert_eq!(t.upcoming(0), None, "not sorted until the first pop");
        assert_eq!(t.pop_due(10), Some((10, 1)));
        assert_eq!(
            (t.upcoming(0), t.upcoming(1), t.upcoming(2)),
            (Some(3), Some(7), Some(9))
        );
        assert_eq!(t.upcoming(3), None, "only within the due time being popped");
        t.schedule(10, 5);
        assert_eq!(t.upcoming(1), Some(5));
        for expected in [3, 5, 7, 9] {
            assert_eq!(t.pop_due(10), Some((10, expected)));
        }
        assert_eq!(t.upcoming(0), None);
    }

    #[test]
    fn rearmed_timers_land_after_the_watermark_on_their_grid() {
        assert_eq!(rearmed(50, 40, 10), 50);
        assert_eq!(rearmed(50, 50, 10), 60);
        assert_eq!(rearmed(50, 75, 10), 80);
        assert_eq!(rearmed(50, 80, 10), 90);
    }

    #[test]
    fn grid() {
        assert_eq!(next_grid_time(0, 10), 10);
        assert_eq!(next_grid_time(9, 10), 10);
        assert_eq!(next_grid_time(10, 10), 20);
        assert_eq!(next_grid_time(-1, 10), 0);
    }
}
