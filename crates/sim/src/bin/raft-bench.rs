//! `raft-bench`: proposals committed per second through a 3-node in-memory
//! cluster of real Raft cores (a benchmark, not a test).
//!
//! The "runtime" is as cheap as it can be, so the figures measure the core:
//! messages are handed over in-process, persistence is a `Vec` append, and
//! apply is a counter. Two modes:
//! - batching on: the leader takes `BATCH` proposals, then one round of
//!   Readies carries them all (one append per follower, one fsync each);
//! - batching off: one proposal, then Ready round trips until the leader
//!   applies it, before the next proposal.
//!
//! Run with `cargo run --release -p concord-sim --bin raft-bench`.
#![forbid(unsafe_code)]

use bytes::Bytes;
use concord_raft::{ConfState, Config, LogIndex, Message, NodeId, Raft, RestoredState, Role};
use std::collections::VecDeque;
use std::time::Instant;

/// Cluster size.
const NODES: u64 = 3;
/// Proposals per round with batching on.
const BATCH: usize = 512;
/// Proposals measured with batching on.
const BATCHED_PROPOSALS: usize = 1_000_000;
/// Proposals measured with batching off (each is a full round trip).
const SINGLE_PROPOSALS: usize = 100_000;
/// Command size: about a small etcd put.
const COMMAND_BYTES: usize = 64;
/// Entries kept in memory before the bench compacts (keeps memory flat).
const COMPACT_EVERY: u64 = 50_000;

struct Node {
    raft: Raft,
    log_len: usize,
    applied: LogIndex,
}

struct Cluster {
    nodes: Vec<Node>,
    wire: VecDeque<Message>,
}

impl Cluster {
    fn new() -> Cluster {
        let voters = ConfState::with_voters((1..=NODES).map(NodeId));
        let nodes = (1..=NODES)
            .map(|i| {
                let config = Config::new(NodeId(i), 42);
                let restored = RestoredState {
                    initial_conf: voters.clone(),
                    ..RestoredState::default()
                };
                Node {
                    raft: Raft::new(config, restored).expect("valid config"),
                    log_len: 0,
                    applied: LogIndex(0),
                }
            })
            .collect();
        Cluster {
            nodes,
            wire: VecDeque::new(),
        }
    }

    /// Handles every Ready and delivers every message until quiet.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            for node in &mut self.nodes {
                while node.raft.has_ready() {
                    moved = true;
                    let ready = node.raft.ready();
                    self.wire.extend(ready.messages);
                    // "Persist": the cost a real WAL would add is not ours.
                    node.log_len += ready.entries.len();
                    self.wire.extend(ready.messages_after_persist);
                    node.raft.on_persisted(ready.persist_marker);
                    if let Some(last) = ready.committed_entries.last() {
                        node.applied = last.index;
                    }
                }
                let applied = node.raft.log().applied();
                let first = node.raft.log().first_index();
                if applied.0 >= first.0 + COMPACT_EVERY {
                    let _ = node.raft.compact(applied, Bytes::new());
                }
            }
            while let Some(m) = self.wire.pop_front() {
                moved = true;
                let to = (m.to.0 - 1) as usize;
                self.nodes[to].raft.step(m);
            }
            if !moved {
                return;
            }
        }
    }

    fn elect(&mut self) -> usize {
        for _ in 0..100 {
            self.nodes[0].raft.tick();
            self.pump();
            if self.nodes[0].raft.role() == Role::Leader {
                return 0;
            }
        }
        panic!("no leader");
    }
}

fn run(batch: usize, total: usize) -> f64 {
    let mut cluster = Cluster::new();
    let leader = cluster.elect();
    let command = Bytes::from(vec![7u8; COMMAND_BYTES]);
    let start = Instant::now();
    let mut done = 0;
    while done < total {
        let n = batch.min(total - done);
        let mut last = LogIndex(0);
        for _ in 0..n {
            last = cluster.nodes[leader]
                .raft
                .propose(command.clone())
                .expect("leader accepts");
        }
        cluster.pump();
        assert!(
            cluster.nodes[leader].applied >= last,
            "proposal not applied"
        );
        done += n;
    }
    total as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    // Warm up allocators and caches so the first figure is not penalised.
    run(BATCH, BATCH * 20);
    let batched = run(BATCH, BATCHED_PROPOSALS);
    let single = run(1, SINGLE_PROPOSALS);
    println!(
        "raft-bench: {NODES} nodes, {COMMAND_BYTES}-byte commands, in-memory transport and disk"
    );
    println!("batching on  ({BATCH} proposals per Ready): {batched:>12.0} proposals/s");
    println!("batching off (1 proposal per round trip):  {single:>12.0} proposals/s");
}
