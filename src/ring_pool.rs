//! The rings' allocations: slots of a few fixed sizes, carved from large chunks.
//!
//! Every tracked customer who shows more than purchases holds one heap allocation, their
//! ring ([`crate::window::Windows`]), of one of a few sizes (and customers who get engagement
//! scores or have been at risk one more, [`crate::customer::parts`], of 28, 32 or 60 bytes): the kinds of ring times the
//! configured length (for the default windows 19, 37, 80 and 117 bytes). glibc's allocator
//! puts an 8-byte header before each and rounds the whole to 16 bytes, so those take 32, 48, 96
//! and 128: about 13 bytes per customer over what the rings hold. Here each size class is a
//! multiple of 4 bytes, a slot is exactly its class (20, 40, 80 and 120 bytes), and slots are
//! carved one after the other from chunks of 256 KiB, with no header. A slot is aligned to 4
//! bytes, and to 8 when its class is a multiple of 8 (the chunks are, and so is every slot's
//! offset in them): rings of `u64` words of marks are.
//!
//! A freed slot goes on its class's free list, and the class's next allocation takes it,
//! whichever thread frees or allocates: a checkpoint copies states on the consumer thread and
//! the changelog's writer thread drops the copies, so slots must flow back. Each class's list
//! is behind a lock, and each thread keeps a few slots of each class of its own (at most 64),
//! which it takes from the list and gives back 32 at a time: a checkpoint copies tens of
//! thousands of states, and a lock for each cost as much as the copy. A thread's slots go back
//! to the lists when it ends. Chunks are never handed back; glibc rarely hands back the small
//! chunks it would have used either. Larger rings (more than [`MAX_POOLED`] bytes: windows of
//! hundreds of buckets) go to the global allocator.

use std::alloc::{handle_alloc_error, Layout};
use std::cell::RefCell;
use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard};

/// Slot sizes are multiples of this, and slots are aligned to it ([`align`]).
pub const GRAIN: usize = 4;
/// The chunks' alignment, and so the largest alignment a slot can have.
const CHUNK_ALIGN: usize = 8;
/// The largest allocation made from the pool.
pub const MAX_POOLED: usize = 512;
/// The size of the chunks slots are carved from.
const CHUNK_BYTES: usize = 256 * 1024;
const CLASSES: usize = MAX_POOLED / GRAIN;
/// The most slots of a class a thread keeps, and how many it takes or gives back at once.
const CACHED: usize = 64;
const BATCH: usize = 32;

/// A free slot: the next free slot of its class.
struct FreeSlot {
    next: Option<NonNull<FreeSlot>>,
}

/// One size class: its free slots, and the rest of its current chunk.
struct Class {
    free: Option<NonNull<FreeSlot>>,
    next: usize,
    end: usize,
    /// Chunks carved for this class so far.
    chunks: usize,
}

// SAFETY: the pointers are to memory the pool owns, only ever used under the class's lock.
unsafe impl Send for Class {}

impl Class {
    fn alloc(&mut self, size: usize) -> NonNull<u8> {
        if let Some(slot) = self.free {
            // SAFETY: a free slot holds the link `free` wrote there (unaligned).
            self.free = unsafe { slot.read_unaligned().next };
            return slot.cast();
        }
        if self.end - self.next < size {
            // The old chunk's tail (less than one slot) is left unused.
            let p = raw_alloc(CHUNK_BYTES);
            self.next = p.as_ptr() as usize;
            self.end = self.next + CHUNK_BYTES;
            self.chunks += 1;
        }
        let p = self.next;
        self.next += size;
        // SAFETY: `p` is inside a live chunk, so not null.
        unsafe { NonNull::new_unchecked(p as *mut u8) }
    }

    /// # Safety
    ///
    /// `ptr` is a slot of this class's size that is no longer in use.
    unsafe fn free(&mut self, ptr: NonNull<u8>) {
        let slot = ptr.cast::<FreeSlot>();
        // SAFETY: the slot is at least 8 bytes (a `FreeSlot`: the smallest class whose
        // slots are linked, [`MIN_BYTES`]) and no longer in use; it may be aligned to 4 only.
        unsafe { slot.write_unaligned(FreeSlot { next: self.free }) };
        self.free = Some(slot);
    }
}

static POOL: [Mutex<Class>; CLASSES] = [const {
    Mutex::new(Class {
        free: None,
        next: 0,
        end: 0,
        chunks: 0,
    })
}; CLASSES];

fn class(i: usize) -> MutexGuard<'static, Class> {
    // Nothing panics while a class is locked; a poisoned lock's data is still sound.
    POOL[i].lock().unwrap_or_else(|e| e.into_inner())
}

fn class_of(bytes: usize) -> usize {
    (slot_bytes(bytes) - 1) / GRAIN
}

/// The alignment of an allocation of `bytes`: 8 when its slot is a multiple of 8 bytes, else 4.
pub const fn align(bytes: usize) -> usize {
    if slot_bytes(bytes) % CHUNK_ALIGN == 0 {
        CHUNK_ALIGN
    } else {
        GRAIN
    }
}

/// One thread's slots, by class.
struct Cache([Vec<NonNull<u8>>; CLASSES]);

impl Drop for Cache {
    fn drop(&mut self) {
        for (i, slots) in self.0.iter_mut().enumerate() {
            if !slots.is_empty() {
                let mut c = class(i);
                for p in slots.drain(..) {
                    // SAFETY: a free slot of class `i`, kept by this thread.
                    unsafe { c.free(p) };
                }
            }
        }
    }
}

thread_local! {
    static CACHE: RefCell<Cache> = const { RefCell::new(Cache([const { Vec::new() }; CLASSES])) };
}

/// The bytes a pooled allocation of `bytes` takes (its slot): a multiple of [`GRAIN`], and at
/// least `MIN_BYTES` (room for a free slot's link); none for none.
pub const fn slot_bytes(bytes: usize) -> usize {
    let b = if bytes == 0 {
        0
    } else if bytes < MIN_BYTES {
        MIN_BYTES
    } else {
        bytes
    };
    b.div_ceil(GRAIN) * GRAIN
}

/// The smallest slot: room for a free slot's link.
const MIN_BYTES: usize = size_of::<FreeSlot>();

fn layout(bytes: usize) -> Layout {
    Layout::from_size_align(bytes, CHUNK_ALIGN).expect("a ring's size is far below isize::MAX")
}

/// `bytes` (not 0) from the global allocator, aligned to 8.
fn raw_alloc(bytes: usize) -> NonNull<u8> {
    let layout = layout(bytes);
    // SAFETY: `layout` has a non-zero size.
    let p = unsafe { std::alloc::alloc(layout) };
    NonNull::new(p).unwrap_or_else(|| handle_alloc_error(layout))
}

/// An allocation of `bytes`, aligned to [`align`]`(bytes)`; dangling (and not to be written) when
/// `bytes` is 0. Give it back with [`free`] and the same `bytes`.
pub fn alloc(bytes: usize) -> NonNull<u8> {
    if bytes == 0 {
        return NonNull::<u64>::dangling().cast();
    }
    let size = slot_bytes(bytes);
    if bytes > MAX_POOLED {
        return raw_alloc(size);
    }
    let i = class_of(bytes);
    CACHE
        .try_with(|cache| {
            let slots = &mut cache.borrow_mut().0[i];
            if let Some(p) = slots.pop() {
                return p;
            }
            let mut c = class(i);
            // The list's first slot is the one handed out (the latest freed: warm in cache).
            let p = c.alloc(size);
            slots.extend((1..BATCH).map(|_| c.alloc(size)));
            p
        })
        // While the thread ends (its slots are gone): from the list.
        .unwrap_or_else(|_| class(i).alloc(size))
}

/// Give back an allocation.
///
/// # Safety
///
/// `ptr` must come from [`alloc`] with the same `bytes`, and must not be used afterwards.
pub unsafe fn free(ptr: NonNull<u8>, bytes: usize) {
    if bytes == 0 {
        return;
    }
    if bytes > MAX_POOLED {
        // SAFETY: allocated by the global allocator with this layout (`alloc`).
        unsafe { std::alloc::dealloc(ptr.as_ptr(), layout(slot_bytes(bytes))) };
        return;
    }
    let i = class_of(bytes);
    let kept = CACHE.try_with(|cache| {
        let slots = &mut cache.borrow_mut().0[i];
        if slots.len() >= CACHED {
            let mut c = class(i);
            for p in slots.drain(CACHED - BATCH..) {
                // SAFETY: a free slot of class `i`, kept by this thread.
                unsafe { c.free(p) };
            }
        }
        slots.push(ptr);
    });
    if kept.is_err() {
        // SAFETY: the caller's promise: a slot of this class, no longer in use.
        unsafe { class(i).free(ptr) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_distinct_aligned_and_reused() {
        // A size no other test's rings use, so the free list is this test's own.
        let bytes = 8 * 61 - 3;
        let slots: Vec<NonNull<u8>> = (0..3000).map(|_| alloc(bytes)).collect();
        let mut addrs: Vec<usize> = slots.iter().map(|p| p.as_ptr() as usize).collect();
        assert!(addrs.iter().all(|a| a % align(bytes) == 0));
        addrs.sort_unstable();
        // More slots than one chunk holds, none overlapping another.
        assert!(3000 * slot_bytes(bytes) > CHUNK_BYTES);
        assert!(addrs.windows(2).all(|w| w[1] - w[0] >= slot_bytes(bytes)));
        for (i, p) in slots.iter().enumerate() {
            // SAFETY: the slot is `bytes` long and ours.
            unsafe { p.as_ptr().write_bytes(i as u8, bytes) };
        }
        for (i, p) in slots.iter().enumerate() {
            // SAFETY: as above.
            let s = unsafe { std::slice::from_raw_parts(p.as_ptr(), bytes) };
            assert!(s.iter().all(|&b| b == i as u8), "slot {i} was overwritten");
        }
        let last = *slots.last().unwrap();
        for p in &slots {
            // SAFETY: from `alloc` with the same size, not used again.
            unsafe { free(*p, bytes) };
        }
        // The last one freed is the first one handed out again.
        assert_eq!(alloc(bytes), last);
        // SAFETY: as above.
        unsafe { free(last, bytes) };
    }

    #[test]
    fn a_slot_freed_on_another_thread_is_reused() {
        // A size no other test uses, so the list is this test's own. Each step on a thread of
        // its own, which gives its slots back to the lists as it ends.
        let bytes = 8 * 59;
        let on_a_thread =
            |f: Box<dyn FnOnce() -> usize + Send>| std::thread::spawn(f).join().unwrap();
        let addr = on_a_thread(Box::new(move || alloc(bytes).as_ptr() as usize));
        on_a_thread(Box::new(move || {
            // SAFETY: from `alloc` with the same size, not used again.
            unsafe { free(NonNull::new(addr as *mut u8).unwrap(), bytes) };
            0
        }));
        // The latest slot given back is the first one handed out again.
        let again = on_a_thread(Box::new(move || {
            let p = alloc(bytes);
            let at = p.as_ptr() as usize;
            // SAFETY: as above.
            unsafe { free(p, bytes) };
            at
        }));
        assert_eq!(again, addr);
    }

    #[test]
    fn slots_freed_by_a_long_lived_thread_flow_back() {
        // As a checkpoint's copies do: made on one thread, dropped on another that lives on.
        let bytes = 8 * 57;
        let (to_writer, queue) = std::sync::mpsc::channel::<Vec<usize>>();
        let (done, freed) = std::sync::mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            for batch in queue {
                for addr in batch {
                    // SAFETY: from `alloc` with the same size, handed over, not used again.
                    unsafe { free(NonNull::new(addr as *mut u8).unwrap(), bytes) };
                }
                done.send(()).unwrap();
            }
        });
        let per_round = 10_000;
        for _ in 0..20 {
            let batch = (0..per_round)
                .map(|_| alloc(bytes).as_ptr() as usize)
                .collect();
            to_writer.send(batch).unwrap();
            freed.recv().unwrap();
        }
        drop(to_writer);
        writer.join().unwrap();
        // 200,000 slots made, never more than 10,000 in use: the chunks hold about two
        // rounds' worth (the slots in flight, and the threads' own), not twenty.
        let chunks = class(class_of(bytes)).chunks;
        let per_chunk = CHUNK_BYTES / slot_bytes(bytes);
        assert!(
            chunks <= 3 * per_round / per_chunk + 2,
            "{chunks} chunks of {per_chunk}"
        );
    }

    #[test]
    fn sizes_round_to_the_grain_and_large_ones_go_to_the_allocator() {
        assert_eq!(slot_bytes(0), 0);
        assert_eq!(slot_bytes(1), 8);
        assert_eq!(slot_bytes(19), 20);
        assert_eq!(slot_bytes(37), 40);
        assert_eq!(slot_bytes(76), 76);
        assert_eq!(slot_bytes(117), 120);
        assert_eq!((align(19), align(76), align(80), align(117)), (4, 4, 8, 8));
        // Slots of a class whose size is a multiple of 8 are aligned to 8, those of the others
        // to 4 (and never two of a class overlap, in the test above).
        for bytes in [20, 24, 76, 80] {
            let slots: Vec<NonNull<u8>> = (0..100).map(|_| alloc(bytes)).collect();
            assert!(slots
                .iter()
                .all(|p| p.as_ptr() as usize % align(bytes) == 0));
            for p in slots {
                // SAFETY: from `alloc` with the same size, not used again.
                unsafe { free(p, bytes) };
            }
        }
        let p = alloc(0);
        // SAFETY: a zero-sized allocation is never read or written.
        unsafe { free(p, 0) };
        let big = alloc(MAX_POOLED + 1);
        assert_eq!(big.as_ptr() as usize % 8, 0);
        // SAFETY: the allocation is `MAX_POOLED + 1` bytes and ours.
        unsafe {
            big.as_ptr().write_bytes(7, MAX_POOLED + 1);
            free(big, MAX_POOLED + 1);
        }
    }
}
