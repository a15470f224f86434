//! The process's allocator: its first allocations come from a static
//! arena that is never given back, blocks of a MiB or more from the C
//! library (a mapping each), the rest from mimalloc.
//!
//! vhrun is a static musl binary (.cargo/config.toml says why), and musl's
//! own malloc maps each new group of blocks with its own `mmap` and unmaps
//! it when the group empties, behind one lock:
//! - a run's start made 35 `mmap`s and 30 `munmap`s (each unmap a TLB
//!   flush) where glibc's heap made none;
//! - building a kernel image (every blob decoded, on every core) took
//!   twice glibc's time, most of it in the kernel: three mappings per blob.
//!
//! mimalloc decodes as fast as glibc did, but its start (its constructor
//! runs before `main`, its first allocation maps its heap) cost 3.5% of an
//! activation in v3 and 1% in v2. A run allocates far less than the arena
//! before its task starts, so it never reaches mimalloc's heap; a
//! long-lived server keeps at most the arena's size of its first
//! allocations, however they are freed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

use mimalloc::MiMalloc;

const SIZE: usize = 1 << 20;

/// Blocks this big come from the C library, which maps each on its own
/// and knows fresh pages are zero. mimalloc zeroes a zeroed block it
/// recycles: fuser's zeroed 16 MiB request buffer, one per session
/// thread, made a per-run FUSE mount's activation 12.7 ms instead of 4
/// and a warm server's peak RSS 42 MiB instead of 10.
const MAPPED: usize = 1 << 20;

/// mimalloc v2's `mi_option_arena_eager_commit` (its include/mimalloc.h:
/// libmimalloc-sys exports no constant for it). Its default, 2, is the
/// test's check that the number still names it.
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// mimalloc commits its arenas as they are used, not ahead: ahead, a warm
/// server's peak RSS after a cold heavy import was 42 MiB, and 28 MiB
/// without (glibc's malloc: 8 MiB), for the same speed. Call it before the
/// arena runs out, which a process's start never makes it do.
pub fn tune() {
    // SAFETY: sets one option; nothing of mimalloc's heap exists yet to
    // race with (a process's start allocates from the arena).
    unsafe { libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0) }
}

#[repr(C, align(4096))]
struct Space(UnsafeCell<[u8; SIZE]>);

// SAFETY: each byte range is handed to exactly one allocation (`next`
// only grows, by compare-and-swap), so no two threads share a range.
unsafe impl Sync for Space {}

/// The global allocator vhrun's binary installs.
pub struct Arena {
    space: Space,
    next: AtomicUsize,
}

impl Arena {
    /// For a `static` only: the value is the arena's whole size.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Arena {
            space: Space(UnsafeCell::new([0; SIZE])),
            next: AtomicUsize::new(0),
        }
    }

    fn base(&self) -> usize {
        self.space.0.get() as usize
    }

    fn holds(&self, ptr: *mut u8) -> bool {
        (ptr as usize).wrapping_sub(self.base()) < SIZE
    }

    /// `layout`'s block from the arena, or None when it does not fit.
    fn take(&self, layout: Layout) -> Option<*mut u8> {
        let base = self.base();
        let mut next = self.next.load(Ordering::Relaxed);
        loop {
            // Alignment of the address, not the offset: the base is only
            // page-aligned.
            let start = (base + next).checked_next_multiple_of(layout.align())? - base;
            let end = start.checked_add(layout.size())?;
            if end > SIZE {
                return None;
            }
            match self
                .next
                .compare_exchange_weak(next, end, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some((base + start) as *mut u8),
                Err(now) => next = now,
            }
        }
    }
}

// SAFETY: blocks from `take` are in bounds, aligned and never handed out
// twice; all others come from the allocator `heap` names for their size,
// and a block's layout (so its size) is the same when it is given back.
unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.take(layout) {
            Some(ptr) => ptr,
            // SAFETY: GlobalAlloc's contract, passed on.
            None => unsafe { heap(layout.size()).alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match self.take(layout) {
            // The arena's bytes are zero until handed out, once.
            Some(ptr) => ptr,
            // SAFETY: GlobalAlloc's contract, passed on.
            None => unsafe { heap(layout.size()).alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !self.holds(ptr) {
            // SAFETY: not the arena's, so from the heap of its size.
            unsafe { heap(layout.size()).dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Compared by size, not by address: both heaps are zero-sized.
        if !self.holds(ptr) && (layout.size() >= MAPPED) == (new_size >= MAPPED) {
            // SAFETY: that heap's block, GlobalAlloc's contract passed on.
            return unsafe { heap(layout.size()).realloc(ptr, layout, new_size) };
        }
        // SAFETY: the caller guarantees new_size is a valid size for
        // layout's alignment.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: as in alloc.
        let moved = unsafe { self.alloc(new) };
        if !moved.is_null() {
            // SAFETY: both blocks hold at least the smaller size and do not
            // overlap (the new one is fresh); the old one is given back.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        moved
    }
}

/// Where a block of `size` that is not the arena's lives.
fn heap(size: usize) -> &'static dyn GlobalAlloc {
    if size >= MAPPED {
        &System
    } else {
        &MiMalloc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tune_turns_off_the_eager_commit_of_mimallocs_arenas() {
        // SAFETY: reads one option.
        let get = || unsafe { libmimalloc_sys::mi_option_get(ARENA_EAGER_COMMIT) };
        if std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_none() {
            assert_eq!(get(), 2, "not mimalloc v2's arena_eager_commit");
        }
        tune();
        assert_eq!(get(), 0);
    }

    static ARENA: Arena = Arena::new();

    #[test]
    fn blocks_are_aligned_apart_and_fall_back_to_the_heaps_when_the_arena_is_full() {
        let a = &ARENA;
        let mut blocks = Vec::new();
        for (size, align) in [(1, 1), (24, 8), (3, 64), (4096, 4096), (100, 16)] {
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: a non-zero size; freed below with the same layout.
            let p = unsafe { a.alloc_zeroed(layout) };
            assert!(a.holds(p));
            assert_eq!(p as usize % align, 0);
            // SAFETY: p holds `size` bytes.
            assert!(unsafe { std::slice::from_raw_parts(p, size) }
                .iter()
                .all(|&b| b == 0));
            // SAFETY: as above; marks the block as used.
            unsafe { p.write_bytes(0xa5, size) };
            blocks.push((p as usize, size, layout));
        }
        blocks.sort_by_key(|b| b.0);
        assert!(blocks.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0));

        // Growing a block copies it into a new one.
        let (p, size, layout) = blocks[0];
        // SAFETY: p is a live block of `layout`.
        let q = unsafe { a.realloc(p as *mut u8, layout, 64 * size) };
        // SAFETY: q holds at least `size` bytes.
        assert!(unsafe { std::slice::from_raw_parts(q, size) }
            .iter()
            .all(|&b| b == 0xa5));

        // A block of the C library's grows into one and shrinks back into
        // mimalloc's, keeping its bytes.
        let small = Layout::from_size_align(MAPPED - 8, 8).unwrap();
        // SAFETY: a non-zero size.
        let h = unsafe { a.alloc(small) };
        // SAFETY: h holds small.size() bytes.
        unsafe { h.write_bytes(0x5a, small.size()) };
        // SAFETY: h is a live block of `small`.
        let h = unsafe { a.realloc(h, small, 4 * MAPPED) };
        // SAFETY: h now holds 4 * MAPPED bytes, of which the first are kept.
        unsafe {
            h.add(small.size())
                .write_bytes(0, 4 * MAPPED - small.size())
        };
        let grown = Layout::from_size_align(4 * MAPPED, 8).unwrap();
        // SAFETY: h is a live block of `grown`.
        let h = unsafe { a.realloc(h, grown, 64) };
        // SAFETY: h holds 64 bytes.
        assert!(unsafe { std::slice::from_raw_parts(h, 64) }
            .iter()
            .all(|&b| b == 0x5a));
        // SAFETY: h is a live block of 64 bytes, align 8.
        unsafe { a.dealloc(h, Layout::from_size_align(64, 8).unwrap()) };

        // Too big for what is left: the C library's, and given back to it.
        let big = Layout::from_size_align(SIZE, 8).unwrap();
        // SAFETY: a non-zero size.
        let m = unsafe { a.alloc(big) };
        assert!(!m.is_null() && !a.holds(m));
        // SAFETY: m is the C library's block of `big`.
        unsafe { a.dealloc(m, big) };
        // A block of the arena is never given back, and dealloc of it is harmless.
        // SAFETY: q is a live block.
        unsafe {
            a.dealloc(
                q,
                Layout::from_size_align(64 * size, layout.align()).unwrap(),
            )
        };
        let small = Layout::from_size_align(8, 8).unwrap();
        // SAFETY: a non-zero size.
        let r = unsafe { a.alloc(small) };
        assert!(a.holds(r) && r != q);
    }
}
