//! v6iot device firmware for a Cortex-M4F (`thumbv7em-none-eabihf`), run on QEMU's MPS2 AN386
//! board in CI: the SDK's `no_std` device core on a microcontroller.
//!
//! It runs two self-tests and exits (semihosting) with status 0 only if both pass:
//!
//! 1. [`vectors`]: the OSCORE test vectors of RFC 8613 Appendix C (key derivation, protected
//!    requests and responses, byte for byte) through the SDK's API;
//! 2. [`exchange`]: the valve sensor of `v6iot-examples` on the SDK's `Device` with OSCORE
//!    credentials registers, reports SenML and takes a valve command — every message protected —
//!    against an edge stand-in ([`edge`], sans-IO, built from the SDK's OSCORE and CoAP pieces)
//!    on virtual time, its OSCORE state written through a [`v6iot_sdk::persist::StateStore`].
//!
//! Output goes to the host over semihosting (`qemu-system-arm -semihosting-config
//! enable=on,target=native`); a panic prints its message and exits with a failure status.
//! Heap: [`embedded_alloc::LlffHeap`] over a static array of [`HEAP_SIZE`] bytes.

#![no_std]
#![no_main]

extern crate alloc;

mod edge;
mod exchange;
mod stack;
mod vectors;

use core::alloc::{GlobalAlloc, Layout};
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicUsize, Ordering};

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use embedded_alloc::LlffHeap as Heap;

/// Bytes of RAM given to the heap.
pub const HEAP_SIZE: usize = 16 * 1024;

static HEAP: Heap = Heap::empty();

/// The most heap bytes in use at once so far.
static HEAP_PEAK: AtomicUsize = AtomicUsize::new(0);

/// The heap, with its peak use recorded.
struct PeakTracking;

#[global_allocator]
static ALLOCATOR: PeakTracking = PeakTracking;

#[allow(unsafe_code)]
// SAFETY: every call goes to the heap unchanged; the peak is a relaxed atomic maximum.
unsafe impl GlobalAlloc for PeakTracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { HEAP.alloc(layout) };
        HEAP_PEAK.fetch_max(HEAP.used(), Ordering::Relaxed);
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { HEAP.dealloc(ptr, layout) }
    }
}

/// Heap bytes in use now.
pub fn heap_used() -> usize {
    HEAP.used()
}

#[entry]
fn main() -> ! {
    stack::paint();
    init_heap();
    hprintln!(
        "v6iot firmware self-test on a Cortex-M4F ({} KiB heap)",
        HEAP_SIZE / 1024
    );
    let vectors_ok = vectors::run();
    let exchange_ok = match exchange::run() {
        Ok(summary) => {
            hprintln!("exchange: {}", summary);
            true
        }
        Err(e) => {
            hprintln!("exchange FAILED: {}", e);
            false
        }
    };
    hprintln!(
        "RAM: heap peak {} B of {} B ({} B in use at the end), stack high-water mark {} B",
        HEAP_PEAK.load(Ordering::Relaxed),
        HEAP_SIZE,
        heap_used(),
        stack::high_water()
    );
    if vectors_ok && exchange_ok {
        hprintln!("self-test passed");
        debug::exit(debug::EXIT_SUCCESS);
    } else {
        hprintln!("self-test FAILED");
        debug::exit(debug::EXIT_FAILURE);
    }
    // Not reached under semihosting; on a board without a debugger, stop here.
    loop {
        cortex_m::asm::wfi();
    }
}

#[allow(unsafe_code)]
fn init_heap() {
    static mut HEAP_MEM: [MaybeUninit<u8>; HEAP_SIZE] = [MaybeUninit::uninit(); HEAP_SIZE];
    // SAFETY: called once, first thing in `main`, before any allocation; HEAP_MEM is used by
    // nothing else.
    unsafe { HEAP.init(&raw mut HEAP_MEM as usize, HEAP_SIZE) }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    hprintln!("panic: {}", info);
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
