//! Requests answered, by resource and response code: a fixed table (4 resources × 256 codes),
//! so a peer can never grow it, whatever path or code it provokes.

use coap_lite::{CoapOption, MessageClass, Packet, ResponseType};

/// The resource a request named, as counted (paths are not labels: a peer chooses them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathKind {
    /// `/rd`: registration.
    Rd,
    /// `/rd/{location}`: update or deregistration.
    RdLocation,
    /// `/t`: telemetry.
    Telemetry,
    /// Anything else.
    Other,
}

impl PathKind {
    const ALL: [PathKind; 4] = [
        PathKind::Rd,
        PathKind::RdLocation,
        PathKind::Telemetry,
        PathKind::Other,
    ];

    /// The label value: `rd`, `rd_location`, `t`, `other`.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            PathKind::Rd => "rd",
            PathKind::RdLocation => "rd_location",
            PathKind::Telemetry => "t",
            PathKind::Other => "other",
        }
    }

    /// The kind of `packet`'s Uri-Path.
    #[must_use]
    pub fn of(packet: &Packet) -> PathKind {
        let Some(path) = packet.get_option(CoapOption::UriPath) else {
            return PathKind::Other;
        };
        let mut segments = path.iter().map(Vec::as_slice);
        match (segments.next(), segments.next(), segments.next()) {
            (Some(b"rd"), None, _) => PathKind::Rd,
            (Some(b"rd"), Some(_), None) => PathKind::RdLocation,
            (Some(b"t"), None, _) => PathKind::Telemetry,
            _ => PathKind::Other,
        }
    }
}

/// Counts of answered requests by [`PathKind`] and response code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestCounts {
    counts: Box<[[u64; 256]; 4]>,
}

impl Default for RequestCounts {
    fn default() -> Self {
        RequestCounts {
            counts: Box::new([[0; 256]; 4]),
        }
    }
}

impl RequestCounts {
    /// One request of `kind` answered with `code`.
    pub fn count(&mut self, kind: PathKind, code: ResponseType) {
        let byte = u8::from(MessageClass::Response(code));
        if let Some(c) = self
            .counts
            .get_mut(kind as usize)
            .and_then(|row| row.get_mut(usize::from(byte)))
        {
            *c += 1;
        }
    }

    /// Every non-zero count: (kind, code as `2.04`, count).
    pub fn iter(&self) -> impl Iterator<Item = (PathKind, String, u64)> + '_ {
        PathKind::ALL.into_iter().flat_map(move |kind| {
            self.counts
                .get(kind as usize)
                .into_iter()
                .flat_map(|row| row.iter().enumerate())
                .filter(|(_, n)| **n > 0)
                .map(move |(byte, n)| {
                    let byte = u8::try_from(byte).unwrap_or(0);
                    (kind, format!("{}.{:02}", byte >> 5, byte & 0x1f), *n)
                })
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn packet(path: &[&str]) -> Packet {
        let mut p = Packet::new();
        for s in path {
            p.add_option(CoapOption::UriPath, s.as_bytes().to_vec());
        }
        p
    }

    #[test]
    fn paths_are_classified_and_codes_formatted() {
        assert_eq!(PathKind::of(&packet(&["rd"])), PathKind::Rd);
        assert_eq!(PathKind::of(&packet(&["rd", "7"])), PathKind::RdLocation);
        assert_eq!(PathKind::of(&packet(&["rd", "7", "x"])), PathKind::Other);
        assert_eq!(PathKind::of(&packet(&["t"])), PathKind::Telemetry);
        assert_eq!(PathKind::of(&packet(&["<script>"])), PathKind::Other);
        assert_eq!(PathKind::of(&packet(&[])), PathKind::Other);
        let mut c = RequestCounts::default();
        c.count(PathKind::Telemetry, ResponseType::Changed);
        c.count(PathKind::Telemetry, ResponseType::Changed);
        c.count(PathKind::Other, ResponseType::NotFound);
        c.count(PathKind::Telemetry, ResponseType::ServiceUnavailable);
        let got: Vec<_> = c.iter().map(|(k, code, n)| (k.label(), code, n)).collect();
        assert_eq!(
            got,
            vec![
                ("t", "2.04".to_owned(), 2),
                ("t", "5.03".to_owned(), 1),
                ("other", "4.04".to_owned(), 1)
            ]
        );
    }
}
