//! The stack's high-water mark, for the RAM figure: the free RAM between the end of the static
//! data (`__sheap`, from cortex-m-rt's `link.x`) and the current stack pointer is painted with a
//! pattern at start; at the end, the lowest word no longer holding the pattern is as deep as
//! the stack went.

#![allow(unsafe_code)]

use core::ptr::{addr_of, addr_of_mut};

const PAINT: u32 = 0xa5a5_a5a5;
/// Left unpainted below the stack pointer at the time of painting (the painter's own frame).
const MARGIN: usize = 256;

unsafe extern "C" {
    /// First word after the static data (cortex-m-rt).
    static mut __sheap: u32;
    /// Top of the stack, the end of RAM (cortex-m-rt).
    static _stack_start: u32;
}

fn bottom() -> usize {
    addr_of_mut!(__sheap) as usize
}

fn top() -> usize {
    addr_of!(_stack_start) as usize
}

/// Paints the free RAM below the stack. Call first thing in `main`.
pub fn paint() {
    let end = cortex_m::register::msp::read() as usize - MARGIN;
    let mut p = bottom();
    while p + 4 <= end {
        // SAFETY: [bottom, msp − MARGIN) is RAM that neither the static data nor the stack
        // uses yet (the heap is a static array, below `__sheap`); word aligned.
        unsafe { (p as *mut u32).write_volatile(PAINT) };
        p += 4;
    }
}

/// The deepest the stack has been since [`paint`], in bytes.
pub fn high_water() -> usize {
    let mut p = bottom();
    let top = top();
    // SAFETY: reads of words in [bottom, top), RAM.
    while p < top && unsafe { (p as *const u32).read_volatile() } == PAINT {
        p += 4;
    }
    top - p
}
