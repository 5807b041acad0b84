//! The fault-injection admin endpoint, used by `concord check`'s nemeses.
//! It exists only when a member is started with `--enable-fault-injection
//! --fault-admin-url URL`; production members never listen on it.
//!
//! ```text
//! GET  /status          {"member_id", "leader", "term", "commit", "applied"}
//! POST /fault/partition {"drop_from": [ids], "drop_to": [ids]}  (replaces rules)
//! POST /fault/heal      clears every rule
//! POST /fault/clock     {"tick_scale_percent": 150}  (timers run 1.5x slower)
//! ```
//!
//! Invariant: faults act inside the real transport and timer paths, so a
//! nemesis exercises exactly the code that runs in production.

use crate::replica::Shared;
use crate::transport::{FaultRules, Transport};
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use concord_raft::NodeId;
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What the handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The member.
    pub shared: Arc<Shared>,
    /// Its transport, where partitions are applied.
    pub transport: Arc<Transport>,
}

/// `GET /status`.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
pub struct AdminStatus {
    /// This member.
    pub member_id: u64,
    /// Known leader (0 = none).
    pub leader: u64,
    /// Current term.
    pub term: u64,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
}

/// `POST /fault/partition`.
#[derive(Serialize, Deserialize, Debug, Default)]
pub struct PartitionRequest {
    /// Members whose traffic this member drops on receipt.
    #[serde(default)]
    pub drop_from: Vec<u64>,
    /// Members this member does not send to.
    #[serde(default)]
    pub drop_to: Vec<u64>,
}

/// `POST /fault/clock`.
#[derive(Serialize, Deserialize, Debug)]
pub struct ClockRequest {
    /// Tick length in percent of the configured one (1 to 10000).
    pub tick_scale_percent: u64,
}

async fn status(State(state): State<AdminState>) -> Json<AdminStatus> {
    let s = &state.shared;
    Json(AdminStatus {
        member_id: s.member_id,
        leader: s.leader.load(Ordering::Acquire),
        term: s.term.load(Ordering::Acquire),
        commit: s.commit_index.load(Ordering::Acquire),
        applied: s.applied_index.load(Ordering::Acquire),
    })
}

async fn partition(
    State(state): State<AdminState>,
    Json(req): Json<PartitionRequest>,
) -> &'static str {
    state.transport.set_faults(FaultRules {
        drop_from: req.drop_from.into_iter().map(NodeId).collect(),
        drop_to: req.drop_to.into_iter().map(NodeId).collect(),
    });
    "ok"
}

async fn heal(State(state): State<AdminState>) -> &'static str {
    state.transport.set_faults(FaultRules::default());
    state
        .shared
        .tick_scale_percent
        .store(100, Ordering::Relaxed);
    "ok"
}

async fn clock(State(state): State<AdminState>, Json(req): Json<ClockRequest>) -> &'static str {
    state
        .shared
        .tick_scale_percent
        .store(req.tick_scale_percent.clamp(1, 10_000), Ordering::Relaxed);
    "ok"
}

/// Serves the admin endpoint until the runtime stops.
pub async fn serve(listener: tokio::net::TcpListener, state: AdminState) {
    let app = Router::new()
        .route("/status", get(status))
        .route("/fault/partition", post(partition))
        .route("/fault/heal", post(heal))
        .route("/fault/clock", post(clock))
        .with_state(state);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "admin endpoint stopped");
    }
}
