//! A look at a datagram before anything is spent on it: the fixed header, the token and the
//! OSCORE option's kid (RFC 7252 §3, RFC 8613 §6.1), read in place without building a packet.
//!
//! The gateway decides from this which budget a datagram draws from (see [`super::limits`]):
//! a request naming the kid of an active device goes to that kid's gate, a response or empty
//! message that answers the edge's own request is expected traffic, everything else is
//! unauthenticated and takes a token from its source network's bucket. Nothing here is
//! trusted: a kid or a token read here only chooses the budget; verification decides.
//!
//! Options are walked only up to the OSCORE option (number 9; options are in order), so the
//! cost is bounded by the header and the first few options. No function here panics on any
//! input; `fuzz/fuzz_targets/edge_peek.rs` checks it against the full parser.
//!
//! Public for that fuzz target; the gateway is its only user.

use coap_lite::MessageType;
use v6iot_sdk::coap::wire;
use v6iot_sdk::oscore::OscoreOption;

/// The OSCORE option's number (RFC 8613 §2).
const OSCORE: u16 = 9;

/// What a datagram says about itself (unverified).
#[derive(Debug, Clone, PartialEq)]
pub struct Peek<'a> {
    /// Message type.
    pub kind: MessageType,
    /// Code byte.
    pub code: u8,
    /// Message ID.
    pub message_id: u16,
    /// Token (0 to 8 bytes).
    pub token: &'a [u8],
    /// The OSCORE option's value, when the options up to it are well formed and it is there
    /// (empty for a response without kid or Partial IV).
    pub oscore: Option<&'a [u8]>,
}

impl<'a> Peek<'a> {
    /// Reads the header, token and OSCORE option of `bytes`; `None` when the header or the
    /// token is malformed (the full parser refuses those too).
    pub fn of(bytes: &'a [u8]) -> Option<Peek<'a>> {
        let header = wire::raw_header(bytes).ok()?;
        let tkl = usize::from(bytes.first().map_or(0, |b| b & 0x0f));
        if tkl > 8 {
            return None;
        }
        let token = bytes.get(4..4 + tkl)?;
        let oscore = bytes.get(4 + tkl..).and_then(oscore_value);
        Some(Peek {
            kind: header.kind,
            code: header.code,
            message_id: header.message_id,
            token,
            oscore,
        })
    }

    /// The kid the OSCORE option names, if it parses and carries one.
    pub fn kid(&self) -> Option<Vec<u8>> {
        OscoreOption::parse(self.oscore?).ok()?.kid
    }

    /// True for a request code (0.01–0.31).
    pub fn is_request(&self) -> bool {
        wire::is_request_code(self.code)
    }

    /// True for a response code (2.xx–5.xx).
    pub fn is_response(&self) -> bool {
        (2..=5).contains(&wire::code_class(self.code))
    }
}

/// The value of the OSCORE option in `options` (the bytes after the token), if the options
/// before it are well formed; stops at the payload marker or the first option past 9.
fn oscore_value(mut options: &[u8]) -> Option<&[u8]> {
    let mut number: u16 = 0;
    loop {
        let (&first, rest) = options.split_first()?;
        if first == 0xff {
            return None;
        }
        let (delta, rest) = extended(first >> 4, rest)?;
        let (len, rest) = extended(first & 0x0f, rest)?;
        number = number.checked_add(delta)?;
        let value = rest.get(..usize::from(len))?;
        if number == OSCORE {
            return Some(value);
        }
        if number > OSCORE {
            return None;
        }
        options = rest.get(usize::from(len)..)?;
    }
}

/// An option delta or length nibble with its extended bytes (RFC 7252 §3.1); 15 is reserved.
fn extended(nibble: u8, rest: &[u8]) -> Option<(u16, &[u8])> {
    match nibble {
        0..=12 => Some((u16::from(nibble), rest)),
        13 => {
            let (&b, rest) = rest.split_first()?;
            Some((u16::from(b) + 13, rest))
        }
        14 => {
            let [b0, b1, rest @ ..] = rest else {
                return None;
            };
            let v = u16::from_be_bytes([*b0, *b1]).checked_add(269)?;
            Some((v, rest))
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use coap_lite::{CoapOption, MessageClass, Packet, RequestType};
    use proptest::prelude::*;

    fn packet(oscore: Option<Vec<u8>>, before: bool) -> Packet {
        let mut p = Packet::new();
        p.header.set_type(MessageType::Confirmable);
        p.header.code = MessageClass::Request(RequestType::Post);
        p.header.message_id = 0x1234;
        p.set_token(vec![1, 2, 3]);
        if before {
            p.add_option(CoapOption::UriHost, b"edge".to_vec());
            p.add_option(CoapOption::Observe, vec![]);
        }
        if let Some(v) = oscore {
            p.add_option(CoapOption::Oscore, v);
        }
        p.add_option(CoapOption::UriPath, b"t".to_vec());
        p.payload = b"x".to_vec();
        p
    }

    #[test]
    fn reads_the_header_token_and_kid() {
        // flags 0x09: k bit, 1-byte Partial IV; PIV 5; kid 0xab 0xcd.
        let bytes = packet(Some(vec![0x09, 0x05, 0xab, 0xcd]), true)
            .to_bytes()
            .unwrap();
        let p = Peek::of(&bytes).unwrap();
        assert_eq!(p.kind, MessageType::Confirmable);
        assert_eq!(p.message_id, 0x1234);
        assert_eq!(p.token, [1, 2, 3]);
        assert!(p.is_request() && !p.is_response());
        assert_eq!(p.kid(), Some(vec![0xab, 0xcd]));
    }

    #[test]
    fn no_oscore_option_no_kid() {
        let bytes = packet(None, true).to_bytes().unwrap();
        let p = Peek::of(&bytes).unwrap();
        assert_eq!((p.oscore, p.kid()), (None, None));
        // An empty OSCORE option (a response's): present, no kid.
        let bytes = packet(Some(vec![]), false).to_bytes().unwrap();
        let p = Peek::of(&bytes).unwrap();
        assert_eq!((p.oscore, p.kid()), (Some(&[][..]), None));
    }

    #[test]
    fn malformed_headers_and_options() {
        assert_eq!(Peek::of(&[0x40, 1]), None, "short");
        assert_eq!(Peek::of(&[0x80, 1, 0, 0]), None, "version 2");
        assert_eq!(Peek::of(&[0x49, 1, 0, 0, 1]), None, "token length 9");
        assert_eq!(Peek::of(&[0x42, 1, 0, 0, 1]), None, "token cut short");
        // Option delta 15 (reserved): no OSCORE value, but the header is read.
        let p = Peek::of(&[0x40, 1, 0, 0, 0xf1, 0]).unwrap();
        assert_eq!(p.oscore, None);
        // OSCORE option whose length runs past the end.
        assert_eq!(Peek::of(&[0x40, 1, 0, 0, 0x94, 0x19]).unwrap().oscore, None);
    }

    proptest! {
        /// On any bytes: no panic, and whenever the full parser accepts the datagram, the
        /// peek agrees with it on header, token and kid.
        #[test]
        fn agrees_with_the_full_parser(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let peek = Peek::of(&bytes);
            // (Two OSCORE options are malformed to the full parser; the peek reads the first.)
            let single = |p: &Packet| p.get_option(CoapOption::Oscore).is_none_or(|v| v.len() == 1);
            if let Ok(p) = wire::parse(&bytes) && single(&p) {
                let peek = peek.unwrap();
                prop_assert_eq!(peek.message_id, p.header.message_id);
                prop_assert_eq!(peek.token, p.get_token());
                let kid = OscoreOption::from_packet(&p).ok().and_then(|o| o.kid);
                prop_assert_eq!(peek.kid(), kid);
            }
        }

        /// Real OSCORE requests (any kid, any options around it) are read right.
        #[test]
        fn finds_the_kid_of_built_packets(kid in proptest::collection::vec(any::<u8>(), 0..7), before: bool) {
            let mut value = vec![0x09, 0x07];
            value.extend_from_slice(&kid);
            let bytes = packet(Some(value), before).to_bytes().unwrap();
            prop_assert_eq!(Peek::of(&bytes).unwrap().kid(), Some(kid));
        }
    }
}
