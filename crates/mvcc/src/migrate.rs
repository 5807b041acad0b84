//! Upgrading an older file in place at open.
//!
//! Schema 1 kept every version twice in key order (`current` for live keys,
//! `history` for all) plus a `revlog` in revision order. Schema 2 kept one
//! `revs` value per version, keyed by revision. Schema 3 keeps the same
//! versions many to a value in `chunks` (`chunks.rs`). An upgrade from 1
//! copies `history` into a schema-2 `revs` and drops the old tables; an
//! upgrade from 2 copies `revs` into chunks and drops it; then `meta.schema`
//! is set. The caller runs the steps in one durable transaction, so a crash
//! during an upgrade leaves the old file as it was. `meta`, `leases` and
//! `lease_keys` are the same in all three.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::chunks::{Appender, CHUNKS};
use crate::error::MvccError;
use crate::schema::{Record, META, META_SCHEMA, SCHEMA_VERSION};

/// Schema 2's version table: (main, sub) -> record.
const REVS_V2: TableDefinition<(i64, u32), &[u8]> = TableDefinition::new("revs");

/// Schema 1's version table: (key, main, sub) -> record.
const HISTORY_V1: TableDefinition<(&[u8], i64, u32), &[u8]> = TableDefinition::new("history");
/// Schema 1's tables that schema 2 no longer has.
const DROPPED_V1: [&str; 3] = ["current", "history", "revlog"];
/// Schema 1 record: format 1, flags, main, sub, create, version, lease, value.
const RECORD_V1_HEADER_LEN: usize = 1 + 1 + 8 + 4 + 8 + 8 + 8;

/// Rewrites a store of schema `from` (1 or 2) as the current schema inside
/// `txn`, one step at a time (the caller commits).
pub(crate) fn upgrade(txn: &WriteTransaction, from: i64) -> Result<(), MvccError> {
    if from == 1 {
        from_v1(txn)?;
    }
    from_v2(txn)
}

/// Rewrites a schema-1 store as schema 2 inside `txn`.
fn from_v1(txn: &WriteTransaction) -> Result<(), MvccError> {
    {
        let history = txn.open_table(HISTORY_V1)?;
        let mut revs = txn.open_table(REVS_V2)?;
        let mut buf = Vec::new();
        for entry in history.iter()? {
            let (k, v) = entry?;
            let (key, main, sub) = k.value();
            let record = decode_v1(key, main, sub, v.value())?;
            record.encode_into(&mut buf);
            revs.insert((main, sub), buf.as_slice())?;
        }
    }
    for name in DROPPED_V1 {
        txn.delete_table(TableDefinition::<&[u8], &[u8]>::new(name))?;
    }
    Ok(())
}

/// Rewrites a schema-2 store as schema 3 inside `txn` (the caller commits).
/// Versions keep their bytes; they are grouped into chunks of the usual
/// limits in revision order.
fn from_v2(txn: &WriteTransaction) -> Result<(), MvccError> {
    {
        let revs = txn.open_table(REVS_V2)?;
        let mut stored = txn.open_table(CHUNKS)?;
        let mut appender = Appender::default();
        for entry in revs.iter()? {
            let (at, bytes) = entry?;
            let (main, sub) = at.value();
            // Checked here so that a bad version fails the upgrade, not a
            // later read.
            Record::decode(main, sub, bytes.value())?;
            appender.push(&mut stored, (main, sub), bytes.value().to_vec())?;
        }
        appender.finish(&mut stored)?;
    }
    txn.delete_table(REVS_V2)?;
    txn.open_table(META)?.insert(META_SCHEMA, SCHEMA_VERSION)?;
    Ok(())
}

/// Decodes a schema-1 record stored under `(key, main, sub)`. Gateway from
/// disk: never panics.
fn decode_v1<'a>(
    key: &'a [u8],
    main: i64,
    sub: u32,
    bytes: &'a [u8],
) -> Result<Record<'a>, MvccError> {
    let corrupt = |what: &str| MvccError::Corrupt(format!("schema-1 record {main}.{sub}: {what}"));
    if bytes.len() < RECORD_V1_HEADER_LEN || bytes[0] != 1 || bytes[1] > 1 {
        return Err(corrupt("bad header"));
    }
    let i64_at = |at: usize| i64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let stored_sub = u32::from_le_bytes(bytes[10..14].try_into().expect("4 bytes"));
    if i64_at(2) != main || stored_sub != sub {
        return Err(corrupt("misplaced"));
    }
    Ok(Record {
        tombstone: bytes[1] == 1,
        mod_main: main,
        mod_sub: sub,
        create: i64_at(14),
        version: i64_at(22),
        lease: i64_at(30),
        key,
        value: &bytes[RECORD_V1_HEADER_LEN..],
    })
}
