//! The commands waiting for each device, in order, with their counts kept as they change (the
//! caps are checked per command without walking every queue).

use std::collections::VecDeque;

use foldhash::HashMap;

use super::DownlinkCommand;

/// A waiting command and the journal entry it waits for (0: none).
#[derive(Debug)]
pub(super) struct Queued {
    pub(super) cmd: DownlinkCommand,
    pub(super) seq: u64,
}

/// Per-device FIFO queues.
#[derive(Debug, Default)]
pub(super) struct Queues {
    by_device: HashMap<String, VecDeque<Queued>>,
    len: usize,
}

impl Queues {
    /// Commands waiting over all devices.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Commands waiting for `device`.
    pub(super) fn len_for(&self, device: &str) -> usize {
        self.by_device.get(device).map_or(0, VecDeque::len)
    }

    /// Whether `device` has a command waiting.
    pub(super) fn has(&self, device: &str) -> bool {
        self.by_device.contains_key(device)
    }

    /// Appends `cmd` to its device's queue.
    pub(super) fn push(&mut self, cmd: DownlinkCommand, seq: u64) {
        self.len += 1;
        self.by_device
            .entry(cmd.device.clone())
            .or_default()
            .push_back(Queued { cmd, seq });
    }

    /// Takes `device`'s first command if `ready` says its journal entry is durable.
    pub(super) fn pop_ready(
        &mut self,
        device: &str,
        ready: impl Fn(u64) -> bool,
    ) -> Option<DownlinkCommand> {
        let queue = self.by_device.get_mut(device)?;
        if !queue.front().is_some_and(|q| ready(q.seq)) {
            return None;
        }
        let next = queue.pop_front()?;
        if queue.is_empty() {
            self.by_device.remove(device);
        }
        self.len -= 1;
        Some(next.cmd)
    }

    /// Removes and returns every command for which `remove` holds.
    pub(super) fn take_where(&mut self, remove: impl Fn(&Queued) -> bool) -> Vec<DownlinkCommand> {
        let mut taken = Vec::new();
        self.by_device.retain(|_, queue| {
            let mut kept = VecDeque::with_capacity(queue.len());
            for q in queue.drain(..) {
                if remove(&q) {
                    taken.push(q.cmd);
                } else {
                    kept.push_back(q);
                }
            }
            *queue = kept;
            !queue.is_empty()
        });
        self.len -= taken.len();
        taken
    }

    /// The commands of `device`, in order.
    pub(super) fn of(&self, device: &str) -> impl Iterator<Item = &DownlinkCommand> {
        self.by_device
            .get(device)
            .into_iter()
            .flat_map(|q| q.iter().map(|q| &q.cmd))
    }

    /// The earliest expiry of a waiting command (Unix ms).
    pub(super) fn earliest_expiry(&self) -> Option<u64> {
        self.by_device
            .values()
            .flat_map(|q| q.iter().map(|q| q.cmd.expires_unix_ms))
            .min()
    }

    /// Every device with a queue.
    pub(super) fn devices(&self) -> impl Iterator<Item = &str> {
        self.by_device.keys().map(String::as_str)
    }
}
