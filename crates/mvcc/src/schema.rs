//! The on-disk schema: redb tables and the byte layout of stored records.
//!
//! ```text
//! meta        &str           -> i64      revision, compact_revision, applied_index, schema
//! chunks      (main, sub)    -> chunk    every retained version, tombstones included,
//!                                        many Records to a value (`chunks.rs`)
//! leases      id             -> (granted_ttl, remaining_ttl)
//! lease_keys  (id, key)      -> ()       keys attached to each lease
//! ```
//!
//! etcd's layout ("bbolt keyed by revision"): versions are stored by
//! revision only, so the writes of a batch append to the last leaf pages of
//! the table instead of dirtying one leaf per key in a key-ordered table
//! (what schema 1 did, at ~15 KiB written per put). Schema 3 stores an
//! apply batch's versions as one value (schema 2 stored one per version in
//! `revs`, and paid a B-tree insert for each). Which revisions a key has is
//! kept in memory, in the key index (`index.rs`), rebuilt from the versions
//! at open.
//!
//! `lease_keys` stays a table: only leased writes touch it (the hot path of
//! unleased puts never does), it keeps lease reads in one redb snapshot with
//! `leases`, and it rolls back with an aborted batch for free. It is
//! derivable from `revs`, like the key index.
//!
//! Invariants (checked by `StoreReader::verify`, relied on by every reader):
//! 1. Every record is stored under its revision in a chunk (`chunks.rs`
//!    invariants); its content decodes.
//! 2. `lease_keys` holds `(l, k)` iff the newest version of `k` is live with
//!    lease `l != 0`, and every such `l` is in `leases`.
//! 3. After compaction at `C`, no version with `main <= C` is a tombstone,
//!    and for each key at most one version with `main <= C` remains (its
//!    newest).
//! 4. `meta.revision` >= every `main` stored; `meta.compact_revision` <=
//!    `meta.revision`.
//!
//! `Record::decode` is the gateway from disk: it validates lengths and flags
//! and reports [`MvccError::Corrupt`] instead of panicking.

use redb::TableDefinition;

use crate::error::MvccError;
use crate::index::{Newest, Rev};
use crate::types::KeyValue;

/// Store-wide scalars.
pub(crate) const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
/// Leases: id -> (granted TTL, last checkpointed remaining TTL).
pub(crate) const LEASES: TableDefinition<i64, (i64, i64)> = TableDefinition::new("leases");
/// Lease attachments: (lease id, key).
pub(crate) const LEASE_KEYS: TableDefinition<(i64, &[u8]), ()> = TableDefinition::new("lease_keys");

/// Every table, for clearing at restore.
pub(crate) const ALL_TABLE_NAMES: [&str; 4] = ["meta", "chunks", "leases", "lease_keys"];

/// `meta` key: the store revision.
pub(crate) const META_REVISION: &str = "revision";
/// `meta` key: the compacted revision, -1 if never compacted (etcd's value).
pub(crate) const META_COMPACT_REVISION: &str = "compact_revision";
/// `meta` key: the Raft index of the last applied command.
pub(crate) const META_APPLIED_INDEX: &str = "applied_index";
/// `meta` key: the schema version of this file.
pub(crate) const META_SCHEMA: &str = "schema";
/// The schema this build writes and reads. Schema-1 (key-ordered `current`
/// and `history` tables) and schema-2 files (one `revs` value per version)
/// are upgraded at open (`migrate.rs`).
pub(crate) const SCHEMA_VERSION: i64 = 3;

/// Compacted revision of a store that was never compacted. etcd starts its
/// `compactMainRev` at -1 and reports it as such in HashKV.
pub(crate) const NEVER_COMPACTED: i64 = -1;

/// A `revs` key.
pub(crate) type RevKey = (i64, u32);

/// Layout version byte at the start of every record.
const RECORD_FORMAT_V2: u8 = 2;
/// Layout version of schema 1's records; HashKV still hashes that layout so
/// that hashes stay comparable across the schema change.
const RECORD_FORMAT_V1: u8 = 1;
/// Flag bit: the record is a tombstone (the key was deleted at `mod`).
const FLAG_TOMBSTONE: u8 = 1;
/// Bytes before the key: format, flags, create, version, lease, key length.
pub(crate) const RECORD_HEADER_LEN: usize = 1 + 1 + 8 + 8 + 8 + 4;

/// One stored version of a key, borrowing key and value from the page it
/// was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    /// Deleted at `mod_main`.
    pub tombstone: bool,
    /// Revision of this version (where it is stored, not in its bytes).
    pub mod_main: i64,
    /// Position within its revision.
    pub mod_sub: u32,
    /// Revision of the key's creation (0 for a tombstone).
    pub create: i64,
    /// Version (0 for a tombstone).
    pub version: i64,
    /// Lease id (0 for none or a tombstone).
    pub lease: i64,
    /// The key.
    pub key: &'a [u8],
    /// Value (empty for a tombstone).
    pub value: &'a [u8],
}

impl<'a> Record<'a> {
    /// Its revision and what it records, as the key index keeps them.
    pub fn index_entry(&self) -> (Rev, Newest) {
        (
            Rev {
                main: self.mod_main,
                sub: self.mod_sub,
                tombstone: self.tombstone,
            },
            Newest {
                create: self.create,
                version: self.version,
                lease: self.lease,
            },
        )
    }

    /// Writes the encoding to `out` (cleared first). The revision is not
    /// part of it: the chunk's directory holds it.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(RECORD_HEADER_LEN + self.key.len() + self.value.len());
        out.push(RECORD_FORMAT_V2);
        out.push(if self.tombstone { FLAG_TOMBSTONE } else { 0 });
        out.extend_from_slice(&self.create.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.lease.to_le_bytes());
        out.extend_from_slice(&(self.key.len() as u32).to_le_bytes());
        out.extend_from_slice(self.key);
        out.extend_from_slice(self.value);
    }

    /// Decodes the record stored at revision `(main, sub)`. Gateway from
    /// disk: never panics.
    pub fn decode(main: i64, sub: u32, bytes: &'a [u8]) -> Result<Record<'a>, MvccError> {
        if bytes.len() < RECORD_HEADER_LEN {
            return Err(MvccError::Corrupt(format!(
                "record {main}.{sub} of {} bytes",
                bytes.len()
            )));
        }
        let (header, rest) = bytes.split_at(RECORD_HEADER_LEN);
        if header[0] != RECORD_FORMAT_V2 {
            return Err(MvccError::Corrupt(format!(
                "record {main}.{sub} format {}",
                header[0]
            )));
        }
        if header[1] & !FLAG_TOMBSTONE != 0 {
            return Err(MvccError::Corrupt(format!(
                "record {main}.{sub} flags {:#x}",
                header[1]
            )));
        }
        let i64_at =
            |at: usize| i64::from_le_bytes(header[at..at + 8].try_into().expect("8-byte slice"));
        let key_len = u32::from_le_bytes(header[26..30].try_into().expect("4-byte slice")) as usize;
        if key_len > rest.len() {
            return Err(MvccError::Corrupt(format!(
                "record {main}.{sub} key of {key_len} bytes"
            )));
        }
        let (key, value) = rest.split_at(key_len);
        let record = Record {
            tombstone: header[1] & FLAG_TOMBSTONE != 0,
            mod_main: main,
            mod_sub: sub,
            create: i64_at(2),
            version: i64_at(10),
            lease: i64_at(18),
            key,
            value,
        };
        if record.tombstone && (record.create != 0 || record.version != 0 || !value.is_empty()) {
            return Err(MvccError::Corrupt(format!(
                "tombstone {main}.{sub} with content"
            )));
        }
        Ok(record)
    }

    /// The etcd key-value of this (non-tombstone) version.
    pub fn to_kv(self, with_value: bool) -> KeyValue {
        KeyValue {
            key: self.key.to_vec(),
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

    /// Appends this version to a HashKV crc32c exactly as schema 1 did
    /// (revision, key length, key, then the schema-1 record bytes), so that
    /// members on either side of the schema change compare equal.
    pub fn hash_into(&self, crc: u32) -> u32 {
        let mut header = [0u8; 2 + 8 + 4 + 8 + 8 + 8];
        header[0] = RECORD_FORMAT_V1;
        header[1] = if self.tombstone { FLAG_TOMBSTONE } else { 0 };
        header[2..10].copy_from_slice(&self.mod_main.to_le_bytes());
        header[10..14].copy_from_slice(&self.mod_sub.to_le_bytes());
        header[14..22].copy_from_slice(&self.create.to_le_bytes());
        header[22..30].copy_from_slice(&self.version.to_le_bytes());
        header[30..38].copy_from_slice(&self.lease.to_le_bytes());
        let mut crc = crc32c::crc32c_append(crc, &self.mod_main.to_le_bytes());
        crc = crc32c::crc32c_append(crc, &self.mod_sub.to_le_bytes());
        crc = crc32c::crc32c_append(crc, &(self.key.len() as u64).to_le_bytes());
        crc = crc32c::crc32c_append(crc, self.key);
        crc = crc32c::crc32c_append(crc, &header);
        crc32c::crc32c_append(crc, self.value)
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
            crate::chunks::CHUNKS.name(),
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
            key: b"k",
            value: b"v",
        };
        let mut buf = Vec::new();
        r.encode_into(&mut buf);
        assert_eq!(Record::decode(7, 2, &buf).unwrap(), r);
        for len in 0..RECORD_HEADER_LEN + 1 {
            assert!(Record::decode(7, 2, &buf[..len]).is_err());
        }
        let mut bad = buf.clone();
        bad[1] = 0x80;
        assert!(Record::decode(7, 2, &bad).is_err());
        let mut bad = buf.clone();
        bad[1] = FLAG_TOMBSTONE;
        assert!(
            Record::decode(7, 2, &bad).is_err(),
            "a tombstone carries no content"
        );
        let mut bad = buf.clone();
        bad[26] = 9;
        assert!(
            Record::decode(7, 2, &bad).is_err(),
            "key longer than record"
        );
    }

    #[test]
    fn hash_matches_schema_1_bytes() {
        // Schema 1 hashed main, sub, key length, key, then its record:
        // format 1, flags, main, sub, create, version, lease, value.
        let r = Record {
            tombstone: false,
            mod_main: 7,
            mod_sub: 2,
            create: 3,
            version: 4,
            lease: -5,
            key: b"key",
            value: b"value",
        };
        let mut v1 = vec![1u8, 0];
        for x in [7i64.to_le_bytes().as_slice(), &2u32.to_le_bytes()] {
            v1.extend_from_slice(x);
        }
        for x in [3i64, 4, -5] {
            v1.extend_from_slice(&x.to_le_bytes());
        }
        v1.extend_from_slice(b"value");
        let mut want = crc32c::crc32c_append(9, &7i64.to_le_bytes());
        want = crc32c::crc32c_append(want, &2u32.to_le_bytes());
        want = crc32c::crc32c_append(want, &3u64.to_le_bytes());
        want = crc32c::crc32c_append(want, b"key");
        want = crc32c::crc32c_append(want, &v1);
        assert_eq!(r.hash_into(9), want);
    }
}
