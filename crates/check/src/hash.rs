//! # Small, fast, deterministic hashing for the search's hot tables
//!
//! The search hashes a model state and a memo key on every step; SipHash's
//! DoS resistance buys nothing here (the input is our own history) and costs
//! a large share of the step. This module owns:
//! - [`FxHasher`]: the rotate-multiply hash used by rustc, for model states;
//! - [`PassThroughHasher`]: for tables whose `u64` keys are already mixed;
//! - [`mix64`]: the splitmix64 finalizer, which derives the per-operation
//!   Zobrist keys and mixes a state id into a memo hash.
//!
//! Invariants:
//! 1. Everything here is deterministic (no random seeds), so a run is
//!    reproducible and a verdict never depends on the process.
//! 2. [`PassThroughHasher`] is only used with keys produced by [`mix64`] or
//!    XORs of its outputs, which are uniformly distributed.

use std::hash::{BuildHasherDefault, Hasher};

/// The multiplier of FxHash (rustc's `rustc-hash`): an odd constant with
/// well-spread bits, so that one multiply diffuses a word.
const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// Rotate-multiply hasher; fast on the small states the models use.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

/// Hasher for keys that are already well-mixed `u64`s (invariant 2).
#[derive(Default, Clone, Copy)]
pub(crate) struct PassThroughHasher {
    hash: u64,
}

impl Hasher for PassThroughHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Not used by `u64` keys; fold anything else in so the hasher is
        // still correct (if slow) should someone use it with another key.
        for &b in bytes {
            self.hash = mix64(self.hash ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, i: u64) {
        self.hash = i;
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

/// `BuildHasher` for [`PassThroughHasher`].
pub(crate) type PassThroughBuild = BuildHasherDefault<PassThroughHasher>;

/// The splitmix64 finalizer: a bijection on `u64` with full avalanche.
pub(crate) fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hash;

    #[test]
    fn mix64_spreads_neighbours() {
        assert_ne!(mix64(0), mix64(1));
        assert!((mix64(1) ^ mix64(2)).count_ones() > 10);
    }

    #[test]
    fn fx_hashes_strings_of_all_lengths() {
        let hash = |s: &str| {
            let mut h = FxHasher::default();
            s.hash(&mut h);
            h.finish()
        };
        assert_ne!(hash("x 0 0 y"), hash("x 0 0 z"));
        assert_ne!(hash(""), hash("a"));
        assert_ne!(hash("abcdefgh"), hash("abcdefghi"));
    }
}
