//! The collector's MQTT 3.1.1 subscriber, written for a load generator: a sans-IO core
//! ([`SubscriberCore`]) on rumqttc's `mqttbytes` codecs and a blocking driver on one dedicated
//! thread ([`Subscription`]).
//!
//! The core sends CONNECT (clean session), SUBSCRIBE at QoS 1 once the CONNACK accepts it, a
//! PUBACK for every QoS 1 PUBLISH and a PINGREQ when nothing was sent for half the keep-alive;
//! time is passed in. A PINGRESP that does not come within half the keep-alive of its PINGREQ
//! ends the connection ([`SubscriberError::KeepAliveTimeout`]): a broker that went away
//! without a FIN or RST (a half-open connection, on which reads only time out) is found within
//! one keep-alive of the last bytes sent, and the driver reconnects. A malformed or refused
//! packet is an error naming the cause, never a panic.
//!
//! The driver reads whatever the broker has sent into one buffer, hands every complete PUBLISH
//! in it to the caller in one go (one lock of the caller's state per read, not per message),
//! answers all of them with one write, and then pauses [`PACE`] before the next read while
//! the traffic is light, so a busy stream costs one wake-up per pause rather than one per few
//! messages. (A broker that limits QoS 1 messages in flight to N per client — mosquitto's
//! `max_inflight_messages`, 20 by default — then delivers at most about N per pause; a read
//! that brings many messages skips the pause, see [`BUSY_READ`].) It reconnects (and
//! subscribes again) when the connection is lost, until it is stopped.
//!
//! Why a session of its own rather than the cloud bridge's MQTT session core
//! (`v6iot_cloud_bridge::mqtt::session`), which speaks the same packets on the same codecs: that
//! core is crate-private to the bridge (making it public would make the edge's publisher
//! internals part of the bridge's API for one test tool), and it is a publisher's session — a
//! window of QoS 1 PUBLISHes with an item each, MQTT 5 limits, a command subscription — that
//! hands every incoming PUBLISH out as a command with its payload copied into a `Vec`. The
//! collector needs CONNECT, one SUBSCRIBE, PUBACKs and pings, and at tens of thousands of
//! deliveries a second hands each to its sink as borrowed slices of the frame rumqttc split off
//! the read buffer (the payload is not copied; rumqttc does allocate the topic `String`). Both
//! end a connection on an overdue PINGRESP.

use std::io::{self, Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::BytesMut;
use rumqttc::mqttbytes::{self, QoS, v4};

/// The largest packet the subscriber accepts.
pub const MAX_PACKET: usize = 1 << 20;

/// The pause between two reads of a light stream: deliveries are gathered for this long and
/// taken with one read and one write of PUBACKs.
pub const PACE: Duration = Duration::from_micros(500);

/// A read that brought at least this many bytes is followed by another at once (a backlog, or
/// a broker that sends as much as it may), without the [`PACE`] pause.
pub const BUSY_READ: usize = 16 * 1024;

/// Why the subscription's connection ended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscriberError {
    /// The broker sent bytes that are not a valid MQTT 3.1.1 packet.
    #[error("malformed packet from the broker: {0}")]
    Malformed(mqttbytes::Error),
    /// The broker refused the connection.
    #[error("the broker refused the connection: {0:?}")]
    Refused(v4::ConnectReturnCode),
    /// The broker refused the subscription to this filter.
    #[error("the broker refused the subscription to `{0}`")]
    SubscriptionRefused(String),
    /// A packet a subscriber never gets in this state (a PUBLISH before the CONNACK, a QoS 2
    /// PUBLISH on a QoS 1 subscription, a CONNECT, …).
    #[error("unexpected packet from the broker: {0}")]
    Unexpected(&'static str),
    /// No PINGRESP within this long of the PINGREQ: the connection is taken for dead.
    #[error("no PINGRESP within {0:?} of the PINGREQ")]
    KeepAliveTimeout(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitConnAck,
    AwaitSubAck,
    Subscribed,
}

/// One subscriber connection, sans-IO: bytes in through [`SubscriberCore::handle_input`],
/// bytes out through [`SubscriberCore::poll_transmit`].
#[derive(Debug)]
pub struct SubscriberCore {
    state: State,
    filter: String,
    keep_alive: Duration,
    out: BytesMut,
    last_sent: Instant,
    /// When the PINGREQ waiting for its PINGRESP was sent.
    ping_sent: Option<Instant>,
}

/// The packet id of the one SUBSCRIBE.
const SUBSCRIBE_PKID: u16 = 1;

impl SubscriberCore {
    /// A connection that will subscribe to `filter` at QoS 1; its CONNECT (clean session) is
    /// queued already.
    pub fn new(now: Instant, client_id: &str, filter: &str, keep_alive: Duration) -> Self {
        SubscriberCore::with_session(now, client_id, filter, keep_alive, true)
    }

    /// As [`SubscriberCore::new`]; `clean` false asks the broker to keep the session (its
    /// subscription and undelivered QoS 1 messages) while the connection is gone.
    pub fn with_session(
        now: Instant,
        client_id: &str,
        filter: &str,
        keep_alive: Duration,
        clean: bool,
    ) -> Self {
        let mut connect = v4::Connect::new(client_id);
        connect.keep_alive = u16::try_from(keep_alive.as_secs()).unwrap_or(u16::MAX);
        connect.clean_session = clean;
        let mut core = SubscriberCore {
            state: State::AwaitConnAck,
            filter: filter.to_owned(),
            keep_alive,
            out: BytesMut::with_capacity(4096),
            last_sent: now,
            ping_sent: None,
        };
        core.queue(&v4::Packet::Connect(connect));
        core
    }

    /// Whether the broker acknowledged the subscription.
    pub fn is_subscribed(&self) -> bool {
        self.state == State::Subscribed
    }

    fn queue(&mut self, packet: &v4::Packet) {
        // Only our own small packets are written; none can exceed the limit.
        if let Err(e) = packet.write(&mut self.out, MAX_PACKET) {
            tracing::error!(error = ?e, "cannot encode an MQTT packet");
        }
    }

    /// Takes every complete packet at the front of `input` (what is left is the start of the
    /// next one), calling `on_publish(topic, payload)` for each PUBLISH and queueing its PUBACK.
    pub fn handle_input(
        &mut self,
        input: &mut BytesMut,
        mut on_publish: impl FnMut(&str, &[u8]),
    ) -> Result<(), SubscriberError> {
        loop {
            let packet = match v4::Packet::read(input, MAX_PACKET) {
                Ok(p) => p,
                Err(mqttbytes::Error::InsufficientBytes(_)) => return Ok(()),
                Err(e) => return Err(SubscriberError::Malformed(e)),
            };
            match (self.state, packet) {
                (State::AwaitConnAck, v4::Packet::ConnAck(ack)) => {
                    if ack.code != v4::ConnectReturnCode::Success {
                        return Err(SubscriberError::Refused(ack.code));
                    }
                    let mut sub = v4::Subscribe::new(self.filter.clone(), QoS::AtLeastOnce);
                    sub.pkid = SUBSCRIBE_PKID;
                    self.queue(&v4::Packet::Subscribe(sub));
                    self.state = State::AwaitSubAck;
                }
                (State::AwaitSubAck, v4::Packet::SubAck(ack)) => {
                    let granted = ack.pkid == SUBSCRIBE_PKID
                        && ack
                            .return_codes
                            .iter()
                            .all(|c| matches!(c, v4::SubscribeReasonCode::Success(_)))
                        && !ack.return_codes.is_empty();
                    if !granted {
                        return Err(SubscriberError::SubscriptionRefused(self.filter.clone()));
                    }
                    self.state = State::Subscribed;
                }
                (State::AwaitSubAck | State::Subscribed, v4::Packet::Publish(p)) => {
                    match p.qos {
                        QoS::AtMostOnce => {}
                        QoS::AtLeastOnce => {
                            self.queue(&v4::Packet::PubAck(v4::PubAck::new(p.pkid)))
                        }
                        QoS::ExactlyOnce => {
                            return Err(SubscriberError::Unexpected(
                                "QoS 2 PUBLISH on a QoS 1 subscription",
                            ));
                        }
                    }
                    on_publish(&p.topic, &p.payload);
                }
                (_, v4::Packet::PingResp) => self.ping_sent = None,
                (_, v4::Packet::ConnAck(_)) => return Err(SubscriberError::Unexpected("CONNACK")),
                (_, v4::Packet::SubAck(_)) => return Err(SubscriberError::Unexpected("SUBACK")),
                (_, v4::Packet::Publish(_)) => {
                    return Err(SubscriberError::Unexpected("PUBLISH before the CONNACK"));
                }
                (_, _) => {
                    return Err(SubscriberError::Unexpected(
                        "a packet brokers do not send to subscribers",
                    ));
                }
            }
        }
    }

    /// When [`SubscriberCore::handle_timeout`] has something to do: the PINGRESP's deadline
    /// (half the keep-alive after its PINGREQ) while one is awaited, else the next PINGREQ (half
    /// the keep-alive after the last bytes sent).
    pub fn poll_timeout(&self) -> Instant {
        match self.ping_sent {
            Some(sent) => sent + self.keep_alive / 2,
            None => self.last_sent + self.keep_alive / 2,
        }
    }

    /// Time has passed: the end of the connection if the PINGRESP is overdue; otherwise a
    /// PINGREQ queued if nothing was sent for half the keep-alive. Early calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), SubscriberError> {
        match self.ping_sent {
            Some(sent) if now >= sent + self.keep_alive / 2 => {
                Err(SubscriberError::KeepAliveTimeout(self.keep_alive / 2))
            }
            Some(_) => Ok(()),
            None => {
                if now >= self.poll_timeout() && self.out.is_empty() {
                    self.queue(&v4::Packet::PingReq);
                    self.ping_sent = Some(now);
                }
                Ok(())
            }
        }
    }

    /// The bytes to send now, if any (everything queued, in one piece).
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<BytesMut> {
        if self.out.is_empty() {
            return None;
        }
        self.last_sent = now;
        Some(self.out.split())
    }
}

/// Where the driver hands the deliveries.
pub trait Sink: Send + 'static {
    /// One PUBLISH from the broker.
    fn publish(&mut self, topic: &str, payload: &[u8]);
}

/// How the collector's session lives at the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Session {
    /// A clean session with a fresh client id: what arrives while disconnected is not kept.
    Clean,
    /// A persistent session under this client id: the broker keeps the subscription and the
    /// QoS 1 messages for it while the collector reconnects (and across its own restart when
    /// it persists sessions, as mosquitto with `persistence true` does).
    Persistent(String),
}

/// A subscription served by its own thread; [`Subscription::stop`] ends it.
#[derive(Debug)]
pub struct Subscription {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How long a read waits before the driver looks at the stop flag and the keep-alive.
const READ_TIMEOUT: Duration = Duration::from_millis(100);

/// How long to wait between attempts to reach a lost broker.
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

/// How long the first connection may take to be subscribed.
const SUBSCRIBE_WITHIN: Duration = Duration::from_secs(10);

/// How long a reconnection's TCP connect may take (the stop flag is not looked at meanwhile).
const RECONNECT_WITHIN: Duration = Duration::from_secs(1);

/// Who the driver connects as.
#[derive(Debug, Clone, Copy)]
struct Client<'a> {
    id: &'a str,
    /// A clean session (else the broker keeps it while disconnected).
    clean: bool,
}

/// One live connection of the driver.
struct Conn {
    stream: TcpStream,
    core: SubscriberCore,
    /// What the socket gives, copied into `input` (zeroed once, not per read).
    scratch: Vec<u8>,
    /// Bytes read and not yet parsed.
    input: BytesMut,
}

impl Conn {
    /// Connects to `host:port` (the TCP connect taking at most `connect_within`) and waits
    /// until the subscription to `filter` is acknowledged (PUBLISHes that arrive before the
    /// SUBACK go to `sink` too); gives up once `stop` is set (looked at after every read or read
    /// timeout).
    fn open<S: Sink>(
        host: &str,
        port: u16,
        client: Client<'_>,
        filter: &str,
        sink: &Mutex<S>,
        connect_within: Duration,
        stop: &AtomicBool,
    ) -> anyhow::Result<Conn> {
        let deadline = Instant::now() + SUBSCRIBE_WITHIN;
        let addr = (host, port)
            .to_socket_addrs()
            .with_context(|| format!("resolve the broker `{host}`"))?
            .next()
            .with_context(|| format!("the broker `{host}` has no address"))?;
        let stream = TcpStream::connect_timeout(&addr, connect_within)
            .with_context(|| format!("connect to the broker at {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        let mut conn = Conn {
            stream,
            core: SubscriberCore::with_session(
                Instant::now(),
                client.id,
                filter,
                KEEP_ALIVE,
                client.clean,
            ),
            scratch: vec![0; READ_BUFFER],
            input: BytesMut::with_capacity(READ_BUFFER),
        };
        while !conn.core.is_subscribed() {
            anyhow::ensure!(!stop.load(Ordering::Relaxed), "stopped");
            anyhow::ensure!(
                Instant::now() < deadline,
                "the broker did not acknowledge the subscription within {SUBSCRIBE_WITHIN:?}"
            );
            conn.serve_once(sink)?;
        }
        Ok(conn)
    }

    /// Sends what the core has queued, then one read (or a read timeout) and the packets it
    /// completes, handed to `sink` under one lock; then sends their PUBACKs in one write.
    /// Returns the bytes read.
    fn serve_once<S: Sink>(&mut self, sink: &Mutex<S>) -> anyhow::Result<usize> {
        self.flush()?;
        let got = match self.stream.read(&mut self.scratch) {
            Ok(0) => anyhow::bail!("the broker closed the connection"),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                0
            }
            Err(e) => return Err(e.into()),
        };
        self.input
            .extend_from_slice(self.scratch.get(..got).unwrap_or_default());
        if got > 0 {
            let mut sink = sink
                .lock()
                .map_err(|_| anyhow::anyhow!("the collector's state is poisoned"))?;
            self.core.handle_input(&mut self.input, |topic, payload| {
                sink.publish(topic, payload)
            })?;
        }
        self.core.handle_timeout(Instant::now())?;
        self.flush()?;
        Ok(got)
    }

    /// Sends what the core has queued.
    fn flush(&mut self) -> io::Result<()> {
        if let Some(bytes) = self.core.poll_transmit(Instant::now()) {
            self.stream.write_all(&bytes)?;
        }
        Ok(())
    }
}

/// The keep-alive the subscriber asks for.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// Room for one read.
const READ_BUFFER: usize = 64 * 1024;

impl Subscription {
    /// Connects to the broker at `host:port`, subscribes to `filter` at QoS 1 and returns once
    /// the broker acknowledged it; from then on a thread hands every delivery to `sink`.
    pub fn start<S: Sink>(
        host: &str,
        port: u16,
        filter: &str,
        sink: Arc<Mutex<S>>,
    ) -> anyhow::Result<Self> {
        Subscription::start_with(host, port, filter, sink, Session::Clean)
    }

    /// As [`Subscription::start`], with the session `session`.
    pub fn start_with<S: Sink>(
        host: &str,
        port: u16,
        filter: &str,
        sink: Arc<Mutex<S>>,
        session: Session,
    ) -> anyhow::Result<Self> {
        let (client_id, clean) = match session {
            Session::Clean => (format!("v6iot-sim-collector-{}", std::process::id()), true),
            Session::Persistent(id) => (id, false),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let first = Conn::open(
            host,
            port,
            Client {
                id: &client_id,
                clean,
            },
            filter,
            &sink,
            SUBSCRIBE_WITHIN,
            &stop,
        )?;
        let host = host.to_owned();
        let filter = filter.to_owned();
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("v6iot-sim-mqtt".into())
            .spawn(move || {
                let mut conn = Some(first);
                while !stopped.load(Ordering::Relaxed) {
                    let Some(c) = conn.as_mut() else {
                        if pause(RECONNECT_AFTER, &stopped) {
                            break;
                        }
                        match Conn::open(
                            &host,
                            port,
                            Client {
                                id: &client_id,
                                clean,
                            },
                            &filter,
                            &sink,
                            RECONNECT_WITHIN,
                            &stopped,
                        ) {
                            Ok(c) => conn = Some(c),
                            Err(_) if stopped.load(Ordering::Relaxed) => break,
                            Err(e) => {
                                tracing::warn!(error = %format!("{e:#}"), "collector cannot reach the broker; retrying");
                            }
                        }
                        continue;
                    };
                    match c.serve_once(&sink) {
                        Ok(got) if got < BUSY_READ => std::thread::sleep(PACE),
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %format!("{e:#}"), "collector lost the broker; reconnecting");
                            conn = None;
                        }
                    }
                }
            })
            .context("start the collector's thread")?;
        Ok(Subscription {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it: at most about one read timeout (0.1 s), or while the
    /// broker is being reconnected to and does not answer the TCP connect, at most one connect
    /// attempt (1 s).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sleeps `total` in steps of at most one read timeout, looking at `stop` before each; whether
/// it was set (the pause then ends early).
fn pause(total: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + total;
    loop {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        std::thread::sleep(left.min(READ_TIMEOUT));
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The broker's side of the conversation, written with rumqttc's codecs.
    fn broker(packets: &[v4::Packet]) -> BytesMut {
        let mut b = BytesMut::new();
        for p in packets {
            p.write(&mut b, MAX_PACKET).unwrap();
        }
        b
    }

    /// Every packet in `bytes`, read back with rumqttc's codecs.
    fn sent(bytes: &[u8]) -> Vec<v4::Packet> {
        let mut b = BytesMut::from(bytes);
        let mut out = Vec::new();
        while !b.is_empty() {
            out.push(v4::Packet::read(&mut b, MAX_PACKET).unwrap());
        }
        out
    }

    fn connack(code: v4::ConnectReturnCode) -> v4::Packet {
        v4::Packet::ConnAck(v4::ConnAck::new(code, false))
    }

    fn suback(codes: Vec<v4::SubscribeReasonCode>) -> v4::Packet {
        v4::Packet::SubAck(v4::SubAck::new(SUBSCRIBE_PKID, codes))
    }

    fn publish(topic: &str, payload: &str, qos: QoS, pkid: u16) -> v4::Packet {
        let mut p = v4::Publish::new(topic, qos, payload.as_bytes().to_vec());
        p.pkid = pkid;
        v4::Packet::Publish(p)
    }

    /// A core that has sent CONNECT and SUBSCRIBE and got both acknowledged.
    fn subscribed(now: Instant) -> SubscriberCore {
        let mut core = SubscriberCore::new(now, "c1", "v6iot/s/+/telemetry", KEEP_ALIVE);
        let out = sent(&core.poll_transmit(now).unwrap());
        let [v4::Packet::Connect(c)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert!(c.clean_session);
        assert_eq!((c.client_id.as_str(), c.keep_alive), ("c1", 30));
        let mut input = broker(&[connack(v4::ConnectReturnCode::Success)]);
        core.handle_input(&mut input, |_, _| panic!("no PUBLISH yet"))
            .unwrap();
        let out = sent(&core.poll_transmit(now).unwrap());
        let [v4::Packet::Subscribe(s)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(s.filters[0].path, "v6iot/s/+/telemetry");
        assert_eq!(s.filters[0].qos, QoS::AtLeastOnce);
        assert!(!core.is_subscribed());
        let mut input = broker(&[suback(vec![v4::SubscribeReasonCode::Success(
            QoS::AtLeastOnce,
        )])]);
        core.handle_input(&mut input, |_, _| {}).unwrap();
        assert!(core.is_subscribed());
        assert!(core.poll_transmit(now).is_none());
        core
    }

    #[test]
    fn takes_publishes_split_anywhere_and_acks_each_qos1_one_in_one_write() {
        let now = Instant::now();
        let mut core = subscribed(now);
        let stream = broker(&[
            publish("v6iot/s/a/telemetry", "one", QoS::AtLeastOnce, 7),
            publish("v6iot/s/b/telemetry", "two", QoS::AtMostOnce, 0),
            publish("v6iot/s/a/telemetry", "three", QoS::AtLeastOnce, 8),
            v4::Packet::PingResp,
        ]);
        // Delivered in pieces of every size; what is left of a piece waits for the next.
        for step in 1..stream.len() {
            let mut core = subscribed(now);
            let mut got = Vec::new();
            let mut input = BytesMut::new();
            for piece in stream.chunks(step) {
                input.extend_from_slice(piece);
                core.handle_input(&mut input, |t, p| got.push((t.to_owned(), p.to_vec())))
                    .unwrap();
            }
            assert!(input.is_empty());
            assert_eq!(got.len(), 3, "pieces of {step}");
        }
        let mut got = Vec::new();
        let mut input = stream.clone();
        core.handle_input(&mut input, |t, p| got.push((t.to_owned(), p.to_vec())))
            .unwrap();
        assert_eq!(
            got,
            vec![
                ("v6iot/s/a/telemetry".to_owned(), b"one".to_vec()),
                ("v6iot/s/b/telemetry".to_owned(), b"two".to_vec()),
                ("v6iot/s/a/telemetry".to_owned(), b"three".to_vec()),
            ]
        );
        assert_eq!(
            sent(&core.poll_transmit(now).unwrap()),
            vec![
                v4::Packet::PubAck(v4::PubAck::new(7)),
                v4::Packet::PubAck(v4::PubAck::new(8))
            ]
        );
        assert!(core.poll_transmit(now).is_none());
    }

    #[test]
    fn a_pause_ends_early_once_stopped() {
        let started = Instant::now();
        assert!(pause(Duration::from_secs(60), &AtomicBool::new(true)));
        assert!(!pause(Duration::from_millis(1), &AtomicBool::new(false)));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn pings_after_half_the_keep_alive_without_sending() {
        let now = Instant::now();
        let mut core = subscribed(now);
        assert_eq!(core.poll_timeout(), now + KEEP_ALIVE / 2);
        core.handle_timeout(now + KEEP_ALIVE / 4).unwrap();
        assert!(core.poll_transmit(now).is_none());
        let later = now + KEEP_ALIVE / 2;
        core.handle_timeout(later).unwrap();
        assert_eq!(
            sent(&core.poll_transmit(later).unwrap()),
            vec![v4::Packet::PingReq]
        );
        // the PINGRESP comes: the next ping is due half a keep-alive after this one
        let mut input = broker(&[v4::Packet::PingResp]);
        core.handle_input(&mut input, |_, _| {}).unwrap();
        assert_eq!(core.poll_timeout(), later + KEEP_ALIVE / 2);
        core.handle_timeout(later + KEEP_ALIVE / 2 - Duration::from_millis(1))
            .unwrap();
        assert!(core.poll_transmit(later).is_none());
        let again = later + KEEP_ALIVE / 2;
        core.handle_timeout(again).unwrap();
        assert_eq!(
            sent(&core.poll_transmit(again).unwrap()),
            vec![v4::Packet::PingReq]
        );
    }

    /// A broker gone without a FIN or RST: reads only time out, nothing says the connection is
    /// dead — but the PINGRESP does not come, and half a keep-alive after the PINGREQ the core
    /// ends the connection. Deliveries meanwhile do not stand in for the PINGRESP.
    #[test]
    fn a_half_open_connection_ends_when_the_pingresp_is_overdue() {
        let now = Instant::now();
        let mut core = subscribed(now);
        let ping_at = now + KEEP_ALIVE / 2;
        core.handle_timeout(ping_at).unwrap();
        assert_eq!(
            sent(&core.poll_transmit(ping_at).unwrap()),
            vec![v4::Packet::PingReq]
        );
        let deadline = ping_at + KEEP_ALIVE / 2;
        assert_eq!(core.poll_timeout(), deadline);
        // a delivery arrives and is acknowledged; the PINGRESP is still awaited
        let mut input = broker(&[publish("f/x", "late", QoS::AtLeastOnce, 3)]);
        let mut got = 0;
        core.handle_input(&mut input, |_, _| got += 1).unwrap();
        assert_eq!(got, 1);
        let acked_at = ping_at + Duration::from_secs(1);
        assert_eq!(
            sent(&core.poll_transmit(acked_at).unwrap()),
            vec![v4::Packet::PubAck(v4::PubAck::new(3))]
        );
        assert_eq!(core.poll_timeout(), deadline);
        // nothing more: no second PINGREQ, and the deadline ends the connection
        core.handle_timeout(deadline - Duration::from_millis(1))
            .unwrap();
        assert!(core.poll_transmit(deadline).is_none());
        let e = core.handle_timeout(deadline).unwrap_err();
        assert!(
            matches!(e, SubscriberError::KeepAliveTimeout(t) if t == KEEP_ALIVE / 2),
            "{e}"
        );
        assert!(e.to_string().contains("no PINGRESP"), "{e}");
    }

    #[test]
    fn refusals_and_bad_bytes_are_errors_not_panics() {
        let now = Instant::now();
        let mut core = SubscriberCore::new(now, "c", "f/#", KEEP_ALIVE);
        let mut input = broker(&[connack(v4::ConnectReturnCode::NotAuthorized)]);
        let e = core.handle_input(&mut input, |_, _| {}).unwrap_err();
        assert!(matches!(e, SubscriberError::Refused(_)), "{e}");

        let mut core = SubscriberCore::new(now, "c", "f/#", KEEP_ALIVE);
        let mut input = broker(&[
            connack(v4::ConnectReturnCode::Success),
            suback(vec![v4::SubscribeReasonCode::Failure]),
        ]);
        let e = core.handle_input(&mut input, |_, _| {}).unwrap_err();
        assert!(e.to_string().contains("f/#"), "{e}");

        let mut core = SubscriberCore::new(now, "c", "f/#", KEEP_ALIVE);
        let mut input = broker(&[publish("f/x", "early", QoS::AtLeastOnce, 1)]);
        let e = core.handle_input(&mut input, |_, _| {}).unwrap_err();
        assert!(matches!(e, SubscriberError::Unexpected(_)), "{e}");

        let mut core = subscribed(now);
        let mut input = broker(&[publish("f/x", "qos2", QoS::ExactlyOnce, 1)]);
        let e = core.handle_input(&mut input, |_, _| {}).unwrap_err();
        assert!(e.to_string().contains("QoS 2"), "{e}");

        // A reserved packet type (0) and a remaining length that never ends.
        for junk in [&[0x00u8, 0x00][..], &[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]] {
            let mut core = subscribed(now);
            let mut input = BytesMut::from(junk);
            let e = core.handle_input(&mut input, |_, _| {}).unwrap_err();
            assert!(matches!(e, SubscriberError::Malformed(_)), "{junk:?}: {e}");
        }
        // Arbitrary bytes never panic.
        let mut x: u32 = 0x9e37_79b9;
        for _ in 0..2000 {
            let mut core = subscribed(now);
            let mut input = BytesMut::new();
            for _ in 0..(x % 64) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                input.extend_from_slice(&[x as u8]);
            }
            let _ = core.handle_input(&mut input, |_, _| {});
        }
    }
}
