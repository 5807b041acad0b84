//! The on-disk schema: redb tables and the byte layout of stored records.
//!
//! ```text
//! meta        &str                  -> i64      revision, compact_revision, applied_index, schema
//! current     key                   -> Record   latest version of every live key
//! history     (key, main, sub)      -> Record   every retained version, tombstones included
//! revlog      (main, sub)           -> key      the same versions in revision order
//! leases      id                    -> (granted_ttl, remaining_ttl)
//! lease_keys  (id, key)             -> ()       keys attached to each lease
//! ```
//!
//! Invariants (checked by tests, relied on by every reader):
//! 1. `history` and `revlog` hold the same set of `(key, main, sub)`.
//! 2. `current[k]` exists iff the newest `history` entry of `k` is not a
//!    tombstone, and then it is byte-identical to that entry.
//! 3. `lease_keys` holds `(l, k)` iff `current[k].lease == l != 0`, and every
//!    such `l` is in `leases`.
//! 4. After compaction at `C`, no entry with `main <= C` is a tombstone, and
//!    for each key at most one entry with `main <= C` remains (its newest).
//! 5. `meta.revision` >= every `main` stored; `meta.compact_revision` <
//!    `meta.revision` or both describe an empty history.
//!
//! `Record::decode` is the gateway from disk: it validates lengths and flags
//! and reports [`MvccError::Corrupt`] instead of panicking.

use redb::TableDefinition;

use crate::error::MvccError;
use crate::types::KeyValue;

/// Store-wide scalars.
pub(crate) const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
/// Latest version of each live key: the fast path of current reads.
pub(crate) const CURRENT: TableDefinition<&[u8], &[u8]> = TableDefinition::new("current");
/// Every retained version, ordered by key then revision: historical reads.
pub(crate) const HISTORY: TableDefinition<(&[u8], i64, u32), &[u8]> =
    TableDefinition::new("history");
/// Every retained version, ordered by revision: watch catch-up and compaction.
pub(crate) const REVLOG: TableDefinition<(i64, u32), &[u8]> = TableDefinition::new("revlog");
/// Leases: id -> (granted TTL, last checkpointed remaining TTL).
pub(crate) const LEASES: TableDefinition<i64, (i64, i64)> = TableDefinition::new("leases");
/// Lease attachments: (lease id, key).
pub(crate) const LEASE_KEYS: TableDefinition<(i64, &[u8]), ()> = TableDefinition::new("lease_keys");

/// Every table, for creation at open and clearing at restore.
pub(crate) const ALL_TABLE_NAMES: [&str; 6] = [
    "meta",
    "current",
    "history",
    "revlog",
    "leases",
    "lease_keys",
];

/// `meta` key: the store revision.
pub(crate) const META_REVISION: &str = "revision";
/// `meta` key: the compacted revision, -1 if never compacted (etcd's value).
pub(crate) const META_COMPACT_REVISION: &str = "compact_revision";
/// `meta` key: the Raft index of the last applied command.
pub(crate) const META_APPLIED_INDEX: &str = "applied_index";
/// `meta` key: the schema version of this file.
pub(crate) const META_SCHEMA: &str = "schema";
/// The schema this build writes and reads.
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// Compacted revision of a store that was never compacted. etcd starts its
/// `compactMainRev` at -1 and reports it as such in HashKV.
pub(crate) const NEVER_COMPACTED: i64 = -1;

/// A `history` key.
pub(crate) type HistKey<'a> = (&'a [u8], i64, u32);

/// Layout version byte at the start of every record.
const RECORD_FORMAT_V1: u8 = 1;
/// Flag bit: the record is a tombstone (the key was deleted at `mod`).
const FLAG_TOMBSTONE: u8 = 1;
/// Bytes before the value: format, flags, mod main, mod sub, create, version, lease.
pub(crate) const RECORD_HEADER_LEN: usize = 1 + 1 + 8 + 4 + 8 + 8 + 8;

/// One stored version of a key, borrowing its value from the page it was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    /// Deleted at `mod_main`.
    pub tombstone: bool,
    /// Revision of this version.
    pub mod_main: i64,
    /// Position within its revision.
    pub mod_sub: u32,
    /// Revision of the key's creation (0 for a tombstone).
    pub create: i64,
    /// Version (0 for a tombstone).
    pub version: i64,
    /// Lease id (0 for none or a tombstone).
    pub lease: i64,
    /// Value (empty for a tombstone).
    pub value: &'a [u8],
}

impl<'a> Record<'a> {
    /// Appends the encoding to `out` (cleared first).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(RECORD_HEADER_LEN + self.value.len());
        out.push(RECORD_FORMAT_V1);
        out.push(if self.tombstone { FLAG_TOMBSTONE } else { 0 });
        out.extend_from_slice(&self.mod_main.to_le_bytes());
        out.extend_from_slice(&self.mod_sub.to_le_bytes());
        out.extend_from_slice(&self.create.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.lease.to_le_bytes());
        out.extend_from_slice(self.value);
    }

    /// Decodes a stored record. Gateway from disk: never panics.
    pub fn decode(bytes: &'a [u8]) -> Result<Record<'a>, MvccError> {
        if bytes.len() < RECORD_HEADER_LEN {
            return Err(MvccError::Corrupt(format!(
                "record of {} bytes",
                bytes.len()
            )));
        }
        let (header, value) = bytes.split_at(RECORD_HEADER_LEN);
        if header[0] != RECORD_FORMAT_V1 {
            return Err(MvccError::Corrupt(format!("record format {}", header[0])));
        }
        if header[1] & !FLAG_TOMBSTONE != 0 {
            return Err(MvccError::Corrupt(format!("record flags {:#x}", header[1])));
        }
        let i64_at =
            |at: usize| i64::from_le_bytes(header[at..at + 8].try_into().expect("8-byte slice"));
        let record = Record {
            tombstone: header[1] & FLAG_TOMBSTONE != 0,
            mod_main: i64_at(2),
            mod_sub: u32::from_le_bytes(header[10..14].try_into().expect("4-byte slice")),
            create: i64_at(14),
            version: i64_at(22),
            lease: i64_at(30),
            value,
        };
        if record.tombstone && (record.create != 0 || record.version != 0 || !value.is_empty()) {
            return Err(MvccError::Corrupt("tombstone with content".into()));
        }
        Ok(record)
    }

    /// The etcd key-value of this (non-tombstone) version.
    pub fn to_kv(self, key: &[u8], with_value: bool) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            create_revision: self.create,
            mod_revision: self.mod_main,
            version: self.version,
            value: if with_value {
                self.value.to_vec()
            } else {
                Vec::new()
            },
            lease: self.lease,
        }
    }
}

#[cfg(test)]
mod tests {
    use redb::TableHandle;

    use super::*;

    #[test]
    fn table_names_match_definitions() {
        let defined = [
            META.name(),
            CURRENT.name(),
            HISTORY.name(),
            REVLOG.name(),
            LEASES.name(),
            LEASE_KEYS.name(),
        ];
        assert_eq!(defined, ALL_TABLE_NAMES);
    }

    #[test]
    fn records_round_trip_and_garbage_is_an_error() {
        let r = Record {
            tombstone: false,
            mod_main: 7,
            mod_sub: 2,
            create: 3,
            version: 4,
            lease: -5,
            value: b"v",
        };
        let mut buf = Vec::new();
        r.encode_into(&mut buf);
        assert_eq!(Record::decode(&buf).unwrap(), r);
        for len in 0..RECORD_HEADER_LEN {
            assert!(Record::decode(&buf[..len]).is_err());
        }
        let mut bad = buf.clone();
        bad[1] = 0x80;
        assert!(Record::decode(&bad).is_err());
        let mut bad = buf.clone();
        bad[1] = FLAG_TOMBSTONE;
        assert!(
            Record::decode(&bad).is_err(),
            "a tombstone carries no content"
        );
    }
}
