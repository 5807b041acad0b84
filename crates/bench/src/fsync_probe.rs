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

/// Creates the probe file with its space reserved.
fn create(path: &Path) -> Result<File, BenchError> {
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

/// Removes the probe file however the probe ends.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs the probe (one client, closed loop) and reports write+sync latency.
pub fn run(config: &BenchConfig) -> Result<Report, BenchError> {
    let path = config
        .probe_dir
        .join(format!(".concord-fsync-probe.{}", std::process::id()));
    let _cleanup = Cleanup(path.clone());
    let mut file = create(&path)?;
    let block = crate::keys::value(config.val_size);
    let mut written = 0u64;
    let mut tally = ClientTally::default();
    let start = Instant::now();
    let schedule = Schedule::new(start, None, config.total, config.duration);
    while let Some(ticket) = schedule.take(Instant::now()) {
        if written + block.len() as u64 > PROBE_FILE_MAX_BYTES {
            file = create(&path)?;
            written = 0;
        }
        file.write_all_at(&block, written)
            .map_err(io("writing", &path))?;
        file.sync_data().map_err(io("fdatasync", &path))?;
        written += block.len() as u64;
        tally.latencies.record(ticket.due.elapsed());
    }
    let elapsed = start.elapsed();
    Ok(Report::new(config, &tally, 0, elapsed))
}
