//! The OSCORE security context (RFC 8613 §3): input parameters, the derived keys and Common IV
//! (§3.2.1, HKDF-SHA-256), and the mutable parts: the sender sequence number and the replay
//! window.

use alloc::vec::Vec;

use core::fmt;

use hkdf::Hkdf;
use sha2::Sha256;

use super::OscoreError;
use super::cose::{self, KEY_LEN, KdfOutput, MAX_ID_LEN, NONCE_LEN};
use super::replay::{DEFAULT_WINDOW, ReplayWindow};
use super::sequence::SenderSequence;

/// The pre-established input parameters of §3.2. The AEAD algorithm is AES-CCM-16-64-128 and
/// the HKDF is HKDF-SHA-256, the defaults; no others are supported.
#[derive(Clone, PartialEq, Eq)]
pub struct ContextInput {
    /// The Master Secret (not empty).
    pub master_secret: Vec<u8>,
    /// The Master Salt; empty is the default (§3.2).
    pub master_salt: Vec<u8>,
    /// The ID Context, if any (§5.1).
    pub id_context: Option<Vec<u8>>,
    /// This endpoint's Sender ID (at most 7 bytes, may be empty).
    pub sender_id: Vec<u8>,
    /// The peer's Sender ID, this endpoint's Recipient ID (at most 7 bytes, may be empty).
    pub recipient_id: Vec<u8>,
}

impl fmt::Debug for ContextInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextInput")
            .field("master_secret", &"<redacted>")
            .field("master_salt", &self.master_salt)
            .field("id_context", &self.id_context)
            .field("sender_id", &self.sender_id)
            .field("recipient_id", &self.recipient_id)
            .finish()
    }
}

impl ContextInput {
    /// Checks §3.3: a Master Secret, IDs of at most 7 bytes, distinct Sender and Recipient IDs
    /// (equal IDs would give both endpoints the same key and nonces).
    pub fn validate(&self) -> Result<(), OscoreError> {
        if self.master_secret.is_empty()
            || self.sender_id.len() > MAX_ID_LEN
            || self.recipient_id.len() > MAX_ID_LEN
            || self.sender_id == self.recipient_id
        {
            return Err(OscoreError::InvalidContext);
        }
        Ok(())
    }
}

/// The derived parameters of §3.2.1: Sender Key, Recipient Key and Common IV.
#[derive(Clone, PartialEq, Eq)]
pub struct DerivedKeys {
    sender_key: [u8; KEY_LEN],
    recipient_key: [u8; KEY_LEN],
    common_iv: [u8; NONCE_LEN],
}

impl fmt::Debug for DerivedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DerivedKeys(<redacted>)")
    }
}

impl DerivedKeys {
    /// Derives the keys and Common IV from `input` with HKDF-SHA-256:
    /// `HKDF(salt = Master Salt, IKM = Master Secret, info, L)`.
    pub fn derive(input: &ContextInput) -> Result<DerivedKeys, OscoreError> {
        input.validate()?;
        let hkdf = Hkdf::<Sha256>::new(Some(&input.master_salt), &input.master_secret);
        let ctx = input.id_context.as_deref();
        let mut sender_key = [0u8; KEY_LEN];
        let mut recipient_key = [0u8; KEY_LEN];
        let mut common_iv = [0u8; NONCE_LEN];
        let outputs: [(&[u8], KdfOutput, &mut [u8]); 3] = [
            (&input.sender_id, KdfOutput::Key, &mut sender_key),
            (&input.recipient_id, KdfOutput::Key, &mut recipient_key),
            (&[], KdfOutput::Iv, &mut common_iv),
        ];
        for (id, kind, okm) in outputs {
            hkdf.expand(&cose::kdf_info(id, ctx, kind), okm)
                .map_err(|_| OscoreError::InvalidContext)?;
        }
        Ok(DerivedKeys {
            sender_key,
            recipient_key,
            common_iv,
        })
    }

    /// The Sender Key.
    pub fn sender_key(&self) -> &[u8; KEY_LEN] {
        &self.sender_key
    }

    /// The Recipient Key.
    pub fn recipient_key(&self) -> &[u8; KEY_LEN] {
        &self.recipient_key
    }

    /// The Common IV.
    pub fn common_iv(&self) -> &[u8; NONCE_LEN] {
        &self.common_iv
    }
}

/// Tunables of a [`SecurityContext`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextConfig {
    /// `K` of Appendix B.1.1: the distance between persisted sequence-number marks. Larger
    /// means fewer writes to non-volatile memory and more numbers skipped per restart.
    pub persist_step: u64,
    /// The replay window size (§7.4), 1..=128; RFC 8613's default is 32.
    pub replay_window: u32,
    /// Send the ID Context as 'kid context' in requests (§5.1), as in RFC 8613 Appendix C.6.
    pub send_kid_context: bool,
}

impl Default for ContextConfig {
    fn default() -> Self {
        ContextConfig {
            persist_step: 256,
            replay_window: DEFAULT_WINDOW,
            send_kid_context: false,
        }
    }
}

/// What a device keeps in non-volatile memory for one security context: its sender
/// sequence-number mark (Appendix B.1.1) and the floor of its replay window (Appendix B.1.2).
///
/// Both only ever rise. Restore them with [`SecurityContext::restore`] (the mark) and
/// [`SecurityContext::set_replay_floor`] (the floor), or both at once with
/// [`SecurityContext::restore_state`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DurableState {
    /// No sender sequence number at or above this has been used.
    pub sender_mark: u64,
    /// Every request Partial IV below this has been accepted or is refused: after a restart,
    /// requests below it are replays.
    pub replay_floor: u64,
}

impl DurableState {
    /// The state with `sender_mark` and `replay_floor`.
    #[must_use]
    pub const fn new(sender_mark: u64, replay_floor: u64) -> DurableState {
        DurableState {
            sender_mark,
            replay_floor,
        }
    }

    /// The component-wise maximum: what a store holds after writing both.
    #[must_use]
    pub fn max(self, other: DurableState) -> DurableState {
        DurableState {
            sender_mark: self.sender_mark.max(other.sender_mark),
            replay_floor: self.replay_floor.max(other.replay_floor),
        }
    }
}

/// The security context of one endpoint with one peer: the derived keys, the sender sequence
/// number and the replay window of received requests.
///
/// Sans-IO: it owns no storage. The caller persists the sequence-number marks it asks for (see
/// [`mark_to_persist`](Self::mark_to_persist)) and, after a restart, rebuilds the context with
/// [`restore`](Self::restore).
#[derive(Debug, Clone)]
pub struct SecurityContext {
    sender_id: Vec<u8>,
    recipient_id: Vec<u8>,
    id_context: Option<Vec<u8>>,
    keys: DerivedKeys,
    sequence: SenderSequence,
    replay: ReplayWindow,
    send_kid_context: bool,
}

impl SecurityContext {
    /// A fresh context: derives the keys (§3.2), starts the sender sequence number at 0 and an
    /// empty replay window. Before the first message with a Partial IV, persist the first mark
    /// ([`mark_to_persist`](Self::mark_to_persist), [`persisted`](Self::persisted)).
    pub fn new(input: &ContextInput, config: ContextConfig) -> Result<Self, OscoreError> {
        SecurityContext::restore(input, config, 0)
    }

    /// The context after a restart: as [`new`](Self::new), but the sender sequence number
    /// continues at `persisted_mark`, the last mark stored (Appendix B.1.1).
    pub fn restore(
        input: &ContextInput,
        config: ContextConfig,
        persisted_mark: u64,
    ) -> Result<Self, OscoreError> {
        let keys = DerivedKeys::derive(input)?;
        Ok(SecurityContext {
            sender_id: input.sender_id.clone(),
            recipient_id: input.recipient_id.clone(),
            id_context: input.id_context.clone(),
            keys,
            sequence: SenderSequence::restore(persisted_mark, config.persist_step),
            replay: ReplayWindow::new(config.replay_window),
            send_kid_context: config.send_kid_context,
        })
    }

    /// The context after a restart from everything a device stored: the sender sequence number
    /// continues at `state.sender_mark` and requests below `state.replay_floor` are replays.
    pub fn restore_state(
        input: &ContextInput,
        config: ContextConfig,
        state: DurableState,
    ) -> Result<Self, OscoreError> {
        let mut ctx = SecurityContext::restore(input, config, state.sender_mark)?;
        ctx.set_replay_floor(state.replay_floor);
        Ok(ctx)
    }

    /// This endpoint's Sender ID (the 'kid' of its requests).
    pub fn sender_id(&self) -> &[u8] {
        &self.sender_id
    }

    /// The peer's Sender ID: the 'kid' a server looks up.
    pub fn recipient_id(&self) -> &[u8] {
        &self.recipient_id
    }

    /// The ID Context, if any.
    pub fn id_context(&self) -> Option<&[u8]> {
        self.id_context.as_deref()
    }

    /// True when a request with this OSCORE option is for this context: its 'kid' is the
    /// Recipient ID and its 'kid context', if present, the ID Context. A server that keeps many
    /// contexts with the same Recipient ID (different ID Contexts) picks the one that matches.
    pub fn accepts(&self, option: &super::OscoreOption) -> bool {
        option.kid.as_deref() == Some(self.recipient_id.as_slice())
            && option
                .kid_context
                .as_deref()
                .is_none_or(|kc| Some(kc) == self.id_context.as_deref())
    }

    /// The sender sequence number state.
    pub fn sequence(&self) -> &SenderSequence {
        &self.sequence
    }

    /// The replay window of received requests.
    pub fn replay_window(&self) -> &ReplayWindow {
        &self.replay
    }

    /// Rejects requests with a Partial IV below `floor` (see [`ReplayWindow::set_floor`]).
    pub fn set_replay_floor(&mut self, floor: u64) {
        self.replay.set_floor(floor);
    }

    /// The sequence-number mark to persist now, if one is due (see
    /// [`SenderSequence::mark_to_persist`]). Write it to non-volatile memory, then call
    /// [`persisted`](Self::persisted).
    #[must_use]
    pub fn mark_to_persist(&self) -> Option<u64> {
        self.sequence.mark_to_persist()
    }

    /// Reports that `mark` has been written durably.
    pub fn persisted(&mut self, mark: u64) {
        self.sequence.persisted(mark);
    }

    pub(crate) fn keys(&self) -> &DerivedKeys {
        &self.keys
    }

    pub(crate) fn sequence_mut(&mut self) -> &mut SenderSequence {
        &mut self.sequence
    }

    pub(crate) fn replay_mut(&mut self) -> &mut ReplayWindow {
        &mut self.replay
    }

    pub(crate) fn sends_kid_context(&self) -> bool {
        self.send_kid_context
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> ContextInput {
        ContextInput {
            master_secret: vec![1; 16],
            master_salt: vec![],
            id_context: None,
            sender_id: vec![1],
            recipient_id: vec![2],
        }
    }

    #[test]
    fn invalid_parameters_are_rejected() {
        let ok = input();
        assert!(SecurityContext::new(&ok, ContextConfig::default()).is_ok());
        for bad in [
            ContextInput {
                master_secret: vec![],
                ..ok.clone()
            },
            ContextInput {
                sender_id: vec![0; 8],
                ..ok.clone()
            },
            ContextInput {
                recipient_id: vec![0; 8],
                ..ok.clone()
            },
            ContextInput {
                recipient_id: vec![1],
                ..ok.clone()
            },
        ] {
            assert_eq!(
                SecurityContext::new(&bad, ContextConfig::default()).err(),
                Some(OscoreError::InvalidContext)
            );
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let text = format!(
            "{:?}",
            SecurityContext::new(&input(), ContextConfig::default())
        );
        assert!(text.contains("redacted"));
        assert!(!text.contains("master_secret: ["));
    }
}
