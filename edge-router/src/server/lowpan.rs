//! The border router's I/O around the sans-IO [`BorderRouter`]: one radio per PAN (ZEP v2 over a
//! UDP socket, or a Linux `wpan` interface on a thread of its own), the TUN interface to the
//! host (tun-rs on tokio), and an optional pcap of every frame in and out. Reader tasks put
//! what arrives into one bounded channel the server loop takes from; the loop writes.

use std::fs::File;
use std::io::BufWriter;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context as _;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tun_rs::{AsyncDevice, DeviceBuilder};
use v6iot_sdk::radio::pcap::{LinkType, PcapWriter, since_unix_epoch};
use v6iot_sdk::radio::zep::{self, NtpTime, ZepError, ZepHeader};
use v6iot_sdk::radio::{FrameError, MacFrame};

use crate::border::BorderRouter;
use crate::border::stats::BorderStats;
use crate::config::{EdgeConfig, RadioLink};
use crate::ops::metrics::RadioIo;
use crate::peer::Peer;

/// Frames and packets waiting for the loop at most; readers wait when it is full (their
/// sockets' buffers then take the rest).
const INPUT_QUEUE: usize = 4096;

/// What the readers hand the loop.
#[derive(Debug)]
pub(super) enum Input {
    /// A frame from PAN `pan`'s radio, FCS checked and removed.
    Frame { pan: usize, frame: Vec<u8> },
    /// An IPv6 packet from the TUN.
    Host(Vec<u8>),
}

/// What the radios and the TUN dropped below the border router.
#[derive(Debug, Default)]
pub(super) struct IoCounters {
    /// ZEP datagrams that were not ZEP data, or malformed.
    pub(super) zep_malformed: AtomicU64,
    /// Frames with a bad FCS.
    pub(super) bad_fcs: AtomicU64,
    /// Frames on another channel.
    pub(super) other_channel: AtomicU64,
    /// Frames or packets that could not be sent (socket or TUN full, errors).
    pub(super) send_errors: AtomicU64,
}

impl IoCounters {
    /// A copy for the metrics.
    pub(super) fn snapshot(&self) -> RadioIo {
        RadioIo {
            zep_malformed: self.zep_malformed.load(Ordering::Relaxed),
            bad_fcs: self.bad_fcs.load(Ordering::Relaxed),
            other_channel: self.other_channel.load(Ordering::Relaxed),
            send_errors: self.send_errors.load(Ordering::Relaxed),
        }
    }
}

enum RadioOut {
    Zep {
        socket: Arc<UdpSocket>,
        medium: SocketAddr,
        channel: u8,
        sequence: u32,
    },
    #[cfg(target_os = "linux")]
    Wpan(std::sync::mpsc::SyncSender<Vec<u8>>),
}

/// The border router with its radios, TUN and capture.
pub(super) struct BorderIo {
    pub(super) router: BorderRouter,
    radios: Vec<RadioOut>,
    tun: Option<Arc<AsyncDevice>>,
    inputs: mpsc::Receiver<Input>,
    pcap: Option<PcapWriter<BufWriter<File>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    counters: Arc<IoCounters>,
}

impl BorderIo {
    /// Opens what `config`'s `[lowpan]` and `[[radio]]` name; `None` without radios.
    pub(super) async fn open(config: &EdgeConfig) -> anyhow::Result<Option<BorderIo>> {
        let Some(border) = config.border()? else {
            return Ok(None);
        };
        let router = BorderRouter::new(Instant::now(), border);
        let (tx, inputs) = mpsc::channel(INPUT_QUEUE);
        let counters = Arc::new(IoCounters::default());
        let mut radios = Vec::new();
        let mut tasks = Vec::new();
        for (pan, r) in config.radio.iter().enumerate() {
            match r.link()? {
                RadioLink::Zep {
                    medium,
                    listen,
                    channel,
                } => {
                    let socket = Arc::new(
                        UdpSocket::bind(listen)
                            .await
                            .with_context(|| format!("cannot bind the ZEP socket {listen}"))?,
                    );
                    tracing::info!(pan, %medium, local = ?socket.local_addr().ok(), channel, "ZEP radio");
                    tasks.push(tokio::spawn(read_zep(
                        socket.clone(),
                        pan,
                        channel,
                        tx.clone(),
                        counters.clone(),
                    )));
                    radios.push(RadioOut::Zep {
                        socket,
                        medium,
                        channel,
                        sequence: 0,
                    });
                }
                #[cfg(target_os = "linux")]
                RadioLink::Wpan(name) => {
                    radios.push(RadioOut::Wpan(wpan::start(&name, pan, tx.clone())?));
                }
                #[cfg(not(target_os = "linux"))]
                RadioLink::Wpan(name) => anyhow::bail!("wpan {name}: Linux only"),
            }
        }
        let tun = match &config.lowpan.tun {
            Some(name) => {
                let addresses: Vec<_> = (0..config.radio.len())
                    .filter_map(|i| router.router_address(i))
                    .filter(|_| config.lowpan.tun_router_address)
                    .collect();
                let tun = Arc::new(open_tun(name, &addresses)?);
                tasks.push(tokio::spawn(read_tun(tun.clone(), tx.clone())));
                tracing::info!(tun = %name, ?addresses, "TUN to the host");
                Some(tun)
            }
            None => None,
        };
        let pcap = match &config.lowpan.pcap {
            Some(path) => {
                let file = File::create(path)
                    .with_context(|| format!("cannot create the capture {}", path.display()))?;
                Some(PcapWriter::new(BufWriter::new(file), LinkType::WithFcs)?)
            }
            None => None,
        };
        Ok(Some(BorderIo {
            router,
            radios,
            tun,
            inputs,
            pcap,
            tasks,
            counters,
        }))
    }

    /// The next frame or packet from below.
    pub(super) async fn next(&mut self) -> Option<Input> {
        self.inputs.recv().await
    }

    /// Hands one input to the router (and the capture).
    pub(super) fn handle(&mut self, input: Input) {
        let now = Instant::now();
        match input {
            Input::Frame { pan, frame } => {
                if let Ok(f) = MacFrame::new(&frame) {
                    self.capture(f);
                    self.router.handle_frame(now, pan, f);
                }
            }
            Input::Host(packet) => self.router.handle_host(now, &packet),
        }
    }

    fn capture(&mut self, frame: MacFrame<'_>) {
        if let Some(p) = &mut self.pcap
            && let Err(e) = p.write_frame(since_unix_epoch(), frame)
        {
            tracing::warn!(error = %e, "capture stopped");
            self.pcap = None;
        }
    }

    /// Sends what the router has for the radios and the host.
    pub(super) fn flush(&mut self) {
        while let Some(f) = self.router.poll_transmit() {
            let Ok(frame) = f.frame() else { continue };
            self.capture(frame);
            let sent = match self.radios.get_mut(f.pan) {
                Some(RadioOut::Zep {
                    socket,
                    medium,
                    channel,
                    sequence,
                }) => send_zep(socket, *medium, *channel, sequence, frame),
                #[cfg(target_os = "linux")]
                Some(RadioOut::Wpan(to)) => to.try_send(frame.as_bytes().to_vec()).is_ok(),
                None => false,
            };
            if !sent {
                self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        while let Some(p) = self.router.poll_host() {
            let sent = self.tun.as_ref().is_some_and(|t| t.try_send(&p).is_ok());
            if !sent {
                self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The router's counters.
    pub(super) fn stats(&self) -> BorderStats {
        self.router.stats()
    }

    /// What the radios and the TUN dropped.
    pub(super) fn counters(&self) -> &IoCounters {
        &self.counters
    }

    /// Flushes the capture.
    pub(super) fn flush_capture(&mut self) {
        if let Some(p) = &mut self.pcap
            && let Err(e) = p.flush()
        {
            tracing::warn!(error = %e, "capture not flushed");
        }
    }

    /// Stops the readers and flushes the capture.
    pub(super) fn stop(mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.flush_capture();
    }
}

fn send_zep(
    socket: &UdpSocket,
    medium: SocketAddr,
    channel: u8,
    sequence: &mut u32,
    frame: MacFrame<'_>,
) -> bool {
    let header = ZepHeader {
        channel,
        device_id: 0,
        lqi: 255,
        timestamp: NtpTime::from_unix(since_unix_epoch()),
        sequence: *sequence,
    };
    *sequence = sequence.wrapping_add(1);
    let mut out = [0_u8; zep::MAX_DATAGRAM];
    match zep::encode(&header, frame, &mut out) {
        Ok(n) => socket
            .try_send_to(out.get(..n).unwrap_or_default(), medium)
            .is_ok(),
        Err(_) => false,
    }
}

async fn read_zep(
    socket: Arc<UdpSocket>,
    pan: usize,
    channel: u8,
    to_loop: mpsc::Sender<Input>,
    counters: Arc<IoCounters>,
) {
    let mut buf = vec![0_u8; zep::MAX_DATAGRAM + 1];
    loop {
        let n = match socket.recv_from(&mut buf).await {
            Ok((n, _)) => n,
            Err(e) => {
                tracing::debug!(error = %e, "ZEP receive error");
                continue;
            }
        };
        match zep::decode(buf.get(..n).unwrap_or_default()) {
            Ok(d) if d.header.channel != channel => {
                counters.other_channel.fetch_add(1, Ordering::Relaxed);
            }
            Ok(d) => {
                let frame = d.frame.as_bytes().to_vec();
                if to_loop.send(Input::Frame { pan, frame }).await.is_err() {
                    return;
                }
            }
            Err(ZepError::Frame(FrameError::BadFcs { .. })) => {
                counters.bad_fcs.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                counters.zep_malformed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The TUN interface `name`, up, with MTU 1280 and `addresses` (each with its /64, which gives
/// the kernel the route to the PAN).
fn open_tun(name: &str, addresses: &[std::net::Ipv6Addr]) -> anyhow::Result<AsyncDevice> {
    let mut builder = DeviceBuilder::new().name(name).mtu(1280);
    for a in addresses {
        builder = builder.ipv6(IpAddr::V6(*a), 64_u8);
    }
    builder
        .enable(true)
        .build_async()
        .with_context(|| format!("cannot open the TUN interface {name} (CAP_NET_ADMIN?)"))
}

async fn read_tun(tun: Arc<AsyncDevice>, to_loop: mpsc::Sender<Input>) {
    let mut buf = vec![0_u8; 65_536];
    loop {
        match tun.recv(&mut buf).await {
            Ok(n) => {
                let packet = buf.get(..n).unwrap_or_default().to_vec();
                if to_loop.send(Input::Host(packet)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "TUN receive error");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(target_os = "linux")]
mod wpan {
    //! A Linux 802.15.4 interface on a thread of its own (the SDK's `LinuxRadio` blocks): frames
    //! to send come over a bounded channel, frames received go to the loop's channel.

    use std::time::Duration;

    use tokio::sync::mpsc;
    use v6iot_sdk::radio::linux::LinuxRadio;
    use v6iot_sdk::radio::{MAX_PHY_PACKET, MacFrame, Radio};

    use super::Input;

    /// How long the thread waits for a frame before it looks for frames to send.
    const POLL: Duration = Duration::from_millis(2);

    pub(super) fn start(
        name: &str,
        pan: usize,
        to_loop: mpsc::Sender<Input>,
    ) -> anyhow::Result<std::sync::mpsc::SyncSender<Vec<u8>>> {
        let mut radio = LinuxRadio::open(name)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(1024);
        std::thread::Builder::new()
            .name(format!("v6iot-wpan-{pan}"))
            .spawn(move || {
                let mut buf = [0_u8; MAX_PHY_PACKET];
                loop {
                    loop {
                        match rx.try_recv() {
                            Ok(f) => {
                                if let Ok(frame) = MacFrame::new(&f)
                                    && let Err(e) = radio.transmit(frame)
                                {
                                    tracing::warn!(error = %e, "wpan send error");
                                }
                            }
                            Err(std::sync::mpsc::TryRecvError::Empty) => break,
                            Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
                        }
                    }
                    match radio.receive(&mut buf, POLL) {
                        Ok(Some(r)) => {
                            let frame = r.frame.as_bytes().to_vec();
                            if to_loop.blocking_send(Input::Frame { pan, frame }).is_err() {
                                return;
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "wpan receive error");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })?;
        Ok(tx)
    }
}

impl BorderIo {
    /// Takes what the readers have ready (at most `max`, the first given), hands CoAP for the
    /// router to the gateway, and sends what the router has to send.
    pub(super) fn take_ready(
        &mut self,
        first: Input,
        max: usize,
        gateway: &mut crate::gateway::Gateway,
    ) {
        self.handle(first);
        for _ in 1..max {
            match self.inputs.try_recv() {
                Ok(input) => self.handle(input),
                Err(_) => break,
            }
        }
        let now = Instant::now();
        let wall = super::unix_ms();
        while let Some(d) = self.router.poll_local() {
            // The router's PAN address the device reached is the gateway's local address.
            let peer = Peer::via(SocketAddr::V6(d.remote), IpAddr::V6(d.local));
            gateway.handle_datagram(now, wall, peer, &d.payload);
        }
        self.flush();
    }

    /// Sends the gateway's datagram through the radio when its peer is on a PAN (from the
    /// router's address the device reached); else hands it back.
    pub(super) fn route_gateway_datagram(
        &mut self,
        peer: Peer,
        bytes: Vec<u8>,
    ) -> Option<(Peer, Vec<u8>)> {
        let SocketAddr::V6(v6) = peer.remote else {
            return Some((peer, bytes));
        };
        if self.router.pan_of(*v6.ip()).is_none() {
            return Some((peer, bytes));
        }
        let local = match peer.local {
            Some(IpAddr::V6(local)) => Some(local),
            _ => None,
        };
        if let Err(e) = self.router.send_local(local, v6, &bytes) {
            tracing::debug!(%peer, error = %e, "not sent onto the PAN");
        }
        None
    }
}

/// The next input of the border router, if there is one (never ready without).
pub(super) async fn next(border: &mut Option<BorderIo>) -> Option<Input> {
    match border {
        Some(b) => b.next().await,
        None => std::future::pending().await,
    }
}

/// One log line of the border router's counters.
pub(super) fn log_stats(stats: &BorderStats, io: &IoCounters) {
    for (pan, s) in stats.pans.iter().enumerate() {
        tracing::info!(
            "border stats pan={pan} frames_in={} frames_out={} packets_in={} packets_out={} \
             to_host={} from_host={} local_in={} local_out={} neighbours={} reassembling={} \
             reassembly_bytes={} drops={} {:?} reassembly={:?}",
            s.frames_in,
            s.frames_out,
            s.packets_in,
            s.packets_out,
            s.to_host,
            s.from_host,
            s.local_in,
            s.local_out,
            s.neighbours,
            s.reassembly_in_progress,
            s.reassembly_bytes,
            s.drops.total(),
            s.drops,
            s.reassembly,
        );
    }
    tracing::info!(
        "border host stats {:?} zep_malformed={} bad_fcs={} other_channel={} send_errors={}",
        stats.host,
        io.zep_malformed.load(Ordering::Relaxed),
        io.bad_fcs.load(Ordering::Relaxed),
        io.other_channel.load(Ordering::Relaxed),
        io.send_errors.load(Ordering::Relaxed),
    );
}
