//! The border router's families: radio frames, 6LoWPAN packets and fragments, forwarding,
//! neighbour discovery and drops by cause, per PAN (the `pan` label is the PAN's index in the
//! configuration's `[[radio]]` list: a bounded set, never a device or an address).

use super::family::{Family, one};
use super::{Out, RadioSnapshot};
use crate::border::stats::PanStats;

/// The per-PAN families, in the order they are written.
const FAMILIES: &[Family<PanStats>] = &[
    Family::counter(
        "v6iot_radio_frames_received",
        "802.15.4 frames taken from the radio, FCS checked",
        |s| one(s.frames_in),
    ),
    Family::counter(
        "v6iot_radio_frames_sent",
        "802.15.4 frames handed to the radio",
        |s| one(s.frames_out),
    ),
    Family::counter(
        "v6iot_lowpan_packets_received",
        "IPv6 packets whole from the radio (at once or reassembled)",
        |s| one(s.packets_in),
    ),
    Family::counter(
        "v6iot_lowpan_packets_sent",
        "IPv6 packets sent onto the radio (one or more frames each)",
        |s| one(s.packets_out),
    ),
    Family::counters(
        "v6iot_border_packets_forwarded",
        "packets the border router forwarded, by path (radio_to_host, host_to_radio: the TUN; \
         radio_to_gateway, gateway_to_radio: CoAP for the router)",
        "path",
        |s| {
            vec![
                ("radio_to_host", s.to_host),
                ("host_to_radio", s.from_host),
                ("radio_to_gateway", s.local_in),
                ("gateway_to_radio", s.local_out),
            ]
        },
    ),
    Family::counters(
        "v6iot_border_drops",
        "frames and packets the border router dropped, by cause",
        "cause",
        |s| {
            let d = &s.drops;
            vec![
                ("bad_mac", d.bad_mac),
                ("other_pan", d.other_pan),
                ("not_for_us", d.not_for_us),
                ("bad_lowpan", d.bad_lowpan),
                ("bad_ip", d.bad_ip),
                ("bad_source", d.bad_source),
                ("hop_limit", d.hop_limit),
                ("multicast", d.multicast),
                ("not_routable", d.not_routable),
                ("bad_checksum", d.bad_checksum),
                ("port_closed", d.port_closed),
                ("icmp", d.icmp),
                ("no_route", d.no_route),
                ("tx_queue_full", d.tx_queue_full),
                ("host_queue_full", d.host_queue_full),
                ("local_queue_full", d.local_queue_full),
                ("send_error", d.send_errors),
            ]
        },
    ),
    Family::counters(
        "v6iot_lowpan_payloads_refused",
        "frame payloads the 6LoWPAN layer refused (counted in drops as bad_lowpan), by cause",
        "cause",
        |s| {
            vec![
                ("bad_dispatch", s.adaptation.bad_dispatch),
                ("bad_iphc", s.adaptation.bad_iphc),
                ("bad_fragment", s.adaptation.bad_fragments),
            ]
        },
    ),
    Family::counters(
        "v6iot_lowpan_reassemblies",
        "fragmented datagrams that ended, by outcome (completed, timeout, overlap: discarded)",
        "outcome",
        |s| {
            vec![
                ("completed", s.reassembly.completed),
                ("timeout", s.reassembly.timeouts),
                ("overlap", s.reassembly.overlaps),
            ]
        },
    ),
    Family::counters(
        "v6iot_lowpan_fragments_ignored",
        "fragments not taken into a reassembly, by cause",
        "cause",
        |s| {
            vec![
                ("duplicate", s.reassembly.duplicates),
                ("bad_fragment", s.reassembly.bad_fragments),
                ("table_full", s.reassembly.table_full),
                ("source_limit", s.reassembly.source_limit),
            ]
        },
    ),
    Family::gauge(
        "v6iot_lowpan_reassemblies_in_progress",
        "datagrams being reassembled now",
        |s| one(s.reassembly_in_progress as u64),
    ),
    Family::gauge(
        "v6iot_lowpan_reassembly_bytes",
        "bytes held by reassembly now",
        |s| one(s.reassembly_bytes as u64),
    ),
    Family::gauge(
        "v6iot_border_neighbours",
        "entries in the PAN's neighbour table",
        |s| one(s.neighbours as u64),
    ),
    Family::counters(
        "v6iot_border_neighbour_events",
        "neighbour table events (added, changed: new link-layer address, expired: idle, \
         table_full: an address refused)",
        "event",
        |s| {
            vec![
                ("added", s.neighbour.added),
                ("changed", s.neighbour.changed),
                ("expired", s.neighbour.expired),
                ("table_full", s.neighbour.table_full),
            ]
        },
    ),
    Family::counter(
        "v6iot_border_router_solicitations_answered",
        "router solicitations answered",
        |s| one(s.solicitations),
    ),
    Family::counters(
        "v6iot_border_icmp_sent",
        "ICMPv6 messages the border router sent, by type (router_advertisement: periodic and \
         answers)",
        "type",
        |s| {
            vec![
                ("router_advertisement", s.advertisements),
                ("neighbour_advertisement", s.neighbour_adverts),
                ("echo_reply", s.echo_replies),
            ]
        },
    ),
    Family::counter(
        "v6iot_border_derived_next_hops",
        "packets to a device not in the neighbour table, sent to the link-layer address its \
         interface ID derives from",
        |s| one(s.derived_next_hop),
    ),
];

/// The host side's and the radio drivers' families (all PANs).
const HOST: &[Family<RadioSnapshot>] = &[
    Family::counter(
        "v6iot_border_host_packets_received",
        "IPv6 packets taken from the host (TUN)",
        |r| one(r.border.host.packets_in),
    ),
    Family::counter(
        "v6iot_border_host_packets_sent",
        "IPv6 packets handed to the host (TUN)",
        |r| one(r.border.host.packets_out),
    ),
    Family::counters(
        "v6iot_border_host_drops",
        "packets from the host (TUN) or the gateway that no PAN took, by cause",
        "cause",
        |r| {
            let h = &r.border.host;
            vec![
                ("bad_ip", h.bad_ip),
                ("no_route", h.no_route),
                ("hop_limit", h.hop_limit),
                ("to_router", h.to_router),
                ("local_no_route", h.local_no_route),
            ]
        },
    ),
    Family::counters(
        "v6iot_radio_io_drops",
        "frames and packets the radio and TUN drivers dropped below the border router, by cause",
        "cause",
        |r| {
            vec![
                ("zep_malformed", r.io.zep_malformed),
                ("bad_fcs", r.io.bad_fcs),
                ("other_channel", r.io.other_channel),
                ("send_error", r.io.send_errors),
            ]
        },
    ),
];

/// Writes the border router's families.
pub(super) fn encode(out: &mut Out<'_>, r: &RadioSnapshot) -> std::fmt::Result {
    let indices: Vec<String> = (0..r.border.pans.len()).map(|i| i.to_string()).collect();
    let labels: Vec<[(&'static str, &str); 1]> =
        indices.iter().map(|i| [("pan", i.as_str())]).collect();
    let pans: Vec<(&[(&'static str, &str)], &PanStats)> = labels
        .iter()
        .zip(&r.border.pans)
        .map(|(l, s)| (&l[..], s))
        .collect();
    for f in FAMILIES {
        f.encode(out, &pans)?;
    }
    out.families(HOST, r)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{scrape_edge, value};
    use super::super::{EdgeSnapshot, RadioIo, RadioSnapshot};
    use crate::border::stats::{BorderStats, PanStats};

    /// Scrapes a registry over `radio` and parses it as Prometheus does.
    fn scrape(radio: Option<RadioSnapshot>) -> prometheus_parse::Scrape {
        scrape_edge(EdgeSnapshot {
            radio,
            ..EdgeSnapshot::default()
        })
    }

    fn pan(k: u64) -> PanStats {
        let mut p = PanStats {
            frames_in: 100 * k,
            frames_out: 90 * k,
            packets_in: 80 * k,
            packets_out: 70 * k,
            to_host: 11 * k,
            from_host: 12 * k,
            local_in: 13 * k,
            local_out: 14 * k,
            solicitations: 3 * k,
            advertisements: 5 * k,
            neighbour_adverts: 6 * k,
            echo_replies: 7 * k,
            derived_next_hop: 8 * k,
            reassembly_in_progress: 2 * k as usize,
            reassembly_bytes: 640 * k as usize,
            neighbours: 4 * k as usize,
            ..PanStats::default()
        };
        p.drops.other_pan = 21 * k;
        p.drops.tx_queue_full = 22 * k;
        p.drops.send_errors = 23 * k;
        p.adaptation.bad_iphc = 31 * k;
        p.reassembly.completed = 41 * k;
        p.reassembly.timeouts = 42 * k;
        p.reassembly.source_limit = 43 * k;
        p.neighbour.added = 51 * k;
        p.neighbour.table_full = 52 * k;
        p
    }

    #[test]
    fn border_counters_appear_per_pan_with_conventional_names_and_bounded_labels() {
        let radio = RadioSnapshot {
            border: BorderStats {
                pans: vec![pan(1), pan(2)],
                host: crate::border::stats::HostStats {
                    packets_in: 61,
                    packets_out: 62,
                    no_route: 63,
                    ..Default::default()
                },
            },
            io: RadioIo {
                bad_fcs: 71,
                other_channel: 72,
                ..RadioIo::default()
            },
        };
        let s = scrape(Some(radio));
        for (p, k) in [("0", 1.0), ("1", 2.0)] {
            let at = |name: &str, extra: &[(&str, &str)]| {
                let mut labels = vec![("pan", p)];
                labels.extend_from_slice(extra);
                value(&s, name, &labels)
            };
            assert_eq!(
                at("v6iot_radio_frames_received_total", &[]),
                Some(100.0 * k)
            );
            assert_eq!(at("v6iot_radio_frames_sent_total", &[]), Some(90.0 * k));
            assert_eq!(
                at("v6iot_lowpan_packets_received_total", &[]),
                Some(80.0 * k)
            );
            assert_eq!(at("v6iot_lowpan_packets_sent_total", &[]), Some(70.0 * k));
            let fwd = "v6iot_border_packets_forwarded_total";
            assert_eq!(at(fwd, &[("path", "radio_to_host")]), Some(11.0 * k));
            assert_eq!(at(fwd, &[("path", "host_to_radio")]), Some(12.0 * k));
            assert_eq!(at(fwd, &[("path", "radio_to_gateway")]), Some(13.0 * k));
            assert_eq!(at(fwd, &[("path", "gateway_to_radio")]), Some(14.0 * k));
            let drops = "v6iot_border_drops_total";
            assert_eq!(at(drops, &[("cause", "other_pan")]), Some(21.0 * k));
            assert_eq!(at(drops, &[("cause", "tx_queue_full")]), Some(22.0 * k));
            assert_eq!(at(drops, &[("cause", "send_error")]), Some(23.0 * k));
            assert_eq!(at(drops, &[("cause", "bad_mac")]), Some(0.0));
            let refused = "v6iot_lowpan_payloads_refused_total";
            assert_eq!(at(refused, &[("cause", "bad_iphc")]), Some(31.0 * k));
            let re = "v6iot_lowpan_reassemblies_total";
            assert_eq!(at(re, &[("outcome", "completed")]), Some(41.0 * k));
            assert_eq!(at(re, &[("outcome", "timeout")]), Some(42.0 * k));
            let ignored = "v6iot_lowpan_fragments_ignored_total";
            assert_eq!(at(ignored, &[("cause", "source_limit")]), Some(43.0 * k));
            assert_eq!(
                at("v6iot_lowpan_reassemblies_in_progress", &[]),
                Some(2.0 * k)
            );
            assert_eq!(at("v6iot_lowpan_reassembly_bytes", &[]), Some(640.0 * k));
            assert_eq!(at("v6iot_border_neighbours", &[]), Some(4.0 * k));
            let nb = "v6iot_border_neighbour_events_total";
            assert_eq!(at(nb, &[("event", "added")]), Some(51.0 * k));
            assert_eq!(at(nb, &[("event", "table_full")]), Some(52.0 * k));
            let icmp = "v6iot_border_icmp_sent_total";
            assert_eq!(at(icmp, &[("type", "router_advertisement")]), Some(5.0 * k));
            assert_eq!(
                at(icmp, &[("type", "neighbour_advertisement")]),
                Some(6.0 * k)
            );
            assert_eq!(at(icmp, &[("type", "echo_reply")]), Some(7.0 * k));
            let rs = "v6iot_border_router_solicitations_answered_total";
            assert_eq!(at(rs, &[]), Some(3.0 * k));
            assert_eq!(
                at("v6iot_border_derived_next_hops_total", &[]),
                Some(8.0 * k)
            );
        }
        // Every cause of the border's drop counters is a label value, per PAN.
        let causes = s
            .samples
            .iter()
            .filter(|x| x.metric == "v6iot_border_drops_total" && x.labels.get("pan") == Some("0"))
            .count();
        assert_eq!(causes, 17);
        assert_eq!(
            value(&s, "v6iot_border_host_packets_received_total", &[]),
            Some(61.0)
        );
        assert_eq!(
            value(&s, "v6iot_border_host_packets_sent_total", &[]),
            Some(62.0)
        );
        // CoAP to and from the router's gateway over the radios, all PANs
        let coap = |dir| format!("v6iot_coap_datagrams_{dir}_total");
        let lowpan = [("transport", "lowpan")];
        assert_eq!(value(&s, &coap("received"), &lowpan), Some(39.0));
        assert_eq!(value(&s, &coap("sent"), &lowpan), Some(42.0));
        let host = "v6iot_border_host_drops_total";
        assert_eq!(value(&s, host, &[("cause", "no_route")]), Some(63.0));
        let io = "v6iot_radio_io_drops_total";
        assert_eq!(value(&s, io, &[("cause", "bad_fcs")]), Some(71.0));
        assert_eq!(value(&s, io, &[("cause", "other_channel")]), Some(72.0));
        assert_eq!(value(&s, io, &[("cause", "zep_malformed")]), Some(0.0));
        // The only labels on radio families: the PAN's index and a fixed cause/kind.
        let allowed = ["pan", "path", "cause", "outcome", "event", "type"];
        for x in s.samples.iter().filter(|x| {
            ["v6iot_radio_", "v6iot_lowpan_", "v6iot_border_"]
                .iter()
                .any(|p| x.metric.starts_with(p))
        }) {
            for (k, _) in x.labels.iter() {
                assert!(allowed.contains(&k.as_str()), "{}: label {k}", x.metric);
            }
        }
    }

    #[test]
    fn without_radios_no_radio_family_is_written() {
        let s = scrape(None);
        assert!(value(&s, "v6iot_edge_stopping", &[]).is_some());
        assert!(
            !s.samples
                .iter()
                .any(|x| x.metric.starts_with("v6iot_radio_")
                    || x.metric.starts_with("v6iot_lowpan_")
                    || x.metric.starts_with("v6iot_border_")),
            "radio families without radios"
        );
    }
}
