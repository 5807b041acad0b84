//! What a leader knows about each follower's log, and the flow control that
//! keeps replication pipelined but bounded.
//!
//! Invariants:
//! 1. `match_index < next_index` always.
//! 2. `match_index` never decreases within one term of leadership (a
//!    follower's durable acknowledgement cannot be taken back).
//! 3. In `Replicate`, at most `max_inflight` appends are unacknowledged; in
//!    `Probe`, at most one; in `Snapshot`, appends are paused.

use crate::types::LogIndex;
use std::collections::VecDeque;

/// Replication mode of one follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicationState {
    /// Searching for the last matching index: one append at a time.
    Probe {
        /// An append is outstanding; wait for its answer or a heartbeat.
        paused: bool,
    },
    /// Steady state: optimistic, pipelined appends.
    Replicate,
    /// The follower needs entries we compacted: stream a snapshot.
    Snapshot {
        /// Index of the snapshot being sent.
        index: LogIndex,
        /// Bytes sent so far.
        sent_bytes: u64,
        /// Bytes the follower last reported holding (its latest answer,
        /// which may be lower than an earlier one after it restarted).
        acked_bytes: u64,
        /// Whether the acknowledged offset moved since the last heartbeat
        /// (if not, chunks were lost and we resend from `acked_bytes`).
        advanced: bool,
    },
}

/// The leader's view of one follower.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to be durable on the follower.
    pub match_index: LogIndex,
    /// Next index to send.
    pub next_index: LogIndex,
    /// Flow-control mode.
    pub state: ReplicationState,
    /// Last index of each unacknowledged append, oldest first.
    pub inflight: VecDeque<LogIndex>,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// Highest heartbeat round the follower echoed.
    pub acked_round: u64,
}

impl Progress {
    /// A fresh follower entry for a new leader whose last index is `last`.
    pub fn new(last: LogIndex) -> Progress {
        Progress {
            match_index: LogIndex(0),
            next_index: last.next(),
            state: ReplicationState::Probe { paused: false },
            inflight: VecDeque::new(),
            recent_active: false,
            acked_round: 0,
        }
    }

    /// Whether another append may be sent now.
    pub fn can_send(&self, max_inflight: usize) -> bool {
        match self.state {
            ReplicationState::Probe { paused } => !paused,
            ReplicationState::Replicate => self.inflight.len() < max_inflight,
            ReplicationState::Snapshot { .. } => false,
        }
    }

    /// Records that an append ending at `last` was sent.
    pub fn sent(&mut self, last: LogIndex, had_entries: bool) {
        match self.state {
            ReplicationState::Probe { .. } => {
                self.state = ReplicationState::Probe { paused: true };
            }
            ReplicationState::Replicate => {
                if had_entries {
                    self.next_index = last.next();
                    self.inflight.push_back(last);
                }
            }
            ReplicationState::Snapshot { .. } => {}
        }
    }

    /// A successful acknowledgement through `index`. Returns whether the
    /// match index moved.
    pub fn acknowledge(&mut self, index: LogIndex) -> bool {
        let moved = index > self.match_index;
        if moved {
            self.match_index = index;
        }
        if self.next_index <= index {
            self.next_index = index.next();
        }
        while self.inflight.front().is_some_and(|&last| last <= index) {
            self.inflight.pop_front();
        }
        match self.state {
            ReplicationState::Probe { .. } => self.become_replicate(),
            ReplicationState::Snapshot { index: snap, .. } if self.match_index >= snap => {
                self.become_probe()
            }
            _ => {}
        }
        moved
    }

    /// A rejection of an append whose previous index was `rejected`; `hint`
    /// is where the leader should probe next. Returns false for a stale
    /// rejection that must be ignored.
    pub fn reject(&mut self, rejected: LogIndex, hint: LogIndex) -> bool {
        match self.state {
            ReplicationState::Replicate => {
                if rejected <= self.match_index {
                    return false;
                }
                self.become_probe();
                self.next_index = self.match_index.next().max(hint.next().min(rejected));
                true
            }
            ReplicationState::Probe { .. } => {
                if self.next_index.prev() != rejected {
                    return false;
                }
                // Probe just after the hint, never re-probe the rejected
                // index itself and never below what is known to match.
                self.next_index = hint.next().min(rejected).max(self.match_index.next());
                self.state = ReplicationState::Probe { paused: false };
                true
            }
            ReplicationState::Snapshot { .. } => false,
        }
    }

    /// Switches to probing from just after the match index.
    pub fn become_probe(&mut self) {
        self.state = ReplicationState::Probe { paused: false };
        self.next_index = self.match_index.next();
        self.inflight.clear();
    }

    /// Switches to pipelined replication.
    pub fn become_replicate(&mut self) {
        self.state = ReplicationState::Replicate;
        self.next_index = self.match_index.next();
        self.inflight.clear();
    }

    /// Switches to snapshot streaming.
    pub fn become_snapshot(&mut self, index: LogIndex) {
        self.state = ReplicationState::Snapshot {
            index,
            sent_bytes: 0,
            acked_bytes: 0,
            advanced: true,
        };
        self.inflight.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicate_window_is_bounded() {
        let mut p = Progress::new(LogIndex(10));
        p.acknowledge(LogIndex(10));
        assert_eq!(p.state, ReplicationState::Replicate);
        for i in 11..14 {
            assert!(p.can_send(3));
            p.sent(LogIndex(i), true);
        }
        assert!(!p.can_send(3));
        p.acknowledge(LogIndex(12));
        assert!(p.can_send(3));
        assert_eq!(p.inflight.len(), 1);
    }

    #[test]
    fn stale_rejections_are_ignored() {
        let mut p = Progress::new(LogIndex(10));
        p.acknowledge(LogIndex(8));
        assert!(
            !p.reject(LogIndex(7), LogIndex(3)),
            "already matched beyond it"
        );
        assert!(p.reject(LogIndex(9), LogIndex(8)));
        assert_eq!(p.next_index, LogIndex(9));
        assert!(
            !p.reject(LogIndex(5), LogIndex(2)),
            "probe answers only its own probe"
        );
    }
}
