//! The medium's randomness: SplitMix64, seeded, so a run is repeated exactly from its seed (back-off
//! draws, link losses). Not for anything secret.

/// A seeded pseudo-random generator (SplitMix64: Steele, Lea and Flood, 2014). Its state is
/// its seed to begin with: `Rng(seed)` is `Rng::new(seed)`.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// A generator whose sequence is fixed by `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0), by Lemire's multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `p` (always for `p >= 1`, never for `p <= 0`); draws nothing for
    /// those two, so a perfect link does not move the sequence.
    pub fn chance(&mut self, p: f64) -> bool {
        if p >= 1.0 {
            return true;
        }
        if p <= 0.0 || p.is_nan() {
            return false;
        }
        self.unit() < p
    }

    /// A number in [0, 1): 53 random bits as a fraction.
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64) * (1.0 / (1_u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_bounds_hold() {
        let (mut a, mut b, mut c) = (Rng::new(7), Rng::new(7), Rng::new(8));
        let xs: Vec<u64> = (0..16).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..16).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..16).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        let mut seen = [0_u32; 8];
        for _ in 0..8000 {
            let v = a.below(8);
            assert!(v < 8);
            seen[v as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
        assert_eq!(a.below(0), 0);
        let hits = (0..10_000).filter(|_| a.chance(0.3)).count();
        assert!((2700..3300).contains(&hits), "{hits}");
        assert!(a.chance(1.0) && !a.chance(0.0));
    }
}
