//! Who hears whom, how well and how late: per-link delivery probability and latency between
//! participants, keyed by their link-layer addresses (as RIOT's `zep_dispatch` keys its topology
//! by MAC address, so a participant keeps its links when its UDP port changes).
//!
//! A link with delivery probability above 0 is *in range*: its frames reach the receiver (unless
//! lost by the draw) and, with the airtime model on, they occupy the receiver's channel (its CCA
//! sees them, and they collide with other frames there). A link that does not exist, or with
//! probability 0, is out of range: the receiver neither hears nor senses the sender — the
//! hidden terminal.

use std::collections::HashMap;
use std::time::Duration;

use v6iot_sdk::radio::mac::LinkAddr;

/// How frames go from one participant to another.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkModel {
    /// The probability that a frame (not lost to a collision) arrives: 1.0 always, 0.0 never
    /// (out of range).
    pub delivery: f64,
    /// How long after the end of its transmission a frame is handed to the receiver.
    pub latency: Duration,
}

impl LinkModel {
    /// Every frame arrives at once.
    pub const PERFECT: LinkModel = LinkModel {
        delivery: 1.0,
        latency: Duration::ZERO,
    };

    /// Whether the receiver hears the sender at all.
    #[must_use]
    pub fn in_range(&self) -> bool {
        self.delivery > 0.0
    }

    /// The LQI a receiver reports for this link: the delivery probability scaled to 0–255 (as
    /// `zep_dispatch` does).
    #[must_use]
    pub fn lqi(&self) -> u8 {
        (self.delivery.clamp(0.0, 1.0) * 255.0).round() as u8
    }
}

/// The links between participants.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    /// The link between two participants with no entry of their own; `None`: they are out of
    /// range of each other.
    default: Option<LinkModel>,
    /// Directed links (sender, receiver) that differ from the default.
    links: HashMap<(LinkAddr, LinkAddr), LinkModel>,
}

impl Default for Topology {
    fn default() -> Self {
        Topology::flat(LinkModel::PERFECT)
    }
}

impl Topology {
    /// Everyone hears everyone through `model`, unless a link says otherwise.
    #[must_use]
    pub fn flat(model: LinkModel) -> Topology {
        Topology {
            default: Some(model),
            links: HashMap::new(),
        }
    }

    /// Nobody hears anybody but through the links set with [`Topology::set_link`].
    #[must_use]
    pub fn explicit() -> Topology {
        Topology {
            default: None,
            links: HashMap::new(),
        }
    }

    /// Sets the link from `from` to `to` (one direction).
    pub fn set_link(&mut self, from: LinkAddr, to: LinkAddr, model: LinkModel) {
        self.links.insert((from, to), model);
    }

    /// Sets the links between `a` and `b` both ways.
    pub fn set_symmetric(&mut self, a: LinkAddr, b: LinkAddr, model: LinkModel) {
        self.set_link(a, b, model);
        self.set_link(b, a, model);
    }

    /// The link from a sender to a receiver (their link-layer addresses, where known), or
    /// `None` when the receiver is out of the sender's range. Participants whose address is not
    /// known yet get the default.
    #[must_use]
    pub fn link(&self, from: Option<LinkAddr>, to: Option<LinkAddr>) -> Option<LinkModel> {
        let own = match (from, to) {
            (Some(a), Some(b)) if !self.links.is_empty() => self.links.get(&(a, b)).copied(),
            _ => None,
        };
        own.or(self.default).filter(LinkModel::in_range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: LinkAddr = LinkAddr::Extended([2, 0, 0, 0, 0, 0, 0, 1]);
    const B: LinkAddr = LinkAddr::Extended([2, 0, 0, 0, 0, 0, 0, 2]);
    const C: LinkAddr = LinkAddr::Short([0, 3]);

    #[test]
    fn flat_explicit_and_directed_links() {
        let lossy = LinkModel {
            delivery: 0.5,
            latency: Duration::from_millis(3),
        };
        let mut flat = Topology::flat(LinkModel::PERFECT);
        flat.set_link(A, B, lossy);
        flat.set_link(
            B,
            C,
            LinkModel {
                delivery: 0.0,
                ..LinkModel::PERFECT
            },
        );
        assert_eq!(flat.link(Some(A), Some(B)), Some(lossy));
        assert_eq!(flat.link(Some(B), Some(A)), Some(LinkModel::PERFECT));
        assert_eq!(
            flat.link(Some(B), Some(C)),
            None,
            "probability 0 is out of range"
        );
        assert_eq!(flat.link(None, Some(C)), Some(LinkModel::PERFECT));

        let mut explicit = Topology::explicit();
        explicit.set_symmetric(A, B, lossy);
        assert_eq!(explicit.link(Some(B), Some(A)), Some(lossy));
        assert_eq!(explicit.link(Some(A), Some(C)), None);
        assert_eq!(explicit.link(None, Some(A)), None);
        assert_eq!(lossy.lqi(), 128);
        assert_eq!(LinkModel::PERFECT.lqi(), 255);
    }
}
