//! Alarms (etcd's `AlarmStore`) and the backend space quota.
//!
//! An alarm is a (member, kind) pair. It is raised and cleared only through
//! Raft (an [`Payload::Alarm`] entry), so every member holds the same set,
//! in its member table (`Members::alarms`): saved with the
//! table at each change, carried in Raft snapshots with it, and so restored
//! on restart. Applying a change is setting one element of a set, so
//! replaying a suffix of the log over a later saved table ends in the same
//! state (no applied-index bookkeeping needed beyond the table's own).
//!
//! The space quota (etcd's `--quota-backend-bytes`): every member watches
//! its own backend size ([`watch_quota`]); once it exceeds the quota the
//! member proposes a NOSPACE alarm for itself (forwarded to the leader like
//! any proposal). While any NOSPACE alarm is active the API refuses Put,
//! Txn with puts and LeaseGrant with etcd's `etcdserver: mvcc: database
//! space exceeded` (ResourceExhausted); Range, DeleteRange, Compact and the
//! rest are served, so an operator can compact, defragment and then
//! `alarm disarm` (op-guide/maintenance.md "Space quota").
//!
//! Differences from etcd 3.4, on purpose or for now:
//! 1. The refusal happens in the API of the member that receives the write,
//!    against its own (applied) copy of the alarm set, not in the applier;
//!    a write proposed just before the alarm applied still goes through.
//! 2. The size is checked after applying (every [`QUOTA_CHECK_INTERVAL`]),
//!    not as "size + cost of this request" before proposing.

use crate::envelope::Payload;
use crate::replica::{Request, ServerError, Shared};
use concord_mvcc::CommandOutput;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// etcd's message for a write refused under a NOSPACE alarm
/// (`rpctypes.ErrGRPCNoSpace`, code ResourceExhausted).
pub const NO_SPACE_MESSAGE: &str = "etcdserver: mvcc: database space exceeded";

/// How often a member compares its backend size with the quota.
pub const QUOTA_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Pause after a failed attempt to raise the NOSPACE alarm.
pub const QUOTA_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// An alarm kind, with etcd's `AlarmType` numbers (0 is NONE, not a kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AlarmKind {
    /// The backend exceeded the space quota.
    Nospace,
    /// The backend was found corrupt.
    Corrupt,
}

impl AlarmKind {
    /// etcd's `AlarmType` number.
    pub fn to_etcd(self) -> i32 {
        match self {
            AlarmKind::Nospace => 1,
            AlarmKind::Corrupt => 2,
        }
    }

    /// From etcd's `AlarmType` number; `None` for NONE or unknown numbers.
    pub fn from_etcd(value: i32) -> Option<AlarmKind> {
        match value {
            1 => Some(AlarmKind::Nospace),
            2 => Some(AlarmKind::Corrupt),
            _ => None,
        }
    }
}

/// One active alarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Alarm {
    /// The member the alarm is about.
    pub member_id: u64,
    /// What is wrong.
    pub kind: AlarmKind,
}

/// Raise or clear.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlarmAction {
    /// Raise (etcd's ACTIVATE).
    Activate,
    /// Clear (etcd's DEACTIVATE).
    Deactivate,
}

/// The replicated change an [`Payload::Alarm`] entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlarmChange {
    /// Raise or clear.
    pub action: AlarmAction,
    /// Which alarm.
    pub alarm: Alarm,
}

/// Bytes of an encoded [`AlarmChange`]: action, member id, kind.
pub const ALARM_CHANGE_BYTES: usize = 1 + 8 + 1;

impl AlarmChange {
    /// Encodes the change (the body of an envelope).
    pub fn encode(&self) -> [u8; ALARM_CHANGE_BYTES] {
        let mut out = [0u8; ALARM_CHANGE_BYTES];
        out[0] = match self.action {
            AlarmAction::Activate => 1,
            AlarmAction::Deactivate => 2,
        };
        out[1..9].copy_from_slice(&self.alarm.member_id.to_le_bytes());
        out[9] = self.alarm.kind.to_etcd() as u8;
        out
    }

    /// Decodes a change; `None` for anything malformed (never panics).
    pub fn decode(body: &[u8]) -> Option<AlarmChange> {
        if body.len() != ALARM_CHANGE_BYTES {
            return None;
        }
        let action = match body[0] {
            1 => AlarmAction::Activate,
            2 => AlarmAction::Deactivate,
            _ => return None,
        };
        let member_id = u64::from_le_bytes(body[1..9].try_into().ok()?);
        let kind = AlarmKind::from_etcd(i32::from(body[9]))?;
        Some(AlarmChange {
            action,
            alarm: Alarm { member_id, kind },
        })
    }
}

/// The set of active alarms, as every member applied it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Alarms {
    active: BTreeSet<Alarm>,
}

impl Alarms {
    /// Applies a change; whether the set changed.
    pub fn apply(&mut self, change: &AlarmChange) -> bool {
        match change.action {
            AlarmAction::Activate => self.active.insert(change.alarm),
            AlarmAction::Deactivate => self.active.remove(&change.alarm),
        }
    }

    /// Active alarms of `kind`, or all of them for `None` (etcd's
    /// `AlarmStore.Get` with NONE), ordered by member id.
    pub fn get(&self, kind: Option<AlarmKind>) -> Vec<Alarm> {
        let mut out: Vec<Alarm> = self
            .active
            .iter()
            .filter(|a| kind.is_none_or(|k| a.kind == k))
            .copied()
            .collect();
        out.sort_by_key(|a| (a.kind, a.member_id));
        out
    }

    /// Whether `alarm` is active.
    pub fn contains(&self, alarm: &Alarm) -> bool {
        self.active.contains(alarm)
    }

    /// Whether an alarm of `kind` is active for any member.
    pub fn any(&self, kind: AlarmKind) -> bool {
        self.active.iter().any(|a| a.kind == kind)
    }

    /// No alarm is active.
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }
}

/// etcd's text form of an alarm (gogoproto's compact text of
/// `AlarmMember`), as `Status.errors` and `etcdctl alarm list` show it.
pub fn alarm_text(alarm: &Alarm) -> String {
    let kind = match alarm.kind {
        AlarmKind::Nospace => "NOSPACE",
        AlarmKind::Corrupt => "CORRUPT",
    };
    format!("memberID:{} alarm:{kind} ", alarm.member_id)
}

/// Whether writes that allocate space are refused now (a NOSPACE alarm is
/// active in this member's applied copy of the alarm set).
pub fn out_of_space(shared: &Shared) -> bool {
    shared
        .members
        .read()
        .expect("lock")
        .alarms
        .any(AlarmKind::Nospace)
}

/// Replicates an alarm change and waits until it is applied here.
pub async fn propose_alarm(
    shared: &Shared,
    change: AlarmChange,
) -> Result<CommandOutput, ServerError> {
    let (reply, rx) = oneshot::channel();
    shared
        .inbox
        .send(Request::ProposePayload {
            payload: Payload::Alarm(change),
            reply,
        })
        .map_err(|_| ServerError::Stopped)?;
    match tokio::time::timeout(shared.request_timeout, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(ServerError::Stopped),
        Err(_) => Err(ServerError::Timeout),
    }
}

/// Watches this member's backend size and raises its NOSPACE alarm once the
/// size exceeds `quota_bytes` (0 means etcd's default). Runs until the
/// member stops.
pub async fn watch_quota(shared: Arc<Shared>, quota_bytes: u64) {
    let quota_bytes = if quota_bytes == 0 {
        crate::config::DEFAULT_QUOTA_BACKEND_BYTES
    } else {
        quota_bytes
    };
    let mine = Alarm {
        member_id: shared.member_id,
        kind: AlarmKind::Nospace,
    };
    let mut interval = tokio::time::interval(QUOTA_CHECK_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if shared.stopped.load(Ordering::Acquire) {
            return;
        }
        if shared.leader().is_none() {
            continue;
        }
        // On disk, not the file's length (see `db_size_on_disk_bytes`).
        let Ok(size) = shared.reader.db_size_on_disk_bytes() else {
            continue;
        };
        if size <= quota_bytes || shared.members.read().expect("lock").alarms.contains(&mine) {
            continue;
        }
        tracing::warn!(
            size,
            quota = quota_bytes,
            "database space exceeded; raising the NOSPACE alarm"
        );
        let change = AlarmChange {
            action: AlarmAction::Activate,
            alarm: mine,
        };
        if let Err(e) = propose_alarm(&shared, change).await {
            tracing::warn!(error = %e, "raising the NOSPACE alarm failed; retrying");
            // No log line per check while, say, partitioned.
            tokio::time::sleep(QUOTA_RETRY_PAUSE).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_round_trip_and_junk_is_refused() {
        let change = AlarmChange {
            action: AlarmAction::Deactivate,
            alarm: Alarm {
                member_id: 0xdead_beef_0001,
                kind: AlarmKind::Nospace,
            },
        };
        assert_eq!(AlarmChange::decode(&change.encode()), Some(change));
        assert_eq!(AlarmChange::decode(&[]), None);
        assert_eq!(AlarmChange::decode(&[3, 0, 0, 0, 0, 0, 0, 0, 0, 1]), None);
        assert_eq!(AlarmChange::decode(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(AlarmChange::decode(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 9]), None);
    }

    #[test]
    fn the_set_follows_etcd_store_rules_and_replays_idempotently() {
        let a = Alarm {
            member_id: 2,
            kind: AlarmKind::Nospace,
        };
        let b = Alarm {
            member_id: 1,
            kind: AlarmKind::Corrupt,
        };
        let activate = |alarm| AlarmChange {
            action: AlarmAction::Activate,
            alarm,
        };
        let deactivate = |alarm| AlarmChange {
            action: AlarmAction::Deactivate,
            alarm,
        };
        let log = [activate(a), activate(b), activate(a), deactivate(b)];
        let mut alarms = Alarms::default();
        let changed: Vec<bool> = log.iter().map(|c| alarms.apply(c)).collect();
        assert_eq!(changed, [true, true, false, true]);
        assert!(alarms.any(AlarmKind::Nospace));
        assert!(!alarms.any(AlarmKind::Corrupt));
        assert_eq!(alarms.get(None), vec![a]);
        assert_eq!(alarms.get(Some(AlarmKind::Corrupt)), vec![]);
        // Replaying any suffix over the final state gives the final state.
        for start in 0..log.len() {
            let mut again = alarms.clone();
            for c in &log[start..] {
                again.apply(c);
            }
            assert_eq!(again, alarms, "replay from {start}");
        }
        let json = serde_json::to_string(&alarms).unwrap();
        assert_eq!(serde_json::from_str::<Alarms>(&json).unwrap(), alarms);
        assert_eq!(alarm_text(&a), "memberID:2 alarm:NOSPACE ");
    }
}
