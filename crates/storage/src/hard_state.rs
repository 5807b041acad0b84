//! The hard-state file: Raft's term, vote and commit, replaced atomically.
//!
//! Layout of `hardstate` (40 bytes, integers little-endian):
//!
//! ```text
//!  magic "CNCDHST\0" | version:u32 | crc:u32 | term:u64 | vote:u64 | commit:u64
//!  crc = crc32c(term | vote | commit); vote 0 = no vote (NodeId 0 is "nobody")
//! ```
//!
//! Invariants:
//! 1. The file is only ever replaced through [`crate::fsutil::atomic_write`],
//!    so it is always either the previous or the next version, complete.
//! 2. A file that is not exactly this layout with a matching checksum is
//!    [`StorageError::Corrupt`], never read as a default: forgetting a vote
//!    could let this member vote twice in one term.
//! 3. A missing file means a member that never persisted a hard state, and
//!    reads as `HardState::default()`.

use crate::error::{Result, StorageError};
use crate::fsutil::{self, Reader};
use concord_raft::{HardState, LogIndex, NodeId, Term};
use std::io;
use std::path::Path;

/// File name of the hard state in the storage directory.
pub(crate) const HARD_STATE_FILE: &str = "hardstate";

const MAGIC: &[u8; 8] = b"CNCDHST\0";
const VERSION: u32 = 1;
const FILE_BYTES: usize = 8 + 4 + 4 + 3 * 8;

/// Encodes `hs` into the file layout.
fn encode(hs: &HardState) -> [u8; FILE_BYTES] {
    let mut out = [0u8; FILE_BYTES];
    out[..8].copy_from_slice(MAGIC);
    out[8..12].copy_from_slice(&VERSION.to_le_bytes());
    out[16..24].copy_from_slice(&hs.term.0.to_le_bytes());
    out[24..32].copy_from_slice(&hs.vote.map_or(0, |n| n.0).to_le_bytes());
    out[32..40].copy_from_slice(&hs.commit.0.to_le_bytes());
    let crc = crc32c::crc32c(&out[16..]);
    out[12..16].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes the file layout; the error is `(offset, reason)`.
fn decode(bytes: &[u8]) -> Result<HardState, (u64, &'static str)> {
    if bytes.len() != FILE_BYTES {
        return Err((0, "hard-state file has the wrong size"));
    }
    let mut r = Reader::new(bytes);
    let short = (0, "hard-state file has the wrong size");
    if r.bytes(8).ok_or(short)? != MAGIC {
        return Err((0, "bad hard-state magic"));
    }
    if r.u32().ok_or(short)? != VERSION {
        return Err((8, "unsupported hard-state version"));
    }
    let crc = r.u32().ok_or(short)?;
    let body = &bytes[16..];
    if crc32c::crc32c(body) != crc {
        return Err((12, "hard-state checksum mismatch"));
    }
    let term = Term(r.u64().ok_or(short)?);
    let vote = r.u64().ok_or(short)?;
    let commit = LogIndex(r.u64().ok_or(short)?);
    Ok(HardState {
        term,
        vote: (vote != 0).then_some(NodeId(vote)),
        commit,
    })
}

/// Reads the hard state of `dir`, or the default if it was never written.
pub(crate) fn load(dir: &Path) -> Result<HardState> {
    let path = dir.join(HARD_STATE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HardState::default()),
        Err(e) => return Err(StorageError::io("read", path, e)),
    };
    decode(&bytes).map_err(|(offset, reason)| StorageError::corrupt(path, offset, reason))
}

/// Durably replaces the hard state of `dir` (two fsyncs and a rename).
pub(crate) fn store(dir: &Path, hs: &HardState) -> Result<()> {
    assert_ne!(
        hs.vote,
        Some(NodeId(0)),
        "vote for node 0 reached the encoder"
    );
    fsutil::atomic_write(dir, HARD_STATE_FILE, &[&encode(hs)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), HardState::default());
        let hs = HardState {
            term: Term(5),
            vote: Some(NodeId(3)),
            commit: LogIndex(17),
        };
        store(dir.path(), &hs).unwrap();
        assert_eq!(load(dir.path()).unwrap(), hs);
        let hs2 = HardState { vote: None, ..hs };
        store(dir.path(), &hs2).unwrap();
        assert_eq!(load(dir.path()).unwrap(), hs2);
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let hs = HardState {
            term: Term(5),
            vote: Some(NodeId(3)),
            commit: LogIndex(17),
        };
        let good = encode(&hs);
        for byte in 0..FILE_BYTES {
            for bit in 0..8 {
                let mut bad = good;
                bad[byte] ^= 1 << bit;
                assert!(
                    decode(&bad).is_err(),
                    "flip of bit {bit} in byte {byte} undetected"
                );
            }
        }
        assert!(decode(&good[..FILE_BYTES - 1]).is_err());
        assert!(decode(&[]).is_err());
    }
}
