//! Observe (RFC 7641) in an [`Endpoint`]: registrations and deregistrations (§2, §3.6),
//! notifications with sequence numbers, Confirmable at least once a day and replacing one still
//! in flight (§4.2, §4.5), and the end of an observation (error, Reset, timeout).

use alloc::boxed::Box;

use core::net::SocketAddr;

use crate::time::Instant;

use coap_lite::MessageType;

use super::exchange::Purpose;
use super::request::{Answer, build_packet};
use super::{Endpoint, Event, ObserveEnd, Transmit};
use crate::coap::resource::{Method, Reply, Request, ResourceId, ResourceTree, Response};
use crate::coap::wire::{self, Token};
use crate::oscore::RequestInfo;

/// A client observing a resource (RFC 7641 §3): where to, with which token, and its
/// notifications' state.
#[derive(Debug)]
pub(super) struct Observer {
    pub(super) peer: SocketAddr,
    pub(super) token: Token,
    pub(super) resource: ResourceId,
    pub(super) accept: Option<u16>,
    pub(super) last_confirmable: Instant,
    pub(super) last_message_id: u16,
    /// With OSCORE: the registration's binding, which every notification is protected with.
    pub(super) oscore: Option<Box<RequestInfo>>,
}

impl Endpoint {
    /// Sends notifications of `resource`'s current state to its observers (RFC 7641 §4.2).
    pub fn notify<S>(
        &mut self,
        now: Instant,
        resource: ResourceId,
        tree: &ResourceTree<S>,
        state: &mut S,
    ) {
        let Some(res) = tree.get(resource) else {
            return;
        };
        let Some(get) = res.handler(Method::Get) else {
            return;
        };
        let mut i = 0;
        while let Some(obs) = self.observers.get(i) {
            if obs.resource != resource {
                i += 1;
                continue;
            }
            let (peer, accept) = (obs.peer, obs.accept);
            if self.secure.is_some() && obs.oscore.is_none() {
                // Registered before the credentials: nothing to protect its notifications with.
                i += 1;
                continue;
            }
            let ticket = self.take_ticket();
            let request = Request {
                method: Method::Get,
                path: res.path(),
                query: &[],
                content_format: None,
                accept,
                payload: &[],
                peer,
                now,
                ticket,
            };
            let Reply::Now(response) = get(state, &request) else {
                i += 1;
                continue;
            };
            if self.send_notification(now, i, response) {
                i += 1;
            }
        }
    }

    /// Sends `response` as a notification to observer `i`. False when the response was an error,
    /// which ends the observation (the observer is gone, the next one is at `i`).
    fn send_notification(&mut self, now: Instant, i: usize, response: Response) -> bool {
        let Some(obs) = self.observers.get(i) else {
            return false;
        };
        let (peer, token, resource, last_confirmable) =
            (obs.peer, obs.token, obs.resource, obs.last_confirmable);
        let success = response.is_success();
        let mut answer = self.finish_block2(Answer::of(response), None);
        if success {
            answer.observe = Some(self.take_observe_seq());
        }
        let pending = self
            .in_flight
            .iter()
            .position(|f| f.peer == peer && f.purpose == Purpose::Notification(token));
        let confirmable = pending.is_some()
            || now.saturating_duration_since(last_confirmable)
                >= self.config.con_notification_interval;
        let kind = if confirmable {
            MessageType::Confirmable
        } else {
            MessageType::NonConfirmable
        };
        let message_id = self.take_message_id();
        let packet = build_packet(kind, message_id, token, &answer);
        let contents = match (self.secure.as_deref_mut(), self.observers.get_mut(i)) {
            (Some(secure), Some(obs)) => match obs.oscore.as_deref_mut() {
                Some(info) => match secure.seal_response(&packet, info, true) {
                    Ok(Some(p)) => wire::encode(&p),
                    Ok(None) => {
                        // No sequence number below the durable mark: notify once it is.
                        secure.hold_notification(resource);
                        None
                    }
                    Err(_) => None,
                },
                None => None,
            },
            _ => wire::encode(&packet),
        };
        let Some(contents) = contents else {
            return true;
        };
        self.stats.notifications += 1;
        if let Some(obs) = self.observers.get_mut(i) {
            obs.last_message_id = message_id;
            if confirmable {
                obs.last_confirmable = now;
            }
        }
        match pending.and_then(|p| self.in_flight.get_mut(p)) {
            // RFC 7641 §4.5.2: a newer notification replaces the one still in flight and
            // inherits its retransmission state.
            Some(f) => {
                f.message_id = message_id;
                f.contents = contents.clone().into_boxed_slice();
                self.transmits.push_back(Transmit {
                    destination: peer,
                    contents,
                });
            }
            None if confirmable => self.send_confirmable(
                now,
                peer,
                message_id,
                contents,
                Purpose::Notification(token),
            ),
            None => self.transmits.push_back(Transmit {
                destination: peer,
                contents,
            }),
        }
        if success {
            return true;
        }
        self.observers.remove(i);
        self.push_event(Event::ObserveEnded {
            peer,
            resource,
            reason: ObserveEnd::Error,
        });
        false
    }

    /// Registers `peer`'s observation of `resource` under `token` (or re-registers it);
    /// false when the table is full (the request is served without Observe, RFC 7641 §4.1).
    pub(super) fn register(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        token: Token,
        resource: ResourceId,
        accept: Option<u16>,
    ) -> bool {
        if let Some(o) = self
            .observers
            .iter_mut()
            .find(|o| o.peer == peer && o.token == token)
        {
            let old = o.resource;
            o.resource = resource;
            o.accept = accept;
            if old != resource {
                self.push_event(Event::ObserveEnded {
                    peer,
                    resource: old,
                    reason: ObserveEnd::Replaced,
                });
                self.push_event(Event::ObserveStarted { peer, resource });
            }
            return true;
        }
        if self.observers.len() >= usize::from(self.config.max_observers) {
            return false;
        }
        self.observers.push(Observer {
            peer,
            token,
            resource,
            accept,
            last_confirmable: now,
            last_message_id: 0,
            oscore: None,
        });
        self.push_event(Event::ObserveStarted { peer, resource });
        true
    }

    /// Ends `peer`'s observation under `token`, if any (GET with Observe = 1).
    pub(super) fn deregister(&mut self, peer: SocketAddr, token: Token) {
        if let Some(pos) = self
            .observers
            .iter()
            .position(|o| o.peer == peer && o.token == token)
        {
            let o = self.observers.remove(pos);
            self.in_flight
                .retain(|f| !(f.peer == peer && f.purpose == Purpose::Notification(token)));
            self.push_event(Event::ObserveEnded {
                peer,
                resource: o.resource,
                reason: ObserveEnd::Deregistered,
            });
        }
    }
}
