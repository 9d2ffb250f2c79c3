//! The resource-directory handlers (RFC 9176): registration, its update and removal, and who
//! may touch which registration; and the registration's other ends and moves: expiry, removal
//! by the registry (revoked or quarantined), a move the gateway confirmed.

use super::*;

/// A registration's parameters (`POST /rd`), checked.
struct Registering<'q> {
    ep: &'q str,
    lifetime: Duration,
    binding: Binding,
    links: String,
}

impl Ingress {
    /// Why an authenticated device may not do this: register under another name, or touch
    /// another device's registration. `None` when it may.
    pub(super) fn foreign(
        &self,
        path: &[&str],
        query: &[&str],
        identity: Option<&str>,
    ) -> Option<&'static str> {
        let device = identity?;
        match path {
            ["rd"] => query_value(query, "ep")
                .is_some_and(|ep| ep != device)
                .then_some("a registration's ep must be the authenticated device"),
            ["rd", loc] => loc
                .parse::<u32>()
                .ok()
                .and_then(|l| self.directory.endpoint_of_location(l))
                .is_some_and(|ep| ep != device)
                .then_some("this is another device's registration"),
            _ => None,
        }
    }

    /// `POST /rd?ep=NAME[&lt=S][&b=U|UQ]` with the device's links: registers it (again), and
    /// the edge starts observing its observable SenML resources.
    pub(super) fn register(
        &mut self,
        now: Instant,
        unix_ms: u64,
        origin: Origin<'_>,
        query: &[&str],
        format: Option<u32>,
        body: &[u8],
    ) -> Outcome {
        let peer = origin.peer;
        let Registering {
            ep,
            lifetime,
            binding,
            links,
        } = match self.registering(query, format, body) {
            Ok(r) => r,
            Err(refused) => return refused,
        };
        if origin.identity.is_none() {
            // Known by its address only: the device registering takes the address over. (An
            // authenticated device never takes another's registration: the gateway resolves
            // two devices at one address.)
            if let Some(other) = self.directory.evict_address(peer.remote, ep) {
                self.observations.forget(&other.endpoint);
            }
        }
        let (location, how) =
            self.directory
                .register(now, ep, peer, lifetime, binding, links.clone());
        self.stats.registrations += 1;
        // A registration starts the device's sleep bookkeeping afresh (its own status follows).
        if binding == Binding::UQ {
            self.sleepers.registered(now, ep);
        } else {
            self.sleepers.remove(ep);
        }
        self.observe_resources(now, unix_ms, ep, &links, binding);
        if let registry::Registered::Replaced {
            moved_from: Some(from),
        } = how
        {
            self.event(IngressEvent::AddressChanged {
                endpoint: ep.to_owned(),
                from,
                to: peer.remote,
            });
        }
        let registered = Status::Registered {
            address: peer.remote,
            detail: Some(binding.as_str()),
        };
        self.status(unix_ms, ep, registered);
        self.event(IngressEvent::Registered {
            endpoint: ep.to_owned(),
            address: peer.remote,
        });
        let mut r = reply::Response::code(ResponseType::Created);
        r.location = vec!["rd".to_owned(), location.to_string()];
        Outcome::Now(r)
    }

    /// A registration's parameters, checked: the endpoint name (usable as a topic level), the
    /// lifetime (the default when none), the binding (`U` when none), the links (UTF-8
    /// link-format).
    fn registering<'q>(
        &self,
        query: &[&'q str],
        format: Option<u32>,
        body: &[u8],
    ) -> Result<Registering<'q>, Outcome> {
        let Some(ep) = query_value(query, "ep") else {
            return Err(Outcome::error(
                ResponseType::BadRequest,
                "registration needs ep=NAME",
            ));
        };
        if !valid_level(ep) || ep.len() > 64 {
            return Err(Outcome::error(
                ResponseType::BadRequest,
                format!(
                    "endpoint name `{ep}` is not usable (1-64 chars, no / + # NUL, not starting with _)"
                ),
            ));
        }
        let lifetime = self
            .lifetime(query)?
            .unwrap_or(self.config.default_lifetime);
        let binding = match query_value(query, "b").map(Binding::parse) {
            None => Binding::U,
            Some(Some(b)) => b,
            Some(None) => {
                return Err(Outcome::error(
                    ResponseType::BadRequest,
                    "b must be U or UQ",
                ));
            }
        };
        if format.is_some_and(|f| f != u32::from(content_format::LINK_FORMAT)) {
            return Err(Outcome::error(
                ResponseType::UnsupportedContentFormat,
                "registrations carry application/link-format (40)",
            ));
        }
        let Ok(links) = String::from_utf8(body.to_vec()) else {
            return Err(Outcome::error(
                ResponseType::BadRequest,
                "link-format payload is not UTF-8",
            ));
        };
        Ok(Registering {
            ep,
            lifetime,
            binding,
            links,
        })
    }

    /// The lifetime a registration or its update asks for (`lt`, seconds), clamped into the
    /// configured range; `None` when it names none.
    fn lifetime(&self, query: &[&str]) -> Result<Option<Duration>, Outcome> {
        match query_value(query, "lt").map(str::parse::<u64>) {
            None => Ok(None),
            Some(Ok(s)) => Ok(Some(
                Duration::from_secs(s).clamp(self.config.min_lifetime, self.config.max_lifetime),
            )),
            Some(Err(_)) => Err(Outcome::error(
                ResponseType::BadRequest,
                "lt must be a number of seconds",
            )),
        }
    }

    /// `POST /rd/{location}`: the registration's lifetime starts again (a new one when `lt` is
    /// given); a new address moves it.
    pub(super) fn update(
        &mut self,
        now: Instant,
        unix_ms: u64,
        peer: Peer,
        loc: &str,
        query: &[&str],
    ) -> Outcome {
        let lifetime = match self.lifetime(query) {
            Ok(lifetime) => lifetime,
            Err(refused) => return refused,
        };
        let Some(location) = loc.parse::<u32>().ok() else {
            return Outcome::error(ResponseType::NotFound, format!("no registration /rd/{loc}"));
        };
        let Some((reg, moved)) = self.directory.update(now, location, peer, lifetime) else {
            return Outcome::error(ResponseType::NotFound, format!("no registration /rd/{loc}"));
        };
        let endpoint = reg.endpoint.clone();
        self.stats.updates += 1;
        if let Some(from) = moved {
            self.moved(unix_ms, endpoint, from, peer.remote);
        }
        Outcome::Now(reply::Response::code(ResponseType::Changed))
    }

    /// `DELETE /rd/{location}`: the registration ends.
    pub(super) fn deregister(&mut self, unix_ms: u64, loc: &str) -> Outcome {
        let Some(reg) = loc
            .parse::<u32>()
            .ok()
            .and_then(|l| self.directory.remove_location(l))
        else {
            return Outcome::error(ResponseType::NotFound, format!("no registration /rd/{loc}"));
        };
        self.stats.deregistrations += 1;
        self.ended(unix_ms, &reg, "deregistered");
        self.event(IngressEvent::Deregistered {
            endpoint: reg.endpoint,
        });
        Outcome::Now(reply::Response::code(ResponseType::Deleted))
    }

    /// Ends the registrations whose lifetime ran out.
    pub(super) fn expire_registrations(&mut self, now: Instant, unix_ms: u64) {
        for reg in self.directory.expire(now) {
            self.stats.expirations += 1;
            self.ended(unix_ms, &reg, "expired");
            self.event(IngressEvent::Expired {
                endpoint: reg.endpoint,
            });
        }
    }

    /// Ends `device`'s registration because it may no longer talk (revoked or quarantined in
    /// the registry); its status becomes `gone` with `reason`.
    pub fn remove_device(&mut self, unix_ms: u64, device: &str, reason: &str) {
        let Some(reg) = self.directory.remove(device) else {
            return;
        };
        self.ended(unix_ms, &reg, reason);
        self.event(IngressEvent::Deregistered {
            endpoint: reg.endpoint,
        });
    }

    /// A registration ended (`reason`): the edge's observations of the device and its sleep
    /// bookkeeping go, its status becomes `gone`.
    fn ended(&mut self, unix_ms: u64, reg: &Registration, reason: &str) {
        self.observations.forget(&reg.endpoint);
        self.sleepers.remove(&reg.endpoint);
        let gone = Status::Gone {
            address: reg.address,
            reason,
        };
        self.status(unix_ms, &reg.endpoint, gone);
    }

    /// Moves `device`'s registration (and the observations of it) to `peer`, after the gateway
    /// confirmed it there (e.g. an NB-IoT re-attach). Returns the old address, or `None` when
    /// the device is not registered or already there.
    pub fn rebind(
        &mut self,
        now: Instant,
        unix_ms: u64,
        device: &str,
        peer: Peer,
    ) -> Option<SocketAddr> {
        let from = self.directory.move_to(now, device, peer)?;
        self.observations.moved(device, peer.remote);
        self.moved(unix_ms, device.to_owned(), from, peer.remote);
        Some(from)
    }

    /// A registered device now talks from `to`: its status says so, and an event.
    fn moved(&mut self, unix_ms: u64, endpoint: String, from: SocketAddr, to: SocketAddr) {
        let registered = Status::Registered {
            address: to,
            detail: None,
        };
        self.status(unix_ms, &endpoint, registered);
        self.event(IngressEvent::AddressChanged { endpoint, from, to });
    }
}
