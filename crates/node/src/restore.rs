//! `concord snapshot restore`: a data directory for one member of a NEW
//! cluster, seeded from a snapshot taken with `Maintenance.Snapshot`
//! (`etcdctl snapshot save`), as `etcdctl snapshot restore` does for etcd.
//!
//! Every member of the new cluster is restored from the same file with the
//! same `--initial-cluster` and `--initial-cluster-token`, so every member
//! holds the same Raft snapshot: at the source's applied index, term 1,
//! with the new members as voters. The keys, revisions, compaction point
//! and leases of the source are kept; the member table is the new one.
//! On start the member recovers from that snapshot like after any restart.
//!
//! Invariants:
//! 1. The snapshot file is verified (structure and crc32c) before anything
//!    is written outside the new data directory's store.
//! 2. An existing member directory is never overwritten.

use crate::config::NodeConfig;
use crate::members::{Member, Members};
use crate::node::{initial_members, load_or_create_identity, StartError};
use concord_mvcc::{CommitDurability, Store, StoreOptions};
use concord_raft::{ConfState, HardState, LogIndex, NodeId, Snapshot, SnapshotMeta, Term};
use concord_storage::{RaftStorage, StorageOptions};
use std::path::Path;

/// What a restore produced.
#[derive(Clone, Debug)]
pub struct Restored {
    /// This member's id.
    pub member_id: u64,
    /// The store revision restored.
    pub revision: i64,
    /// The Raft index the new cluster's log continues after.
    pub index: u64,
}

/// Checks the sha256 trailer of a snapshot file (see
/// [`crate::api::snapshot`]); a file without one (not of that shape) is
/// left to the store's own crc32c.
pub fn verify_trailer(file: &std::fs::File) -> Result<(), String> {
    use crate::api::snapshot::{SNAPSHOT_ALIGN_BYTES, SNAPSHOT_TRAILER_BYTES};
    use std::io::{Read, Seek, SeekFrom};
    let mut file = file;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len < SNAPSHOT_TRAILER_BYTES || len % SNAPSHOT_ALIGN_BYTES != SNAPSHOT_TRAILER_BYTES {
        return Ok(());
    }
    let mut hasher = crate::sha256::Sha256::default();
    let mut body = file.take(len - SNAPSHOT_TRAILER_BYTES);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = body.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let mut trailer = [0u8; 32];
    file.read_exact(&mut trailer).map_err(|e| e.to_string())?;
    file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    if hasher.finish() != trailer {
        return Err("sha256 checksum mismatch".into());
    }
    Ok(())
}

/// Creates `config.data_dir` for this member from `snapshot_file`.
pub fn restore(config: &NodeConfig, snapshot_file: &Path) -> Result<Restored, StartError> {
    config.validate().map_err(StartError::Config)?;
    let member_dir = config.data_dir.join("member");
    if member_dir.exists() {
        return Err(StartError::Config(format!(
            "{} already exists: restore needs a new data directory",
            member_dir.display()
        )));
    }
    let file = std::fs::File::open(snapshot_file).map_err(|e| {
        StartError::Config(format!(
            "cannot open snapshot {}: {e}",
            snapshot_file.display()
        ))
    })?;
    verify_trailer(&file)
        .map_err(|e| StartError::Config(format!("snapshot {}: {e}", snapshot_file.display())))?;
    std::fs::create_dir_all(&member_dir)?;
    let identity = load_or_create_identity(&member_dir, config)?;
    let options = StoreOptions {
        commit_durability: CommitDurability::Immediate,
        ..StoreOptions::default()
    };
    let mut store = Store::open(member_dir.join("db"), options)?;
    let meta = store.restore_from(std::io::BufReader::new(file))?;
    let index = LogIndex(meta.applied_index.max(1));

    let mut members = Members {
        applied_index: index.0,
        ..Members::default()
    };
    for (id, name, peer_urls) in initial_members(config) {
        members.members.insert(
            id,
            Member {
                id,
                name,
                peer_urls,
                client_urls: Vec::new(),
                is_learner: false,
            },
        );
    }
    members.save(&member_dir.join("members.json"))?;
    let voters = members.members.keys().map(|id| NodeId(*id));
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            index,
            term: Term(1),
            conf: ConfState::with_voters(voters),
        },
        data: crate::replica::encode_snapshot(&members, &store.reader())?,
    };
    let (mut storage, _) = RaftStorage::open(&member_dir.join("wal"), StorageOptions::default())?;
    storage.save_snapshot(&snapshot)?;
    storage.set_hard_state(&HardState {
        term: Term(1),
        vote: None,
        commit: index,
    })?;
    storage.sync_commit()?;
    store.flush()?;
    Ok(Restored {
        member_id: identity.member_id,
        revision: meta.revision,
        index: index.0,
    })
}
