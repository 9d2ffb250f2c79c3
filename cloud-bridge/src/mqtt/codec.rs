//! The MQTT 3.1.1 and 5 packets the bridge sends and receives, on rumqttc's `mqttbytes`
//! codecs (pure encode/decode, no I/O): one small face for both versions, so that the
//! [session core](super::session) does not care which one is spoken.
//!
//! Decoding never panics on what the broker sends: a malformed packet is an error naming the
//! cause, and the connection is closed.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::{self as m4, v4};
use rumqttc::v5::mqttbytes::{self as m5, v5};

/// Why a packet could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CodecError {
    /// The broker's bytes are not a packet the codec accepts (rumqttc's reason).
    #[error("malformed MQTT packet from the broker: {0}")]
    Malformed(String),
    /// A packet of ours is larger than the limit in force (ours, or the broker's if smaller).
    #[error("an MQTT packet of {size} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// The packet's size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// rumqttc refused to encode a packet of ours (its reason).
    #[error("cannot encode an MQTT packet: {0}")]
    Encode(String),
}

/// The protocol version of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V4,
    /// MQTT 5.
    V5,
}

/// What goes into the CONNECT.
#[derive(Debug, Clone)]
pub(crate) struct ConnectParams {
    pub(crate) client_id: String,
    /// Seconds; 0 turns keep-alive off.
    pub(crate) keep_alive_s: u16,
    /// The Last Will: retained, QoS 1.
    pub(crate) will_topic: String,
    pub(crate) will_payload: Vec<u8>,
    pub(crate) login: Option<(String, String)>,
    /// The largest packet this client accepts (MQTT 5 tells the broker).
    pub(crate) max_packet: u32,
}

/// A packet from the broker, as far as the bridge cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// CONNACK; `refused` holds the return/reason code when it is not a success. MQTT 5 brokers
    /// may limit the QoS 1 PUBLISHes in flight (`receive_max`) and the packet size, and may
    /// impose their own keep-alive (seconds).
    ConnAck {
        refused: Option<String>,
        receive_max: Option<u16>,
        max_packet: Option<u32>,
        keep_alive: Option<u16>,
    },
    /// PUBACK; `refused` holds an MQTT 5 error reason, and whether it is permanent.
    PubAck {
        pkid: u16,
        refused: Option<(String, bool)>,
    },
    /// PUBLISH from the broker (a command); `qos` 0, 1 or 2.
    Publish {
        topic: String,
        payload: Vec<u8>,
        qos: u8,
        pkid: u16,
    },
    /// PUBREL (the second half of a QoS 2 PUBLISH to us).
    PubRel { pkid: u16 },
    /// SUBACK; `refused` when the broker refused the filter.
    SubAck { pkid: u16, refused: Option<String> },
    /// PINGRESP.
    PingResp,
    /// DISCONNECT from the broker (MQTT 5), with its reason.
    Disconnect { reason: String },
    /// A packet a client never expects from a broker (CONNECT, SUBSCRIBE, …) or does not
    /// use (UNSUBACK, PUBREC, PUBCOMP: the bridge sends neither QoS 2 nor UNSUBSCRIBE).
    Unexpected(&'static str),
}

impl Incoming {
    /// The packet's name, for errors.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Incoming::ConnAck { .. } => "CONNACK",
            Incoming::PubAck { .. } => "PUBACK",
            Incoming::Publish { .. } => "PUBLISH",
            Incoming::PubRel { .. } => "PUBREL",
            Incoming::SubAck { .. } => "SUBACK",
            Incoming::PingResp => "PINGRESP",
            Incoming::Disconnect { .. } => "DISCONNECT",
            Incoming::Unexpected(name) => name,
        }
    }
}

/// Takes the next whole packet off the front of `buf`: `Ok(None)` when `buf` holds only part
/// of one (read more and call again). `max_packet` bounds what is accepted.
pub(crate) fn decode(
    version: Version,
    buf: &mut BytesMut,
    max_packet: u32,
) -> Result<Option<Incoming>, CodecError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let before = buf.len();
    // rumqttc takes a whole frame off `buf` before it parses the frame's content: running
    // short inside a frame taken off is a malformed packet, not a reason to wait for more.
    match version {
        Version::V4 => match v4::Packet::read(buf, max_packet as usize) {
            Ok(p) => Ok(Some(from_v4(p))),
            Err(m4::Error::InsufficientBytes(_)) if buf.len() == before => Ok(None),
            Err(e) => Err(CodecError::Malformed(e.to_string())),
        },
        Version::V5 => match v5::Packet::read(buf, Some(max_packet)) {
            Ok(p) => Ok(Some(from_v5(p))),
            Err(m5::Error::InsufficientBytes(_)) if buf.len() == before => Ok(None),
            Err(e) => Err(CodecError::Malformed(e.to_string())),
        },
    }
}

fn publish(topic: String, payload: &[u8], qos: u8, pkid: u16) -> Incoming {
    Incoming::Publish {
        topic,
        payload: payload.to_vec(),
        qos,
        pkid,
    }
}

fn suback(pkid: u16, refused: Option<String>) -> Incoming {
    Incoming::SubAck { pkid, refused }
}

fn from_v4(p: v4::Packet) -> Incoming {
    use v4::Packet;
    match p {
        Packet::ConnAck(a) => Incoming::ConnAck {
            refused: (a.code != v4::ConnectReturnCode::Success).then(|| format!("{:?}", a.code)),
            receive_max: None,
            max_packet: None,
            keep_alive: None,
        },
        Packet::PubAck(a) => Incoming::PubAck {
            pkid: a.pkid,
            refused: None,
        },
        Packet::Publish(p) => publish(p.topic, &p.payload, p.qos as u8, p.pkid),
        Packet::PubRel(r) => Incoming::PubRel { pkid: r.pkid },
        Packet::SubAck(s) => suback(
            s.pkid,
            s.return_codes
                .iter()
                .any(|c| matches!(c, v4::SubscribeReasonCode::Failure))
                .then(|| "Failure".to_owned()),
        ),
        Packet::PingResp => Incoming::PingResp,
        Packet::Disconnect => Incoming::Disconnect {
            reason: "DISCONNECT".to_owned(),
        },
        Packet::Connect(_) => Incoming::Unexpected("CONNECT"),
        Packet::PubRec(_) => Incoming::Unexpected("PUBREC"),
        Packet::PubComp(_) => Incoming::Unexpected("PUBCOMP"),
        Packet::Subscribe(_) => Incoming::Unexpected("SUBSCRIBE"),
        Packet::Unsubscribe(_) => Incoming::Unexpected("UNSUBSCRIBE"),
        Packet::UnsubAck(_) => Incoming::Unexpected("UNSUBACK"),
        Packet::PingReq => Incoming::Unexpected("PINGREQ"),
    }
}

fn from_v5(p: v5::Packet) -> Incoming {
    use v5::{Packet, PubAckReason};
    match p {
        Packet::ConnAck(a) => {
            let (receive_max, max_packet, keep_alive) =
                a.properties.as_ref().map_or((None, None, None), |p| {
                    (p.receive_max, p.max_packet_size, p.server_keep_alive)
                });
            let refused = (a.code != v5::ConnectReturnCode::Success).then(|| {
                match a.properties.and_then(|p| p.reason_string) {
                    Some(why) => format!("{:?}: {why}", a.code),
                    None => format!("{:?}", a.code),
                }
            });
            Incoming::ConnAck {
                refused,
                receive_max,
                max_packet,
                keep_alive,
            }
        }
        Packet::PubAck(a) => Incoming::PubAck {
            pkid: a.pkid,
            refused: match a.reason {
                PubAckReason::Success | PubAckReason::NoMatchingSubscribers => None,
                other => {
                    // The same PUBLISH will be refused again, whenever it is sent.
                    let permanent = matches!(
                        other,
                        PubAckReason::NotAuthorized
                            | PubAckReason::TopicNameInvalid
                            | PubAckReason::PayloadFormatInvalid
                    );
                    let reason = match a.properties.and_then(|p| p.reason_string) {
                        Some(why) => format!("{other:?}: {why}"),
                        None => format!("{other:?}"),
                    };
                    Some((reason, permanent))
                }
            },
        },
        Packet::Publish(p) => publish(
            String::from_utf8_lossy(&p.topic).into_owned(),
            &p.payload,
            p.qos as u8,
            p.pkid,
        ),
        Packet::PubRel(r) => Incoming::PubRel { pkid: r.pkid },
        Packet::SubAck(s) => suback(
            s.pkid,
            s.return_codes
                .iter()
                .find(|c| !matches!(c, v5::SubscribeReasonCode::Success(_)))
                .map(|c| format!("{c:?}")),
        ),
        Packet::PingResp(_) => Incoming::PingResp,
        Packet::Disconnect(d) => Incoming::Disconnect {
            reason: match d.properties.and_then(|p| p.reason_string) {
                Some(why) => format!("{:?}: {why}", d.reason_code),
                None => format!("{:?}", d.reason_code),
            },
        },
        Packet::Auth(_) => Incoming::Unexpected("AUTH"),
        Packet::Connect(..) => Incoming::Unexpected("CONNECT"),
        Packet::PubRec(_) => Incoming::Unexpected("PUBREC"),
        Packet::PubComp(_) => Incoming::Unexpected("PUBCOMP"),
        Packet::Subscribe(_) => Incoming::Unexpected("SUBSCRIBE"),
        Packet::Unsubscribe(_) => Incoming::Unexpected("UNSUBSCRIBE"),
        Packet::UnsubAck(_) => Incoming::Unexpected("UNSUBACK"),
        Packet::PingReq(_) => Incoming::Unexpected("PINGREQ"),
    }
}

fn v4_err(e: m4::Error) -> CodecError {
    match e {
        m4::Error::OutgoingPacketTooLarge { pkt_size, max } => CodecError::TooLarge {
            size: pkt_size as u64,
            max: max as u64,
        },
        other => CodecError::Encode(other.to_string()),
    }
}

fn v5_err(e: m5::Error) -> CodecError {
    match e {
        m5::Error::OutgoingPacketTooLarge { pkt_size, max } => CodecError::TooLarge {
            size: u64::from(pkt_size),
            max: u64::from(max),
        },
        other => CodecError::Encode(other.to_string()),
    }
}

/// Appends a CONNECT (clean session/start, Last Will retained at QoS 1).
pub(crate) fn encode_connect(
    version: Version,
    p: &ConnectParams,
    out: &mut BytesMut,
) -> Result<(), CodecError> {
    match version {
        Version::V4 => {
            let mut c = v4::Connect::new(p.client_id.clone());
            c.keep_alive = p.keep_alive_s;
            c.clean_session = true;
            c.last_will = Some(v4::LastWill::new(
                p.will_topic.clone(),
                p.will_payload.clone(),
                m4::QoS::AtLeastOnce,
                true,
            ));
            if let Some((user, pass)) = &p.login {
                c.set_login(user.clone(), pass.clone());
            }
            v4::Packet::Connect(c)
                .write(out, usize::MAX)
                .map(drop)
                .map_err(v4_err)
        }
        Version::V5 => {
            let mut props = v5::ConnectProperties::new();
            props.max_packet_size = Some(p.max_packet);
            let c = v5::Connect {
                keep_alive: p.keep_alive_s,
                client_id: p.client_id.clone(),
                clean_start: true,
                properties: Some(props),
            };
            let will = v5::LastWill::new(
                p.will_topic.clone(),
                p.will_payload.clone(),
                m5::QoS::AtLeastOnce,
                true,
                None,
            );
            let login = p
                .login
                .as_ref()
                .map(|(user, pass)| v5::Login::new(user.clone(), pass.clone()));
            v5::Packet::Connect(c, Some(will), login)
                .write(out, None)
                .map(drop)
                .map_err(v5_err)
        }
    }
}

/// Appends a QoS 1 PUBLISH with packet id `pkid`; fails (writing nothing) when it would be
/// larger than `max_packet`.
pub(crate) fn encode_publish(
    version: Version,
    topic: &str,
    payload: &[u8],
    retain: bool,
    pkid: u16,
    max_packet: u32,
    out: &mut BytesMut,
) -> Result<(), CodecError> {
    let payload = Bytes::copy_from_slice(payload);
    match version {
        Version::V4 => {
            let mut p = v4::Publish::from_bytes(topic, m4::QoS::AtLeastOnce, payload);
            p.retain = retain;
            p.pkid = pkid;
            v4::Packet::Publish(p)
                .write(out, max_packet as usize)
                .map(drop)
                .map_err(v4_err)
        }
        Version::V5 => {
            let mut p = v5::Publish::new(topic, m5::QoS::AtLeastOnce, payload, None);
            p.retain = retain;
            p.pkid = pkid;
            v5::Packet::Publish(p)
                .write(out, Some(max_packet))
                .map(drop)
                .map_err(v5_err)
        }
    }
}

/// Appends a PUBACK (for a QoS 1 PUBLISH from the broker).
pub(crate) fn encode_puback(version: Version, pkid: u16, out: &mut BytesMut) {
    // Fixed size, nothing to fail on.
    let _ = match version {
        Version::V4 => v4::PubAck::new(pkid).write(out).map_err(v4_err),
        Version::V5 => v5::PubAck::new(pkid, None).write(out).map_err(v5_err),
    };
}

/// Appends a PUBREC (first answer to a QoS 2 PUBLISH from the broker).
pub(crate) fn encode_pubrec(version: Version, pkid: u16, out: &mut BytesMut) {
    let _ = match version {
        Version::V4 => v4::PubRec::new(pkid).write(out).map_err(v4_err),
        Version::V5 => v5::PubRec::new(pkid, None).write(out).map_err(v5_err),
    };
}

/// Appends a PUBCOMP (answer to a PUBREL).
pub(crate) fn encode_pubcomp(version: Version, pkid: u16, out: &mut BytesMut) {
    let _ = match version {
        Version::V4 => v4::PubComp::new(pkid).write(out).map_err(v4_err),
        Version::V5 => v5::PubComp::new(pkid, None).write(out).map_err(v5_err),
    };
}

/// Appends a SUBSCRIBE of one filter at QoS 1.
pub(crate) fn encode_subscribe(
    version: Version,
    pkid: u16,
    filter: &str,
    out: &mut BytesMut,
) -> Result<(), CodecError> {
    match version {
        Version::V4 => {
            let mut s = v4::Subscribe::new(filter, m4::QoS::AtLeastOnce);
            s.pkid = pkid;
            s.write(out).map(drop).map_err(v4_err)
        }
        Version::V5 => {
            let mut s = v5::Subscribe::new(v5::Filter::new(filter, m5::QoS::AtLeastOnce), None);
            s.pkid = pkid;
            v5::Packet::Subscribe(s)
                .write(out, None)
                .map(drop)
                .map_err(v5_err)
        }
    }
}

/// Appends a PINGREQ.
pub(crate) fn encode_pingreq(version: Version, out: &mut BytesMut) {
    let _ = match version {
        Version::V4 => v4::PingReq.write(out).map_err(v4_err),
        Version::V5 => v5::PingReq::write(out).map_err(v5_err),
    };
}

/// Appends a DISCONNECT (normal disconnection: the broker drops the Last Will).
pub(crate) fn encode_disconnect(version: Version, out: &mut BytesMut) {
    let _ = match version {
        Version::V4 => v4::Disconnect.write(out).map_err(v4_err),
        Version::V5 => v5::Packet::Disconnect(v5::Disconnect::new(
            v5::DisconnectReasonCode::NormalDisconnection,
        ))
        .write(out, None)
        .map_err(v5_err),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ConnectParams {
        ConnectParams {
            client_id: "edge-1".into(),
            keep_alive_s: 30,
            will_topic: "v6iot/s/edge/e/status".into(),
            will_payload: b"{\"state\":\"offline\"}".to_vec(),
            login: Some(("user".into(), "pw".into())),
            max_packet: 4096,
        }
    }

    #[test]
    fn connect_round_trips_through_rumqttc_in_both_versions() {
        let mut out = BytesMut::new();
        encode_connect(Version::V4, &params(), &mut out).unwrap();
        let v4::Packet::Connect(c) = v4::Packet::read(&mut out, 1 << 20).unwrap() else {
            panic!("not a CONNECT")
        };
        assert_eq!((c.client_id.as_str(), c.keep_alive), ("edge-1", 30));
        assert!(c.clean_session);
        let will = c.last_will.unwrap();
        assert!(will.retain);
        assert_eq!(will.qos, m4::QoS::AtLeastOnce);
        assert_eq!(c.login.unwrap().username, "user");

        encode_connect(Version::V5, &params(), &mut out).unwrap();
        let v5::Packet::Connect(c, will, login) = v5::Packet::read(&mut out, None).unwrap() else {
            panic!("not a CONNECT")
        };
        assert!(c.clean_start);
        assert_eq!(c.properties.unwrap().max_packet_size, Some(4096));
        assert!(will.unwrap().retain);
        assert_eq!(login.unwrap().password, "pw");
    }

    #[test]
    fn publish_bytes_are_the_mqtt_wire_format() {
        let mut out = BytesMut::new();
        encode_publish(Version::V4, "a/b", b"hi", true, 0x0102, 1024, &mut out).unwrap();
        // QoS 1 + retain, remaining length 9, topic "a/b", packet id, payload
        assert_eq!(&out[..], b"\x33\x09\x00\x03a/b\x01\x02hi");
        out.clear();
        encode_publish(Version::V5, "a/b", b"hi", false, 7, 1024, &mut out).unwrap();
        // MQTT 5 adds the (empty) property length
        assert_eq!(&out[..], b"\x32\x0a\x00\x03a/b\x00\x07\x00hi");
        out.clear();
        for version in [Version::V4, Version::V5] {
            let e = encode_publish(version, "a/b", &[0; 64], false, 1, 32, &mut out).unwrap_err();
            assert!(
                matches!(e, CodecError::TooLarge { max: 32, size } if size > 64),
                "{e}"
            );
        }
        assert!(
            out.is_empty(),
            "nothing written for a packet that is too large"
        );
    }

    #[test]
    fn decodes_partial_input_as_not_yet() {
        let mut whole = BytesMut::new();
        v4::PubAck::new(9).write(&mut whole).unwrap();
        let mut part = BytesMut::from(&whole[..2]);
        assert_eq!(decode(Version::V4, &mut part, 1024), Ok(None));
        part.extend_from_slice(&whole[2..]);
        assert_eq!(
            decode(Version::V4, &mut part, 1024),
            Ok(Some(Incoming::PubAck {
                pkid: 9,
                refused: None
            }))
        );
        assert!(part.is_empty());
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bytes in [
            &b"\xf0\x00"[..],
            b"\x40\x01\x00",
            b"\x20\xff\xff\xff\xff\x01",
        ] {
            for version in [Version::V4, Version::V5] {
                let mut buf = BytesMut::from(bytes);
                let e = decode(version, &mut buf, 1024).unwrap_err();
                assert!(matches!(e, CodecError::Malformed(_)), "{bytes:?}: {e}");
                assert!(e.to_string().starts_with("malformed MQTT packet"), "{e}");
            }
        }
    }

    #[test]
    fn a_frame_too_short_for_its_content_is_malformed_not_partial() {
        // PUBACK with remaining length 1: the frame is complete, its packet id is not
        let mut buf = BytesMut::from(&b"\x40\x01\x00"[..]);
        assert!(decode(Version::V4, &mut buf, 1024).is_err());
    }

    #[test]
    fn v5_puback_reasons_are_sorted_into_permanent_and_not() {
        let mut out = BytesMut::new();
        let mut a = v5::PubAck::new(3, None);
        a.reason = v5::PubAckReason::NotAuthorized;
        a.write(&mut out).unwrap();
        let mut b = v5::PubAck::new(4, None);
        b.reason = v5::PubAckReason::QuotaExceeded;
        b.write(&mut out).unwrap();
        let got = [
            decode(Version::V5, &mut out, 1024).unwrap(),
            decode(Version::V5, &mut out, 1024).unwrap(),
        ];
        assert!(matches!(
            &got[0],
            Some(Incoming::PubAck {
                pkid: 3,
                refused: Some((_, true))
            })
        ));
        assert!(matches!(
            &got[1],
            Some(Incoming::PubAck {
                pkid: 4,
                refused: Some((_, false))
            })
        ));
    }
}
