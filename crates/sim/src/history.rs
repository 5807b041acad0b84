//! What clients did and what they were told, and the checks on it.
//!
//! Writes append unique values to a key's register; reads return the whole
//! register. Since every node applies the same log (checked separately),
//! any two register contents ever observed are prefixes of one another, and
//! a linearizable history must keep, per key, a "floor": the longest content
//! that some completed operation has made visible. Every read invoked after
//! that point must return at least the floor.
//!
//! Invariants checked:
//! 1. A read returns a superset (an extension) of the floor of its key as it
//!    was when the read was invoked: it reflects every write acknowledged,
//!    and every value some read returned, before it started.
//! 2. Everything a read returns was proposed by some client before the read
//!    completed (no value from nowhere).
//! 3. Observed contents of a key never diverge (one is a prefix of the
//!    other).
//! 4. After the final heal phase, every acknowledged write is applied on
//!    every node (checked in `sim.rs`, which owns the nodes).

use std::collections::BTreeMap;

/// One write as the history knows it.
#[derive(Clone, Debug)]
pub struct WriteRecord {
    /// Register.
    pub key: u8,
    /// Virtual time of the proposal.
    pub invoked_us: u64,
    /// Virtual time of the acknowledgement, if the client got one.
    pub acked_us: Option<u64>,
}

/// The client-visible history.
#[derive(Default)]
pub struct History {
    /// Every value ever proposed.
    pub writes: BTreeMap<u64, WriteRecord>,
    /// Per key: the longest content made visible by a completed operation.
    floor: BTreeMap<u8, Vec<u64>>,
}

impl History {
    /// A client proposed `value` to `key`.
    pub fn invoke_write(&mut self, key: u8, value: u64, now: u64) {
        self.writes.insert(
            value,
            WriteRecord {
                key,
                invoked_us: now,
                acked_us: None,
            },
        );
    }

    /// The floor length a read of `key` invoked now must reach.
    pub fn invoke_read(&self, key: u8) -> usize {
        self.floor.get(&key).map_or(0, Vec::len)
    }

    /// The write of `value` was acknowledged; `content` is the register as
    /// the acknowledging leader's state machine held it right after applying
    /// the write (so it ends with `value`).
    pub fn ack_write(&mut self, value: u64, content: &[u64], now: u64) -> Result<(), String> {
        let Some(record) = self.writes.get_mut(&value) else {
            return Err(format!("acknowledged write {value:#x} was never proposed"));
        };
        record.acked_us = Some(now);
        let key = record.key;
        if content.last() != Some(&value) {
            return Err(format!(
                "acknowledged write {value:#x} is not the last value of key {key}"
            ));
        }
        self.raise_floor(key, content)
    }

    /// A read of `key` invoked with floor length `floor_len` returned
    /// `content` at time `now`.
    pub fn complete_read(
        &mut self,
        key: u8,
        floor_len: usize,
        content: &[u64],
        now: u64,
    ) -> Result<(), String> {
        if content.len() < floor_len {
            return Err(format!(
                "stale read of key {key}: {} values, but {floor_len} were visible before it started",
                content.len()
            ));
        }
        for value in content {
            match self.writes.get(value) {
                Some(w) if w.key == key && w.invoked_us <= now => {}
                _ => {
                    return Err(format!(
                        "read of key {key} returned {value:#x}, which no client proposed to it"
                    ))
                }
            }
        }
        self.raise_floor(key, content)
    }

    fn raise_floor(&mut self, key: u8, content: &[u64]) -> Result<(), String> {
        let floor = self.floor.entry(key).or_default();
        let common = floor.len().min(content.len());
        if floor[..common] != content[..common] {
            return Err(format!(
                "key {key} diverged: observed {:x?} and {:x?}",
                &floor[..common],
                &content[..common]
            ));
        }
        if content.len() > floor.len() {
            *floor = content.to_vec();
        }
        Ok(())
    }

    /// Acknowledged writes: (value, key).
    pub fn acknowledged(&self) -> impl Iterator<Item = (u64, u8)> + '_ {
        self.writes
            .iter()
            .filter(|(_, w)| w.acked_us.is_some())
            .map(|(v, w)| (*v, w.key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_read_is_caught() {
        let mut h = History::default();
        h.invoke_write(0, 1, 0);
        h.ack_write(1, &[1], 5).unwrap();
        let floor = h.invoke_read(0);
        assert!(h.complete_read(0, floor, &[], 9).is_err());
        assert!(h.complete_read(0, floor, &[1], 9).is_ok());
    }

    #[test]
    fn divergence_and_phantoms_are_caught() {
        let mut h = History::default();
        h.invoke_write(0, 1, 0);
        h.invoke_write(0, 2, 0);
        h.complete_read(0, 0, &[1], 3).unwrap();
        assert!(h.complete_read(0, 0, &[2], 4).is_err(), "diverged");
        assert!(h.complete_read(0, 0, &[7], 4).is_err(), "phantom");
    }
}
