//! The power-saving timers as the network and `AT+CPSMS`, `AT+CEREG` and `AT+CEDRXS` carry
//! them (3GPP TS 24.008):
//!
//! | timer | information element | encoding |
//! |---|---|---|
//! | [`T3412`], periodic TAU (extended) | GPRS Timer 3, §10.5.7.4a | one byte: bits 8–6 the unit (000 10 min, 001 1 h, 010 10 h, 011 2 s, 100 30 s, 101 1 min, 110 320 h, 111 deactivated), bits 5–1 the value |
//! | [`T3324`], active time | GPRS Timer 2, §10.5.7.4 | one byte: unit 000 2 s, 001 1 min, 010 decihours (6 min), 111 deactivated (other units read as 1 min), bits 5–1 the value |
//! | [`EdrxCycle`] | Extended DRX parameters, §10.5.5.32, octet 3 bits 4–1 | E-UTRAN cycle 5.12 s × 2^k steps (20.48 s … 10485.76 s; NB-S1 mode allows 0010, 0011, 0101, 1001 and up) |
//! | [`PagingWindow`] | the same octet, bits 8–5 | NB-S1 mode: 2.56 s × (value + 1) |
//!
//! AT commands write a byte as 8 binary digits (`"00111000"` = 1 h × 24 = 24 h) and a half byte
//! as 4. [`GprsTimer::encode`] picks the unit that represents a duration exactly with the
//! smallest value (60 s → 1 min × 1, `"00100001"`), and rounds up to the next value it can
//! represent when none does (90 s → 2 min), so a requested active time is never shortened.

use alloc::string::String;
use core::fmt;
use core::marker::PhantomData;
use core::time::Duration;

/// A duration the encoding cannot carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimerError {
    /// Longer than the longest value of the timer.
    #[error("{requested:?} is longer than the longest {timer} ({max:?})")]
    TooLong {
        /// Which timer.
        timer: &'static str,
        /// What was asked for.
        requested: Duration,
        /// The longest value it can carry.
        max: Duration,
    },
}

/// The units of one GPRS timer information element.
pub trait TimerUnits {
    /// The timer's name, for messages.
    const NAME: &'static str;
    /// (unit bits, seconds per step), in the order [`GprsTimer::encode`] prefers on a tie.
    const UNITS: &'static [(u8, u64)];
    /// Seconds per step of the unit values the table does not list (other than 111).
    const OTHER: u64;
}

/// GPRS Timer 3 (TS 24.008 §10.5.7.4a): T3412 extended, the periodic TAU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timer3;

impl TimerUnits for Timer3 {
    const NAME: &'static str = "T3412 (GPRS Timer 3)";
    const UNITS: &'static [(u8, u64)] = &[
        (0b011, 2),
        (0b100, 30),
        (0b101, 60),
        (0b000, 600),
        (0b001, 3600),
        (0b010, 36_000),
        (0b110, 1_152_000),
    ];
    const OTHER: u64 = 3600;
}

/// GPRS Timer 2 (TS 24.008 §10.5.7.4): T3324, the active time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timer2;

impl TimerUnits for Timer2 {
    const NAME: &'static str = "T3324 (GPRS Timer 2)";
    const UNITS: &'static [(u8, u64)] = &[(0b000, 2), (0b001, 60), (0b010, 360)];
    /// "Other values shall be interpreted as multiples of 1 minute in this version of the
    /// protocol."
    const OTHER: u64 = 60;
}

/// One timer byte: bits 8–6 the unit, bits 5–1 the value; unit 111 is "deactivated".
pub struct GprsTimer<U> {
    byte: u8,
    units: PhantomData<U>,
}

/// The periodic TAU timer (T3412 extended), GPRS Timer 3.
pub type T3412 = GprsTimer<Timer3>;

/// The active time (T3324), GPRS Timer 2.
pub type T3324 = GprsTimer<Timer2>;

const DEACTIVATED_UNIT: u8 = 0b111;

impl<U: TimerUnits> GprsTimer<U> {
    /// The timer switched off (unit 111).
    pub const DEACTIVATED: GprsTimer<U> = GprsTimer::from_byte(DEACTIVATED_UNIT << 5);

    /// The timer of an information element's byte.
    pub const fn from_byte(byte: u8) -> GprsTimer<U> {
        GprsTimer {
            byte,
            units: PhantomData,
        }
    }

    /// The byte as the network sends it.
    pub const fn byte(self) -> u8 {
        self.byte
    }

    /// The shortest value at least `d` long (see the [module docs](self)).
    pub fn encode(d: Duration) -> Result<GprsTimer<U>, TimerError> {
        let want = d.as_micros();
        let mut best: Option<(u128, u8, u8)> = None;
        for &(unit, secs) in U::UNITS {
            let step = u128::from(secs) * 1_000_000;
            let value = want.div_ceil(step);
            let Ok(v) = u8::try_from(value) else {
                continue;
            };
            if v > 31 {
                continue;
            }
            let got = u128::from(v) * step;
            // On a tie the smaller non-zero value wins (60 s is 1 min × 1, not 2 s × 30);
            // zero stays in the first unit listed.
            let better = best.is_none_or(|(g, bv, _)| got < g || (got == g && v > 0 && v < bv));
            if better {
                best = Some((got, v, unit));
            }
        }
        match best {
            Some((_, v, unit)) => Ok(GprsTimer::from_byte((unit << 5) | v)),
            None => Err(TimerError::TooLong {
                timer: U::NAME,
                requested: d,
                max: Self::max(),
            }),
        }
    }

    /// The longest duration the timer carries.
    pub fn max() -> Duration {
        let longest = U::UNITS.iter().map(|&(_, s)| s).max().unwrap_or(0);
        Duration::from_secs(longest * 31)
    }

    /// The duration, or `None` when the timer is deactivated.
    pub fn duration(self) -> Option<Duration> {
        let unit = self.byte >> 5;
        if unit == DEACTIVATED_UNIT {
            return None;
        }
        let secs = U::UNITS
            .iter()
            .find(|&&(u, _)| u == unit)
            .map_or(U::OTHER, |&(_, s)| s);
        Some(Duration::from_secs(secs * u64::from(self.byte & 0x1f)))
    }

    /// The 8 binary digits AT commands use, e.g. `"00100001"`.
    pub fn bits(self) -> String {
        alloc::format!("{:08b}", self.byte)
    }

    /// Reads 8 binary digits; `None` for anything else.
    pub fn parse_bits(s: &str) -> Option<GprsTimer<U>> {
        (s.len() == 8)
            .then(|| u8::from_str_radix(s, 2).ok())
            .flatten()
            .map(GprsTimer::from_byte)
    }
}

// Hand-written so that they hold for any `U` (derives would ask `U` for them too).
impl<U> Clone for GprsTimer<U> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<U> Copy for GprsTimer<U> {}
impl<U> PartialEq for GprsTimer<U> {
    fn eq(&self, other: &Self) -> bool {
        self.byte == other.byte
    }
}
impl<U> Eq for GprsTimer<U> {}

impl<U: TimerUnits> fmt::Debug for GprsTimer<U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({:08b} = {:?})", U::NAME, self.byte, self.duration())
    }
}

/// An E-UTRAN eDRX cycle: bits 4–1 of octet 3 of the Extended DRX parameters (§10.5.5.32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdrxCycle(u8);

/// The E-UTRAN eDRX cycle of each 4-bit value, in milliseconds.
const EDRX_CYCLES_MS: [u64; 16] = [
    5_120, 10_240, 20_480, 40_960, 61_440, 81_920, 102_400, 122_880, 143_360, 163_840, 327_680,
    655_360, 1_310_720, 2_621_440, 5_242_880, 10_485_760,
];

impl EdrxCycle {
    /// The cycle of a 4-bit value (higher bits ignored).
    pub const fn from_value(value: u8) -> EdrxCycle {
        EdrxCycle(value & 0x0f)
    }

    /// The 4-bit value.
    pub const fn value(self) -> u8 {
        self.0
    }

    /// The cycle length.
    pub fn duration(self) -> Duration {
        let ms = EDRX_CYCLES_MS
            .get(usize::from(self.0))
            .copied()
            .unwrap_or(0);
        Duration::from_millis(ms)
    }

    /// Whether NB-S1 mode (NB-IoT) allows this value (the others are WB-S1 only).
    pub fn valid_for_nb_iot(self) -> bool {
        matches!(self.0, 0b0010 | 0b0011 | 0b0101 | 0b1001..=0b1111)
    }

    /// The shortest cycle NB-IoT allows that is at least `d` long.
    pub fn encode_nb_iot(d: Duration) -> Result<EdrxCycle, TimerError> {
        (0..16u8)
            .map(EdrxCycle::from_value)
            .find(|c| c.valid_for_nb_iot() && c.duration() >= d)
            .ok_or(TimerError::TooLong {
                timer: "eDRX cycle",
                requested: d,
                max: EdrxCycle(15).duration(),
            })
    }

    /// The 4 binary digits AT commands use, e.g. `"0101"`.
    pub fn bits(self) -> String {
        alloc::format!("{:04b}", self.0)
    }
}

/// The paging time window of NB-S1 mode: bits 8–5 of octet 3 (§10.5.5.32), 2.56 s × (n + 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagingWindow(u8);

impl PagingWindow {
    /// The window of a 4-bit value (higher bits ignored).
    pub const fn from_value(value: u8) -> PagingWindow {
        PagingWindow(value & 0x0f)
    }

    /// The window's length in NB-S1 mode.
    pub fn duration(self) -> Duration {
        Duration::from_millis(2_560 * (u64::from(self.0) + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// TS 24.008 Table 10.5.163a (GPRS Timer 3), every unit, decoded from its bits.
    #[test]
    fn t3412_decodes_every_unit_of_the_table() {
        let table: [(&str, Option<u64>); 9] = [
            ("00000001", Some(600)),           // 10 min × 1
            ("00100010", Some(2 * 3600)),      // 1 h × 2
            ("01000011", Some(3 * 36_000)),    // 10 h × 3
            ("01100100", Some(8)),             // 2 s × 4
            ("10000101", Some(150)),           // 30 s × 5
            ("10100110", Some(360)),           // 1 min × 6
            ("11000111", Some(7 * 1_152_000)), // 320 h × 7
            ("11100000", None),                // deactivated
            ("11111111", None),
        ];
        for (bits, want) in table {
            let t = T3412::parse_bits(bits).unwrap();
            assert_eq!(t.duration(), want.map(secs), "{bits}");
            assert_eq!(t.bits(), bits);
        }
    }

    /// TS 24.008 Table 10.5.163 (GPRS Timer 2): its three units, deactivated, and the other
    /// unit values read as minutes.
    #[test]
    fn t3324_decodes_every_unit_of_the_table() {
        let table: [(&str, Option<u64>); 8] = [
            ("00000000", Some(0)),
            ("00011111", Some(62)),  // 2 s × 31
            ("00100001", Some(60)),  // 1 min × 1
            ("01000010", Some(720)), // decihours × 2
            ("01100011", Some(180)), // 011: other → 1 min × 3
            ("10000001", Some(60)),  // 100: other
            ("11000010", Some(120)), // 110: other
            ("11100101", None),      // deactivated
        ];
        for (bits, want) in table {
            assert_eq!(
                T3324::parse_bits(bits).unwrap().duration(),
                want.map(secs),
                "{bits}"
            );
        }
    }

    /// shared/DESIGN.md §10's examples, and values each unit must take.
    #[test]
    fn encodes_exact_values_with_the_smallest_step_count() {
        let cases: [(u64, &str); 8] = [
            (24 * 3600, "00111000"), // TAU 24 h = 1 h × 24
            (10 * 60, "00000001"),
            (2, "01100001"),
            (62, "01111111"), // 2 s × 31 exactly; nothing coarser is exact
            (30, "10000001"),
            (320 * 3600, "11000001"),
            (310 * 3600, "01011111"), // 10 h × 31
            (0, "01100000"),
        ];
        for (s, bits) in cases {
            assert_eq!(T3412::encode(secs(s)).unwrap().bits(), bits, "{s} s");
        }
        assert_eq!(T3324::encode(secs(60)).unwrap().bits(), "00100001"); // DESIGN §10
        assert_eq!(T3324::encode(secs(20)).unwrap().bits(), "00001010");
        assert_eq!(T3324::encode(secs(0)).unwrap().bits(), "00000000");
        assert_eq!(T3324::encode(secs(6 * 60)).unwrap().bits(), "01000001");
    }

    #[test]
    fn inexact_values_round_up_never_down() {
        // 90 s: 2 s × 45 does not fit; 1 min × 2 is the next value up.
        assert_eq!(T3324::encode(secs(90)).unwrap().duration(), Some(secs(120)));
        assert_eq!(
            T3324::encode(Duration::from_millis(2500))
                .unwrap()
                .duration(),
            Some(secs(4))
        );
        // 25 h: 1 h × 25.
        assert_eq!(
            T3412::encode(secs(25 * 3600)).unwrap().duration(),
            Some(secs(25 * 3600))
        );
        // 33 h: 1 h × 33 does not fit; 10 h × 4 = 40 h.
        assert_eq!(
            T3412::encode(secs(33 * 3600)).unwrap().duration(),
            Some(secs(40 * 3600))
        );
        for s in (0..4000).step_by(7) {
            let got = T3324::encode(secs(s)).unwrap().duration().unwrap();
            assert!(got >= secs(s), "{s}");
        }
    }

    #[test]
    fn too_long_is_an_error_naming_the_limit() {
        assert_eq!(T3324::max(), secs(31 * 360));
        let e = T3324::encode(secs(31 * 360 + 1)).unwrap_err();
        assert_eq!(
            e,
            TimerError::TooLong {
                timer: "T3324 (GPRS Timer 2)",
                requested: secs(31 * 360 + 1),
                max: secs(11_160)
            }
        );
        assert!(T3412::encode(T3412::max()).is_ok());
        assert!(T3412::encode(T3412::max() + secs(1)).is_err());
    }

    #[test]
    fn every_byte_decodes_and_encodes_back_to_its_duration() {
        for byte in 0..=u8::MAX {
            let t = T3412::from_byte(byte);
            if let Some(d) = t.duration() {
                assert_eq!(T3412::encode(d).unwrap().duration(), Some(d), "{byte:08b}");
            }
            let t = T3324::from_byte(byte);
            if let Some(d) = t.duration() {
                assert_eq!(T3324::encode(d).unwrap().duration(), Some(d), "{byte:08b}");
            }
        }
        assert_eq!(T3324::DEACTIVATED.duration(), None);
        assert_eq!(T3324::parse_bits("0010000"), None);
        assert_eq!(T3324::parse_bits("0010000x"), None);
    }

    /// TS 24.008 Table 10.5.5.32: the E-UTRAN cycles and which NB-S1 mode allows.
    #[test]
    fn edrx_cycles_and_paging_windows() {
        let table = [
            (0b0010, 20_480, true),
            (0b0011, 40_960, true),
            (0b0100, 61_440, false),
            (0b0101, 81_920, true),
            (0b1001, 163_840, true),
            (0b1010, 327_680, true),
            (0b1111, 10_485_760, true),
            (0b0000, 5_120, false),
        ];
        for (v, ms, nb) in table {
            let c = EdrxCycle::from_value(v);
            assert_eq!(c.duration(), Duration::from_millis(ms), "{v:04b}");
            assert_eq!(c.valid_for_nb_iot(), nb, "{v:04b}");
        }
        assert_eq!(EdrxCycle::encode_nb_iot(secs(60)).unwrap().bits(), "0101");
        assert_eq!(EdrxCycle::encode_nb_iot(secs(1)).unwrap().value(), 0b0010);
        assert!(EdrxCycle::encode_nb_iot(secs(20_000)).is_err());
        assert_eq!(
            PagingWindow::from_value(0).duration(),
            Duration::from_millis(2560)
        );
        assert_eq!(
            PagingWindow::from_value(0b1111).duration(),
            Duration::from_millis(40_960)
        );
    }
}
