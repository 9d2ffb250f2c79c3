//! The resource-directory handlers (RFC 9176): registration, its update and removal, and who
//! may touch which registration.

use super::*;

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
        let Some(ep) = query_value(query, "ep") else {
            return Outcome::error(ResponseType::BadRequest, "registration needs ep=NAME");
        };
        if !valid_level(ep) || ep.len() > 64 {
            return Outcome::error(
                ResponseType::BadRequest,
                format!(
                    "endpoint name `{ep}` is not usable (1-64 chars, no / + # NUL, not starting with _)"
                ),
            );
        }
        let lifetime = match query_value(query, "lt").map(str::parse::<u64>) {
            None => self.config.default_lifetime,
            Some(Ok(s)) => {
                Duration::from_secs(s).clamp(self.config.min_lifetime, self.config.max_lifetime)
            }
            Some(Err(_)) => {
                return Outcome::error(ResponseType::BadRequest, "lt must be a number of seconds");
            }
        };
        let binding = match query_value(query, "b").map(Binding::parse) {
            None => Binding::U,
            Some(Some(b)) => b,
            Some(None) => return Outcome::error(ResponseType::BadRequest, "b must be U or UQ"),
        };
        if format.is_some_and(|f| f != u32::from(content_format::LINK_FORMAT)) {
            return Outcome::error(
                ResponseType::UnsupportedContentFormat,
                "registrations carry application/link-format (40)",
            );
        }
        let Ok(links) = String::from_utf8(body.to_vec()) else {
            return Outcome::error(ResponseType::BadRequest, "link-format payload is not UTF-8");
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
        self.status(
            unix_ms,
            ep,
            "registered",
            Some(peer.remote),
            Some(binding.as_str()),
        );
        self.event(IngressEvent::Registered {
            endpoint: ep.to_owned(),
            address: peer.remote,
        });
        let mut r = reply::Response::code(ResponseType::Created);
        r.location = vec!["rd".to_owned(), location.to_string()];
        Outcome::Now(r)
    }

    pub(super) fn update(
        &mut self,
        now: Instant,
        unix_ms: u64,
        peer: Peer,
        loc: &str,
        query: &[&str],
    ) -> Outcome {
        let lifetime = match query_value(query, "lt").map(str::parse::<u64>) {
            None => None,
            Some(Ok(s)) => Some(
                Duration::from_secs(s).clamp(self.config.min_lifetime, self.config.max_lifetime),
            ),
            Some(Err(_)) => {
                return Outcome::error(ResponseType::BadRequest, "lt must be a number of seconds");
            }
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
            self.status(unix_ms, &endpoint, "registered", Some(peer.remote), None);
            self.event(IngressEvent::AddressChanged {
                endpoint,
                from,
                to: peer.remote,
            });
        }
        Outcome::Now(reply::Response::code(ResponseType::Changed))
    }

    pub(super) fn deregister(&mut self, unix_ms: u64, loc: &str) -> Outcome {
        let Some(reg) = loc
            .parse::<u32>()
            .ok()
            .and_then(|l| self.directory.remove_location(l))
        else {
            return Outcome::error(ResponseType::NotFound, format!("no registration /rd/{loc}"));
        };
        self.stats.deregistrations += 1;
        self.observations.forget(&reg.endpoint);
        self.sleepers.remove(&reg.endpoint);
        self.status(
            unix_ms,
            &reg.endpoint,
            "gone",
            Some(reg.address),
            Some("deregistered"),
        );
        self.event(IngressEvent::Deregistered {
            endpoint: reg.endpoint,
        });
        Outcome::Now(reply::Response::code(ResponseType::Deleted))
    }
}
