//! `--op fsync-probe`: the disk's floor for a durable write.
//!
//! Writes `--val-size` bytes after the previous ones in a file and calls
//! `fdatasync`, over and over, like the `fio --rw=write --ioengine=sync
//! --fdatasync=1` check etcd's hardware guide recommends. Every acknowledged
//! write of a Raft store waits for at least one such sync (the leader's and
//! a follower's overlap), so its p50 is the physical floor for a
//! single-client put.
//!
//! The file is preallocated first, as the write-ahead logs of both Concord
//! and etcd are: syncing writes into reserved space is cheaper than syncing
//! appends that grow the file (less metadata to commit), so this is the
//! lower, and so the stricter, floor of the two.

use crate::error::BenchError;
use crate::options::BenchConfig;
use crate::report::{ClientTally, Report};
use crate::schedule::Schedule;
use rustix::fs::FallocateFlags;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The probe file starts over once it reaches this size (a WAL segment's
/// order of magnitude), so a long probe cannot fill the disk.
pub const PROBE_FILE_MAX_BYTES: u64 = 64 * 1024 * 1024;

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BenchError + 'a {
    move |source| BenchError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// A preallocated file that takes durable appends, starting over when
/// full; removed when dropped, however the probe ends.
pub struct ProbeFile {
    path: PathBuf,
    file: File,
    written: u64,
}

impl ProbeFile {
    /// Creates the file at `path` with its space reserved.
    pub fn create(path: PathBuf) -> Result<ProbeFile, BenchError> {
        let file = reserve(&path)?;
        Ok(ProbeFile {
            path,
            file,
            written: 0,
        })
    }

    /// Writes `block` after the previous ones and fdatasyncs.
    pub fn append_durably(&mut self, block: &[u8]) -> Result<(), BenchError> {
        if self.written + block.len() as u64 > PROBE_FILE_MAX_BYTES {
            self.file = reserve(&self.path)?;
            self.written = 0;
        }
        self.file
            .write_all_at(block, self.written)
            .map_err(io("writing", &self.path))?;
        self.file.sync_data().map_err(io("fdatasync", &self.path))?;
        self.written += block.len() as u64;
        Ok(())
    }
}

impl Drop for ProbeFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Creates (or empties) the file at `path` with its space reserved.
fn reserve(path: &Path) -> Result<File, BenchError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .map_err(io("creating", path))?;
    rustix::fs::fallocate(&file, FallocateFlags::empty(), 0, PROBE_FILE_MAX_BYTES)
        .map_err(std::io::Error::from)
        .map_err(io("preallocating", path))?;
    file.sync_all().map_err(io("fsync", path))?;
    Ok(file)
}

/// Runs the probe (one client, closed loop) and reports write+sync latency.
pub fn run(config: &BenchConfig) -> Result<Report, BenchError> {
    let mut file = ProbeFile::create(
        config
            .probe_dir
            .join(format!(".concord-fsync-probe.{}", std::process::id())),
    )?;
    let block = crate::keys::value(config.val_size);
    let mut tally = ClientTally::default();
    let start = Instant::now();
    let schedule = Schedule::new(start, None, config.total, config.duration);
    while let Some(ticket) = schedule.take(Instant::now()) {
        file.append_durably(&block)?;
        tally.latencies.record(ticket.due.elapsed());
    }
    let elapsed = start.elapsed();
    Ok(Report::new(config, &tally, 0, elapsed))
}
