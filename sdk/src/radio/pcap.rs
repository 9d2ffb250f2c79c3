//! pcap captures of 802.15.4 frames (the classic libpcap format, microsecond timestamps), which
//! Wireshark and tshark read.
//!
//! Two link types: [`LinkType::WithFcs`] (195, `LINKTYPE_IEEE802_15_4_WITHFCS`: each frame
//! followed by its FCS, which Wireshark checks) and [`LinkType::NoFcs`] (230,
//! `LINKTYPE_IEEE802_15_4_NOFCS`). [`file_header`] and [`record_header`] are sans-IO; with the
//! `std` feature, [`PcapWriter`] writes a capture to any `io::Write` and [`PcapRadio`] wraps any
//! [`Radio`](super::Radio) to record every frame it sends and receives.

use core::time::Duration;

/// The link type of a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// 195: each frame followed by its FCS.
    WithFcs,
    /// 230: frames without FCS.
    NoFcs,
}

impl LinkType {
    /// The link-type number in the file header.
    #[must_use]
    pub const fn number(self) -> u32 {
        match self {
            LinkType::WithFcs => 195,
            LinkType::NoFcs => 230,
        }
    }
}

/// The 24-byte pcap file header (little-endian, version 2.4, snap length 65535).
#[must_use]
pub fn file_header(link: LinkType) -> [u8; 24] {
    let mut h = [0_u8; 24];
    let fields: [(usize, &[u8]); 5] = [
        (0, &0xa1b2_c3d4_u32.to_le_bytes()),
        (4, &2_u16.to_le_bytes()),
        (6, &4_u16.to_le_bytes()),
        (16, &65_535_u32.to_le_bytes()),
        (20, &link.number().to_le_bytes()),
    ];
    for (at, bytes) in fields {
        if let Some(dst) = h.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    }
    h
}

/// The 16-byte header of one record of `len` bytes captured at `timestamp` (since the Unix
/// epoch).
#[must_use]
pub fn record_header(timestamp: Duration, len: usize) -> [u8; 16] {
    let mut h = [0_u8; 16];
    // pcap's seconds are 32 bits (until 2106); frames are at most 127 bytes.
    let secs = timestamp.as_secs() as u32;
    let len = len as u32;
    let fields = [secs, timestamp.subsec_micros(), len, len];
    for (chunk, v) in h.chunks_exact_mut(4).zip(fields) {
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    h
}

#[cfg(feature = "std")]
pub use with_std::{PcapRadio, PcapWriter, since_unix_epoch};

#[cfg(feature = "std")]
mod with_std {
    use alloc::boxed::Box;
    use std::io::{self, Write};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::{LinkType, file_header, record_header};
    use crate::radio::{MAX_PHY_PACKET, MacFrame, Radio, RadioStats, Reception};

    /// The wall-clock time since the Unix epoch (0 if the clock is before it): the default
    /// timestamp of [`PcapRadio`].
    #[must_use]
    pub fn since_unix_epoch() -> Duration {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    }

    /// Writes a pcap capture of 802.15.4 frames to `W`.
    #[derive(Debug)]
    pub struct PcapWriter<W: Write> {
        out: W,
        link: LinkType,
        frames: u64,
    }

    impl<W: Write> PcapWriter<W> {
        /// Writes the file header; frames follow with [`PcapWriter::write_frame`].
        pub fn new(mut out: W, link: LinkType) -> io::Result<Self> {
            out.write_all(&file_header(link))?;
            Ok(Self {
                out,
                link,
                frames: 0,
            })
        }

        /// Records `frame` (with its FCS appended for [`LinkType::WithFcs`]) at `timestamp`.
        pub fn write_frame(&mut self, timestamp: Duration, frame: MacFrame<'_>) -> io::Result<()> {
            let mut buf = [0_u8; MAX_PHY_PACKET];
            let bytes = match self.link {
                LinkType::NoFcs => frame.as_bytes(),
                LinkType::WithFcs => {
                    let n = frame.write_with_fcs(&mut buf).unwrap_or(0);
                    buf.get(..n).unwrap_or_default()
                }
            };
            self.out.write_all(&record_header(timestamp, bytes.len()))?;
            self.out.write_all(bytes)?;
            self.frames += 1;
            Ok(())
        }

        /// Frames written so far.
        #[must_use]
        pub fn frames(&self) -> u64 {
            self.frames
        }

        /// Flushes the underlying writer.
        pub fn flush(&mut self) -> io::Result<()> {
            self.out.flush()
        }

        /// The underlying writer.
        pub fn into_inner(self) -> W {
            self.out
        }
    }

    /// A [`Radio`] that records every frame it sends and receives in a pcap capture.
    ///
    /// A failed write to the capture does not fail the radio: it is counted
    /// ([`PcapRadio::capture_errors`]) and the frame still goes out or in.
    pub struct PcapRadio<R, W: Write> {
        inner: R,
        writer: PcapWriter<W>,
        clock: Box<dyn FnMut() -> Duration + Send>,
        capture_errors: u64,
    }

    impl<R, W: Write> std::fmt::Debug for PcapRadio<R, W> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("PcapRadio")
                .field("frames", &self.writer.frames)
                .field("capture_errors", &self.capture_errors)
                .finish_non_exhaustive()
        }
    }

    impl<R: Radio, W: Write> PcapRadio<R, W> {
        /// Wraps `inner`, writing the capture to `out` with wall-clock timestamps.
        pub fn new(inner: R, out: W, link: LinkType) -> io::Result<Self> {
            Ok(Self {
                inner,
                writer: PcapWriter::new(out, link)?,
                clock: Box::new(since_unix_epoch),
                capture_errors: 0,
            })
        }

        /// Takes the timestamps from `clock` (since the Unix epoch) instead of the wall clock:
        /// virtual time in tests and simulations.
        #[must_use]
        pub fn with_clock(mut self, clock: impl FnMut() -> Duration + Send + 'static) -> Self {
            self.clock = Box::new(clock);
            self
        }

        fn record(&mut self, frame: MacFrame<'_>) {
            let now = (self.clock)();
            if self.writer.write_frame(now, frame).is_err() {
                self.capture_errors += 1;
            }
        }

        /// Frames recorded so far.
        #[must_use]
        pub fn frames(&self) -> u64 {
            self.writer.frames()
        }

        /// Frames the capture failed to record.
        #[must_use]
        pub fn capture_errors(&self) -> u64 {
            self.capture_errors
        }

        /// Flushes the capture.
        pub fn flush(&mut self) -> io::Result<()> {
            self.writer.flush()
        }

        /// The wrapped radio.
        pub fn inner_mut(&mut self) -> &mut R {
            &mut self.inner
        }

        /// The wrapped radio and the capture's writer.
        pub fn into_parts(self) -> (R, W) {
            (self.inner, self.writer.into_inner())
        }
    }

    impl<R: Radio, W: Write> Radio for PcapRadio<R, W> {
        type Error = R::Error;

        fn transmit(&mut self, frame: MacFrame<'_>) -> Result<(), R::Error> {
            self.record(frame);
            self.inner.transmit(frame)
        }

        fn receive<'b>(
            &mut self,
            buf: &'b mut [u8],
            wait: Duration,
        ) -> Result<Option<Reception<'b>>, R::Error> {
            let got = self.inner.receive(buf, wait)?;
            if let Some(r) = got {
                self.record(r.frame);
            }
            Ok(got)
        }

        fn stats(&self) -> RadioStats {
            self.inner.stats()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        let h = file_header(LinkType::WithFcs);
        assert_eq!(&h[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(&h[4..8], &[2, 0, 4, 0]);
        assert_eq!(&h[20..24], &[195, 0, 0, 0]);
        assert_eq!(&file_header(LinkType::NoFcs)[20..24], &[230, 0, 0, 0]);
        let r = record_header(Duration::new(0x0102_0304, 5_000), 12);
        assert_eq!(r, [4, 3, 2, 1, 5, 0, 0, 0, 12, 0, 0, 0, 12, 0, 0, 0]);
    }
}
