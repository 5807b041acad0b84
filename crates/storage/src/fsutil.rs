//! Small file-system helpers: durable atomic replace, directory fsync, and
//! the preallocation of space (and the reading of files that have some).
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
//! 3. [`read_skipping_zero_tail`] returns exactly the file's content: the
//!    bytes it leaves unread are ones the file system reports as holes
//!    (unwritten space), which read as zeros by definition.

use crate::error::{Result, StorageError};
use rustix::fs::{FallocateFlags, SeekFrom};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
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
    atomic_write_reserving(dir, name, parts, 0)
}

/// [`atomic_write`], and then [`preallocate`]s the new file to
/// `reserve_bytes` before it is synced and renamed, so the reserved space is
/// part of the file from the moment it exists.
pub(crate) fn atomic_write_reserving(
    dir: &Path,
    name: &str,
    parts: &[&[u8]],
    reserve_bytes: u64,
) -> Result<()> {
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let target = dir.join(name);
    let written = (|| {
        let mut f = File::create(&tmp).map_err(|e| StorageError::io("create", &tmp, e))?;
        for part in parts {
            f.write_all(part)
                .map_err(|e| StorageError::io("write", &tmp, e))?;
        }
        preallocate(&f, reserve_bytes);
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

/// Reserves blocks for the first `len` bytes of `file`, growing it to `len`
/// bytes if it is shorter; the added bytes read as zeros. Returns whether
/// the file system did so.
///
/// Why: an `fdatasync` after writing into reserved blocks commits less
/// metadata than one after an append that grows the file (measured on this
/// project's ext4: p50 0.21 ms against 0.30 ms, BENCHMARKS.md), and every
/// acknowledged write waits for one. Best effort: where the file system
/// cannot (or the disk is too full to reserve), the file stays as it was and
/// writes allocate as they go, which is slower but equally correct. The
/// blocks it reserves are unwritten, and the first write into each still
/// costs a metadata update at the next sync; the WAL writes zeros ahead of
/// its records for that reason (`wal::ZERO_AHEAD_BYTES`).
pub(crate) fn preallocate(file: &File, len: u64) -> bool {
    len > 0 && rustix::fs::fallocate(file, FallocateFlags::empty(), 0, len).is_ok()
}

/// A file's content as [`read_skipping_zero_tail`] returns it: `bytes`
/// followed by `zeros_after` zero bytes.
#[derive(Debug)]
pub(crate) struct FileBytes {
    pub(crate) bytes: Vec<u8>,
    pub(crate) zeros_after: u64,
}

/// Reads a file, except for a tail that the file system reports to be a
/// hole with no data after it (see invariant 3): the reserved space of a
/// [`preallocate`]d file is then neither read nor held in memory.
pub(crate) fn read_skipping_zero_tail(path: &Path) -> Result<FileBytes> {
    let file = File::open(path).map_err(|e| StorageError::io("open", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| StorageError::io("stat", path, e))?
        .len();
    let data_end = data_end(&file, len);
    let mut bytes = vec![0u8; data_end as usize];
    file.read_exact_at(&mut bytes, 0)
        .map_err(|e| StorageError::io("read", path, e))?;
    Ok(FileBytes {
        bytes,
        zeros_after: len - data_end,
    })
}

/// Where the last hole of a `len`-byte file begins, if no data follows it;
/// `len` when there is no such hole or the file system cannot tell.
fn data_end(file: &File, len: u64) -> u64 {
    let Ok(hole) = rustix::fs::seek(file, SeekFrom::Hole(0)) else {
        return len;
    };
    if hole >= len {
        return len;
    }
    match rustix::fs::seek(file, SeekFrom::Data(hole)) {
        // No data at or after the hole: the rest of the file is zeros.
        Err(rustix::io::Errno::NXIO) => hole,
        _ => len,
    }
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

    #[test]
    fn reading_a_preallocated_file_returns_its_content() {
        let dir = tempfile::tempdir().unwrap();
        atomic_write_reserving(dir.path(), "f", &[b"head"], 1 << 20).unwrap();
        let path = dir.path().join("f");
        let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(b"more", 4).unwrap();
        let whole = |read: FileBytes| {
            let mut v = read.bytes;
            v.resize(v.len() + read.zeros_after as usize, 0);
            v
        };
        let read = read_skipping_zero_tail(&path).unwrap();
        // ext4, xfs and tmpfs report reserved space as a hole: the tail is
        // neither read nor held in memory.
        assert!(read.bytes.len() < 64 << 10, "{}", read.bytes.len());
        assert_eq!(whole(read), fs::read(&path).unwrap());
        // Data after a stretch of reserved space is not skipped.
        file.write_all_at(b"far", 300_000).unwrap();
        let read = whole(read_skipping_zero_tail(&path).unwrap());
        assert_eq!(read, fs::read(&path).unwrap());
        assert_eq!(read.len(), 1 << 20);
        assert_eq!(&read[..8], b"headmore");
        assert_eq!(&read[300_000..300_003], b"far");
    }
}
