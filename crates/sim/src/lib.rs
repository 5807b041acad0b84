//! # concord-sim: deterministic swarm simulation of the Raft core
//!
//! Runs 3, 5 or 7 real `concord_raft::Raft` cores in one thread, driven by
//! one `u64` seed, under a faulty network (loss, delay, reordering,
//! duplication, symmetric, one-way and bridged partitions), faulty disks
//! (asynchronous fsync, crashes that lose or tear unsynced writes), clock
//! drift, leadership transfers, single-member membership changes,
//! compaction with streamed snapshots, and clients that write and read
//! linearizably (ReadIndex, and leader leases in some seeds). Cluster-wide safety properties
//! are checked after every event (`checker`, `history`); a final heal phase
//! checks that every acknowledged write reached every node.
//!
//! What it deliberately does not do: it never reads a real clock or an
//! unseeded RNG, so any failure replays from its seed; and it never switches
//! on the core's `mistakes` itself (only the tests do, through
//! [`SimOptions::on_raft_created`]).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod checker;
pub mod disk;
pub mod history;
pub mod kv;
pub mod net;
pub mod params;
pub mod runner;
pub mod sim;

pub use params::Params;
pub use runner::{run_seeds, Summary};
pub use sim::{report, run, Outcome, SimOptions, Stats, Violation};
