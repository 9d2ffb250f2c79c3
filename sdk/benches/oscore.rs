//! OSCORE's cost on a device's typical message: a `POST /t` telemetry report with a 60-byte
//! SenML-CBOR body. `protect_request`, `unprotect_request`, `protect_response` and
//! `unprotect_response` on coap-lite `Packet`s, next to the plain CoAP baseline (encode and
//! parse of the same request).
//!
//! Run: `cargo bench -p v6iot-sdk --bench oscore` (short: add
//! `-- --warm-up-time 1 --measurement-time 3`).

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::panic,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::hint::black_box;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use v6iot_sdk::coap::{content_format, wire};
use v6iot_sdk::oscore::{
    ContextConfig, ContextInput, RequestInfo, SecurityContext, protect_request, protect_response,
    unprotect_request, unprotect_response,
};
use v6iot_sdk::senml::{self, PackBuilder, Record};

/// The report body: 60 bytes of SenML-CBOR.
fn report_body() -> Vec<u8> {
    let pack = PackBuilder::new()
        .base_name("urn:dev:v6iot:sim00042:")
        .base_time(1_764_150_000.25)
        .record(Record::measurement("ambient_temp", "Cel", 21.5))
        .build();
    let body = senml::to_cbor(&pack).unwrap();
    assert_eq!(body.len(), 60);
    body
}

fn report() -> Packet {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Post);
    p.header.message_id = 0x1234;
    p.set_token(vec![1, 2, 3, 4]);
    p.add_option(CoapOption::UriPath, b"t".to_vec());
    p.add_option(
        CoapOption::ContentFormat,
        wire::write_uint(u32::from(content_format::SENML_CBOR)),
    );
    p.payload = report_body();
    p
}

fn changed(to: &Packet) -> Packet {
    let mut r = Packet::new();
    r.header.set_type(MessageType::Acknowledgement);
    r.header.message_id = to.header.message_id;
    r.header.code = MessageClass::Response(ResponseType::Changed);
    r.set_token(to.get_token().to_vec());
    r
}

/// The device's and the edge's contexts, with marks far enough out for any bench run.
fn contexts() -> (SecurityContext, SecurityContext) {
    let config = ContextConfig {
        persist_step: 1 << 39,
        ..ContextConfig::default()
    };
    let input = |sender: &[u8], recipient: &[u8]| ContextInput {
        master_secret: vec![0x5a; 16],
        master_salt: vec![0x9e, 0x7c],
        id_context: None,
        sender_id: sender.to_vec(),
        recipient_id: recipient.to_vec(),
    };
    let mut device = SecurityContext::new(&input(&[0x2a], &[]), config).unwrap();
    let mut edge = SecurityContext::new(&input(&[], &[0x2a]), config).unwrap();
    for ctx in [&mut device, &mut edge] {
        let mark = ctx.mark_to_persist().unwrap();
        ctx.persisted(mark);
    }
    (device, edge)
}

fn bench(c: &mut Criterion) {
    let plain = report();
    let plain_bytes = wire::encode(&plain).unwrap();
    let (mut device, mut edge) = contexts();
    let mut g = c.benchmark_group("senml_report_60B");

    g.bench_function("plain_encode", |b| {
        b.iter(|| wire::encode(black_box(&plain)).unwrap())
    });
    g.bench_function("plain_parse", |b| {
        b.iter(|| wire::parse(black_box(&plain_bytes)).unwrap())
    });

    g.bench_function("protect_request", |b| {
        b.iter(|| protect_request(&mut device, black_box(&plain)).unwrap())
    });

    // Each verification needs a request the replay window has not seen: made in the setup.
    g.bench_function("unprotect_request", |b| {
        b.iter_batched(
            || protect_request(&mut device, &plain).unwrap().0,
            |protected| unprotect_request(&mut edge, black_box(&protected)).unwrap(),
            BatchSize::SmallInput,
        )
    });

    // A response uses its request's nonce once: a fresh binding per iteration. The measured
    // side works on a copy of the context (a response with the request's nonce changes no state
    // of the context, and the setup needs the original).
    let mut edge_copy = edge.clone();
    let mut device_copy = device.clone();
    g.bench_function("protect_response", |b| {
        b.iter_batched(
            || {
                let protected = protect_request(&mut device, &plain).unwrap().0;
                unprotect_request(&mut edge, &protected).unwrap()
            },
            |(request, mut info): (Packet, RequestInfo)| {
                protect_response(
                    &mut edge_copy,
                    black_box(&changed(&request)),
                    &mut info,
                    false,
                )
                .unwrap()
            },
            BatchSize::SmallInput,
        )
    });

    g.bench_function("unprotect_response", |b| {
        b.iter_batched(
            || {
                let (protected, info) = protect_request(&mut device, &plain).unwrap();
                let (request, mut binding) = unprotect_request(&mut edge, &protected).unwrap();
                let response =
                    protect_response(&mut edge, &changed(&request), &mut binding, false).unwrap();
                (response, info)
            },
            |(response, mut info): (Packet, RequestInfo)| {
                unprotect_response(&mut device_copy, black_box(&response), &mut info).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
