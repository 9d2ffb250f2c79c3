//! The dashboard's model (sans-IO): one row per device the edge has seen, the recent security
//! events, and the queries the page asks (filter, sort and a window of rows: the page renders
//! only what is visible, the server never sends the whole table).
//!
//! Bounded: at most `max_rows` devices (more are counted in [`Board::not_shown`]), at most
//! [`SPARK_POINTS`] values per device, at most [`MAX_EVENTS`] security events, at most
//! [`MAX_WINDOW`] rows per answer. Everything a device or a peer supplied (ids, values,
//! causes) goes out as JSON strings, which the page only ever puts into `textContent`.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use serde::Serialize;

/// Values kept per device for its sparkline.
pub const SPARK_POINTS: usize = 60;
/// Security events kept.
pub const MAX_EVENTS: usize = 200;
/// Rows per answer at most.
pub const MAX_WINDOW: usize = 200;
/// Characters of a filter used at most.
pub const MAX_FILTER: usize = 128;

/// One device's row.
#[derive(Debug, Clone, Default)]
struct Row {
    /// The id in lower case (what the filter compares; made once, not per query).
    id_lower: String,
    address: Option<SocketAddr>,
    /// The address as the page shows it (made when it changes, not per query).
    address_text: String,
    transport: &'static str,
    state: &'static str,
    last_seen_ms: u64,
    last_value: String,
    spark: VecDeque<(u64, f64)>,
}

/// A row as the page gets it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowView {
    /// Device id.
    pub id: String,
    /// Current address, if known.
    pub address: String,
    /// `udp` (NB-IoT or IP) or `lowpan` (through the border router).
    pub transport: &'static str,
    /// `registered`, `seen`, `deregistered`, `expired`, `revoked`, `quarantined`.
    pub state: &'static str,
    /// Unix ms of the last uplink (0: none yet).
    pub last_seen_ms: u64,
    /// The last value, as text (`temperature=21.5 Cel`).
    pub last_value: String,
}

/// A security event as the page gets it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventView {
    /// Sequence number (the page asks for those after the last it has).
    pub seq: u64,
    /// Unix ms.
    pub at_ms: u64,
    /// The cause (`plain`, `unknown_kid`, ...).
    pub cause: String,
    /// Where from.
    pub peer: String,
    /// The device it named, if any.
    pub device: String,
}

/// Which column to sort by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortKey {
    /// Device id (the table's own order).
    #[default]
    Id,
    /// Address.
    Address,
    /// State.
    State,
    /// Last uplink.
    LastSeen,
}

/// What the page asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct Query {
    /// Rows whose id or address contains this (case-insensitive); empty: all.
    pub filter: String,
    /// Column.
    pub sort: SortKey,
    /// Descending.
    pub desc: bool,
    /// First row of the window.
    pub offset: usize,
    /// Rows in the window (at most [`MAX_WINDOW`]).
    pub limit: usize,
}

/// One answer: the window and how many rows match.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    /// Rows matching the filter.
    pub total: usize,
    /// The window's first row.
    pub offset: usize,
    /// The rows.
    pub rows: Vec<RowView>,
}

/// One change the data path reports, applied on the board's own thread
/// ([`super::handle::BoardHandle`]): the data path only moves what it already has (a
/// record's payload is read as SenML there, not on the data path).
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// `id` registered (or moved) at `address` ([`Board::registered_via`]).
    Registered {
        /// Device id.
        id: String,
        /// Its address.
        address: SocketAddr,
        /// `udp` or `lowpan` (an address in one of the border router's PAN prefixes).
        transport: &'static str,
        /// Unix ms.
        unix_ms: u64,
    },
    /// Registry or registration states of devices already shown ([`Board::state`]).
    States(Vec<(String, &'static str)>),
    /// A record from `id` was stored; `payload` is its resolved SenML-JSON
    /// ([`Board::telemetry`] with [`senml_value`]).
    Record {
        /// Device id.
        id: String,
        /// Unix ms.
        unix_ms: u64,
        /// The stored payload.
        payload: Vec<u8>,
    },
    /// A refusal by the gateway ([`Board::security`]).
    Security {
        /// Unix ms.
        unix_ms: u64,
        /// The cause.
        cause: String,
        /// Where from.
        peer: SocketAddr,
        /// The device it named.
        device: Option<String>,
    },
}

/// What one feed update reads from the board, all at once.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// The window asked for.
    pub page: Page,
    /// Security events after the last one the page has.
    pub events: Vec<EventView>,
    /// The selected device's sparkline.
    pub spark: Option<Vec<(u64, f64)>>,
    /// Devices shown.
    pub devices: usize,
    /// Updates not shown because the board was full.
    pub not_shown: u64,
}

/// The model (see the module docs).
#[derive(Debug)]
pub struct Board {
    rows: BTreeMap<String, Row>,
    max_rows: usize,
    not_shown: u64,
    events: VecDeque<EventView>,
    next_event: u64,
}

impl Board {
    /// An empty board holding at most `max_rows` devices.
    #[must_use]
    pub fn new(max_rows: usize) -> Board {
        Board {
            rows: BTreeMap::new(),
            max_rows,
            not_shown: 0,
            events: VecDeque::new(),
            next_event: 1,
        }
    }

    /// Devices shown.
    #[must_use]
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no device is shown.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Updates that were not shown because the board was full.
    #[must_use]
    pub fn not_shown(&self) -> u64 {
        self.not_shown
    }

    fn row(&mut self, id: &str) -> Option<&mut Row> {
        if !self.rows.contains_key(id) {
            if self.rows.len() >= self.max_rows {
                self.not_shown += 1;
                return None;
            }
            self.rows.insert(
                id.to_owned(),
                Row {
                    id_lower: id.to_lowercase(),
                    transport: "udp",
                    state: "seen",
                    ..Row::default()
                },
            );
        }
        self.rows.get_mut(id)
    }

    /// `id` registered (or moved) at `address`, over UDP.
    pub fn registered(&mut self, id: &str, address: SocketAddr, unix_ms: u64) {
        self.registered_via(id, address, "udp", unix_ms);
    }

    /// `id` registered (or moved) at `address`, over `transport` (`udp`, `lowpan`).
    pub fn registered_via(
        &mut self,
        id: &str,
        address: SocketAddr,
        transport: &'static str,
        unix_ms: u64,
    ) {
        if let Some(r) = self.row(id) {
            r.transport = transport;
            if r.address != Some(address) {
                r.address = Some(address);
                r.address_text = address.to_string();
            }
            r.state = "registered";
            r.last_seen_ms = r.last_seen_ms.max(unix_ms);
        }
    }

    /// `id`'s registration ended (`deregistered`, `expired`) or its registry state changed
    /// (`revoked`, `quarantined`, `active`); only devices already shown are touched.
    pub fn state(&mut self, id: &str, state: &'static str) {
        if let Some(r) = self.rows.get_mut(id) {
            r.state = state;
        }
    }

    /// A record from `id` was stored: its text and, when numeric, its value.
    pub fn telemetry(&mut self, id: &str, unix_ms: u64, text: String, value: Option<f64>) {
        if let Some(r) = self.row(id) {
            r.last_seen_ms = r.last_seen_ms.max(unix_ms);
            r.last_value = text;
            if let Some(v) = value {
                if r.spark.len() >= SPARK_POINTS {
                    r.spark.pop_front();
                }
                r.spark.push_back((unix_ms, v));
            }
        }
    }

    /// A refusal by the gateway.
    pub fn security(&mut self, unix_ms: u64, cause: &str, peer: SocketAddr, device: Option<&str>) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(EventView {
            seq: self.next_event,
            at_ms: unix_ms,
            cause: cause.to_owned(),
            peer: peer.to_string(),
            device: device.unwrap_or_default().to_owned(),
        });
        self.next_event += 1;
    }

    /// Applies one change from the data path.
    pub fn apply(&mut self, update: Update) {
        match update {
            Update::Registered {
                id,
                address,
                transport,
                unix_ms,
            } => self.registered_via(&id, address, transport, unix_ms),
            Update::States(states) => {
                for (id, state) in states {
                    self.state(&id, state);
                }
            }
            Update::Record {
                id,
                unix_ms,
                payload,
            } => {
                if let Some((text, value)) = senml_value(&payload) {
                    self.telemetry(&id, unix_ms, text, value);
                }
            }
            Update::Security {
                unix_ms,
                cause,
                peer,
                device,
            } => self.security(unix_ms, &cause, peer, device.as_deref()),
        }
    }

    /// What a feed update shows: the window `q` asks for, the events after `seen_event`,
    /// the sparkline of `selected`.
    #[must_use]
    pub fn view(&self, q: &Query, seen_event: u64, selected: Option<&str>) -> View {
        View {
            page: self.query(q),
            events: self.events_after(seen_event),
            spark: selected.map(|s| self.spark(s)),
            devices: self.len(),
            not_shown: self.not_shown(),
        }
    }

    /// Events after `seq`, oldest first.
    #[must_use]
    pub fn events_after(&self, seq: u64) -> Vec<EventView> {
        self.events
            .iter()
            .filter(|e| e.seq > seq)
            .cloned()
            .collect()
    }

    /// The sparkline of `id`: (unix ms, value), oldest first.
    #[must_use]
    pub fn spark(&self, id: &str) -> Vec<(u64, f64)> {
        self.rows
            .get(id)
            .map(|r| r.spark.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The window `q` asks for. In the table's own order (by id) without a filter only the
    /// window is read; otherwise the matching rows are collected and sorted (ties by id), which
    /// at 100,000 devices takes up to about 20 ms (`benches/dashboard.rs`): on the board's own
    /// thread, where the data path never waits for it.
    #[must_use]
    pub fn query(&self, q: &Query) -> Page {
        let filter: String = q
            .filter
            .chars()
            .take(MAX_FILTER)
            .collect::<String>()
            .to_lowercase();
        let limit = q.limit.min(MAX_WINDOW);
        if filter.is_empty() && q.sort == SortKey::Id {
            let total = self.rows.len();
            let offset = q.offset.min(total);
            let rows = if q.desc {
                window(self.rows.iter().rev(), offset, limit)
            } else {
                window(self.rows.iter(), offset, limit)
            };
            return Page {
                total,
                offset,
                rows,
            };
        }
        let mut matching: Vec<(&String, &Row)> = self
            .rows
            .iter()
            .filter(|(_, r)| {
                filter.is_empty()
                    || r.id_lower.contains(&filter)
                    || r.address_text.contains(&filter)
            })
            .collect();
        match q.sort {
            SortKey::Id => {}
            SortKey::Address => matching.sort_by_key(|(_, r)| r.address),
            SortKey::State => matching.sort_by_key(|(_, r)| r.state),
            SortKey::LastSeen => matching.sort_by_key(|(_, r)| r.last_seen_ms),
        }
        if q.desc {
            matching.reverse();
        }
        let total = matching.len();
        let offset = q.offset.min(total);
        Page {
            total,
            offset,
            rows: window(matching.into_iter(), offset, limit),
        }
    }
}

/// Rows `offset..offset + limit` of `rows`, as the page gets them.
fn window<'a>(
    rows: impl Iterator<Item = (&'a String, &'a Row)>,
    offset: usize,
    limit: usize,
) -> Vec<RowView> {
    rows.skip(offset)
        .take(limit)
        .map(|(id, r)| RowView {
            id: id.clone(),
            address: r.address_text.clone(),
            transport: r.transport,
            state: r.state,
            last_seen_ms: r.last_seen_ms,
            last_value: r.last_value.clone(),
        })
        .collect()
}

/// The text and numeric value of a stored record's resolved SenML-JSON payload: the first
/// record's name and value (`temperature=21.5 Cel`), `None` for a payload that is not SenML.
#[must_use]
pub fn senml_value(payload: &[u8]) -> Option<(String, Option<f64>)> {
    let records: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_slice(payload).ok()?;
    let r = records
        .into_iter()
        .find(|r| r.contains_key("n") || r.contains_key("v"))?;
    let name = r.get("n").and_then(|n| n.as_str()).unwrap_or_default();
    let name = name.rsplit(['/', ':']).next().unwrap_or(name);
    let unit = r.get("u").and_then(|u| u.as_str()).unwrap_or_default();
    let (text, value) = if let Some(v) = r.get("v").and_then(serde_json::Value::as_f64) {
        (v.to_string(), Some(v))
    } else if let Some(s) = r.get("vs").and_then(|s| s.as_str()) {
        (s.to_owned(), None)
    } else if let Some(b) = r.get("vb").and_then(serde_json::Value::as_bool) {
        (b.to_string(), Some(f64::from(u8::from(b))))
    } else {
        (String::new(), None)
    };
    let mut out = format!("{name}={text}");
    if !unit.is_empty() {
        out.push(' ');
        out.push_str(unit);
    }
    Some((out.chars().take(120).collect(), value))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn addr(i: u32) -> SocketAddr {
        SocketAddr::from((
            [0x2001, 0xdb8, 0, 0, 0, 0, (i >> 16) as u16, i as u16],
            5683,
        ))
    }

    /// 100,000 devices: a filtered, sorted window comes back with the right total and at most
    /// [`MAX_WINDOW`] rows, and the table stops at its bound.
    #[test]
    fn a_hundred_thousand_devices_are_queried_by_window() {
        let mut b = Board::new(100_000);
        for i in 0..100_000u32 {
            b.registered(&format!("dev-{i:06}"), addr(i), 1_000 + u64::from(i));
        }
        assert_eq!(b.len(), 100_000);
        // at the bound: the next device is not shown, and counted
        b.registered("one-too-many", addr(1), 5);
        assert_eq!((b.len(), b.not_shown()), (100_000, 1));
        let page = b.query(&Query {
            filter: "DEV-0999".into(),
            sort: SortKey::LastSeen,
            desc: true,
            offset: 10,
            limit: 5,
        });
        assert_eq!(page.total, 100);
        assert_eq!(page.rows.len(), 5);
        assert_eq!(page.rows[0].id, "dev-099989");
        let all = b.query(&Query {
            limit: 100_000,
            ..Query::default()
        });
        assert_eq!((all.total, all.rows.len()), (100_000, MAX_WINDOW));
        assert_eq!(all.rows[0].id, "dev-000000");
        // the table's own order, backwards, without a filter (only the window is read) ...
        let last = b.query(&Query {
            desc: true,
            limit: 2,
            ..Query::default()
        });
        assert_eq!(last.total, 100_000);
        assert_eq!(last.rows[0].id, "dev-099999");
        assert_eq!(last.rows[1].id, "dev-099998");
        // ... and with a filter that every row matches: the same rows
        let filtered = b.query(&Query {
            filter: "DEV".into(),
            desc: true,
            limit: 2,
            ..Query::default()
        });
        assert_eq!(filtered, last);
        // a filter on the address, also after a move
        let by_addr = b.query(&Query {
            filter: "::1:869f".into(),
            limit: 10,
            ..Query::default()
        });
        assert_eq!(by_addr.total, 1);
        assert_eq!(by_addr.rows[0].id, "dev-099999");
        assert_eq!(by_addr.rows[0].address, "[2001:db8::1:869f]:5683");
        b.registered("dev-000007", addr(0xabcd), 9);
        let moved = b.query(&Query {
            filter: "::abcd]".into(),
            limit: 10,
            ..Query::default()
        });
        assert_eq!(
            moved.rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["dev-000007", "dev-043981"]
        );
        let past = b.query(&Query {
            offset: 1_000_000,
            limit: 10,
            ..Query::default()
        });
        assert_eq!(
            (past.total, past.offset, past.rows.len()),
            (100_000, 100_000, 0)
        );
    }

    #[test]
    fn sparklines_and_events_are_bounded() {
        let mut b = Board::new(10);
        for i in 0..(SPARK_POINTS as u64 + 5) {
            b.telemetry("d", i, format!("t={i}"), Some(i as f64));
        }
        let s = b.spark("d");
        assert_eq!(s.len(), SPARK_POINTS);
        assert_eq!(s[0], (5, 5.0));
        for i in 0..(MAX_EVENTS as u64 + 3) {
            b.security(i, "plain", addr(1), None);
        }
        let e = b.events_after(0);
        assert_eq!(e.len(), MAX_EVENTS);
        assert_eq!(e[0].seq, 4);
        assert_eq!(b.events_after(MAX_EVENTS as u64 + 2).len(), 1);
    }

    #[test]
    fn senml_values_are_read_as_text() {
        let p = br#"[{"bn":"urn:dev:x/","n":"urn:dev:x/temperature","u":"Cel","v":21.5,"t":1}]"#;
        assert_eq!(
            senml_value(p),
            Some(("temperature=21.5 Cel".into(), Some(21.5)))
        );
        let p = br#"[{"n":"label","vs":"<script>alert(1)</script>"}]"#;
        assert_eq!(
            senml_value(p),
            Some(("label=<script>alert(1)</script>".into(), None))
        );
        assert_eq!(senml_value(b"not json"), None);
    }
}
