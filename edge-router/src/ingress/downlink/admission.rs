//! Which platform commands the downlink takes (sans-IO): the allow-list of devices, the size a
//! device's path can carry, and the queue caps. A refused command gets an error result at once
//! (status `rejected`, the [`Refusal`] as its `error`) and is never queued, journaled or
//! remembered (the same request id may be sent again later).
//!
//! # The size limit
//!
//! The edge sends a command as one CoAP request in one datagram (no Block1 on the downlink), so
//! the whole request must fit what the device can take:
//!
//! - the message: the request as the edge encodes it plus [`OSCORE_REQUEST_OVERHEAD`] must be
//!   at most `max_message_bytes`, by default 1152 bytes — RFC 7252 §4.6's bound for a path
//!   whose MTU is not known (an IPv6 minimum MTU of 1280 less IPv6, UDP and room for more
//!   headers), which a 6LoWPAN device reassembles and an NB-IoT bearer carries;
//! - the payload: at most `max_payload_bytes`, by default 1024 bytes — RFC 7252 §4.6's payload
//!   bound and the SDK's default block size (`block_szx` 6), the largest body a device takes
//!   without Block1.
//!
//! The overhead is counted for every command, with or without OSCORE (lab mode): a command that
//! fits in the lab fits in production.

use super::DownlinkCommand;

/// Bytes OSCORE (RFC 8613) adds to a request the edge protects, at most: the OSCORE option
/// (1 byte of option header, the flag byte, a Partial IV of up to 5 bytes and the edge's empty
/// Sender ID as kid), the inner code (1), the payload marker (1, present once encrypted), the
/// AES-CCM-16-64-128 tag (8), Observe repeated as an outer option (1), and 5 bytes to spare for
/// option deltas that need an extended byte. The test `oscore_overhead_is_bounded` protects
/// the largest requests with the SDK and checks it.
pub const OSCORE_REQUEST_OVERHEAD: usize = 24;

/// Bounds and the allow-list of platform commands (`[commands]` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLimits {
    /// Commands waiting or in flight for one device; one more is refused with `queue full`.
    pub max_per_device: usize,
    /// Commands waiting or in flight over all devices; one more is refused with `queue full`.
    pub max_total: usize,
    /// The largest request, OSCORE overhead included, in bytes (see the module docs).
    pub max_message_bytes: usize,
    /// The largest command payload, in bytes (see the module docs).
    pub max_payload_bytes: usize,
    /// `Some`: only these devices take commands from the platform.
    pub allow: Option<DeviceAllowList>,
}

impl Default for CommandLimits {
    fn default() -> Self {
        CommandLimits {
            max_per_device: 64,
            max_total: 32_768,
            max_message_bytes: 1152,
            max_payload_bytes: 1024,
            allow: None,
        }
    }
}

/// Device names that may be commanded: exact names, or prefixes written with a final `*`
/// (`valve-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAllowList {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

/// A pattern of the allow-list that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}`: a device name, or a prefix ending in one `*` (`valve-*`); no other `*`, not empty")]
pub struct BadPattern(pub String);

impl DeviceAllowList {
    /// The list of `patterns`.
    ///
    /// # Errors
    ///
    /// [`BadPattern`] for an empty pattern or a `*` anywhere but at the end.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<DeviceAllowList, BadPattern> {
        let mut list = DeviceAllowList {
            exact: Vec::new(),
            prefixes: Vec::new(),
        };
        for p in patterns {
            let p = p.as_ref();
            match p.strip_suffix('*') {
                _ if p.is_empty() => return Err(BadPattern(p.to_owned())),
                Some(prefix) if !prefix.contains('*') => list.prefixes.push(prefix.to_owned()),
                None if !p.contains('*') => list.exact.push(p.to_owned()),
                _ => return Err(BadPattern(p.to_owned())),
            }
        }
        Ok(list)
    }

    /// Whether `device` matches a pattern.
    pub fn allows(&self, device: &str) -> bool {
        self.exact.iter().any(|e| e == device)
            || self.prefixes.iter().any(|p| device.starts_with(p.as_str()))
    }
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The device is not on the allow-list.
    #[error("not allowed: device `{device}` is not in commands.allow_devices")]
    NotAllowed {
        /// The device.
        device: String,
    },
    /// The method is not GET, PUT, POST or DELETE (the bridge checks this first).
    #[error("the request could not be encoded (method `{0}`)")]
    Unencodable(String),
    /// The request would not fit the device's path.
    #[error(
        "too large: the request would be {bytes} bytes with OSCORE, over the {max} a device's \
         path takes (commands.max_message_bytes)"
    )]
    MessageTooLarge {
        /// Its size with the OSCORE overhead.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The payload is more than a device takes in one block.
    #[error(
        "too large: a payload of {bytes} bytes is over the {max} a device takes in one block \
         (commands.max_payload_bytes)"
    )]
    PayloadTooLarge {
        /// Payload bytes.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The device has as many commands waiting as it may.
    #[error(
        "queue full: {max} commands already wait for device `{device}` \
         (commands.max_queued_per_device)"
    )]
    DeviceQueueFull {
        /// The device.
        device: String,
        /// The cap.
        max: usize,
    },
    /// All devices together have as many commands waiting as the edge keeps.
    #[error("queue full: {max} commands already wait over all devices (commands.max_queued_total)")]
    TotalQueueFull {
        /// The cap.
        max: usize,
    },
}

impl Refusal {
    /// Whether this is a `queue full` refusal (the platform may try again later).
    pub fn is_queue_full(&self) -> bool {
        matches!(
            self,
            Refusal::DeviceQueueFull { .. } | Refusal::TotalQueueFull { .. }
        )
    }
}

/// How many commands wait now: for the command's device, and in all.
#[derive(Debug, Clone, Copy)]
pub(super) struct Waiting {
    pub(super) device: usize,
    pub(super) total: usize,
}

impl CommandLimits {
    /// Whether to take `cmd` (`encoded`: its request's length without OSCORE). The edge's own
    /// requests (`internal`) are not on the allow-list's or the caps' account, only the size.
    pub(super) fn admit(
        &self,
        cmd: &DownlinkCommand,
        encoded: Option<usize>,
        internal: bool,
        waiting: Waiting,
    ) -> Result<(), Refusal> {
        if !internal
            && let Some(allow) = &self.allow
            && !allow.allows(&cmd.device)
        {
            return Err(Refusal::NotAllowed {
                device: cmd.device.clone(),
            });
        }
        let Some(encoded) = encoded else {
            return Err(Refusal::Unencodable(cmd.method.clone()));
        };
        if cmd.payload.len() > self.max_payload_bytes {
            return Err(Refusal::PayloadTooLarge {
                bytes: cmd.payload.len(),
                max: self.max_payload_bytes,
            });
        }
        let bytes = encoded + OSCORE_REQUEST_OVERHEAD;
        if bytes > self.max_message_bytes {
            return Err(Refusal::MessageTooLarge {
                bytes,
                max: self.max_message_bytes,
            });
        }
        if internal {
            return Ok(());
        }
        if waiting.device >= self.max_per_device {
            return Err(Refusal::DeviceQueueFull {
                device: cmd.device.clone(),
                max: self.max_per_device,
            });
        }
        if waiting.total >= self.max_total {
            return Err(Refusal::TotalQueueFull {
                max: self.max_total,
            });
        }
        Ok(())
    }
}
