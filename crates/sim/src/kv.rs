//! The simulated state machine: a few append-only registers.
//!
//! A write appends a unique value to one key's list; a read returns the
//! whole list. Because every node applies the same log, any two lists ever
//! observed for a key are prefixes of one another, which turns the
//! linearizability check for reads into a cheap prefix comparison.
//!
//! Invariants:
//! 1. `applied` is the index of the last entry applied; entries are applied
//!    strictly in index order (`apply` asserts it).
//! 2. `chain` is a running hash over every applied entry's (index, term,
//!    data): two state machines at the same `applied` with different `chain`
//!    applied different entries somewhere (state machine safety).
//! 3. `decode(encode(kv)) == kv`; snapshots carry exactly this encoding.

use bytes::Bytes;
use concord_raft::{Entry, EntryKind, LogIndex};
use std::collections::BTreeMap;

/// Size of a write command: key byte then value as u64 little endian.
pub const WRITE_BYTES: usize = 9;

/// A decoded write command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Write {
    /// Register.
    pub key: u8,
    /// Unique value appended.
    pub value: u64,
}

impl Write {
    /// Wire form inside a log entry.
    pub fn encode(self) -> Bytes {
        let mut out = Vec::with_capacity(WRITE_BYTES);
        out.push(self.key);
        out.extend_from_slice(&self.value.to_le_bytes());
        Bytes::from(out)
    }

    /// Parses an entry's data; `None` for anything else (the leader's empty
    /// entry, or a membership change).
    pub fn decode(data: &[u8]) -> Option<Write> {
        if data.len() != WRITE_BYTES {
            return None;
        }
        let mut value = [0u8; 8];
        value.copy_from_slice(&data[1..]);
        Some(Write {
            key: data[0],
            value: u64::from_le_bytes(value),
        })
    }
}

/// FNV-1a, 64 bit: small, deterministic, good enough to tell entries apart.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Fingerprint of one entry: its term, kind and data.
pub fn entry_hash(entry: &Entry) -> u64 {
    let kind = match entry.kind {
        EntryKind::Normal => 1u64,
        EntryKind::ConfChange => 2,
    };
    fnv1a(&entry.data) ^ entry.term.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ kind.rotate_left(61)
}

/// The registers and their apply cursor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kv {
    /// Last applied index.
    pub applied: LogIndex,
    /// Running hash of everything applied (invariant 2).
    pub chain: u64,
    /// Register contents.
    pub keys: BTreeMap<u8, Vec<u64>>,
}

impl Kv {
    /// Applies the next entry; returns the write it carried, if any.
    pub fn apply(&mut self, entry: &Entry) -> Option<Write> {
        assert_eq!(
            entry.index,
            self.applied.next(),
            "state machine applies in order"
        );
        self.applied = entry.index;
        self.chain = chain_step(self.chain, entry);
        let write = if entry.kind == EntryKind::Normal {
            Write::decode(&entry.data)
        } else {
            None
        };
        if let Some(w) = write {
            self.keys.entry(w.key).or_default().push(w.value);
        }
        write
    }

    /// Snapshot bytes.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::new();
        out.extend_from_slice(&self.applied.0.to_le_bytes());
        out.extend_from_slice(&self.chain.to_le_bytes());
        out.extend_from_slice(&(self.keys.len() as u32).to_le_bytes());
        for (key, values) in &self.keys {
            out.push(*key);
            out.extend_from_slice(&(values.len() as u32).to_le_bytes());
            for v in values {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        Bytes::from(out)
    }

    /// Parses snapshot bytes; `None` if they are not a complete encoding
    /// (the simulator treats that as a violation: chunks were reassembled
    /// wrongly).
    pub fn decode(data: &[u8]) -> Option<Kv> {
        let mut r = Reader { data, pos: 0 };
        let applied = LogIndex(r.u64()?);
        let chain = r.u64()?;
        let n = r.u32()?;
        let mut keys = BTreeMap::new();
        for _ in 0..n {
            let key = r.u8()?;
            let len = r.u32()?;
            let mut values = Vec::with_capacity(len as usize);
            for _ in 0..len {
                values.push(r.u64()?);
            }
            keys.insert(key, values);
        }
        if r.pos != data.len() {
            return None;
        }
        Some(Kv {
            applied,
            chain,
            keys,
        })
    }
}

/// The chain hash after applying `entry` on top of `chain`.
pub fn chain_step(chain: u64, entry: &Entry) -> u64 {
    let mixed = chain.rotate_left(17) ^ entry_hash(entry) ^ entry.index.0;
    mixed.wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_raft::Term;

    #[test]
    fn snapshot_round_trips_and_chain_depends_on_term() {
        let mut kv = Kv::default();
        let e = |i: u64, t: u64, w: Write| Entry {
            term: Term(t),
            index: LogIndex(i),
            kind: EntryKind::Normal,
            data: w.encode(),
        };
        kv.apply(&e(1, 1, Write { key: 0, value: 7 }));
        kv.apply(&e(2, 1, Write { key: 1, value: 8 }));
        let back = Kv::decode(&kv.encode()).unwrap();
        assert_eq!(back, kv);
        assert!(Kv::decode(&kv.encode()[..5]).is_none());
        let mut same = Kv::default();
        same.apply(&e(1, 1, Write { key: 0, value: 7 }));
        let mut other = Kv::default();
        other.apply(&e(1, 2, Write { key: 0, value: 7 }));
        assert_eq!(same.keys, other.keys);
        assert_ne!(same.chain, other.chain, "same data, different term");
    }
}
