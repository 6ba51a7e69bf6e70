//! Event-time timers: which customer is due for a re-score, and when.
//!
//! A min-heap of `(due, slot)`. Each customer has at most one live entry: its
//! `next_check_ms`; an entry whose due time no longer matches it is stale and skipped. The heap
//! is therefore bounded by the number of tracked customers.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[derive(Debug, Default, Clone)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(i64, u32)>>,
}

impl Timers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn schedule(&mut self, due_ms: i64, slot: u32) {
        self.heap.push(Reverse((due_ms, slot)));
    }

    /// Due time of the earliest entry (possibly stale).
    pub fn next_due(&self) -> Option<i64> {
        self.heap.peek().map(|Reverse((due, _))| *due)
    }

    /// Pop the earliest entry due at or before `watermark_ms`.
    pub fn pop_due(&mut self, watermark_ms: i64) -> Option<(i64, u32)> {
        match self.heap.peek() {
            Some(Reverse((due, _))) if *due <= watermark_ms => self.heap.pop().map(|r| r.0),
            _ => None,
        }
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
