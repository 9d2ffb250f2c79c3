//! Deduplication per peer (RFC 7252 §4.5): the message IDs each peer sent last, with the reply
//! to repeat for a duplicate.

use super::*;

/// A duplicate request (RFC 7252 §4.5): counted; a Confirmable one gets the reply remembered
/// for it again, if it has one yet.
fn answer_duplicate(
    stats: &mut IngressStats,
    transmits: &mut VecDeque<Outgoing>,
    peer: Peer,
    r: &Recent,
    confirmable: bool,
) {
    stats.duplicates += 1;
    if let (Reply::Sent(bytes), true) = (&r.reply, confirmable) {
        transmits.push_back(Outgoing::answer(peer, bytes.to_vec()));
    }
}

#[derive(Debug)]
pub(super) struct Recent {
    pub(super) expires: Instant,
    pub(super) reply: Reply,
}

/// Message IDs remembered per peer; a device with NSTART = 1 has far fewer in flight.
const RECENT_PER_PEER: usize = 8;

/// How often remembered message IDs are swept while there are any (or commands are pending).
pub(super) const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// The request an answer is for: where it came from, its message ID and token.
#[derive(Debug, Clone, Copy)]
pub(super) struct Answering<'t> {
    pub(super) peer: Peer,
    pub(super) message_id: u16,
    pub(super) token: &'t [u8],
    pub(super) confirmable: bool,
}

/// The message IDs one peer sent last, oldest first: at most [`RECENT_PER_PEER`], the oldest
/// dropped for a new one when full. A ring inline in the peer's table entry, so a new peer
/// costs no allocation of its own; the IDs sit together next to the key, so telling a new
/// message from a duplicate reads one cache line.
#[derive(Debug, Default)]
pub(super) struct PeerRecent {
    ids: [u16; RECENT_PER_PEER],
    /// Where the oldest is.
    head: u8,
    len: u8,
    /// Expiry and reply of `ids[i]` (`None` when the slot is free).
    entries: [Option<Recent>; RECENT_PER_PEER],
}

impl PeerRecent {
    /// Slot indexes, oldest first.
    pub(super) fn order(&self) -> impl Iterator<Item = usize> + use<> {
        let head = usize::from(self.head);
        (0..usize::from(self.len)).map(move |i| (head + i) % RECENT_PER_PEER)
    }

    pub(super) fn slot_of(&self, message_id: u16) -> Option<usize> {
        self.order().find(|&i| self.ids.get(i) == Some(&message_id))
    }

    pub(super) fn find(&self, message_id: u16) -> Option<&Recent> {
        let i = self.slot_of(message_id)?;
        self.entries.get(i).and_then(Option::as_ref)
    }

    pub(super) fn find_mut(&mut self, message_id: u16) -> Option<&mut Recent> {
        let i = self.slot_of(message_id)?;
        self.entries.get_mut(i).and_then(Option::as_mut)
    }

    pub(super) fn push(&mut self, message_id: u16, recent: Recent) {
        if usize::from(self.len) >= RECENT_PER_PEER {
            if let Some(oldest) = self.entries.get_mut(usize::from(self.head)) {
                *oldest = None;
            }
            self.head = ((usize::from(self.head) + 1) % RECENT_PER_PEER) as u8;
            self.len -= 1;
        }
        let i = (usize::from(self.head) + usize::from(self.len)) % RECENT_PER_PEER;
        if let (Some(id), Some(entry)) = (self.ids.get_mut(i), self.entries.get_mut(i)) {
            *id = message_id;
            *entry = Some(recent);
            self.len += 1;
        }
    }

    /// Keeps the entries `keep(message_id, entry)` says yes to, in their order.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(u16, &Recent) -> bool) {
        let order: [Option<usize>; RECENT_PER_PEER] = {
            let mut order = [None; RECENT_PER_PEER];
            for (o, i) in order.iter_mut().zip(self.order()) {
                *o = Some(i);
            }
            order
        };
        let ids = self.ids;
        let mut entries = std::mem::take(&mut self.entries);
        self.head = 0;
        self.len = 0;
        for i in order.into_iter().flatten() {
            if let (Some(&id), Some(r)) = (ids.get(i), entries.get_mut(i).and_then(Option::take))
                && keep(id, &r)
            {
                self.push(id, r);
            }
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Ingress {
    pub(super) fn repeat(&mut self, peer: Peer, message_id: u16, confirmable: bool) -> bool {
        let Some(r) = self
            .recent
            .get(&peer.remote)
            .and_then(|l| l.find(message_id))
        else {
            return false;
        };
        answer_duplicate(&mut self.stats, &mut self.transmits, peer, r, confirmable);
        true
    }

    pub(super) fn remember(&mut self, now: Instant, peer: Peer, message_id: u16, reply: Reply) {
        let expires = now + self.config.exchange_lifetime;
        self.recent
            .entry(peer.remote)
            .or_default()
            .push(message_id, Recent { expires, reply });
        self.next_sweep.get_or_insert(now + SWEEP_EVERY);
    }

    /// A request's deduplication in one table lookup (RFC 7252 §4.5): a message ID this peer
    /// sent within EXCHANGE_LIFETIME is a duplicate (its reply sent again if it was Confirmable
    /// and has one; `false`); a new one is remembered as pending (`true`), its reply set later
    /// with [`Ingress::set_reply`].
    pub(super) fn first_time(
        &mut self,
        now: Instant,
        peer: Peer,
        message_id: u16,
        confirmable: bool,
    ) -> bool {
        let list = self.recent.entry(peer.remote).or_default();
        if let Some(r) = list.find(message_id) {
            answer_duplicate(&mut self.stats, &mut self.transmits, peer, r, confirmable);
            return false;
        }
        let expires = now + self.config.exchange_lifetime;
        list.push(
            message_id,
            Recent {
                expires,
                reply: Reply::Pending,
            },
        );
        self.next_sweep.get_or_insert(now + SWEEP_EVERY);
        true
    }

    /// Sends `response` to `request` and keeps it as the reply to the request's duplicates.
    pub(super) fn answer(&mut self, request: Answering<'_>, response: &Response) {
        let bytes = reply::response(
            request.message_id,
            request.token,
            request.confirmable,
            self.take_message_id(),
            response,
        );
        self.send(request.peer, bytes.clone());
        let reply = Reply::repeating(request.confirmable, bytes);
        self.set_reply(request.peer, request.message_id, reply);
    }

    /// Forgets the message IDs older than EXCHANGE_LIFETIME, when a sweep is due; the next one
    /// is due in [`SWEEP_EVERY`] while any are left or commands are pending.
    pub(super) fn sweep(&mut self, now: Instant) {
        if self.next_sweep.is_none_or(|t| t > now) {
            return;
        }
        self.recent.retain(|_, list| {
            list.retain(|_, r| r.expires > now);
            !list.is_empty()
        });
        let busy = !self.recent.is_empty() || self.downlink.pending() > 0;
        self.next_sweep = busy.then(|| now + SWEEP_EVERY);
    }

    /// The reply to a remembered message ID, to repeat for its duplicates.
    pub(super) fn set_reply(&mut self, peer: Peer, message_id: u16, reply: Reply) {
        if let Some(r) = self
            .recent
            .get_mut(&peer.remote)
            .and_then(|l| l.find_mut(message_id))
        {
            r.reply = reply;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recent() -> Recent {
        Recent {
            expires: Instant::now(),
            reply: Reply::Silent,
        }
    }

    fn ids(list: &PeerRecent) -> Vec<u16> {
        let ids: Vec<u16> = list.order().map(|i| list.ids[i]).collect();
        assert!(ids.iter().all(|&id| list.find(id).is_some()));
        let used = list.entries.iter().filter(|e| e.is_some()).count();
        assert_eq!(used, ids.len(), "an entry per remembered ID");
        ids
    }

    #[test]
    fn the_ring_keeps_the_newest_in_order() {
        let mut list = PeerRecent::default();
        assert!(list.is_empty() && list.find(1).is_none());
        for id in 1..=11 {
            list.push(id, recent());
        }
        assert_eq!(ids(&list), (4..=11).collect::<Vec<_>>());
        assert!(list.find(3).is_none());
        assert!(list.find(4).is_some());
        list.find_mut(5).unwrap().reply = Reply::Pending;
        assert!(matches!(list.find(5).unwrap().reply, Reply::Pending));

        list.retain(|id, _| id % 2 == 0);
        assert_eq!(ids(&list), [4, 6, 8, 10]);
        for id in 20..=25 {
            list.push(id, recent());
        }
        // Four more than room for: 4 and 6 go.
        assert_eq!(ids(&list), [8, 10, 20, 21, 22, 23, 24, 25]);
        list.retain(|_, _| false);
        assert!(list.is_empty());
        assert!(ids(&list).is_empty());
    }
}
