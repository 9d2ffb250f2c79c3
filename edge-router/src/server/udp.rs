//! Batched datagram I/O for the CoAP socket: `recvmmsg` takes up to [`RECV_SLOTS`] datagrams
//! per system call over tokio's readiness; a [`SendThread`] of its own sends what the loop hands
//! it with `sendmmsg` (the answers to one fsync group in one call). Bytes and addresses only:
//! nothing here reads a datagram.
//!
//! # Which of the edge's addresses
//!
//! On a socket bound to a wildcard address (`[::]`, `0.0.0.0`) the kernel says with each datagram
//! which local address it was sent to (`IPV6_RECVPKTINFO`; an IPv4 datagram on the dual-stack
//! socket comes with its destination IPv4-mapped; `IP_PKTINFO` on an IPv4 socket), and every
//! datagram out names its source (`IPV6_PKTINFO`, which also takes an IPv4-mapped source for an
//! IPv4 destination; `IP_PKTINFO`'s `ipi_spec_dst` on an IPv4 socket). nix's `sendmmsg` gives one
//! set of control messages to every datagram of a call, so a flush goes out in one call per
//! source address (a host has a few), each keeping its datagrams' order. A socket bound to one
//! address needs neither: nothing is asked for, no control message is built.
//!
//! Why a thread for sending: on a host's loopback, and to a lesser degree on any link, sending
//! a datagram costs the kernel more than receiving one (routing, the socket buffer, on
//! loopback the receiver's whole input path and its wake-up). Measured on the edge under load,
//! `sendmmsg` was half of the loop thread's time; on its own thread it runs beside the loop on
//! another core. The loop hands over whole batches (one channel message and at most one
//! wake-up per flush), and one thread keeps the order of the datagrams.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::mpsc;
use std::thread::JoinHandle;

use nix::libc::{in_addr, in_pktinfo, in6_addr, in6_pktinfo};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg,
    sendmmsg, setsockopt, sockopt,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::peer::Peer;

/// Datagrams taken per `recvmmsg` call.
pub(super) const RECV_SLOTS: usize = 32;
/// A receive slot holds the largest UDP payload: nothing is ever truncated.
const SLOT_BYTES: usize = 65_536;
/// Datagrams given to one `sendmmsg` call (the kernel takes at most `UIO_MAXIOV`, 1024; past
/// a few dozen the call's fixed cost is negligible).
const SEND_SLOTS: usize = 64;

/// Asks the kernel for each datagram's local address when `socket` is bound to a wildcard
/// address (see the module docs); returns whether it did (then the [`Receiver`] reads it).
pub(super) fn want_local_addresses(
    socket: &socket2::Socket,
    bound: SocketAddr,
) -> io::Result<bool> {
    match bound.ip() {
        IpAddr::V6(ip) if ip.is_unspecified() => {
            setsockopt(socket, sockopt::Ipv6RecvPacketInfo, &true)?;
            Ok(true)
        }
        IpAddr::V4(ip) if ip.is_unspecified() => {
            setsockopt(socket, sockopt::Ipv4PacketInfo, &true)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Receive buffers, reused for every call. (nix's `MultiHeaders` holds raw pointers, so it is
/// not `Send` and cannot live across an await in the server's future: each call makes its own,
/// one small allocation.)
pub(super) struct Receiver {
    slots: Vec<Vec<u8>>,
    /// (peer, length) of each datagram of the last call, in slot order.
    got: Vec<(Option<Peer>, usize)>,
    /// Read each datagram's local address (a wildcard socket, [`want_local_addresses`]).
    local: bool,
}

impl Receiver {
    /// Buffers for [`RECV_SLOTS`] datagrams; with `local`, room for each one's local address.
    pub(super) fn new(local: bool) -> Receiver {
        Receiver {
            slots: (0..RECV_SLOTS).map(|_| vec![0u8; SLOT_BYTES]).collect(),
            got: Vec::with_capacity(RECV_SLOTS),
            local,
        }
    }

    /// Waits until `socket` is readable and takes what is queued, up to [`RECV_SLOTS`]
    /// datagrams; returns how many. Cancel-safe: nothing is taken before the last await.
    pub(super) async fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        loop {
            socket.readable().await?;
            match self.try_recv(socket) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other,
            }
        }
    }

    /// Takes what is queued without waiting (`WouldBlock` when nothing is).
    pub(super) fn try_recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let fd = socket.as_raw_fd();
        let Receiver { slots, got, local } = self;
        got.clear();
        // in6_pktinfo is the larger of the two
        let space = local.then(|| nix::cmsg_space!(in6_pktinfo));
        socket.try_io(Interest::READABLE, || {
            let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(slots.len(), space);
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = slots
                .iter_mut()
                .map(|s| [IoSliceMut::new(s.as_mut_slice())])
                .collect();
            let results = recvmmsg(fd, &mut headers, iovs.iter_mut(), MsgFlags::empty(), None)
                .map_err(io::Error::from)?;
            for r in results {
                let remote = r.address.and_then(|a| to_std(&a));
                let local = if *local {
                    r.cmsgs().ok().and_then(|mut c| c.find_map(local_address))
                } else {
                    None
                };
                got.push((remote.map(|remote| Peer { remote, local }), r.bytes));
            }
            Ok(())
        })?;
        Ok(self.got.len())
    }

    /// The datagrams of the last call: (peer, bytes); `None` for a peer whose address is not
    /// IPv4 or IPv6 (never on a UDP socket, but not trusted).
    pub(super) fn datagrams(&self) -> impl Iterator<Item = (Option<Peer>, &[u8])> {
        self.got
            .iter()
            .zip(&self.slots)
            .map(|(&(peer, len), slot)| (peer, slot.get(..len).unwrap_or_default()))
    }
}

/// The local address in a received control message, if it is one.
fn local_address(m: ControlMessageOwned) -> Option<IpAddr> {
    match m {
        ControlMessageOwned::Ipv6PacketInfo(info) => {
            Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)))
        }
        ControlMessageOwned::Ipv4PacketInfo(info) => Some(IpAddr::V4(Ipv4Addr::from(
            info.ipi_addr.s_addr.to_ne_bytes(),
        ))),
        _ => None,
    }
}

/// Datagrams on their way out: (destination and source, bytes), in order.
pub(super) type Datagrams = Vec<(Peer, Vec<u8>)>;

/// Batches the send thread may lag behind; [`SendThread::send`] drops a batch beyond that.
const SEND_QUEUE: usize = 1024;
/// How long the send thread waits for room in the socket's buffer before it drops the datagrams
/// of the call that did not go (the kernel drains a UDP send buffer in microseconds: only a
/// stuck interface takes this).
const WRITABLE_WAIT_MS: u16 = 1000;

/// The thread that sends the CoAP socket's datagrams (see the module docs).
pub(super) struct SendThread {
    queue: mpsc::SyncSender<Datagrams>,
    thread: JoinHandle<()>,
}

impl SendThread {
    /// Starts the thread on a second descriptor of `socket` (the same socket).
    pub(super) fn start(socket: &UdpSocket) -> io::Result<SendThread> {
        let v6 = socket.local_addr()?.is_ipv6();
        let fd = socket.as_fd().try_clone_to_owned()?;
        let (queue, batches) = mpsc::sync_channel::<Datagrams>(SEND_QUEUE);
        let thread = std::thread::Builder::new()
            .name("v6iot-edge-send".into())
            .spawn(move || {
                while let Ok(mut batch) = batches.recv() {
                    // whatever queued up meanwhile goes in the same calls
                    while let Ok(more) = batches.try_recv() {
                        batch.extend(more);
                    }
                    send_all(&fd, v6, &batch);
                }
            })?;
        Ok(SendThread { queue, thread })
    }

    /// Hands `out`'s datagrams (emptied) to the thread without waiting: when the thread is
    /// [`SEND_QUEUE`] batches behind (a socket that stays unwritable), the batch is dropped
    /// and logged rather than stalling the loop, which also runs the outbox and the MQTT
    /// session; Confirmable requests are retransmitted by their senders.
    pub(super) fn send(&self, out: &mut Datagrams) {
        if out.is_empty() {
            return;
        }
        match self.queue.try_send(std::mem::take(out)) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(batch)) => tracing::warn!(
                datagrams = batch.len(),
                "the send thread is {SEND_QUEUE} batches behind: datagrams dropped"
            ),
            Err(mpsc::TrySendError::Disconnected(batch)) => tracing::error!(
                datagrams = batch.len(),
                "the send thread is gone: datagrams dropped"
            ),
        }
    }

    /// Sends what is queued, then ends the thread.
    pub(super) fn stop(self) {
        let SendThread { queue, thread } = self;
        drop(queue);
        if thread.join().is_err() {
            tracing::error!("the send thread panicked");
        }
    }
}

/// Sends every datagram of `out`: one group per source address (in the order they first
/// appear; each keeps its datagrams' order), [`SEND_SLOTS`] per call.
fn send_all(fd: &OwnedFd, v6: bool, out: &[(Peer, Vec<u8>)]) {
    /// Datagrams from one source: (destination, bytes).
    type Group<'a> = Vec<(SocketAddr, &'a [u8])>;
    let mut groups: Vec<(Option<IpAddr>, Group<'_>)> = Vec::new();
    for (to, bytes) in out {
        let datagram = (to.remote, bytes.as_slice());
        match groups.iter_mut().find(|(local, _)| *local == to.local) {
            Some((_, group)) => group.push(datagram),
            None => groups.push((to.local, vec![datagram])),
        }
    }
    for (local, group) in groups {
        send_group(fd, v6, Source::new(local, v6), &group);
    }
}

/// The source address control message of a group of datagrams.
#[derive(Clone, Copy)]
enum Source {
    /// The kernel's choice (the socket's own address).
    Socket,
    /// `IPV6_PKTINFO` (an IPv4 source IPv4-mapped).
    V6(in6_pktinfo),
    /// `IP_PKTINFO`, on an IPv4 socket.
    V4(in_pktinfo),
}

impl Source {
    fn new(local: Option<IpAddr>, v6: bool) -> Source {
        let v6_info = |ip: Ipv6Addr| {
            Source::V6(in6_pktinfo {
                ipi6_addr: in6_addr {
                    s6_addr: ip.octets(),
                },
                ipi6_ifindex: 0,
            })
        };
        match local {
            None => Source::Socket,
            Some(IpAddr::V6(ip)) if v6 => v6_info(ip),
            Some(IpAddr::V4(ip)) if v6 => v6_info(ip.to_ipv6_mapped()),
            Some(ip) => match ip {
                IpAddr::V4(ip) => Source::V4(v4_info(ip)),
                IpAddr::V6(ip) => ip
                    .to_ipv4_mapped()
                    .map_or(Source::Socket, |ip| Source::V4(v4_info(ip))),
            },
        }
    }

    /// Room for its control message (none for [`Source::Socket`]).
    fn space(&self) -> Option<Vec<u8>> {
        match self {
            Source::Socket => None,
            Source::V6(_) => Some(nix::cmsg_space!(in6_pktinfo)),
            Source::V4(_) => Some(nix::cmsg_space!(in_pktinfo)),
        }
    }

    fn message(&self) -> Option<ControlMessage<'_>> {
        match self {
            Source::Socket => None,
            Source::V6(info) => Some(ControlMessage::Ipv6PacketInfo(info)),
            Source::V4(info) => Some(ControlMessage::Ipv4PacketInfo(info)),
        }
    }
}

fn v4_info(ip: Ipv4Addr) -> in_pktinfo {
    in_pktinfo {
        ipi_ifindex: 0,
        ipi_spec_dst: in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        ipi_addr: in_addr { s_addr: 0 },
    }
}

/// Sends a group of datagrams from one source, [`SEND_SLOTS`] per call, waiting (`poll`) while
/// the socket's buffer is full. A datagram the kernel refuses is logged and skipped.
fn send_group(fd: &OwnedFd, v6: bool, source: Source, out: &[(SocketAddr, &[u8])]) {
    let mut done = 0;
    while let Some(rest) = out.get(done..).filter(|r| !r.is_empty()) {
        let chunk = rest.get(..SEND_SLOTS.min(rest.len())).unwrap_or_default();
        match send_chunk(fd, v6, &source, chunk) {
            Ok(n) => done += n.max(1),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
                match poll(&mut fds, PollTimeout::from(WRITABLE_WAIT_MS)) {
                    Ok(0) => {
                        let peer = chunk.first().map(|(to, _)| *to);
                        tracing::warn!(
                            ?peer,
                            datagrams = chunk.len(),
                            "socket not writable for {WRITABLE_WAIT_MS} ms: datagrams dropped"
                        );
                        done += chunk.len();
                    }
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "poll on the CoAP socket failed: datagrams dropped");
                        return;
                    }
                }
            }
            Err(e) => {
                // The call fails when its first datagram does: that one is skipped.
                let peer = chunk.first().map(|(to, _)| *to);
                tracing::debug!(?peer, error = %e, "send failed");
                done += 1;
            }
        }
    }
}

/// One `sendmmsg` call for `chunk`, every datagram from `source`: how many went.
fn send_chunk(
    fd: &OwnedFd,
    v6: bool,
    source: &Source,
    chunk: &[(SocketAddr, &[u8])],
) -> io::Result<usize> {
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(chunk.len(), source.space());
    let iovs: Vec<[IoSlice<'_>; 1]> = chunk.iter().map(|(_, b)| [IoSlice::new(b)]).collect();
    let addrs: Vec<Option<SockaddrStorage>> = chunk
        .iter()
        .map(|(to, _)| Some(SockaddrStorage::from(for_socket(*to, v6))))
        .collect();
    let cmsgs: Vec<ControlMessage<'_>> = source.message().into_iter().collect();
    let sent = sendmmsg(
        fd.as_raw_fd(),
        &mut headers,
        &iovs,
        addrs,
        &cmsgs,
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    Ok(sent.count())
}

/// `to` as the socket takes it: IPv4 as IPv4-mapped IPv6 on an IPv6 socket.
fn for_socket(to: SocketAddr, v6: bool) -> SocketAddr {
    match to {
        SocketAddr::V4(a) if v6 => {
            SocketAddr::V6(SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0))
        }
        other => other,
    }
}

/// A kernel address as std's.
fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v6) = a.as_sockaddr_in6() {
        return Some(SocketAddr::V6(SocketAddrV6::from(*v6)));
    }
    a.as_sockaddr_in()
        .map(|v4| SocketAddr::V4(SocketAddrV4::from(*v4)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use std::time::Duration;

    use super::*;

    /// Many datagrams out in one flush, all in through batched receives, bytes and peers intact.
    #[tokio::test]
    async fn batches_round_trip_over_loopback() {
        let a = UdpSocket::bind("[::1]:0").await.unwrap();
        let b = UdpSocket::bind("[::1]:0").await.unwrap();
        let to = b.local_addr().unwrap();
        let from = a.local_addr().unwrap();
        // more than one sendmmsg call, and few enough for a default receive buffer
        let n = SEND_SLOTS + 40;
        let mut out: Datagrams = (0..n)
            .map(|i| (Peer::from(to), format!("datagram {i}").into_bytes()))
            .collect();
        let sender = SendThread::start(&a).unwrap();
        sender.send(&mut out);
        assert!(out.is_empty());
        sender.stop();
        let mut receiver = Receiver::new(false);
        let mut seen = Vec::new();
        while seen.len() < n {
            let got = tokio::time::timeout(Duration::from_secs(10), receiver.recv(&b))
                .await
                .expect("every datagram arrives")
                .unwrap();
            assert!((1..=RECV_SLOTS).contains(&got));
            for (peer, bytes) in receiver.datagrams() {
                assert_eq!(peer, Some(Peer::from(from)));
                seen.push(String::from_utf8(bytes.to_vec()).unwrap());
            }
        }
        let want: Vec<String> = (0..n).map(|i| format!("datagram {i}")).collect();
        assert_eq!(seen, want);
        assert_eq!(
            receiver.try_recv(&b).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    /// A datagram the kernel refuses (IPv6 destination from an IPv4 socket) is skipped; the
    /// rest still go.
    #[tokio::test]
    async fn a_refused_datagram_does_not_stop_the_rest() {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = b.local_addr().unwrap();
        let bad: SocketAddr = "[::1]:9".parse().unwrap();
        let mut out: Datagrams = vec![
            (bad.into(), b"x".to_vec()),
            (to.into(), b"one".to_vec()),
            (bad.into(), b"y".to_vec()),
            (to.into(), b"two".to_vec()),
        ];
        let sender = SendThread::start(&a).unwrap();
        sender.send(&mut out);
        sender.stop();
        let mut receiver = Receiver::new(false);
        let mut seen = Vec::new();
        while seen.len() < 2 {
            tokio::time::timeout(Duration::from_secs(10), receiver.recv(&b))
                .await
                .expect("both datagrams arrive")
                .unwrap();
            seen.extend(receiver.datagrams().map(|(_, d)| d.to_vec()));
        }
        assert_eq!(seen, vec![b"one".to_vec(), b"two".to_vec()]);
    }

    /// On a wildcard socket (dual-stack `[::]`, and `0.0.0.0`) each datagram comes with the
    /// address it was sent to, and the answer leaves from it: the clients here are connected to
    /// that address, so the kernel hands them nothing from any other. Loopback's 127/8 gives
    /// several local addresses without a namespace of its own.
    #[tokio::test]
    async fn answers_leave_from_the_address_each_datagram_arrived_at() {
        for listen in ["[::]:0", "0.0.0.0:0"] {
            let listen: SocketAddr = listen.parse().unwrap();
            let (socket, local) = super::super::bind_udp(listen, 1 << 20).unwrap();
            assert!(local, "{listen}: a wildcard socket reads local addresses");
            let port = socket.local_addr().unwrap().port();
            let mut pairs = Vec::new();
            for from in ["127.0.0.2", "127.0.0.3"] {
                for to in ["127.0.0.1", "127.0.0.4", "127.0.0.5"] {
                    let client = std::net::UdpSocket::bind((from, 0)).unwrap();
                    client.connect((to, port)).unwrap();
                    client
                        .set_read_timeout(Some(Duration::from_secs(5)))
                        .unwrap();
                    client.send(format!("{from}>{to}").as_bytes()).unwrap();
                    pairs.push((client, to.parse::<Ipv4Addr>().unwrap()));
                }
            }
            let mut receiver = Receiver::new(true);
            let mut out: Datagrams = Vec::new();
            while out.len() < pairs.len() {
                tokio::time::timeout(Duration::from_secs(10), receiver.recv(&socket))
                    .await
                    .expect("every datagram arrives")
                    .unwrap();
                for (peer, bytes) in receiver.datagrams() {
                    let peer = peer.unwrap();
                    let text = String::from_utf8(bytes.to_vec()).unwrap();
                    let to: Ipv4Addr = text.split_once('>').unwrap().1.parse().unwrap();
                    let local = match peer.local.unwrap() {
                        IpAddr::V6(mapped) => mapped.to_ipv4_mapped().unwrap(),
                        IpAddr::V4(ip) => ip,
                    };
                    assert_eq!(local, to, "{listen}: {text} arrived at {peer}");
                    out.push((peer, format!("answer to {text}").into_bytes()));
                }
            }
            let sender = SendThread::start(&socket).unwrap();
            sender.send(&mut out);
            sender.stop();
            let mut buf = [0u8; 64];
            for (client, to) in &pairs {
                let n = client
                    .recv(&mut buf)
                    .unwrap_or_else(|e| panic!("{listen}: no answer from {to} to {client:?}: {e}"));
                let from = client.local_addr().unwrap().ip();
                assert_eq!(buf[..n], *format!("answer to {from}>{to}").as_bytes());
            }
        }
    }

    #[test]
    fn ipv4_destinations_are_mapped_on_an_ipv6_socket() {
        let v4: SocketAddr = "192.0.2.1:5683".parse().unwrap();
        assert_eq!(
            for_socket(v4, true),
            "[::ffff:192.0.2.1]:5683".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(for_socket(v4, false), v4);
    }
}
