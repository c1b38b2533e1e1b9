//! SplitMix64 and FNV-1a 64: stable, seedable, dependency-free.
//!
//! Why our own: "same seed → same sample, same fingerprint" is a contract of several crates, and
//! must not change when an external crate changes its algorithms.

/// The SplitMix64 increment (2^64 / φ).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Mixes a 64-bit value: the SplitMix64 output for the state `z` before its increment.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(GOLDEN);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a 64 of `bytes` starting from the offset basis xor `seed` (`seed` 0: plain FNV-1a).
pub fn fnv1a64(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325 ^ seed, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// SplitMix64 (Steele, Lea and Flood 2014): one 64-bit state, a well-mixed output per step.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next raw 64-bit value.
    pub fn next_u64(&mut self) -> u64 {
        let z = self.0;
        self.0 = z.wrapping_add(GOLDEN);
        mix64(z)
    }

    /// Uniform in `[0, 1)` (53 bits).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` by multiply-shift (bias below 2⁻⁴⁰ for `n` < 2²⁴).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_values() {
        // SplitMix64 seeded with 0 (the published first outputs).
        let mut g = SplitMix64(0);
        assert_eq!(g.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(g.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        // FNV-1a 64 of "a".
        assert_eq!(fnv1a64(0, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(0, b""), 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn below_and_f64_stay_in_range() {
        let mut g = SplitMix64(7);
        for _ in 0..1000 {
            assert!(g.below(13) < 13);
            let u = g.next_f64();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
