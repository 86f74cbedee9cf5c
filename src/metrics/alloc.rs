//! A global-allocator wrapper that counts the bytes the process has allocated
//! and not freed: INFO's `used_memory`, counted as Redis's zmalloc counts it.
//!
//! Why a wrapper and not allocator statistics: the count is exact at every
//! moment and costs one relaxed atomic add per allocation and free, which the
//! request path barely makes (it reuses its buffers); mimalloc's own process
//! info reports committed pages, not bytes in use, and switching to jemalloc
//! for its `stats.allocated` would mean a second C allocator to build and tune.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

/// Wraps a global allocator and counts live bytes; install it with
/// `#[global_allocator]` in the binary.
#[derive(Debug, Default)]
pub struct Counting<A>(pub A);

/// Bytes allocated and not yet freed, if the binary installed [`Counting`].
pub fn allocated_bytes() -> Option<u64> {
    match ALLOCATED.load(Ordering::Relaxed) {
        0 => None,
        n => Some(n as u64),
    }
}

// SAFETY: every method forwards to the wrapped allocator with the caller's
// arguments unchanged and returns its result unchanged; the counting touches
// only an atomic, never the memory.
#[allow(unsafe_code)]
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is (see above).
        let p = unsafe { self.0.alloc(layout) };
        if !p.is_null() {
            ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is (see above).
        let p = unsafe { self.0.alloc_zeroed(layout) };
        if !p.is_null() {
            ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is (see above).
        unsafe { self.0.dealloc(ptr, layout) };
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is (see above).
        let p = unsafe { self.0.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                ALLOCATED.fetch_add(new_size - layout.size(), Ordering::Relaxed);
            } else {
                ALLOCATED.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

/// Hands memory that is free but still mapped back to the OS. mimalloc keeps
/// freed pages for reuse and purges them lazily, on later allocator activity
/// of the same thread; after a burst (10,000 connections closed at once) an
/// idle server would otherwise keep that RSS. Called periodically on the
/// runtime thread, whose heap serves the connections.
pub fn release_free_memory() {
    // SAFETY: mi_collect takes no pointers and may be called at any time from
    // any thread; it only purges the calling thread's free pages (`true`:
    // without waiting for the purge delay).
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true)
    };
}
