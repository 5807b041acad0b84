//! # concord-node: one Concord member
//!
//! The runtime around the pure protocol cores: a replica loop thread that
//! drives the Raft core, the write-ahead log and the MVCC store in the order
//! the core's `Ready` contract demands; a TCP peer transport; and the etcd v3
//! gRPC API. Start a member with [`node::start`].
//!
//! What it deliberately does not do: decide anything about consensus (the
//! `concord-raft` core does), or interpret protobuf anywhere but `api`.
#![forbid(unsafe_code)]

pub mod admin;
pub mod alarm;
pub mod api;
pub mod codec;
pub mod commit_notices;
pub mod config;
pub mod envelope;
pub mod inbox;
pub mod lessor;
pub mod members;
pub mod node;
pub mod peer_link;
pub mod replica;
pub mod restore;
pub mod sha256;
pub mod snapshotter;
pub mod transport;
pub mod wal_writer;
pub mod watch_hub;
