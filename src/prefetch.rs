//! Software prefetch: a hint to the CPU to start loading memory that will be read soon, so
//! that the cache misses of several independent lookups overlap instead of queueing up.
//! Never faults and changes nothing observable; a no-op where the architecture has none.

/// Cache line size of the CPUs this runs on (x86-64, arm64).
const LINE: usize = 64;

/// Start loading the cache lines that hold `*r` (all of them, for a value larger than one).
#[inline(always)]
pub fn read<T>(r: &T) {
    lines(r as *const T as usize, std::mem::size_of::<T>());
}

/// Start loading the cache lines that hold the slice's elements.
#[inline(always)]
pub fn read_slice<T>(s: &[T]) {
    lines(s.as_ptr() as usize, std::mem::size_of_val(s));
}

/// Start loading the cache lines of `len` bytes from `p`.
#[inline(always)]
pub fn read_bytes(p: *const u8, len: usize) {
    lines(p as usize, len);
}

#[inline(always)]
fn lines(start: usize, len: usize) {
    let end = start + len;
    let mut line = start & !(LINE - 1);
    while line < end {
        line_at(line as *const u8);
        line += LINE;
    }
}

#[inline(always)]
fn line_at(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it reads nothing architecturally and cannot fault.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above; `prfm` neither faults nor writes.
    unsafe {
        std::arch::asm!("prfm pldl1keep, [{0}]", in(reg) p, options(nostack, readonly, preserves_flags));
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefetching_changes_nothing() {
        let v = [1u64; 40];
        super::read(&v);
        super::read(&v[39]);
        super::read(&());
        super::read_slice(&v[3..17]);
        super::read_slice::<u8>(&[]);
        assert_eq!(v.iter().sum::<u64>(), 40);
    }
}
