//! Which PUBLISH is which (sans-IO): rumqttc reports a QoS 1 PUBLISH only by packet id, in the
//! order the requests were handed to it (`Outgoing::Publish(pkid)`), and its PUBACK by packet
//! id. This window remembers the item behind each request until the PUBACK comes, keeps at most
//! `window` of them, and gives every unacknowledged item back when the connection is lost.

use std::collections::{BTreeMap, HashMap, VecDeque};

/// A PUBLISH that rumqttc announced or acknowledged but that this window does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Anomaly {
    /// `Outgoing::Publish` with no request waiting for its packet id.
    Unexpected(u16),
    /// `Outgoing::Publish` with a packet id still in use (the older item stays tracked).
    Reused(u16),
}

#[derive(Debug)]
pub(crate) struct InFlight<T> {
    window: usize,
    next_seq: u64,
    /// Handed over and not acknowledged, by hand-over order.
    items: BTreeMap<u64, T>,
    /// Handed over; rumqttc has not yet told the packet id.
    unannounced: VecDeque<u64>,
    /// Packet id → item.
    by_pkid: HashMap<u16, u64>,
}

impl<T> InFlight<T> {
    pub(crate) fn new(window: usize) -> Self {
        InFlight {
            window: window.max(1),
            next_seq: 0,
            items: BTreeMap::new(),
            unannounced: VecDeque::new(),
            by_pkid: HashMap::new(),
        }
    }

    /// Items handed over and not acknowledged.
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn has_room(&self) -> bool {
        self.items.len() < self.window
    }

    /// `item` was handed to rumqttc.
    pub(crate) fn push(&mut self, item: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.items.insert(seq, item);
        self.unannounced.push_back(seq);
    }

    /// rumqttc wrote the next PUBLISH with packet id `pkid`.
    pub(crate) fn announced(&mut self, pkid: u16) -> Result<(), Anomaly> {
        let seq = self
            .unannounced
            .pop_front()
            .ok_or(Anomaly::Unexpected(pkid))?;
        match self.by_pkid.insert(pkid, seq) {
            None => Ok(()),
            // The older item stays in `items` (and so comes back with the next reset).
            Some(_older) => Err(Anomaly::Reused(pkid)),
        }
    }

    /// The PUBACK for `pkid` arrived: the item, if known.
    pub(crate) fn acked(&mut self, pkid: u16) -> Option<T> {
        let seq = self.by_pkid.remove(&pkid)?;
        self.items.remove(&seq)
    }

    /// The connection is gone: every unacknowledged item, in hand-over order.
    pub(crate) fn reset(&mut self) -> Vec<T> {
        self.unannounced.clear();
        self.by_pkid.clear();
        std::mem::take(&mut self.items).into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_packet_ids_in_hand_over_order() {
        let mut w = InFlight::new(3);
        w.push("a");
        w.push("b");
        assert!(w.has_room());
        w.push("c");
        assert!(!w.has_room());
        assert_eq!(w.announced(7), Ok(()));
        assert_eq!(w.announced(8), Ok(()));
        assert_eq!(w.acked(8), Some("b"));
        assert!(w.has_room());
        assert_eq!(w.acked(8), None, "a second PUBACK is ignored");
        assert_eq!(w.acked(9), None, "an unknown PUBACK is ignored");
        assert_eq!(w.acked(7), Some("a"));
        assert_eq!(w.len(), 1);
        assert_eq!(
            w.announced(7),
            Ok(()),
            "packet ids are reused after their PUBACK"
        );
        assert_eq!(w.acked(7), Some("c"));
        assert_eq!(w.announced(1), Err(Anomaly::Unexpected(1)));
    }

    #[test]
    fn reset_returns_everything_unacked_in_order() {
        let mut w = InFlight::new(10);
        for i in 0..5 {
            w.push(i);
        }
        w.announced(1).unwrap();
        w.announced(2).unwrap();
        w.announced(3).unwrap();
        assert_eq!(w.acked(2), Some(1));
        assert_eq!(w.reset(), [0, 2, 3, 4]);
        assert_eq!(w.len(), 0);
        assert_eq!(w.acked(1), None, "old packet ids are forgotten");
        w.push(9);
        w.announced(1).unwrap();
        assert_eq!(w.acked(1), Some(9));
    }

    #[test]
    fn a_reused_packet_id_keeps_both_items_for_the_reset() {
        let mut w = InFlight::new(10);
        w.push("a");
        w.push("b");
        w.announced(1).unwrap();
        assert_eq!(w.announced(1), Err(Anomaly::Reused(1)));
        assert_eq!(w.acked(1), Some("b"));
        assert_eq!(w.reset(), ["a"]);
    }
}
