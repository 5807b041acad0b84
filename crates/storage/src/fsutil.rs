//! Small file-system helpers: durable atomic replace and directory fsync.
//!
//! Invariants:
//! 1. [`atomic_write`] either leaves the old file in place or the complete new
//!    one, never a mix, and the new one is durable when it returns: data is
//!    fsynced before the rename, and the directory after it (a rename is a
//!    directory change; without the directory fsync it may be lost in a
//!    crash even though the file's data was synced).
//! 2. Temporary files end in [`TMP_SUFFIX`]; anything with that suffix in the
//!    storage directory is debris of an interrupted write and may be removed
//!    when the directory is opened.

use crate::error::{Result, StorageError};
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

/// Suffix of files being written before their atomic rename.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// Fsyncs a directory so that creations, renames and removals in it are
/// durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(|e| StorageError::io("open directory", dir, e))?;
    d.sync_all()
        .map_err(|e| StorageError::io("fsync directory", dir, e))
}

/// Replaces `dir/name` with the concatenation of `parts`, atomically and
/// durably (see invariant 1).
pub(crate) fn atomic_write(dir: &Path, name: &str, parts: &[&[u8]]) -> Result<()> {
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let target = dir.join(name);
    let written = (|| {
        let mut f = File::create(&tmp).map_err(|e| StorageError::io("create", &tmp, e))?;
        for part in parts {
            f.write_all(part)
                .map_err(|e| StorageError::io("write", &tmp, e))?;
        }
        // sync_all rather than sync_data: the file is new, so its size and
        // allocation are exactly the metadata that must be on disk.
        f.sync_all()
            .map_err(|e| StorageError::io("fsync", &tmp, e))?;
        fs::rename(&tmp, &target).map_err(|e| StorageError::io("rename", &tmp, e))
    })();
    if let Err(e) = written {
        // Best effort: a leftover temp file is harmless (removed at next open).
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

/// Reads a whole file, naming it in the error.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| StorageError::io("read", path, e))
}

/// Little-endian reader over bytes from disk: every read is bounds-checked
/// and reports where it stopped, so decoders never index out of range.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes not consumed yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.bytes(1).map(|b| b[0])
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        let b = self.bytes(4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        Some(u32::from_le_bytes(a))
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(u64::from_le_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_never_reads_past_the_end() {
        let mut r = Reader::new(&[1, 0, 0, 0, 2]);
        assert_eq!(r.u32(), Some(1));
        assert_eq!(r.u32(), None);
        assert_eq!(r.pos(), 4, "a failed read consumes nothing");
        assert_eq!(r.u8(), Some(2));
        assert_eq!(r.u8(), None);
        assert_eq!(r.bytes(usize::MAX), None);
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        atomic_write(dir.path(), "f", &[b"old"]).unwrap();
        atomic_write(dir.path(), "f", &[b"ne", b"w!"]).unwrap();
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"new!");
        assert!(!dir.path().join("f.tmp").exists());
    }
}
