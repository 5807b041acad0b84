//! Keys and values of the workload.
//!
//! A key is the decimal index of the key, zero-padded to `--key-size`
//! bytes, so every key is in `["0", ":")` (`':'` follows `'9'` in ASCII) and
//! one watch over that range sees them all. Values are a fixed pattern;
//! `watch-latency` values start with the send time, [`STAMP_BYTES`] bytes
//! of little-endian nanoseconds since the run's base instant.

use crate::options::STAMP_BYTES;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Start of the range holding every bench key.
pub const KEY_RANGE_START: &[u8] = b"0";
/// End (exclusive) of the range holding every bench key.
pub const KEY_RANGE_END: &[u8] = b":";

/// The key with index `index`, `size` bytes long.
///
/// The caller guarantees `index` has at most `size` digits (options
/// invariant 3); a longer index is written in full rather than cut, so
/// distinct indexes never share a key.
pub fn key(index: u64, size: usize) -> Vec<u8> {
    format!("{index:0size$}").into_bytes()
}

/// A value of `size` bytes: a printable repeating pattern.
pub fn value(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Writes `nanos` into the first [`STAMP_BYTES`] of `value`.
///
/// The caller guarantees `value.len() >= STAMP_BYTES` (options invariant 4).
pub fn stamp(value: &mut [u8], nanos: u64) {
    value[..STAMP_BYTES].copy_from_slice(&nanos.to_le_bytes());
}

/// Reads the stamp from a value, if it is long enough to hold one.
pub fn read_stamp(value: &[u8]) -> Option<u64> {
    let bytes: [u8; STAMP_BYTES] = value.get(..STAMP_BYTES)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// Chooses the key index of each request of one client.
#[derive(Debug)]
pub struct KeyPicker {
    rng: SmallRng,
    key_space: u64,
    sequential: bool,
}

impl KeyPicker {
    /// A picker for one client; `seed` and `client` make runs repeatable.
    pub fn new(seed: u64, client: usize, key_space: u64, sequential: bool) -> KeyPicker {
        KeyPicker {
            rng: SmallRng::seed_from_u64(
                seed ^ (client as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ),
            key_space,
            sequential,
        }
    }

    /// The key index for the request with ticket `ticket`.
    pub fn pick(&mut self, ticket: u64) -> u64 {
        if self.sequential {
            ticket % self.key_space
        } else {
            self.rng.gen_range(0..self.key_space)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_padded_digits_inside_the_watch_range() {
        assert_eq!(key(42, 8), b"00000042");
        assert_eq!(key(0, 1), b"0");
        assert_eq!(key(123, 2), b"123");
        for k in [key(0, 8), key(99_999_999, 8)] {
            assert!(k.as_slice() >= KEY_RANGE_START && k.as_slice() < KEY_RANGE_END);
        }
    }

    #[test]
    fn values_have_the_requested_size_and_carry_stamps() {
        let mut v = value(16);
        assert_eq!(v.len(), 16);
        stamp(&mut v, 0x0102_0304_0506_0708);
        assert_eq!(read_stamp(&v), Some(0x0102_0304_0506_0708));
        assert_eq!(read_stamp(&v[..7]), None);
    }

    #[test]
    fn pickers_stay_in_the_key_space_and_repeat_by_seed() {
        let mut a = KeyPicker::new(7, 3, 10, false);
        let mut b = KeyPicker::new(7, 3, 10, false);
        for t in 0..1000 {
            let k = a.pick(t);
            assert!(k < 10);
            assert_eq!(k, b.pick(t));
        }
        let mut s = KeyPicker::new(7, 3, 10, true);
        assert_eq!(
            (0..12).map(|t| s.pick(t)).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
        );
    }
}
