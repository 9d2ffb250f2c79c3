//! The keyring: one OSCORE security context per active device, found by its kid (the device's
//! Sender ID), built from the registry's credentials and kept in step with the registry.
//!
//! The edge's Sender ID is the empty byte string, the device's is its kid; no ID Context;
//! AES-CCM-16-64-128 and HKDF-SHA-256. A context survives a registry reload as long as the
//! device's secret and salt are unchanged (same fingerprint), so its replay window and sender
//! sequence number carry on; a rotated secret gives a fresh context.
//!
//! Because the edge's Sender ID is empty, two devices with the same secret and salt would get
//! the same edge key and reuse its nonces: the registry refuses a secret that another device
//! already has ([`crate::registry_db::unique`]).

use foldhash::HashMap;

use v6iot_sdk::oscore::{ContextConfig, ContextInput, OscoreError, SecurityContext};

use v6iot_credentials::{DeviceState, Ipv6Prefix, MasterSecret};

/// One device as the registry holds it, plus the OSCORE state stored for it.
#[derive(Debug, Clone)]
pub struct DeviceKeys {
    /// The device id (the registration's `ep`, the MQTT topic level).
    pub id: String,
    /// Its OSCORE kid (Sender ID).
    pub kid: Vec<u8>,
    /// The Master Secret.
    pub master_secret: MasterSecret,
    /// The Master Salt (empty when none).
    pub master_salt: Vec<u8>,
    /// Source prefixes it may send from; empty means anywhere.
    pub prefixes: Vec<Ipv6Prefix>,
    /// Active, quarantined or revoked.
    pub state: DeviceState,
    /// What was persisted for this context (zeros for a new one).
    pub stored: StoredState,
}

/// The persisted OSCORE state of one device's context (see [`super::persist`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredState {
    /// The edge's sender sequence numbers below this may have been used: continue here.
    pub sender_mark: u64,
    /// Partial IVs of the device below this were accepted before: refuse them.
    pub replay_floor: u64,
    /// Which secret and salt this state belongs to (a rotation starts afresh).
    pub fingerprint: [u8; 8],
}

/// A device with a context.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) id: String,
    pub(super) kid: Vec<u8>,
    pub(super) ctx: SecurityContext,
    pub(super) prefixes: Vec<Ipv6Prefix>,
    pub(super) fingerprint: [u8; 8],
    /// The replay floor last made durable.
    pub(super) floor_durable: u64,
    /// The replay floor to make durable next (one past the highest answered Partial IV).
    pub(super) floor_wanted: u64,
}

impl Entry {
    /// True when `addr` is inside one of the allowed prefixes (or none are set).
    pub(super) fn allows(&self, addr: std::net::Ipv6Addr) -> bool {
        self.prefixes.is_empty() || self.prefixes.iter().any(|p| p.contains(addr))
    }
}

/// What a registry reload changed, for the audit trail and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChange {
    /// A device got a context (new, reinstated or rotated).
    Loaded {
        /// The device.
        device: String,
        /// Its kid.
        kid: Vec<u8>,
    },
    /// A device lost its context: it is no longer active, or was deleted (`state` `None`).
    Dropped {
        /// The device.
        device: String,
        /// Its kid.
        kid: Vec<u8>,
        /// Its state now.
        state: Option<DeviceState>,
    },
    /// A device's credentials do not make a context (e.g. an empty kid).
    Unusable(String),
}

/// The contexts by kid, and the devices refused by state.
#[derive(Debug, Default)]
pub(super) struct Keyring {
    by_kid: HashMap<Vec<u8>, Entry>,
    kid_of: HashMap<String, Vec<u8>>,
    refused: HashMap<Vec<u8>, (String, DeviceState)>,
    step: u64,
}

impl Keyring {
    pub(super) fn new(persist_step: u64) -> Keyring {
        Keyring {
            step: persist_step.max(2),
            ..Keyring::default()
        }
    }

    pub(super) fn len(&self) -> usize {
        self.by_kid.len()
    }

    pub(super) fn get(&self, kid: &[u8]) -> Option<&Entry> {
        self.by_kid.get(kid)
    }

    pub(super) fn get_mut(&mut self, kid: &[u8]) -> Option<&mut Entry> {
        self.by_kid.get_mut(kid)
    }

    pub(super) fn device_mut(&mut self, id: &str) -> Option<&mut Entry> {
        let kid = self.kid_of.get(id)?;
        self.by_kid.get_mut(kid)
    }

    /// The device and state of a kid that is known but not active.
    pub(super) fn refused(&self, kid: &[u8]) -> Option<&(String, DeviceState)> {
        self.refused.get(kid)
    }

    /// Replaces the set of devices with `devices` (the registry's whole list).
    pub(super) fn sync(&mut self, devices: Vec<DeviceKeys>) -> Vec<KeyChange> {
        let mut changes = Vec::new();
        let mut old = std::mem::take(&mut self.by_kid);
        self.kid_of.clear();
        self.refused.clear();
        for d in devices {
            if d.state != DeviceState::Active {
                if old.remove(&d.kid).is_some() {
                    changes.push(KeyChange::Dropped {
                        device: d.id.clone(),
                        kid: d.kid.clone(),
                        state: Some(d.state),
                    });
                }
                self.refused.insert(d.kid, (d.id, d.state));
                continue;
            }
            let fingerprint = d.stored.fingerprint;
            let kept = old
                .remove(&d.kid)
                .filter(|e| e.fingerprint == fingerprint && e.id == d.id);
            let entry = match kept {
                Some(mut e) => {
                    e.prefixes = d.prefixes;
                    e
                }
                None => match self.context(&d) {
                    Ok(ctx) => {
                        changes.push(KeyChange::Loaded {
                            device: d.id.clone(),
                            kid: d.kid.clone(),
                        });
                        Entry {
                            id: d.id.clone(),
                            kid: d.kid.clone(),
                            ctx,
                            prefixes: d.prefixes,
                            fingerprint,
                            floor_durable: d.stored.replay_floor,
                            floor_wanted: d.stored.replay_floor,
                        }
                    }
                    Err(_) => {
                        changes.push(KeyChange::Unusable(d.id));
                        continue;
                    }
                },
            };
            self.kid_of.insert(d.id, d.kid.clone());
            self.by_kid.insert(d.kid, entry);
        }
        for e in old.into_values() {
            if !self.kid_of.contains_key(&e.id) {
                changes.push(KeyChange::Dropped {
                    device: e.id,
                    kid: e.kid,
                    state: None,
                });
            }
        }
        changes
    }

    fn context(&self, d: &DeviceKeys) -> Result<SecurityContext, OscoreError> {
        let input = ContextInput {
            master_secret: d.master_secret.as_bytes().to_vec(),
            master_salt: d.master_salt.clone(),
            id_context: None,
            sender_id: Vec::new(),
            recipient_id: d.kid.clone(),
        };
        let config = ContextConfig {
            persist_step: self.step,
            ..ContextConfig::default()
        };
        let mut ctx = SecurityContext::restore(&input, config, d.stored.sender_mark)?;
        ctx.set_replay_floor(d.stored.replay_floor);
        Ok(ctx)
    }
}
