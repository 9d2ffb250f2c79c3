//! Fuzzes what the edge's operations listener reads from the network: HTTP request heads
//! (`ops::http::parse_head`), the dashboard feed's messages (`FromPage::parse`, then the
//! query run on a board), and the stored records the board reads values from
//! (`senml_value`). Nothing may panic; a complete head lies within the input; an answer holds
//! at most `MAX_WINDOW` rows and never more than match; a value's text is bounded.
//!
//! Input: the first byte mod 3 picks 0 an HTTP request head, 1 a feed message (JSON text),
//! 2 a SenML-JSON payload; the rest is that input (seeds: `fuzz/make_corpus.py`).

#![no_main]

use std::net::SocketAddr;

use v6iot_edge_router::ops::dashboard::board::{Board, MAX_WINDOW, senml_value};
use v6iot_edge_router::ops::dashboard::feed::FromPage;
use v6iot_edge_router::ops::http::{HeadResult, parse_head};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => {
            if let HeadResult::Complete(_, len) = parse_head(rest) {
                assert!(len <= rest.len());
            }
        }
        1 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            if let Some(FromPage::Query(q)) = FromPage::parse(text) {
                let mut board = Board::new(8);
                let peer = SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 5683));
                for i in 0..10u64 {
                    board.registered(&format!("dev-{i}"), peer, i);
                }
                let page = board.query(&q);
                assert!(page.rows.len() <= MAX_WINDOW);
                assert!(page.rows.len() <= page.total && page.total <= 8);
                assert!(page.offset <= page.total);
            }
        }
        _ => {
            if let Some((text, _)) = senml_value(rest) {
                assert!(text.chars().count() <= 120);
            }
        }
    }
});
