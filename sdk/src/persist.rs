//! The persistence interface of a device's OSCORE state (RFC 8613 Appendix B.1.1, B.1.2), for
//! any storage: a file (`store::SequenceFile`, feature `std`), a flash page, a battery-backed
//! register.
//!
//! The sans-IO core names a [`DurableState`] to write ([`Device::state_to_persist`]); a
//! [`StateStore`] writes it so that it survives a crash or power loss, and only then does the
//! driver confirm it ([`Device::state_persisted`]), or both in one call: [`Device::persist`].
//! Until the confirmation the device sends nothing that needs a sequence number at or above the
//! last confirmed mark and serves no verified request that raised the replay floor.
//!
//! [`Device::state_to_persist`]: crate::coap::Device::state_to_persist
//! [`Device::state_persisted`]: crate::coap::Device::state_persisted
//! [`Device::persist`]: crate::coap::Device::persist

use core::fmt;

use crate::oscore::DurableState;

/// Where a driver writes the OSCORE state a device asks for.
///
/// With the `std` feature every `store::MarkStore` (the `std::io` form of this trait) is a
/// `StateStore` with `Error = std::io::Error`.
pub trait StateStore {
    /// Why a write failed.
    type Error: fmt::Display;

    /// Writes `state` (both values) durably; returns once it would survive a crash or power
    /// loss. A store that returns `Ok` before that breaks the guarantees above.
    fn store(&mut self, state: DurableState) -> Result<(), Self::Error>;
}

/// A write of the OSCORE state that failed: what was to be written, and why. The device keeps
/// waiting for it; try again later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistFailed<E> {
    /// The state that was not written.
    pub state: DurableState,
    /// The store's error.
    pub error: E,
}

impl<E: fmt::Display> fmt::Display for PersistFailed<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot store the OSCORE state (mark {}, replay floor {}): {}",
            self.state.sender_mark, self.state.replay_floor, self.error
        )
    }
}

impl<E: fmt::Debug + fmt::Display> core::error::Error for PersistFailed<E> {}
