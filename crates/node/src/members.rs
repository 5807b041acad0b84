//! The member table: names, peer URLs and client URLs of every member, as
//! replicated through the log (conf-change contexts and attribute entries).
//!
//! Invariants:
//! 1. The table reflects exactly the entries applied through
//!    `applied_index`; it is saved atomically (temp file, fsync, rename,
//!    fsync of the directory) together with that index, so replay after a
//!    crash resumes from a consistent point.
//! 2. Ids of the initial members are derived deterministically from peer
//!    URLs and the cluster token, so every member computes the same ids
//!    from the same `--initial-cluster`. A member added later gets a fresh
//!    id from the leader ([`fresh_member_id`]: peer URLs, token and the
//!    time, as etcd's MemberAdd), never one a past member had, and learns
//!    it from the cluster when it joins (`node::start`).
//! 3. `removed` holds every id ever removed; it only grows, is replicated
//!    (applied from the same entries on every member) and travels with the
//!    table in saves and snapshots. A removed id is never a member again:
//!    its messages are refused (`transport.rs`) and a member that finds its
//!    own id there stops (etcd's "the member has been permanently removed
//!    from the cluster"). This is what keeps a re-added member from voting
//!    twice in one term under one id.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

/// One member as etcd's MemberList shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Member id.
    pub id: u64,
    /// Name (empty until the member publishes it, for added members).
    pub name: String,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Client URLs (published by the member once it runs).
    pub client_urls: Vec<String>,
    /// Non-voting learner.
    pub is_learner: bool,
}

/// Context carried by a conf-change entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfChangeContext {
    /// Name, if known.
    pub name: String,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
}

/// The replicated member table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    /// Last log index reflected here.
    pub applied_index: u64,
    /// Members by id.
    pub members: BTreeMap<u64, Member>,
    /// Active alarms (see [`crate::alarm`]); kept here so they are saved,
    /// snapshotted and restored with the table.
    #[serde(default, skip_serializing_if = "crate::alarm::Alarms::is_empty")]
    pub alarms: crate::alarm::Alarms,
    /// Ids of removed members (invariant 3).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub removed: BTreeSet<u64>,
}

/// etcd's error for a member whose id was removed from the cluster.
pub const REMOVED_MESSAGE: &str = "the member has been permanently removed from the cluster";

impl Members {
    /// Loads the table, or an empty one if the file does not exist.
    pub fn load(path: &Path) -> std::io::Result<Members> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Members::default()),
            Err(e) => Err(e),
        }
    }

    /// Saves the table atomically.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).expect("plain data serializes");
        write_atomically(path, &bytes)
    }
}

/// Writes a file so that a crash leaves either the old or the new contents.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// 64-bit FNV-1a: a stable hash for ids (not for security).
pub fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in *part {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The member id for a set of peer URLs in a cluster (never zero).
pub fn member_id(peer_urls: &[String], cluster_token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let joined = urls.join(",");
    let id = fnv1a64(&[joined.as_bytes(), cluster_token.as_bytes()]);
    id.max(1)
}

/// A fresh id for a member added to a running cluster (never zero): the
/// peer URLs, the cluster token and `now_nanos` (the wall clock of the
/// proposing leader), as etcd's MemberAdd. Re-adding a removed member's URL
/// therefore gives a new id; a collision with a current or removed id is
/// refused where the change is proposed.
pub fn fresh_member_id(peer_urls: &[String], cluster_token: &str, now_nanos: u64) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let joined = urls.join(",");
    fnv1a64(&[
        joined.as_bytes(),
        cluster_token.as_bytes(),
        &now_nanos.to_le_bytes(),
    ])
    .max(1)
}

/// The cluster id for a set of initial member ids.
pub fn cluster_id(member_ids: &[u64], cluster_token: &str) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
    fnv1a64(&[&bytes, cluster_token.as_bytes()]).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_order_independent() {
        let a = member_id(&["http://b".into(), "http://a".into()], "tok");
        let b = member_id(&["http://a".into(), "http://b".into()], "tok");
        assert_eq!(a, b);
        assert_ne!(
            a,
            member_id(&["http://a".into(), "http://b".into()], "other")
        );
        assert_eq!(cluster_id(&[3, 1, 2], "t"), cluster_id(&[1, 2, 3], "t"));
    }

    #[test]
    fn fresh_ids_differ_from_derived_ones_and_over_time() {
        let urls = vec!["http://a".to_string()];
        let derived = member_id(&urls, "tok");
        let first = fresh_member_id(&urls, "tok", 1);
        let second = fresh_member_id(&urls, "tok", 2);
        assert_ne!(first, second);
        assert_ne!(first, derived);
        assert_ne!(second, derived);
    }

    #[test]
    fn table_saves_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("members.json");
        assert_eq!(Members::load(&path).unwrap(), Members::default());
        let mut m = Members {
            applied_index: 4,
            ..Default::default()
        };
        m.members.insert(
            1,
            Member {
                id: 1,
                name: "n1".into(),
                ..Default::default()
            },
        );
        m.removed.insert(9);
        m.save(&path).unwrap();
        assert_eq!(Members::load(&path).unwrap(), m);
        std::fs::write(&path, b"{not json").unwrap();
        assert!(Members::load(&path).is_err());
    }
}
