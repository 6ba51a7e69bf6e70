//! The customer index of a partition: customer id hash -> slot, in one flat array that a
//! batch can prefetch ahead of the events that need it.
//!
//! With a million customers, an event's lookup misses the cache: the table is megabytes, read
//! at random. `hashbrown` keeps its control bytes and its slots in two places (two misses per
//! lookup) and offers no way to ask for either in advance. Here an entry is one `u64`, the id
//! hash's upper half beside the slot, so a lookup's first probe is a single cache line whose
//! address follows from the hash alone: [`SlotIndex::prefetch`] asks for it while earlier
//! events are still being processed, and by the time the event is processed the line is
//! there. Linear probing, at most 3/4 full; removal shifts the entries that follow back
//! (no tombstones), using the home position that each entry's stored hash gives.
//!
//! The table stores no ids: a matching hash half is confirmed by the caller's `eq`, which
//! compares the id kept for the slot.

/// An entry: the id hash's upper 32 bits (which also give its home position), then the slot.
/// Slot `u32::MAX` is never used, so an all-ones entry is free.
const FREE: u64 = u64::MAX;

/// Hash of a customer id, as the index uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdHash(u32);

impl IdHash {
    /// The upper half of a 64-bit hash of the id (its best-mixed bits).
    pub fn of(hash: u64) -> IdHash {
        IdHash((hash >> 32) as u32)
    }
}

#[derive(Debug, Default)]
pub struct SlotIndex {
    entries: Vec<u64>,
    len: usize,
}

impl SlotIndex {
    pub fn new() -> Self {
        SlotIndex::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forget every entry (and the table's memory).
    pub fn clear(&mut self) {
        *self = SlotIndex::default();
    }

    fn mask(&self) -> usize {
        self.entries.len() - 1
    }

    fn home(&self, h: u32) -> usize {
        h as usize & self.mask()
    }

    /// Start loading the cache line where a lookup of `h` begins (a hint: nothing changes).
    #[inline]
    pub fn prefetch(&self, h: IdHash) {
        if !self.entries.is_empty() {
            crate::prefetch::read(&self.entries[self.home(h.0)]);
        }
    }

    /// The slot stored under `h` for which `eq` holds.
    #[inline]
    pub fn find(&self, h: IdHash, eq: impl Fn(u32) -> bool) -> Option<u32> {
        if self.entries.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut i = self.home(h.0);
        loop {
            let e = self.entries[i];
            if e == FREE {
                return None;
            }
            if (e >> 32) as u32 == h.0 && eq(e as u32) {
                return Some(e as u32);
            }
            i = (i + 1) & mask;
        }
    }

    /// Add `slot` under `h` (the caller knows the id is not in the index yet).
    pub fn insert(&mut self, h: IdHash, slot: u32) {
        debug_assert_ne!(slot, u32::MAX);
        if (self.len + 1) * 4 > self.entries.len() * 3 {
            self.grow();
        }
        let mask = self.mask();
        let mut i = self.home(h.0);
        while self.entries[i] != FREE {
            i = (i + 1) & mask;
        }
        self.entries[i] = (u64::from(h.0) << 32) | u64::from(slot);
        self.len += 1;
    }

    /// Remove `slot`, stored under `h`. Returns whether it was there.
    pub fn remove(&mut self, h: IdHash, slot: u32) -> bool {
        if self.entries.is_empty() {
            return false;
        }
        let mask = self.mask();
        let wanted = (u64::from(h.0) << 32) | u64::from(slot);
        let mut i = self.home(h.0);
        loop {
            match self.entries[i] {
                FREE => return false,
                e if e == wanted => break,
                _ => i = (i + 1) & mask,
            }
        }
        // Backward shift: move each following entry of the run into the hole when the hole
        // lies on its probe path (between its home and its place, cyclically).
        let mut hole = i;
        let mut j = (i + 1) & mask;
        while self.entries[j] != FREE {
            let home = self.home((self.entries[j] >> 32) as u32);
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.entries[hole] = self.entries[j];
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.entries[hole] = FREE;
        self.len -= 1;
        true
    }

    /// Double the table (16 entries at first) and re-place every entry.
    fn grow(&mut self) {
        let capacity = (self.entries.len() * 2).max(16);
        let old = std::mem::replace(&mut self.entries, vec![FREE; capacity]);
        let mask = self.mask();
        for e in old.into_iter().filter(|&e| e != FREE) {
            let mut i = self.home((e >> 32) as u32);
            while self.entries[i] != FREE {
                i = (i + 1) & mask;
            }
            self.entries[i] = e;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16),
        Remove(u16),
    }

    /// Few distinct hash halves (a 6-bit hash), so runs are long and collide often.
    fn hash_of(key: u16) -> IdHash {
        IdHash(u32::from(key % 64).wrapping_mul(0x9E37_79B9))
    }

    proptest! {
        /// Against a `HashMap` of key -> slot: every key inserted is found at its slot, every
        /// key removed is gone, whatever the order and the collisions.
        #[test]
        fn behaves_as_a_map(ops in proptest::collection::vec(
            prop_oneof![any::<u16>().prop_map(|k| Op::Insert(k % 300)), any::<u16>().prop_map(|k| Op::Remove(k % 300))],
            0..600,
        )) {
            let mut index = SlotIndex::new();
            let mut model: HashMap<u16, u32> = HashMap::new();
            let mut keys: Vec<u16> = Vec::new(); // slot -> key
            for op in ops {
                match op {
                    Op::Insert(k) if !model.contains_key(&k) => {
                        let slot = keys.len() as u32;
                        keys.push(k);
                        index.insert(hash_of(k), slot);
                        model.insert(k, slot);
                    }
                    Op::Remove(k) => {
                        let removed = model.remove(&k);
                        let was = removed.is_some_and(|s| index.remove(hash_of(k), s));
                        prop_assert_eq!(was, removed.is_some());
                    }
                    _ => {}
                }
                prop_assert_eq!(index.len(), model.len());
            }
            for k in 0..300u16 {
                let found = index.find(hash_of(k), |s| keys[s as usize] == k);
                prop_assert_eq!(found, model.get(&k).copied());
            }
        }
    }

    #[test]
    fn empty_and_cleared_indexes_find_nothing() {
        let mut index = SlotIndex::new();
        index.prefetch(IdHash::of(7));
        assert_eq!(index.find(IdHash::of(7), |_| true), None);
        assert!(!index.remove(IdHash::of(7), 0));
        for slot in 0..100 {
            index.insert(IdHash(slot * 0x0101_0101), slot);
        }
        assert_eq!(index.len(), 100);
        assert_eq!(index.find(IdHash(5 * 0x0101_0101), |s| s == 5), Some(5));
        index.clear();
        assert!(index.is_empty());
        assert_eq!(index.find(IdHash(5 * 0x0101_0101), |_| true), None);
    }
}
