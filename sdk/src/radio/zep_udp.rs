//! A [`Radio`] that sends and receives ZEP v2 datagrams on a UDP socket: the simulated medium.
//!
//! Frames go to one remote address (a peer, or the simulator's medium) in CRC mode with a
//! correct FCS; datagrams come from anyone. Datagrams that are not ZEP data, frames with a bad
//! FCS and frames on another channel are dropped and counted ([`RadioStats`]).

use alloc::boxed::Box;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use super::pcap::since_unix_epoch;
use super::zep::{self, NtpTime, ZepError, ZepHeader};
use super::{FrameError, MacFrame, Radio, RadioStats, Reception};

/// Where a [`ZepRadio`] sends and which channel it is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZepConfig {
    /// Where frames go (a peer's or the medium's ZEP socket).
    pub remote: SocketAddr,
    /// The 802.15.4 channel (11–26); frames on others are dropped.
    pub channel: u8,
    /// The device id in the ZEP header of frames sent.
    pub device_id: u16,
}

/// ZEP v2 over a UDP socket.
#[derive(Debug)]
pub struct ZepRadio {
    socket: UdpSocket,
    config: ZepConfig,
    sequence: u32,
    stats: RadioStats,
    datagram: Box<[u8; zep::MAX_DATAGRAM + 1]>,
}

impl ZepRadio {
    /// A radio on `socket` (bound by the caller).
    #[must_use]
    pub fn new(socket: UdpSocket, config: ZepConfig) -> ZepRadio {
        ZepRadio {
            socket,
            config,
            sequence: 0,
            stats: RadioStats::default(),
            datagram: Box::new([0; zep::MAX_DATAGRAM + 1]),
        }
    }

    /// A radio on a new socket bound to `local`.
    pub fn bind(local: SocketAddr, config: ZepConfig) -> io::Result<ZepRadio> {
        Ok(ZepRadio::new(UdpSocket::bind(local)?, config))
    }

    /// The socket's local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Waits for one datagram until `deadline` (`None`: do not wait); its length, or `None`.
    fn recv_until(&mut self, deadline: Option<Instant>) -> io::Result<Option<usize>> {
        let wait = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        match wait {
            None => self.socket.set_nonblocking(true)?,
            Some(w) if w.is_zero() => return Ok(None),
            Some(w) => {
                self.socket.set_nonblocking(false)?;
                self.socket.set_read_timeout(Some(w))?;
            }
        }
        match self.socket.recv_from(&mut self.datagram[..]) {
            Ok((n, _)) => Ok(Some(n)),
            Err(e) if crate::net::is_transient(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn count_drop(&mut self, e: ZepError) {
        match e {
            ZepError::Frame(FrameError::BadFcs { .. }) => self.stats.bad_fcs += 1,
            ZepError::NotData(_) => self.stats.not_data += 1,
            _ => self.stats.malformed += 1,
        }
    }
}

impl Radio for ZepRadio {
    type Error = io::Error;

    fn transmit(&mut self, frame: MacFrame<'_>) -> io::Result<()> {
        let header = ZepHeader {
            channel: self.config.channel,
            device_id: self.config.device_id,
            lqi: 255,
            timestamp: NtpTime::from_unix(since_unix_epoch()),
            sequence: self.sequence,
        };
        let mut out = [0_u8; zep::MAX_DATAGRAM];
        let n = zep::encode(&header, frame, &mut out)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.sequence = self.sequence.wrapping_add(1);
        self.socket
            .send_to(out.get(..n).unwrap_or_default(), self.config.remote)?;
        self.stats.sent += 1;
        Ok(())
    }

    fn receive<'b>(
        &mut self,
        buf: &'b mut [u8],
        wait: Duration,
    ) -> io::Result<Option<Reception<'b>>> {
        let deadline = (!wait.is_zero()).then(|| Instant::now() + wait);
        let (len, lqi) = loop {
            let Some(n) = self.recv_until(deadline)? else {
                return Ok(None);
            };
            if n > zep::MAX_DATAGRAM {
                self.stats.malformed += 1;
                continue;
            }
            match zep::decode(self.datagram.get(..n).unwrap_or_default()) {
                Ok(d) if d.header.channel != self.config.channel => self.stats.other_channel += 1,
                Ok(d) if d.frame.len() > buf.len() => self.stats.truncated += 1,
                Ok(d) => {
                    let len = d.frame.len();
                    let lqi = d.header.lqi;
                    if let Some(dst) = buf.get_mut(..len) {
                        dst.copy_from_slice(d.frame.as_bytes());
                    }
                    break (len, lqi);
                }
                Err(e) => self.count_drop(e),
            }
        };
        self.stats.received += 1;
        let frame = MacFrame::new(buf.get(..len).unwrap_or_default())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(Some(Reception {
            frame,
            lqi: Some(lqi),
        }))
    }

    fn stats(&self) -> RadioStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (ZepRadio, ZepRadio) {
        let a = UdpSocket::bind("[::1]:0").unwrap();
        let b = UdpSocket::bind("[::1]:0").unwrap();
        let config = |remote, device_id| ZepConfig {
            remote,
            channel: 26,
            device_id,
        };
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        (
            ZepRadio::new(a, config(b_addr, 1)),
            ZepRadio::new(b, config(a_addr, 2)),
        )
    }

    #[test]
    fn frames_cross_loopback_and_junk_is_counted() {
        let (mut a, mut b) = pair();
        let frame = [0x41, 0xd8, 0x01, 0xcd, 0xab, 0xff, 0xff, 0x01, 0x00, 0x7a];
        a.transmit(MacFrame::new(&frame).unwrap()).unwrap();
        let mut buf = [0; 127];
        let got = b
            .receive(&mut buf, Duration::from_secs(5))
            .unwrap()
            .unwrap();
        assert_eq!(got.frame.as_bytes(), frame);
        assert_eq!(got.lqi, Some(255));

        // Junk, a bad FCS and another channel, then a good frame: only the good one comes out.
        let raw = UdpSocket::bind("[::1]:0").unwrap();
        let to = b.local_addr().unwrap();
        raw.send_to(b"not zep at all, not at all, not at all", to)
            .unwrap();
        let mut d = [0; zep::MAX_DATAGRAM];
        let header = ZepHeader {
            channel: 26,
            device_id: 9,
            lqi: 1,
            timestamp: NtpTime(0),
            sequence: 0,
        };
        let n = zep::encode(&header, MacFrame::new(&frame).unwrap(), &mut d).unwrap();
        let mut bad = d;
        bad[n - 1] ^= 1;
        raw.send_to(&bad[..n], to).unwrap();
        let mut other = d;
        other[4] = 11;
        raw.send_to(&other[..n], to).unwrap();
        raw.send_to(&d[..n], to).unwrap();
        let got = b
            .receive(&mut buf, Duration::from_secs(5))
            .unwrap()
            .unwrap();
        assert_eq!(got.lqi, Some(1));
        let stats = b.stats();
        assert_eq!(
            (
                stats.received,
                stats.malformed,
                stats.bad_fcs,
                stats.other_channel
            ),
            (2, 1, 1, 1)
        );
        assert_eq!(a.stats().sent, 1);
        assert!(b.receive(&mut buf, Duration::ZERO).unwrap().is_none());
    }
}
