//! `Maintenance.Snapshot`: the whole state machine as a stream of chunks.
//!
//! The bytes are not etcd's bbolt file but the MVCC store's own snapshot
//! ([`concord_mvcc::StoreReader::snapshot_to`]: framed records ending in a
//! crc32c), wrapped the way etcd wraps its file so `etcdctl snapshot save`
//! accepts it (it checks `size % 512 == 32`):
//! ```text
//! [ store snapshot ][ zeros up to a multiple of 512 ][ sha256 of all before: 32 bytes ]
//! ```
//! `concord snapshot restore` (see [`crate::restore`]) checks both sums and
//! seeds a new cluster; `etcdctl snapshot status/restore` cannot read it. The member first
//! writes the snapshot to a temporary file (one consistent read
//! transaction, memory bounded by the chunk size), then streams the file
//! with etcd's `remaining_bytes` countdown; the first response's header
//! carries the snapshot's revision.

use super::{mvcc_status, Api};
use crate::sha256::Sha256;
use concord_etcd_proto::etcdserverpb as pb;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::Status;

/// Bytes per streamed chunk (etcd sends 32 KiB).
pub const SNAPSHOT_CHUNK_BYTES: usize = 64 * 1024;

/// Chunks queued ahead of a slow client.
const SNAPSHOT_CHUNKS_QUEUED: usize = 4;

/// The response stream of Maintenance.Snapshot.
pub type SnapshotStream =
    Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send + 'static>>;

/// etcd's snapshot files are bbolt pages (512-byte multiples) plus a
/// sha256; clients check the size for that shape.
pub const SNAPSHOT_ALIGN_BYTES: u64 = 512;

/// Length of the sha256 trailer.
pub const SNAPSHOT_TRAILER_BYTES: u64 = 32;

/// Writes through, hashing and counting.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the snapshot file format of this module to `out`.
pub fn write_snapshot_file(
    reader: &concord_mvcc::StoreReader,
    out: impl Write,
) -> Result<concord_mvcc::SnapshotMeta, concord_mvcc::MvccError> {
    let mut w = Hashing {
        inner: std::io::BufWriter::new(out),
        hasher: Sha256::default(),
        len: 0,
    };
    let meta = reader.snapshot_to(&mut w)?;
    let pad = (SNAPSHOT_ALIGN_BYTES - w.len % SNAPSHOT_ALIGN_BYTES) % SNAPSHOT_ALIGN_BYTES;
    w.write_all(&vec![0u8; pad as usize])?;
    let digest = w.hasher.clone().finish();
    w.inner.write_all(&digest)?;
    w.inner.flush()?;
    Ok(meta)
}

/// Removes the temporary file when streaming ends, however it ends.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Api {
    /// Writes a snapshot to a temporary file and streams it.
    pub async fn snapshot_stream(&self) -> Result<SnapshotStream, Status> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "concord-snapshot-{:x}-{nanos}.part",
            self.shared.member_id
        ));
        let temp = TempFile(path.clone());
        let reader = self.shared.reader.clone();
        let written = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::create(&path)?;
            let meta = write_snapshot_file(&reader, &file);
            let len = file.metadata()?.len();
            Ok::<_, std::io::Error>((meta, len))
        })
        .await
        .map_err(|_| Status::internal("concord: snapshot task failed"))?
        .map_err(|e| Status::internal(format!("concord: writing snapshot: {e}")))?;
        let (meta, total) = written;
        let meta = meta.map_err(|e| mvcc_status(&e))?;
        let header = self.header(meta.revision);
        let (tx, rx) = mpsc::channel(SNAPSHOT_CHUNKS_QUEUED);
        tokio::task::spawn_blocking(move || {
            let temp = temp;
            let mut file = match std::fs::File::open(&temp.0) {
                Ok(f) => f,
                Err(e) => {
                    let _ = tx.blocking_send(Err(Status::internal(format!(
                        "concord: reading snapshot: {e}"
                    ))));
                    return;
                }
            };
            let mut sent = 0u64;
            let mut first = true;
            loop {
                let mut blob = vec![0u8; SNAPSHOT_CHUNK_BYTES];
                let n = match file.read(&mut blob) {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Status::internal(format!(
                            "concord: reading snapshot: {e}"
                        ))));
                        return;
                    }
                };
                if n == 0 && !first {
                    return;
                }
                blob.truncate(n);
                sent += n as u64;
                let response = pb::SnapshotResponse {
                    header: first.then_some(header),
                    remaining_bytes: total.saturating_sub(sent),
                    blob,
                };
                first = false;
                if tx.blocking_send(Ok(response)).is_err() || sent >= total {
                    return;
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }
}
