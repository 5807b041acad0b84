//! A tiny deterministic in-memory cluster for the core's scenario tests.
//!
//! Everything is synchronous: a `Ready` is persisted at once (the "disk" is
//! a `Vec`), its after-persist messages are queued right after, committed
//! entries are applied to a per-node list. Messages wait in one FIFO queue
//! until `settle` delivers them; a filter can drop any message, to cut links
//! or to hold back a particular append. No randomness beyond each core's
//! seeded election jitter, so every test replays identically.
//!
//! Invariants:
//! 1. Messages are delivered in the order they were sent (FIFO).
//! 2. A node's persisted state is exactly what its Readies asked for, in
//!    order, so `restart` rebuilds it as a real runtime would.

#![allow(dead_code)]

use bytes::Bytes;
use concord_raft::{
    ConfState, Config, Entry, HardState, LogIndex, Message, NodeId, Raft, RestoredState, Role,
    Snapshot,
};
use std::collections::{BTreeMap, VecDeque};

/// Settle rounds before a test is declared stuck.
const MAX_ROUNDS: usize = 10_000;

/// What one node has on its "disk" and in its state machine.
#[derive(Default, Clone)]
pub struct Store {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    pub applied: Vec<Entry>,
    pub installed: Vec<Snapshot>,
    pub read_states: Vec<(u64, Option<LogIndex>)>,
    /// Snapshot loads the core asked for (`Ready::load_snapshot`).
    pub snapshot_loads: Vec<LogIndex>,
    /// Answer loads with `snapshot_load_failed` instead of the data.
    pub fail_snapshot_loads: bool,
}

/// Sees every message before delivery; may edit it; returns false to drop.
pub type Filter = Box<dyn FnMut(&mut Message) -> bool>;

pub struct Cluster {
    pub nodes: BTreeMap<NodeId, Raft>,
    pub stores: BTreeMap<NodeId, Store>,
    pub queue: VecDeque<Message>,
    /// Returns false for a message to drop.
    pub filter: Option<Filter>,
    pub voters: Vec<NodeId>,
    pub tweak: fn(&mut Config),
}

pub fn id(n: u64) -> NodeId {
    NodeId(n)
}

fn no_tweak(_: &mut Config) {}

impl Cluster {
    /// `n` voters with fresh logs.
    pub fn new(n: u64) -> Cluster {
        Cluster::with_config(n, no_tweak)
    }

    pub fn with_config(n: u64, tweak: fn(&mut Config)) -> Cluster {
        let voters: Vec<NodeId> = (1..=n).map(id).collect();
        let mut c = Cluster {
            nodes: BTreeMap::new(),
            stores: BTreeMap::new(),
            queue: VecDeque::new(),
            filter: None,
            voters: voters.clone(),
            tweak,
        };
        for v in voters {
            c.stores.insert(v, Store::default());
            c.restart(v);
        }
        c
    }

    /// Rebuilds node `n` from its store (also used to create it).
    pub fn restart(&mut self, n: NodeId) {
        let store = self.stores.entry(n).or_default().clone();
        let mut config = Config::new(n, 7);
        (self.tweak)(&mut config);
        let restored = RestoredState {
            hard_state: store.hard_state,
            snapshot: store.snapshot.clone(),
            entries: store.entries.clone(),
            initial_conf: ConfState::with_voters(self.voters.iter().copied()),
            applied: store
                .applied
                .last()
                .map(|e| e.index)
                .unwrap_or_default()
                .max(
                    store
                        .snapshot
                        .as_ref()
                        .map(|s| s.meta.index)
                        .unwrap_or_default(),
                ),
        };
        self.nodes
            .insert(n, Raft::new(config, restored).expect("valid config"));
    }

    /// Adds a node that is not (yet) in the voters' configuration.
    pub fn add_node(&mut self, n: NodeId, initial_voters: &[NodeId]) {
        let mut config = Config::new(n, 7);
        (self.tweak)(&mut config);
        let restored = RestoredState {
            initial_conf: ConfState::with_voters(initial_voters.iter().copied()),
            ..RestoredState::default()
        };
        self.stores.insert(n, Store::default());
        self.nodes
            .insert(n, Raft::new(config, restored).expect("valid config"));
    }

    pub fn node(&self, n: u64) -> &Raft {
        &self.nodes[&id(n)]
    }

    pub fn node_mut(&mut self, n: u64) -> &mut Raft {
        self.nodes.get_mut(&id(n)).expect("node exists")
    }

    /// Handles every pending Ready of every node (synchronous persistence).
    pub fn flush(&mut self) -> bool {
        let mut any = false;
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for n in ids {
            loop {
                let raft = self.nodes.get_mut(&n).expect("node exists");
                if !raft.has_ready() {
                    break;
                }
                any = true;
                let ready = raft.ready();
                let store = self.stores.get_mut(&n).expect("store exists");
                self.queue.extend(ready.messages);
                if let Some(snap) = &ready.snapshot {
                    store.entries.clear();
                    store.snapshot = Some(snap.clone());
                    store.installed.push(snap.clone());
                }
                for e in &ready.entries {
                    store.entries.retain(|x| x.index < e.index);
                    store.entries.push(e.clone());
                }
                if let Some(hs) = ready.hard_state {
                    store.hard_state = hs;
                }
                self.queue.extend(ready.messages_after_persist);
                raft.on_persisted(ready.persist_marker);
                store.applied.extend(ready.committed_entries);
                store
                    .read_states
                    .extend(ready.read_states.iter().map(|r| (r.context, r.index)));
                if let Some(index) = ready.load_snapshot {
                    store.snapshot_loads.push(index);
                    match &store.snapshot {
                        Some(snap) if !store.fail_snapshot_loads => {
                            raft.provide_snapshot_data(index, snap.data.clone())
                        }
                        _ => raft.snapshot_load_failed(index),
                    }
                }
            }
        }
        any
    }

    /// Delivers one queued message (through the filter).
    pub fn deliver_one(&mut self) -> bool {
        let Some(mut m) = self.queue.pop_front() else {
            return false;
        };
        if let Some(f) = self.filter.as_mut() {
            if !f(&mut m) {
                return true;
            }
        }
        if let Some(raft) = self.nodes.get_mut(&m.to) {
            raft.step(m);
        }
        true
    }

    /// Flushes and delivers until nothing moves.
    pub fn settle(&mut self) {
        for _ in 0..MAX_ROUNDS {
            let flushed = self.flush();
            let delivered = self.deliver_one();
            if !flushed && !delivered {
                return;
            }
        }
        panic!("cluster did not settle");
    }

    /// Ticks every node once, then settles.
    pub fn tick_all(&mut self, times: usize) {
        for _ in 0..times {
            for raft in self.nodes.values_mut() {
                raft.tick();
            }
            self.settle();
        }
    }

    /// Makes node `n` campaign (ticks it past any election timeout) and
    /// settles; returns whether it became leader.
    pub fn elect(&mut self, n: u64) -> bool {
        for _ in 0..64 {
            self.node_mut(n).tick();
            self.settle();
            if self.node(n).role() == Role::Leader {
                return true;
            }
        }
        false
    }

    pub fn propose(&mut self, n: u64, data: &'static [u8]) -> LogIndex {
        let index = self
            .node_mut(n)
            .propose(Bytes::from_static(data))
            .expect("leader accepts");
        self.settle();
        index
    }

    /// Drops every message to or from `n`.
    pub fn isolate(&mut self, n: u64) {
        let n = id(n);
        self.filter = Some(Box::new(move |m: &mut Message| m.from != n && m.to != n));
    }

    pub fn heal(&mut self) {
        self.filter = None;
    }

    /// Node `n` takes a snapshot at its applied index and compacts.
    pub fn compact(&mut self, n: u64, data: &'static [u8]) -> LogIndex {
        let applied = self.node(n).log().applied();
        let meta = self
            .node_mut(n)
            .compact(applied, Bytes::from_static(data))
            .expect("applied index can be compacted");
        let store = self.stores.get_mut(&id(n)).expect("store exists");
        store.entries.retain(|e| e.index > meta.index);
        store.snapshot = Some(Snapshot {
            meta,
            data: Bytes::from_static(data),
        });
        applied
    }

    pub fn applied(&self, n: u64) -> Vec<LogIndex> {
        self.stores[&id(n)]
            .applied
            .iter()
            .map(|e| e.index)
            .collect()
    }
}
