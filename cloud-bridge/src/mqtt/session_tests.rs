//! The session core on virtual time, with the broker's side written by rumqttc's own codecs.

use rumqttc::mqttbytes::{QoS, v4};
use rumqttc::v5::mqttbytes::v5;

use super::*;

fn config(version: Version, window: usize) -> SessionConfig {
    SessionConfig {
        version,
        connect: ConnectParams {
            client_id: "edge".into(),
            keep_alive_s: 10,
            will_topic: "w".into(),
            will_payload: b"offline".to_vec(),
            login: None,
            max_packet: 1024,
        },
        keep_alive: Duration::from_secs(10),
        connack_timeout: Duration::from_secs(5),
        window,
    }
}

impl Message for u32 {
    fn topic(&self) -> &str {
        "t"
    }
    fn payload(&self) -> &[u8] {
        b"p"
    }
    fn retain(&self) -> bool {
        false
    }
}

/// An item whose payload is `.0` bytes long.
#[derive(Debug, PartialEq, Eq)]
struct Big(usize);

impl Message for Big {
    fn topic(&self) -> &str {
        "t"
    }
    fn payload(&self) -> &[u8] {
        &[0; 4096][..self.0]
    }
    fn retain(&self) -> bool {
        false
    }
}

fn read_v4(out: &mut BytesMut) -> v4::Packet {
    v4::Packet::read(out, 1 << 20).unwrap()
}

/// A v4 session past its CONNACK; the CONNECT is taken out of `out`.
fn connected<T: Message + std::fmt::Debug + PartialEq>(
    window: usize,
    t0: Instant,
) -> (Session<T>, BytesMut) {
    let mut out = BytesMut::new();
    let mut s = Session::start(&config(Version::V4, window), t0, &mut out).unwrap();
    assert!(matches!(read_v4(&mut out), v4::Packet::Connect(_)));
    assert!(!s.has_room(), "nothing is published before the CONNACK");
    let mut input = BytesMut::new();
    v4::ConnAck::new(v4::ConnectReturnCode::Success, false)
        .write(&mut input)
        .unwrap();
    assert_eq!(
        s.handle_input(&mut input, t0, &mut out),
        Ok(Some(Output::Connected))
    );
    assert!(s.has_room());
    (s, out)
}

fn puback(pkid: u16) -> BytesMut {
    let mut b = BytesMut::new();
    v4::PubAck::new(pkid).write(&mut b).unwrap();
    b
}

#[test]
fn publishes_with_its_own_packet_ids_and_matches_pubacks_in_any_order() {
    let t0 = Instant::now();
    let (mut s, mut out) = connected::<u32>(3, t0);
    for item in 0..3 {
        s.publish(item, t0, &mut out).unwrap();
    }
    assert!(!s.has_room());
    assert_eq!(s.publish(9, t0, &mut out), Err(NotSent::NoRoom(9)));
    let mut pkids = Vec::new();
    while !out.is_empty() {
        let v4::Packet::Publish(p) = read_v4(&mut out) else {
            panic!("not a PUBLISH")
        };
        assert_eq!(p.qos, QoS::AtLeastOnce);
        pkids.push(p.pkid);
    }
    assert_eq!(pkids, [1, 2, 3]);
    let mut acks = puback(3);
    acks.extend_from_slice(&puback(1));
    acks.extend_from_slice(&puback(1));
    let mut got = Vec::new();
    while let Some(o) = s.handle_input(&mut acks, t0, &mut out).unwrap() {
        got.push(o);
    }
    assert_eq!(
        got,
        [
            Output::Acked {
                item: 2,
                refused: None,
                waited: Duration::ZERO
            },
            Output::Acked {
                item: 0,
                refused: None,
                waited: Duration::ZERO
            }
        ],
        "a second PUBACK for the same id is ignored"
    );
    assert_eq!(s.in_flight(), 1);
    // packet ids go on from 4; 2 is still in flight
    s.publish(10, t0, &mut out).unwrap();
    s.publish(11, t0, &mut out).unwrap();
    assert!(!s.has_room());
    assert_eq!(s.into_unacked(), [1, 10, 11], "hand-over order");
}

#[test]
fn the_largest_window_still_leaves_a_packet_id_for_the_subscribe() {
    let t0 = Instant::now();
    let (mut s, mut out) = connected::<u32>(usize::from(u16::MAX), t0);
    assert_eq!(s.window(), usize::from(u16::MAX) - 1);
    for item in 0..u32::from(u16::MAX) - 1 {
        s.publish(item, t0, &mut out).unwrap();
        out.clear();
    }
    assert!(!s.has_room());
    s.subscribe("f", t0, &mut out).unwrap();
}

#[test]
fn packet_ids_wrap_and_skip_ids_in_flight() {
    let t0 = Instant::now();
    let (mut s, mut out) = connected::<u32>(2, t0);
    s.publish(0, t0, &mut out).unwrap(); // pkid 1 stays in flight
    for item in 1..70_000u32 {
        s.publish(item, t0, &mut out).unwrap();
        out.clear();
        let pkid = u16::try_from((item - 1) % 65_534 + 2).unwrap();
        let mut ack = puback(pkid);
        assert_eq!(
            s.handle_input(&mut ack, t0, &mut out),
            Ok(Some(Output::Acked {
                item,
                refused: None,
                waited: Duration::ZERO
            })),
            "item {item}"
        );
    }
    assert_eq!(s.into_unacked(), [0]);
}

#[test]
fn a_refused_connack_ends_the_session_and_a_late_one_times_out() {
    let t0 = Instant::now();
    let mut out = BytesMut::new();
    let mut s: Session<u32> = Session::start(&config(Version::V4, 8), t0, &mut out).unwrap();
    let mut input = BytesMut::new();
    v4::ConnAck::new(v4::ConnectReturnCode::NotAuthorized, false)
        .write(&mut input)
        .unwrap();
    assert_eq!(
        s.handle_input(&mut input, t0, &mut out),
        Err(Ended::Refused("NotAuthorized".into()))
    );

    let mut s: Session<u32> = Session::start(&config(Version::V4, 8), t0, &mut out).unwrap();
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    assert_eq!(
        s.handle_timeout(t0 + Duration::from_secs(4), &mut out),
        Ok(())
    );
    assert_eq!(
        s.handle_timeout(t0 + Duration::from_secs(5), &mut out),
        Err(Ended::ConnAckTimeout(Duration::from_secs(5)))
    );
}

#[test]
fn something_else_before_the_connack_is_a_protocol_error() {
    let t0 = Instant::now();
    let mut out = BytesMut::new();
    let mut s: Session<u32> = Session::start(&config(Version::V4, 8), t0, &mut out).unwrap();
    assert_eq!(
        s.handle_input(&mut puback(1), t0, &mut out),
        Err(Ended::Protocol(ProtocolError::ExpectedConnAck("PUBACK")))
    );
}

#[test]
fn pings_when_idle_and_ends_when_the_pingresp_is_overdue() {
    let t0 = Instant::now();
    let (mut s, mut out) = connected::<u32>(8, t0);
    let ka = Duration::from_secs(10);
    assert_eq!(s.poll_timeout(), Some(t0 + ka));
    let t1 = t0 + Duration::from_secs(6);
    s.publish(1, t1, &mut out).unwrap();
    out.clear();
    assert_eq!(s.poll_timeout(), Some(t1 + ka), "sending moves the ping");
    s.handle_timeout(t0 + ka, &mut out).unwrap();
    assert!(out.is_empty(), "an early wake-up sends nothing");
    s.handle_timeout(t1 + ka, &mut out).unwrap();
    assert_eq!(read_v4(&mut out), v4::Packet::PingReq);
    // answered: the next ping is due a keep-alive later
    let mut resp = BytesMut::new();
    v4::PingResp.write(&mut resp).unwrap();
    assert_eq!(s.handle_input(&mut resp, t1 + ka, &mut out), Ok(None));
    s.handle_timeout(t1 + ka * 2, &mut out).unwrap();
    assert_eq!(read_v4(&mut out), v4::Packet::PingReq);
    // not answered: the end
    assert_eq!(
        s.handle_timeout(t1 + ka * 3, &mut out),
        Err(Ended::KeepAliveTimeout(ka))
    );
}

#[test]
fn commands_are_acknowledged_to_the_broker() {
    let t0 = Instant::now();
    let (mut s, mut out) = connected::<u32>(8, t0);
    s.subscribe("v6iot/s/+/cmd/+", t0, &mut out).unwrap();
    let v4::Packet::Subscribe(sub) = read_v4(&mut out) else {
        panic!("not a SUBSCRIBE")
    };
    let mut input = BytesMut::new();
    v4::SubAck::new(
        sub.pkid,
        vec![v4::SubscribeReasonCode::Success(QoS::AtLeastOnce)],
    )
    .write(&mut input)
    .unwrap();
    let mut p = v4::Publish::new("v6iot/s/d/cmd/1", QoS::AtLeastOnce, b"{}".to_vec());
    p.pkid = 77;
    p.write(&mut input).unwrap();
    assert_eq!(
        s.handle_input(&mut input, t0, &mut out),
        Ok(Some(Output::Subscribed { refused: None }))
    );
    assert_eq!(
        s.handle_input(&mut input, t0, &mut out),
        Ok(Some(Output::Command {
            topic: "v6iot/s/d/cmd/1".into(),
            payload: b"{}".to_vec()
        }))
    );
    assert_eq!(read_v4(&mut out), v4::Packet::PubAck(v4::PubAck::new(77)));
}

#[test]
fn an_mqtt5_broker_s_receive_maximum_and_keep_alive_apply() {
    let t0 = Instant::now();
    let mut out = BytesMut::new();
    let mut s: Session<u32> = Session::start(&config(Version::V5, 64), t0, &mut out).unwrap();
    out.clear();
    let props = v5::ConnAckProperties {
        session_expiry_interval: None,
        receive_max: Some(20),
        max_qos: None,
        retain_available: None,
        max_packet_size: None,
        assigned_client_identifier: None,
        topic_alias_max: None,
        reason_string: None,
        user_properties: Vec::new(),
        wildcard_subscription_available: None,
        subscription_identifiers_available: None,
        shared_subscription_available: None,
        server_keep_alive: Some(7),
        response_information: None,
        server_reference: None,
        authentication_method: None,
        authentication_data: None,
    };
    let mut input = BytesMut::new();
    v5::ConnAck {
        session_present: false,
        code: v5::ConnectReturnCode::Success,
        properties: Some(props),
    }
    .write(&mut input)
    .unwrap();
    assert_eq!(
        s.handle_input(&mut input, t0, &mut out),
        Ok(Some(Output::Connected))
    );
    assert_eq!(s.window(), 20);
    assert_eq!(
        s.poll_timeout(),
        Some(t0 + Duration::from_secs(7)),
        "the server's keep-alive replaces ours"
    );
    let mut disconnect = BytesMut::new();
    v5::Packet::Disconnect(v5::Disconnect {
        reason_code: v5::DisconnectReasonCode::ServerBusy,
        properties: Some(v5::DisconnectProperties {
            session_expiry_interval: None,
            reason_string: Some("busy".into()),
            user_properties: Vec::new(),
            server_reference: None,
        }),
    })
    .write(&mut disconnect, None)
    .unwrap();
    assert_eq!(
        s.handle_input(&mut disconnect, t0, &mut out),
        Err(Ended::Disconnected("ServerBusy: busy".into()))
    );
}

#[test]
fn too_large_a_publish_is_handed_back_and_nothing_is_written() {
    let t0 = Instant::now();
    let (mut s, mut out) = connected::<Big>(8, t0);
    s.publish(Big(1000), t0, &mut out).unwrap();
    out.clear();
    let r = s.publish(Big(2048), t0, &mut out);
    assert!(matches!(r, Err(NotSent::TooLarge(Big(2048), _))));
    assert!(out.is_empty());
    assert_eq!(s.in_flight(), 1);
}

proptest::proptest! {
    /// Whatever the broker sends, before or after the CONNACK, is handled or ends the session
    /// with an error: never a panic, never a loop.
    #[test]
    fn arbitrary_broker_bytes_never_panic(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
        v5 in proptest::prelude::any::<bool>(),
        after_connack in proptest::prelude::any::<bool>(),
    ) {
        let version = if v5 { Version::V5 } else { Version::V4 };
        let t0 = Instant::now();
        let mut out = BytesMut::new();
        let mut s: Session<u32> = Session::start(&config(version, 8), t0, &mut out).unwrap();
        let mut input = BytesMut::new();
        if after_connack {
            // CONNACK, success (MQTT 5: with an empty property list)
            input.extend_from_slice(if v5 { b"\x20\x03\x00\x00\x00" } else { b"\x20\x02\x00\x00" });
        }
        input.extend_from_slice(&bytes);
        for _ in 0..=bytes.len() + 1 {
            match s.handle_input(&mut input, t0, &mut out) {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
}
