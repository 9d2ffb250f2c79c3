//! How a shard's devices reach the network: the datagram I/O under [`crate::shard`].
//!
//! | link | what the edge sees | cost per datagram |
//! |---|---|---|
//! | [`Sockets`] | each device at its own port of the host's address | one `epoll` entry and one `recv` per received datagram, one `send` per sent one |
//! | [`AddressPool`] | each device at its own IPv6 address, one port per shard | `recvmmsg` batches over one socket; one `sendmsg` (with the device's source address) per sent one |
//!
//! [`AddressPool`] is shared/DESIGN.md §4, "one socket, a million addresses": inside a network
//! namespace of its own, an AnyIP route (`ip -6 route add local PREFIX dev lo`) makes every
//! address of the prefix local; one UDP socket bound to `[::]` with `IP_FREEBIND` sends each
//! datagram with an `IPV6_PKTINFO` control message naming its device's source address, and
//! `IPV6_RECVPKTINFO` tells on receive which device an answer is for. No file descriptor per
//! device, so a fleet is not bounded by `ulimit -n`, and one `recvmmsg` takes the answers of
//! many devices at once. (`sendmmsg` cannot carry a different control message per datagram
//! without `unsafe` code, so sends go one `sendmsg` each.)
//!
//! Bytes and addresses only; the shard and the SDK core make every protocol decision.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::os::fd::{AsFd, AsRawFd as _, BorrowedFd};
use std::time::Duration;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrIn6, recvmmsg, sendmsg,
    setsockopt, sockopt,
};

/// Largest datagram a device receives; CoAP over UDP stays far below it.
const MAX_DATAGRAM: usize = 64 * 1024;

/// Ready sockets taken from one `epoll_wait`.
const EVENTS_PER_WAIT: usize = 1024;

/// Datagrams one `recvmmsg` call of an [`AddressPool`] takes.
pub const POOL_SLOTS: usize = 64;
/// A pool's receive slot: the edge's answers and requests to a device are far smaller (a
/// longer datagram is truncated and the SDK core drops it as malformed).
const POOL_SLOT_BYTES: usize = 4096;
/// `recvmmsg` calls per wait of an [`AddressPool`] at most: a wait reads the socket until it is
/// empty, up to this many batches (16,384 datagrams, about half of what [`POOL_RECV_BUFFER`]
/// holds), before the shard looks at its timers again. With 16 batches (1,024 datagrams) a
/// storm of registrations collapsed: the answers the edge had sent waited unread while the
/// shard worked through a million due retransmissions, and the devices retransmitted again.
pub const POOL_CALLS_PER_WAIT: usize = 256;
/// Receive buffer of a pool's socket: the answers to every device of a shard queue on it
/// while the shard is busy elsewhere (set with `SO_RCVBUFFORCE`, which a namespace's root may).
const POOL_RECV_BUFFER: usize = 32 << 20;

/// What a link hands to the shard.
#[derive(Debug)]
pub enum Arrival<'a> {
    /// A datagram for member `member` from `peer`.
    Datagram {
        /// The member's index in the shard.
        member: usize,
        /// Who sent it.
        peer: SocketAddr,
        /// The datagram.
        bytes: &'a [u8],
    },
    /// Member `member` can no longer receive (its socket failed for good).
    Failed {
        /// The member's index in the shard.
        member: usize,
        /// What failed.
        error: io::Error,
    },
}

/// What a member asks of its link's addresses (an emulated modem attaching).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressRequest {
    /// The address the member has.
    Current,
    /// A new address in place of the one it had (a carrier's re-attach after a sleep).
    Fresh,
}

/// A shard's datagram I/O for its members (numbered 0..n in the shard).
pub trait Link {
    /// Waits at most `timeout` until datagrams arrive and hands each to `deliver` (and every
    /// member whose socket failed for good); returns how many datagrams it delivered.
    fn receive(
        &mut self,
        timeout: Duration,
        deliver: &mut dyn FnMut(Arrival<'_>),
    ) -> io::Result<usize>;

    /// Sends `bytes` from member `member` to `destination`.
    fn send(&mut self, member: usize, destination: SocketAddr, bytes: &[u8]) -> io::Result<()>;

    /// Member `member`'s source address, if the link knows it.
    fn address(&self, member: usize) -> Option<IpAddr> {
        let _ = member;
        None
    }

    /// Gives member `member` a new source address (the old one no longer reaches it).
    fn readdress(&mut self, member: usize) -> io::Result<IpAddr> {
        let _ = member;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this link cannot give a member a new address (an address pool can)",
        ))
    }
}

/// Whole milliseconds of `timeout`, rounded up so a deadline is never polled for early in a loop.
fn wait_ms(timeout: Duration) -> u16 {
    timeout.as_micros().div_ceil(1000).min(1000) as u16
}

/// One non-blocking UDP socket per member, all in one `epoll` set.
#[derive(Debug)]
pub struct Sockets {
    sockets: Vec<DeviceSocket>,
    epoll: Epoll,
    events: Vec<EpollEvent>,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct DeviceSocket {
    socket: UdpSocket,
    /// The peer the socket is connected to: datagrams to it go out with `send`, which skips
    /// the address and route lookup of `send_to`.
    connected: Option<SocketAddr>,
    failed: bool,
}

impl Sockets {
    /// One socket per member, in member order (made non-blocking here; connected or not).
    pub fn new(sockets: Vec<UdpSocket>) -> io::Result<Sockets> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let mut list = Vec::with_capacity(sockets.len());
        for (i, socket) in sockets.into_iter().enumerate() {
            socket.set_nonblocking(true)?;
            epoll.add(
                socket.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, i as u64),
            )?;
            list.push(DeviceSocket {
                connected: socket.peer_addr().ok(),
                socket,
                failed: false,
            });
        }
        Ok(Sockets {
            sockets: list,
            epoll,
            events: vec![EpollEvent::empty(); EVENTS_PER_WAIT],
            buf: vec![0u8; MAX_DATAGRAM],
        })
    }

    /// The peer member `i`'s socket is connected to.
    pub fn connected(&self, i: usize) -> Option<SocketAddr> {
        self.sockets.get(i).and_then(|s| s.connected)
    }
}

impl Link for Sockets {
    fn receive(
        &mut self,
        timeout: Duration,
        deliver: &mut dyn FnMut(Arrival<'_>),
    ) -> io::Result<usize> {
        let n = match self
            .epoll
            .wait(&mut self.events, EpollTimeout::from(wait_ms(timeout)))
        {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let mut delivered = 0;
        for ev in self.events.get(..n).unwrap_or_default() {
            let member = ev.data() as usize;
            let Some(s) = self.sockets.get_mut(member) else {
                continue;
            };
            if s.failed {
                continue;
            }
            // One datagram per ready socket and wait: a device has one request in flight, so
            // there is rarely a second, and level-triggered `epoll` reports the socket again
            // if there is (reading on until `EWOULDBLOCK` would cost a failing call per socket).
            match s.socket.recv_from(&mut self.buf) {
                Ok((len, peer)) => {
                    delivered += 1;
                    deliver(Arrival::Datagram {
                        member,
                        peer,
                        bytes: self.buf.get(..len).unwrap_or_default(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if v6iot_sdk::net::is_transient(&e) => {
                    tracing::debug!(error = %e, "transient receive error");
                }
                Err(error) => {
                    s.failed = true;
                    let _ = self.epoll.delete(s.socket.as_fd());
                    deliver(Arrival::Failed { member, error });
                }
            }
        }
        Ok(delivered)
    }

    fn send(&mut self, member: usize, destination: SocketAddr, bytes: &[u8]) -> io::Result<()> {
        let s = self
            .sockets
            .get(member)
            .ok_or_else(|| io::Error::other("no such member"))?;
        if s.connected == Some(destination) {
            s.socket.send(bytes)?;
        } else {
            s.socket.send_to(bytes, destination)?;
        }
        Ok(())
    }

    fn address(&self, member: usize) -> Option<IpAddr> {
        let s = self.sockets.get(member)?;
        s.socket.local_addr().ok().map(|a| a.ip())
    }
}

/// Every member at its own IPv6 address, all on one socket (see the module docs).
///
/// The members come in [`Segment`]s — one per fleet a shard thread drives — and member `i` of a
/// segment has the address `network | (first + (i − start) × stride)`: the interface
/// identifiers of a fleet's devices are consecutive, and a thread drives every `stride`-th of
/// them, so a received datagram's destination names its member by arithmetic.
pub struct AddressPool {
    socket: UdpSocket,
    layout: Layout,
    /// Per member: how many times it was given a new address ([`Link::readdress`]).
    generations: Vec<u16>,
    slots: Vec<Vec<u8>>,
    /// Datagrams for an address that is no member's (counted, dropped).
    strays: u64,
}

impl std::fmt::Debug for AddressPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddressPool")
            .field("socket", &self.socket)
            .field("segments", &self.layout.segments)
            .field("strays", &self.strays)
            .finish_non_exhaustive()
    }
}

impl AddressPool {
    /// A socket on `[::]:port` (`0`: any free port) for `members` members in the /64 of
    /// `network`, the first at interface identifier `first`, then every `stride`.
    ///
    /// Fails when the identifiers would leave the /64, when the kernel does not route the
    /// pool's first and last address to loopback (an AnyIP route, in a network namespace of
    /// its own: otherwise answers to them could leave the machine), or when the host cannot
    /// send from foreign addresses (`IP_FREEBIND`).
    pub fn bind(
        network: Ipv6Addr,
        port: u16,
        first: u64,
        stride: u64,
        members: usize,
    ) -> io::Result<AddressPool> {
        AddressPool::bind_segments(
            port,
            vec![Segment {
                network,
                first,
                stride,
                members: 0..members,
            }],
        )
    }

    /// As [`AddressPool::bind`], for members in several segments (disjoint member ranges).
    pub fn bind_segments(port: u16, segments: Vec<Segment>) -> io::Result<AddressPool> {
        let layout = Layout::new(segments)?;
        for seg in &layout.segments {
            let n = seg.members.len();
            for i in [seg.members.start, seg.members.start + n.saturating_sub(1)] {
                if let Some(a) = layout.address(i, 0) {
                    check_routed_to_loopback(a)?;
                }
            }
        }
        let socket = UdpSocket::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))?;
        setsockopt(&socket, sockopt::IpFreebind, &true).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("IP_FREEBIND (send from the pool's addresses): {e}"),
            )
        })?;
        setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true)?;
        // More room than the default for a shard's answers; without the privilege the default
        // stays (answers beyond it are lost and the devices retransmit).
        if let Err(e) = setsockopt(&socket, sockopt::RcvBufForce, &POOL_RECV_BUFFER) {
            tracing::warn!(error = %e, "cannot enlarge the pool socket's receive buffer");
        }
        socket.set_nonblocking(true)?;
        let members = layout
            .segments
            .iter()
            .map(|s| s.members.end)
            .max()
            .unwrap_or(0);
        Ok(AddressPool {
            socket,
            layout,
            generations: vec![0; members],
            slots: (0..POOL_SLOTS)
                .map(|_| vec![0u8; POOL_SLOT_BYTES])
                .collect(),
            strays: 0,
        })
    }

    /// The address of member `i` (of its current generation).
    pub fn member_address(&self, i: usize) -> Option<Ipv6Addr> {
        let generation = self.generations.get(i).copied().unwrap_or(0);
        self.layout.address(i, generation)
    }

    /// Datagrams that arrived for an address that is no member's.
    pub fn strays(&self) -> u64 {
        self.strays
    }

    /// One `recvmmsg` without waiting: delivers what it took; returns (datagrams taken,
    /// delivered).
    fn take_batch(&mut self, deliver: &mut dyn FnMut(Arrival<'_>)) -> io::Result<(usize, usize)> {
        let mut got: [(usize, Option<(usize, SocketAddr)>); POOL_SLOTS] = [(0, None); POOL_SLOTS];
        let (layout, generations) = (&self.layout, &self.generations);
        let member_at = |d: Ipv6Addr| {
            let (i, generation) = layout.member_at(d)?;
            (generations.get(i) == Some(&generation)).then_some(i)
        };
        let taken = {
            let mut headers = MultiHeaders::<SockaddrIn6>::preallocate(
                self.slots.len(),
                Some(nix::cmsg_space!(nix::libc::in6_pktinfo)),
            );
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = self
                .slots
                .iter_mut()
                .map(|s| [IoSliceMut::new(s.as_mut_slice())])
                .collect();
            let results = match recvmmsg(
                self.socket.as_raw_fd(),
                &mut headers,
                iovs.iter_mut(),
                MsgFlags::MSG_DONTWAIT,
                None,
            ) {
                Ok(r) => r,
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => return Ok((0, 0)),
                Err(e) => return Err(e.into()),
            };
            let mut taken = 0;
            for (r, slot) in results.zip(got.iter_mut()) {
                taken += 1;
                let destination = r.cmsgs().ok().and_then(|mut c| {
                    c.find_map(|m| match m {
                        ControlMessageOwned::Ipv6PacketInfo(info) => {
                            Some(Ipv6Addr::from(info.ipi6_addr.s6_addr))
                        }
                        _ => None,
                    })
                });
                let member = destination.and_then(member_at);
                let peer = r.address.map(|a| {
                    SocketAddr::V6(SocketAddrV6::new(
                        a.ip(),
                        a.port(),
                        a.flowinfo(),
                        a.scope_id(),
                    ))
                });
                *slot = (r.bytes, member.zip(peer));
            }
            taken
        };
        let mut delivered = 0;
        for ((len, target), slot) in got.iter().take(taken).zip(&self.slots) {
            match target {
                Some((member, peer)) => {
                    delivered += 1;
                    deliver(Arrival::Datagram {
                        member: *member,
                        peer: *peer,
                        bytes: slot.get(..*len).unwrap_or_default(),
                    });
                }
                None => {
                    self.strays += 1;
                    tracing::debug!("datagram for an address outside the pool dropped");
                }
            }
        }
        Ok((taken, delivered))
    }
}

impl AsFd for AddressPool {
    /// The pool's socket (to wait on it together with other descriptors).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// Refuses `address` unless the host routes it to loopback (an AnyIP route): otherwise the
/// answers to a device there would be routed off the machine. Asks the kernel which source
/// address it would use towards `address` (a UDP `connect` sends nothing): `::1` only when the
/// route goes through `lo`.
fn check_routed_to_loopback(address: Ipv6Addr) -> io::Result<()> {
    let probe = UdpSocket::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)))?;
    let source = probe
        .connect(SocketAddr::from((address, 9)))
        .and_then(|()| probe.local_addr())
        .map(|a| a.ip());
    match source {
        Ok(ip) if ip.is_loopback() => Ok(()),
        other => Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!(
                "{address} is not routed to this host's loopback ({}): run inside a network namespace of its own with `ip -6 route add local PREFIX dev lo` (shared/DESIGN.md §4)",
                match other {
                    Ok(ip) => format!("the kernel would send to it from {ip}"),
                    Err(e) => e.to_string(),
                }
            ),
        )),
    }
}

/// A run of a pool's members: members `members` at interface ids `first`, `first + stride`, …
/// of the /64 of `network`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The /64 (its high 64 bits count).
    pub network: Ipv6Addr,
    /// Interface id of the segment's first member.
    pub first: u64,
    /// Distance between members' interface ids.
    pub stride: u64,
    /// The members (indices in the shard).
    pub members: std::ops::Range<usize>,
}

/// The low 48 bits of an interface identifier: the member's part (the top 16 count generations).
const MEMBER_BITS: u64 = (1 << 48) - 1;

/// Where a pool's members are. A member given a new address ([`Link::readdress`], an NB-IoT
/// device after a sleep) keeps the low 48 bits of its interface identifier and counts up a
/// generation in the top 16; datagrams to an address of an older generation are strays.
#[derive(Debug, Clone)]
struct Layout {
    segments: Vec<Segment>,
}

impl Layout {
    fn new(segments: Vec<Segment>) -> io::Result<Layout> {
        for seg in &segments {
            let n = seg.members.len();
            let last = (n.saturating_sub(1) as u64)
                .checked_mul(seg.stride)
                .and_then(|o| o.checked_add(seg.first));
            if seg.stride == 0 || seg.first == 0 || last.is_none_or(|l| l > MEMBER_BITS) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the pool's addresses do not fit (interface ids from 1 to 2^48 - 1; the top 16 bits count re-addressing)",
                ));
            }
        }
        Ok(Layout { segments })
    }

    fn address(&self, i: usize, generation: u16) -> Option<Ipv6Addr> {
        let seg = self.segments.iter().find(|s| s.members.contains(&i))?;
        let k = (i - seg.members.start) as u64;
        let iid =
            seg.first.wrapping_add(k.wrapping_mul(seg.stride)) | (u64::from(generation) << 48);
        let high = u128::from(seg.network) >> 64;
        Some(Ipv6Addr::from((high << 64) | u128::from(iid)))
    }

    /// The member and generation of an address in the pool.
    fn member_at(&self, address: Ipv6Addr) -> Option<(usize, u16)> {
        let bits = u128::from(address);
        let iid = bits as u64;
        let generation = (iid >> 48) as u16;
        self.segments.iter().find_map(|seg| {
            if bits >> 64 != u128::from(seg.network) >> 64 {
                return None;
            }
            let offset = (iid & MEMBER_BITS).checked_sub(seg.first)?;
            if offset % seg.stride != 0 {
                return None;
            }
            let k = usize::try_from(offset / seg.stride).ok()?;
            (k < seg.members.len()).then(|| (seg.members.start + k, generation))
        })
    }
}

impl Link for AddressPool {
    fn receive(
        &mut self,
        timeout: Duration,
        deliver: &mut dyn FnMut(Arrival<'_>),
    ) -> io::Result<usize> {
        let mut fds = [nix::poll::PollFd::new(
            self.socket.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(wait_ms(timeout))) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => return Ok(0),
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        let mut delivered = 0;
        for _ in 0..POOL_CALLS_PER_WAIT {
            let (taken, d) = self.take_batch(deliver)?;
            delivered += d;
            if taken < POOL_SLOTS {
                break;
            }
        }
        Ok(delivered)
    }

    fn send(&mut self, member: usize, destination: SocketAddr, bytes: &[u8]) -> io::Result<()> {
        let SocketAddr::V6(destination) = destination else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an address pool sends to IPv6 peers only",
            ));
        };
        let source = self.member_address(member).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no address for this member")
        })?;
        let info = nix::libc::in6_pktinfo {
            ipi6_addr: nix::libc::in6_addr {
                s6_addr: source.octets(),
            },
            ipi6_ifindex: 0,
        };
        sendmsg(
            self.socket.as_raw_fd(),
            &[IoSlice::new(bytes)],
            &[ControlMessage::Ipv6PacketInfo(&info)],
            MsgFlags::MSG_DONTWAIT,
            Some(&SockaddrIn6::from(destination)),
        )?;
        Ok(())
    }

    fn address(&self, member: usize) -> Option<IpAddr> {
        self.member_address(member).map(IpAddr::V6)
    }

    fn readdress(&mut self, member: usize) -> io::Result<IpAddr> {
        let generation = self.generations.get_mut(member).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no such member in the pool")
        })?;
        *generation = generation.wrapping_add(1);
        self.member_address(member).map(IpAddr::V6).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no address for this member")
        })
    }
}

/// Moves the calling thread — only it, and the threads and processes it starts afterwards —
/// into a new network namespace with loopback up and `prefix` routed to loopback (AnyIP), as an
/// [`AddressPool`] needs: nothing sent there can leave the machine. For tests and tools; needs
/// root (`CAP_SYS_ADMIN`) and `ip` (iproute2).
pub fn enter_private_network(prefix: v6iot_credentials::Ipv6Prefix) -> io::Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("unshare(CLONE_NEWNET): {e} (a network namespace needs root)"),
        )
    })?;
    let prefix = prefix.to_string();
    for args in [
        vec!["link", "set", "lo", "up"],
        vec!["-6", "route", "add", "local", prefix.as_str(), "dev", "lo"],
    ] {
        let status = std::process::Command::new("ip")
            .args(&args)
            .status()
            .map_err(|e| io::Error::new(e.kind(), format!("run `ip` (iproute2): {e}")))?;
        if !status.success() {
            return Err(io::Error::other(format!("ip {}: {status}", args.join(" "))));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_addresses_name_their_members_and_nothing_else() {
        let network: Ipv6Addr = "2001:db8:100::".parse().unwrap();
        // Thread 1 of 3, 4 members: interface ids 2, 5, 8, 11.
        let layout = Layout::new(vec![Segment {
            network,
            first: 2,
            stride: 3,
            members: 0..4,
        }])
        .unwrap();
        let ids: Vec<Ipv6Addr> = (0..4).map(|i| layout.address(i, 0).unwrap()).collect();
        assert_eq!(
            ids,
            [
                "2001:db8:100::2",
                "2001:db8:100::5",
                "2001:db8:100::8",
                "2001:db8:100::b"
            ]
            .map(|a| a.parse::<Ipv6Addr>().unwrap())
        );
        for (i, a) in ids.iter().enumerate() {
            assert_eq!(layout.member_at(*a), Some((i, 0)));
        }
        // A member's next generation: the same low 48 bits, the generation on top.
        let moved = layout.address(2, 1).unwrap();
        assert_eq!(moved, "2001:db8:100:0:1::8".parse::<Ipv6Addr>().unwrap());
        assert_eq!(layout.member_at(moved), Some((2, 1)));
        for other in [
            "2001:db8:100::1", // another thread's
            "2001:db8:100::3", // another thread's
            "2001:db8:100::e", // past the last member
            "2001:db8:101::2", // another /64
            "::1",
        ] {
            assert_eq!(layout.member_at(other.parse().unwrap()), None, "{other}");
        }
        assert_eq!(layout.address(4, 0), None);
        let seg = |first, stride, members| Segment {
            network,
            first,
            stride,
            members,
        };
        assert!(
            Layout::new(vec![seg(0, 1, 0..1)]).is_err(),
            "id 0 is the subnet-router anycast"
        );
        assert!(
            Layout::new(vec![seg(u64::MAX, 1, 0..2)]).is_err(),
            "ids past 2^64"
        );
        assert!(
            Layout::new(vec![seg(1 << 48, 1, 0..1)]).is_err(),
            "ids in the generation bits"
        );
        // Two fleets in one thread: members 0..2 from id 1, members 2..5 from id 101.
        let two = Layout::new(vec![seg(1, 2, 0..2), seg(101, 2, 2..5)]).unwrap();
        assert_eq!(two.address(3, 0), Some("2001:db8:100::67".parse().unwrap()));
        assert_eq!(
            two.member_at("2001:db8:100::67".parse().unwrap()),
            Some((3, 0))
        );
        assert_eq!(
            two.member_at("2001:db8:100::3".parse().unwrap()),
            Some((1, 0))
        );
        assert_eq!(two.member_at("2001:db8:100::5".parse().unwrap()), None);
    }

    /// Outside a namespace that routes the prefix to loopback, a pool is refused before any
    /// datagram could go out from (or answers go to) its addresses.
    #[test]
    fn a_prefix_not_routed_to_loopback_is_refused() {
        let e = AddressPool::bind("2001:db8:100::".parse().unwrap(), 0, 1, 1, 10).unwrap_err();
        assert!(
            e.to_string().contains("not routed to this host's loopback"),
            "{e}"
        );
    }
}
