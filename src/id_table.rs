//! The customer ids of a partition's slots, in 8 bytes a slot.
//!
//! Every tracked customer's id is kept (alerts and changelog records carry it, and the index
//! confirms a hash match by comparing it), so its size counts once per customer. An id of up
//! to 7 bytes, as most customer numbers are, is held inline in its slot's 8 bytes (the last
//! byte is its length). A longer one (a UUID is 36) is kept in one shared buffer, its slot
//! holding where; the buffer has no per-id header and no allocator rounding, and is compacted
//! once the ids removed from it take more than half of it. An empty slot is a vacant one (ids
//! are never empty: [`crate::event`] rejects them).

use ecow::EcoString;

/// The longest id kept inline.
const INLINE: usize = 7;
/// The last byte of a slot whose id is in the buffer.
const SPILLED: u8 = 0xff;
/// The buffer is compacted only beyond this many bytes of removed ids.
const MIN_GARBAGE: usize = 64 * 1024;

/// Ids by slot ([`crate::partition::PartitionState`]'s customers).
#[derive(Debug, Default)]
pub struct IdTable {
    slots: Vec<[u8; 8]>,
    /// The ids longer than [`INLINE`] bytes, back to back.
    spilled: Vec<u8>,
    /// Bytes of `spilled` whose ids have been removed.
    garbage: usize,
}

impl IdTable {
    pub fn new() -> Self {
        IdTable::default()
    }

    /// The id in `slot` (empty: vacant).
    #[inline]
    pub fn get(&self, slot: usize) -> &str {
        let bytes = match self.slots[slot] {
            [o0, o1, o2, o3, l0, l1, _, SPILLED] => {
                let at = u32::from_le_bytes([o0, o1, o2, o3]) as usize;
                &self.spilled[at..at + usize::from(u16::from_le_bytes([l0, l1]))]
            }
            ref inline => &inline[..usize::from(inline[INLINE])],
        };
        // SAFETY: the bytes are those of a `&str` that `set` or `push` copied whole.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }

    /// Whether `slot` is vacant.
    pub fn is_vacant(&self, slot: usize) -> bool {
        self.slots[slot][INLINE] == 0
    }

    /// Start loading `slot`'s entry (a hint: see [`crate::prefetch`]).
    #[inline]
    pub fn prefetch(&self, slot: usize) {
        crate::prefetch::read(&self.slots[slot]);
    }

    /// Add a slot holding `id`.
    pub fn push(&mut self, id: &str) {
        let entry = self.entry(id);
        self.slots.push(entry);
    }

    /// Put `id` in the vacant `slot`.
    pub fn set(&mut self, slot: usize, id: &str) {
        debug_assert!(self.is_vacant(slot));
        self.slots[slot] = self.entry(id);
    }

    /// Take `slot`'s id out, leaving it vacant.
    pub fn take(&mut self, slot: usize) -> EcoString {
        let id = EcoString::from(self.get(slot));
        if self.slots[slot][INLINE] == SPILLED {
            self.garbage += id.len();
        }
        self.slots[slot] = [0; 8];
        if self.garbage > MIN_GARBAGE && self.garbage * 2 > self.spilled.len() {
            self.compact();
        }
        id
    }

    /// Forget every id.
    pub fn clear(&mut self) {
        *self = IdTable::default();
    }

    /// Every slot's id, vacant ones empty.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.slots.len()).map(|s| self.get(s))
    }

    /// The slot entry for `id`, its bytes copied to the buffer when they do not fit inline.
    fn entry(&mut self, id: &str) -> [u8; 8] {
        let mut entry = [0; 8];
        if id.len() <= INLINE {
            entry[..id.len()].copy_from_slice(id.as_bytes());
            entry[INLINE] = id.len() as u8;
        } else {
            let at = u32::try_from(self.spilled.len()).expect("under 4 GiB of long ids");
            let len = u16::try_from(id.len()).expect("ids are at most 256 bytes");
            self.spilled.extend_from_slice(id.as_bytes());
            entry[..4].copy_from_slice(&at.to_le_bytes());
            entry[4..6].copy_from_slice(&len.to_le_bytes());
            entry[INLINE] = SPILLED;
        }
        entry
    }

    /// Copy the ids still held to a new buffer, in slot order, dropping the removed ones.
    fn compact(&mut self) {
        let old = std::mem::take(&mut self.spilled);
        let mut spilled = Vec::with_capacity(old.len() - self.garbage);
        for entry in &mut self.slots {
            if let [o0, o1, o2, o3, l0, l1, _, SPILLED] = *entry {
                let at = u32::from_le_bytes([o0, o1, o2, o3]) as usize;
                let len = usize::from(u16::from_le_bytes([l0, l1]));
                let new_at = spilled.len() as u32;
                spilled.extend_from_slice(&old[at..at + len]);
                entry[..4].copy_from_slice(&new_at.to_le_bytes());
            }
        }
        self.spilled = spilled;
        self.garbage = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_inline_long_ones_in_the_buffer() {
        assert_eq!(std::mem::size_of::<[u8; 8]>(), 8);
        let mut t = IdTable::new();
        let ids = [
            "c019098",
            "1",
            "1234567",
            "12345678",
            "ü-ß",
            "a1b2c3d4-e5f6-4711-8899-aabbccddeeff",
        ];
        for id in ids {
            t.push(id);
        }
        assert_eq!(t.iter().collect::<Vec<_>>(), ids);
        // Only the two longer than 7 bytes take buffer space, and only their bytes.
        assert_eq!(t.spilled.len(), 8 + 36);
        assert!(!t.is_vacant(0));
        assert_eq!(t.take(3), "12345678");
        assert!(t.is_vacant(3) && t.get(3).is_empty());
        t.set(3, "another-long-id");
        assert_eq!(t.get(3), "another-long-id");
        assert_eq!(t.get(5), ids[5]);
        assert_eq!(t.take(1), "1");
        t.set(1, "x");
        assert_eq!(t.get(1), "x");
        t.clear();
        assert_eq!(t.iter().count(), 0);
    }

    #[test]
    fn removed_long_ids_are_compacted_away() {
        let mut t = IdTable::new();
        let id = |i: usize| format!("customer-{i:08}");
        let n = 20_000;
        for i in 0..n {
            t.push(&id(i));
        }
        let full = t.spilled.len();
        assert_eq!(full, n * 17);
        // Remove all but every tenth: the buffer is compacted on the way.
        for i in (0..n).filter(|i| i % 10 != 0) {
            assert_eq!(t.take(i), id(i));
        }
        assert!(t.spilled.len() < full / 2, "{} of {full}", t.spilled.len());
        assert!(t.garbage * 2 <= t.spilled.len() || t.garbage <= MIN_GARBAGE);
        for i in 0..n {
            let want = if i % 10 == 0 { id(i) } else { String::new() };
            assert_eq!(t.get(i), want, "{i}");
        }
        // Vacant slots take new ids, short and long.
        t.set(1, "short");
        t.set(2, &id(2));
        assert_eq!((t.get(1), t.get(2)), ("short", id(2).as_str()));
    }
}
