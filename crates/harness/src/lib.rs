//! # concord-harness: Jepsen-style tests of a real Concord cluster
//!
//! The engine of `concord check` (DESIGN.md, "Verification, in layers",
//! item 3): it starts a cluster of real `concord serve` processes on
//! loopback, runs concurrent clients against it through the etcd v3 API,
//! injects faults from a nemesis schedule, heals, lets the cluster settle,
//! reads the final state, and hands the recorded history to
//! `concord-check`, whose verdict it writes with a report.
//!
//! ## Code map
//! - [`cluster`]: the member processes: ports, data directories, logs,
//!   kill -9 / restart, SIGSTOP / SIGCONT, partitions and timer skew
//!   through each member's fault-injection admin endpoint, leader
//!   discovery, MemberRemove / MemberAdd and rejoining. Owns every child; all die when it drops.
//! - [`workload`]: the clients (`register`, `set`), outcome classification
//!   (`ok` / `fail` / `info`) and the final reads.
//! - [`lock`]: the `lock` workload (Lock service, leases, fenced writes)
//!   and its fencing checks.
//! - [`nemesis`]: fault schedules (`partition`, `kill`, `pause`, `clock`,
//!   `member`, combinable) and the nemesis log.
//! - [`run`]: one whole test, from an empty folder to a verdict.
//! - [`report`]: `verdict.txt` and the HTML summary.
//! - `http`: the few lines of HTTP/1.1 the admin endpoint needs.
//!
//! ## Entry point
//! [`run::run`] with a [`RunConfig`]; `concord check` is a thin wrapper.
//!
//! ## What this crate deliberately does not do
//! - It does not decide linearizability: `concord-check` does.
//! - It does not link the server: members are separate processes of the
//!   `concord` binary, so kill -9 and SIGSTOP hit exactly what production
//!   runs, and a member's crash cannot take the harness down.
//! - Faults act only through the member's test-only admin endpoint, OS
//!   signals and (for `member`) the etcd Cluster service; the harness never
//!   edits a member's files. The one thing it does to them is delete the
//!   whole data directory of a member it removed from the cluster and
//!   stopped, before adding it back empty.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cluster;
pub mod error;
mod http;
pub mod lock;
pub mod nemesis;
pub mod report;
pub mod run;
pub mod workload;

pub use cluster::{Cluster, ClusterSpec, Cut, MemberStatus, ProcessState};
pub use error::HarnessError;
pub use lock::{check_fencing, FenceOutcome, FenceViolation, FencedWrite, LockOptions};
pub use nemesis::{parse_nemeses, NemesisKind, NemesisLog};
pub use run::{run, Checked, LockSummary, OpCounts, RunConfig, RunOutcome};
pub use workload::{ErrorTally, Recorded, WorkloadConfig, WorkloadKind};
