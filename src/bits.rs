//! Bit sets over `u64` words, one bit per slot: which customers changed or alerted (a growing
//! set per partition), which buckets of a purchase-only ring saw a purchase (a fixed one).

/// Whether bit `i` is set (bits beyond the words are clear).
pub fn get(words: &[u64], i: usize) -> bool {
    words.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
}

/// Set or clear bit `i` of a fixed set.
pub fn put(words: &mut [u64], i: usize, on: bool) {
    let (w, b) = (i / 64, 1u64 << (i % 64));
    if on {
        words[w] |= b;
    } else {
        words[w] &= !b;
    }
}

/// Set bit `i`, growing the set as needed. Returns whether it was clear.
pub fn insert(words: &mut Vec<u64>, i: usize) -> bool {
    if i / 64 >= words.len() {
        words.resize(i / 64 + 1, 0);
    }
    let was_clear = !get(words, i);
    put(words, i, true);
    was_clear
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_clear_and_grow() {
        let mut v = Vec::new();
        assert!(!get(&v, 130));
        assert!(insert(&mut v, 130));
        assert!(!insert(&mut v, 130));
        assert_eq!(v.len(), 3);
        assert!(get(&v, 130) && !get(&v, 129) && !get(&v, 131));
        put(&mut v, 130, false);
        assert!(!get(&v, 130));
        put(&mut v, 0, true);
        put(&mut v, 63, true);
        assert_eq!(v[0], 1 | 1 << 63);
    }
}
