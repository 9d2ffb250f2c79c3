//! A counting global allocator for memory tests: the system allocator, plus the net heap bytes
//! each thread holds (allocated minus freed, by requested size), so a test measures what a
//! device really holds instead of trusting its own estimate. Tests of one binary run on
//! several threads at once; each counts only its own thread's allocations.
//!
//! Install it in a test binary with
//! `#[global_allocator] static ALLOC: common::counting_alloc::Counting = common::counting_alloc::Counting;`.

#![allow(unsafe_code)] // a GlobalAlloc is unsafe by definition; it forwards to System unchanged

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    /// Net bytes allocated on this thread (wrapping: a block freed on another thread than the
    /// one that allocated it moves the count of both; tests keep a device on one thread).
    static LIVE: Cell<usize> = const { Cell::new(0) };
}

fn add(n: usize) {
    // `try_with`: allocations during thread teardown, after the counter is gone, go uncounted.
    let _ = LIVE.try_with(|c| c.set(c.get().wrapping_add(n)));
}

fn sub(n: usize) {
    let _ = LIVE.try_with(|c| c.set(c.get().wrapping_sub(n)));
}

/// The system allocator, counting.
pub struct Counting;

// SAFETY: every call is forwarded to `System` with the same arguments; the bookkeeping touches
// only a `Cell` in a const-initialised thread-local (no allocation, no destructor).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `System::alloc`, same layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `System::alloc_zeroed`, same layout.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (so from `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        sub(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `System` with `layout`; the caller upholds `new_size`'s rules.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            sub(layout.size());
            add(new_size);
        }
        p
    }
}

/// Net heap bytes this thread holds now (meaningful as a difference of two readings).
pub fn live() -> usize {
    LIVE.try_with(Cell::get).unwrap_or(0)
}

/// Heap bytes `f` frees on this thread, net: run it with the thing to measure as its only
/// drop (`heap_freed_by(|| drop(device))`).
pub fn heap_freed_by(f: impl FnOnce()) -> usize {
    let before = live();
    f();
    before.wrapping_sub(live())
}
