//! Deferred commit notices: a leader's [`MessageBody::CommitNotice`] waits
//! up to [`COMMIT_NOTICE_DELAY`] for another message to the same follower
//! before it goes out alone.
//!
//! Why: under a steady stream of writes the next append reaches the
//! follower soon after a commit and carries the commit index anyway, so a
//! notice sent at once is one more send, one more follower wake-up and one
//! more follower turn per write that tells nothing the append would not.
//! On this project's 2-vCPU machine, a build sending no notices at all
//! measured 13% less CPU per put and a 6% lower p50 at one client
//! (BENCHMARKS.md, session 12). A notice still goes out, so followers'
//! applies, serializable reads and watches never lag a commit by more
//! than the delay (etcd's followers lag by up to a heartbeat interval).
//!
//! Invariants:
//! 1. A held notice leaves no later than its deadline, set when the first
//!    notice of a run was held (a newer notice replaces the held one but
//!    keeps its deadline, so a stream of commits cannot postpone it).
//! 2. A held notice leaves with, and just before, any other message to its
//!    follower (so a follower's ReadIndex answer is never ahead of the
//!    commit it needs), except an append, which carries a commit index at
//!    least as new and replaces it.
//! 3. Nothing but commit notices is ever held or reordered. Holding one
//!    is safe: a notice is a hint the follower may also lose to the
//!    network (the core's transport contract), never needed for safety.

use concord_raft::{Message, MessageBody, NodeId};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Longest a commit notice waits for a message to ride with. Long enough
/// that at one client the next put's append (about 0.2 ms after the
/// commit: apply, answer, the client's round trip) carries the commit;
/// short enough that an idle follower learns it well within a human's or a
/// watcher's notice.
pub const COMMIT_NOTICE_DELAY: Duration = Duration::from_millis(2);

/// Commit notices held per follower (see the module invariants).
#[derive(Debug)]
pub struct HeldNotices {
    delay: Duration,
    held: HashMap<NodeId, (Message, Instant)>,
}

impl HeldNotices {
    /// Holds each notice up to `delay`.
    pub fn new(delay: Duration) -> HeldNotices {
        HeldNotices {
            delay,
            held: HashMap::new(),
        }
    }

    /// Takes a turn's outgoing messages: new notices are held (invariant
    /// 1), held ones are released ahead of another message to their
    /// follower or dropped for an append (invariant 2).
    pub fn filter(&mut self, messages: Vec<Message>, now: Instant) -> Vec<Message> {
        if self.held.is_empty() && !messages.iter().any(is_notice) {
            return messages;
        }
        let mut out = Vec::with_capacity(messages.len());
        for message in messages {
            match message.body {
                MessageBody::CommitNotice { .. } => {
                    let deadline = self
                        .held
                        .get(&message.to)
                        .map_or(now + self.delay, |(_, deadline)| *deadline);
                    self.held.insert(message.to, (message, deadline));
                }
                MessageBody::Append { .. } => {
                    self.held.remove(&message.to);
                    out.push(message);
                }
                _ => {
                    if let Some((notice, _)) = self.held.remove(&message.to) {
                        out.push(notice);
                    }
                    out.push(message);
                }
            }
        }
        out
    }

    /// The notices whose deadline has come (invariant 1).
    pub fn due(&mut self, now: Instant) -> Vec<Message> {
        if self.held.is_empty() {
            return Vec::new();
        }
        let due: Vec<NodeId> = self
            .held
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(to, _)| *to)
            .collect();
        due.into_iter()
            .filter_map(|to| self.held.remove(&to).map(|(notice, _)| notice))
            .collect()
    }

    /// The earliest deadline of a held notice.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.held.values().map(|(_, deadline)| *deadline).min()
    }

    /// Drops every held notice (this member stopped leading: its notices
    /// are of a past term).
    pub fn clear(&mut self) {
        self.held.clear();
    }
}

fn is_notice(message: &Message) -> bool {
    matches!(message.body, MessageBody::CommitNotice { .. })
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_raft::{LogIndex, Term};

    fn notice(to: u64, commit: u64) -> Message {
        Message {
            from: NodeId(1),
            to: NodeId(to),
            term: Term(2),
            body: MessageBody::CommitNotice {
                prev_log_index: LogIndex(commit),
                prev_log_term: Term(2),
                leader_commit: LogIndex(commit),
            },
        }
    }

    fn append(to: u64) -> Message {
        Message {
            from: NodeId(1),
            to: NodeId(to),
            term: Term(2),
            body: MessageBody::Append {
                prev_log_index: LogIndex(5),
                prev_log_term: Term(2),
                entries: Vec::new(),
                leader_commit: LogIndex(5),
            },
        }
    }

    fn heartbeat(to: u64) -> Message {
        Message {
            from: NodeId(1),
            to: NodeId(to),
            term: Term(2),
            body: MessageBody::Heartbeat {
                commit: LogIndex(5),
                read_round: 7,
            },
        }
    }

    const DELAY: Duration = Duration::from_millis(2);

    #[test]
    fn a_notice_waits_and_leaves_at_its_first_deadline() {
        let mut held = HeldNotices::new(DELAY);
        let t0 = Instant::now();
        assert!(held.filter(vec![notice(2, 3)], t0).is_empty());
        assert_eq!(held.next_deadline(), Some(t0 + DELAY));
        // A newer notice replaces the held one and keeps its deadline.
        assert!(held
            .filter(vec![notice(2, 4)], t0 + Duration::from_millis(1))
            .is_empty());
        assert_eq!(held.next_deadline(), Some(t0 + DELAY));
        assert!(held.due(t0 + Duration::from_millis(1)).is_empty());
        assert_eq!(held.due(t0 + DELAY), vec![notice(2, 4)]);
        assert_eq!(held.next_deadline(), None);
        assert!(held.due(t0 + 2 * DELAY).is_empty());
    }

    #[test]
    fn an_append_replaces_a_notice_and_other_messages_take_it_along() {
        let mut held = HeldNotices::new(DELAY);
        let now = Instant::now();
        let out = held.filter(vec![notice(2, 3), notice(3, 3), append(2)], now);
        assert_eq!(out, vec![append(2)], "the append carries the commit");
        // Follower 3's notice goes just before the next message to it.
        let out = held.filter(vec![heartbeat(2), heartbeat(3)], now);
        assert_eq!(out, vec![heartbeat(2), notice(3, 3), heartbeat(3)]);
        assert_eq!(held.next_deadline(), None);
        assert!(held.due(now + DELAY).is_empty());
    }

    #[test]
    fn clear_drops_what_is_held_and_other_messages_pass_untouched() {
        let mut held = HeldNotices::new(DELAY);
        let now = Instant::now();
        let out = held.filter(vec![heartbeat(2), notice(3, 1)], now);
        assert_eq!(out, vec![heartbeat(2)]);
        held.clear();
        assert!(held.due(now + DELAY).is_empty());
        assert_eq!(held.filter(vec![append(3)], now), vec![append(3)]);
    }
}
