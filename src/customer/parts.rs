//! Two optional parts of a customer's state, kept together in one slot of the rings' pool
//! ([`crate::ring_pool`]), or in none while neither is there.
//!
//! Some of what a customer's state holds only some customers need: the engagement level
//! (customers whose scores are sent) and the alert part (customers who have been at risk).
//! Kept inline, every customer would pay for both; kept behind a pointer each, every customer
//! would pay 8 bytes a pointer. [`Parts`] is one pointer and the presence of each part, in 12
//! bytes aligned to 4, and the slot holds exactly the parts present: `A`, `B`, or `A` then `B`.
//! Setting or removing a part that changes which are present moves them to a slot of the new
//! size; changing a part that is there writes it in place.

use std::marker::PhantomData;
use std::ptr::NonNull;

use crate::ring_pool;

/// `A` and `B`, each there or not, in one pooled slot (see the module doc).
///
/// Packed to 4-byte alignment, so that it takes 12 bytes rather than 16 inside a state of
/// 4-byte fields: its fields are only ever read and written whole, never borrowed.
#[repr(Rust, packed(4))]
pub struct Parts<A: Copy, B: Copy> {
    slot: Option<NonNull<u8>>,
    has: u8,
    _parts: PhantomData<(A, B)>,
}

/// Which parts are present ([`Parts::has`]).
const HAS_A: u8 = 1;
const HAS_B: u8 = 2;

impl<A: Copy, B: Copy> Parts<A, B> {
    /// Where `B` starts in a slot that also holds `A`.
    const B_AT: usize = size_of::<A>().next_multiple_of(align_of::<B>());

    /// Checked once per pair of types, when first used: the pool's slots are aligned enough
    /// for both parts wherever they sit, and no part is empty.
    const FITS: () = {
        assert!(size_of::<A>() > 0 && size_of::<B>() > 0);
        let (a, b, both) = (size_of::<A>(), size_of::<B>(), Self::B_AT + size_of::<B>());
        assert!(
            align_of::<A>() <= ring_pool::align(a) && align_of::<A>() <= ring_pool::align(both)
        );
        assert!(
            align_of::<B>() <= ring_pool::align(b) && align_of::<B>() <= ring_pool::align(both)
        );
        assert!(both <= ring_pool::MAX_POOLED);
    };

    /// Neither part: no slot.
    pub const NONE: Self = Parts {
        slot: None,
        has: 0,
        _parts: PhantomData,
    };

    /// Bytes of the slot for the parts in `has`, and where `B` is in it.
    const fn layout(has: u8) -> (usize, usize) {
        match has {
            HAS_A => (size_of::<A>(), 0),
            HAS_B => (size_of::<B>(), 0),
            0 => (0, 0),
            _ => (Self::B_AT + size_of::<B>(), Self::B_AT),
        }
    }

    fn at<T>(&self, offset: usize) -> *mut T {
        let slot = { self.slot }.expect("a part that is present has a slot");
        // SAFETY: `offset` is inside the slot (`layout`), which is aligned for `T` (`FITS`).
        unsafe { slot.as_ptr().add(offset).cast() }
    }

    pub fn a(&self) -> Option<&A> {
        // SAFETY: a present `A` is at the start of the slot, which `self` owns.
        (self.has & HAS_A != 0).then(|| unsafe { &*self.at::<A>(0) })
    }

    pub fn b(&self) -> Option<&B> {
        let (_, at) = Self::layout(self.has);
        // SAFETY: a present `B` is at `at`, inside the slot `self` owns.
        (self.has & HAS_B != 0).then(|| unsafe { &*self.at::<B>(at) })
    }

    pub fn a_mut(&mut self) -> Option<&mut A> {
        // SAFETY: as in `a`, and `&mut self` is the only access.
        (self.has & HAS_A != 0).then(|| unsafe { &mut *self.at::<A>(0) })
    }

    pub fn b_mut(&mut self) -> Option<&mut B> {
        let (_, at) = Self::layout(self.has);
        // SAFETY: as in `b`, and `&mut self` is the only access.
        (self.has & HAS_B != 0).then(|| unsafe { &mut *self.at::<B>(at) })
    }

    /// `B`, made `init` first when it is not there.
    pub fn b_or_insert(&mut self, init: B) -> &mut B {
        if self.has & HAS_B == 0 {
            self.set_b(Some(init));
        }
        self.b_mut().expect("just set")
    }

    pub fn set_a(&mut self, a: Option<A>) {
        match (a, self.a_mut()) {
            (Some(v), Some(a)) => *a = v,
            (None, None) => {}
            (a, _) => *self = Self::of(a, self.b().copied()),
        }
    }

    pub fn set_b(&mut self, b: Option<B>) {
        match (b, self.b_mut()) {
            (Some(v), Some(b)) => *b = v,
            (None, None) => {}
            (b, _) => *self = Self::of(self.a().copied(), b),
        }
    }

    /// Both parts as they are, in a slot of their own (moving to one of another size when they
    /// replace a value's parts).
    pub fn of(a: Option<A>, b: Option<B>) -> Self {
        let () = Self::FITS;
        let has = (u8::from(a.is_some()) * HAS_A) | (u8::from(b.is_some()) * HAS_B);
        let (bytes, b_at) = Self::layout(has);
        let slot = (has != 0).then(|| ring_pool::alloc(bytes));
        let p = Parts {
            slot,
            has,
            _parts: PhantomData,
        };
        if let Some(a) = a {
            // SAFETY: a fresh slot with room for `A` at 0, aligned for it (`FITS`).
            unsafe { p.at::<A>(0).write(a) };
        }
        if let Some(b) = b {
            // SAFETY: as above, for `B` at `b_at`.
            unsafe { p.at::<B>(b_at).write(b) };
        }
        p
    }

    /// The bytes the slot takes in the pool (none without one).
    pub fn slot_bytes(&self) -> usize {
        ring_pool::slot_bytes(Self::layout(self.has).0)
    }

    /// Start loading the slot (a hint: see [`crate::prefetch`]).
    #[inline]
    pub fn prefetch(&self) {
        if let Some(slot) = { self.slot } {
            crate::prefetch::read_bytes(slot.as_ptr(), Self::layout(self.has).0);
        }
    }
}

impl<A: Copy, B: Copy> Drop for Parts<A, B> {
    fn drop(&mut self) {
        if let Some(slot) = { self.slot } {
            // SAFETY: allocated by `of` with the size of this `has`'s layout; not used again.
            unsafe { ring_pool::free(slot, Self::layout(self.has).0) };
        }
    }
}

impl<A: Copy, B: Copy> Clone for Parts<A, B> {
    /// The slot copied as it is (checkpoints copy tens of thousands of states at a time).
    fn clone(&self) -> Self {
        let Some(from) = ({ self.slot }) else {
            return Self::NONE;
        };
        let bytes = Self::layout(self.has).0;
        let to = ring_pool::alloc(bytes);
        // SAFETY: both are slots of `bytes` bytes (the layout of `has`), distinct, and the
        // parts in them are `Copy`: their bytes are the values.
        unsafe { std::ptr::copy_nonoverlapping(from.as_ptr(), to.as_ptr(), bytes) };
        Parts {
            slot: Some(to),
            has: self.has,
            _parts: PhantomData,
        }
    }
}

impl<A: Copy + PartialEq, B: Copy + PartialEq> PartialEq for Parts<A, B> {
    fn eq(&self, other: &Self) -> bool {
        self.a() == other.a() && self.b() == other.b()
    }
}

impl<A: Copy + std::fmt::Debug, B: Copy + std::fmt::Debug> std::fmt::Debug for Parts<A, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts")
            .field("a", &self.a())
            .field("b", &self.b())
            .finish()
    }
}

// SAFETY: `Parts` owns its slot as a `Box` would (no sharing, no interior mutability), and the
// pool takes slots back from any thread.
unsafe impl<A: Copy + Send, B: Copy + Send> Send for Parts<A, B> {}
unsafe impl<A: Copy + Sync, B: Copy + Sync> Sync for Parts<A, B> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq)]
    struct Wide(u64, u8);

    #[derive(Debug, Clone, Copy, PartialEq)]
    #[repr(Rust, packed(2))]
    struct Narrow(u16, u32, u16);

    #[test]
    fn twelve_bytes_aligned_to_four() {
        assert_eq!(size_of::<Parts<Wide, Narrow>>(), 12);
        assert_eq!(align_of::<Parts<Wide, Narrow>>(), 4);
    }

    #[test]
    fn parts_come_and_go_independently() {
        let mut p = Parts::<Wide, Narrow>::NONE;
        assert_eq!((p.a(), p.b()), (None, None));
        p.set_b(Some(Narrow(1, 2, 3)));
        assert_eq!((p.a(), p.b()), (None, Some(&Narrow(1, 2, 3))));
        p.set_a(Some(Wide(u64::MAX, 7)));
        assert_eq!(p.a(), Some(&Wide(u64::MAX, 7)));
        assert_eq!(p.b(), Some(&Narrow(1, 2, 3)));
        p.b_mut().unwrap().1 = 9;
        *p.a_mut().unwrap() = Wide(5, 6);
        let copy = p.clone();
        p.set_a(None);
        assert_eq!((p.a(), p.b()), (None, Some(&Narrow(1, 9, 3))));
        // The copy kept both, in a slot of its own.
        assert_eq!(copy.a(), Some(&Wide(5, 6)));
        assert_eq!(copy.b(), Some(&Narrow(1, 9, 3)));
        assert_ne!(copy, p);
        p.set_b(None);
        assert_eq!(p, Parts::NONE);
        assert!({ p.slot }.is_none());
        assert_eq!(*p.b_or_insert(Narrow(4, 4, 4)), Narrow(4, 4, 4));
        assert_eq!(p.b(), Some(&Narrow(4, 4, 4)));
        // Moves between threads, and is freed there.
        std::thread::spawn(move || drop((copy, p))).join().unwrap();
    }

    #[test]
    fn both_parts_are_aligned_in_their_slot() {
        for _ in 0..100 {
            let p = Parts::<Narrow, Wide>::of(Some(Narrow(1, 2, 3)), Some(Wide(4, 5)));
            let (a, b) = (p.a().unwrap(), p.b().unwrap());
            assert_eq!(b as *const Wide as usize % align_of::<Wide>(), 0);
            assert_eq!(a as *const Narrow as usize % align_of::<Narrow>(), 0);
            assert_eq!((*a, *b), (Narrow(1, 2, 3), Wide(4, 5)));
        }
    }
}
