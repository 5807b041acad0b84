//! Request validation that etcd performs in its gRPC layer, before a request
//! is proposed (etcdserver/api/v3rpc/key.go, v3.4).
//!
//! The API layer calls these before proposing, so that malformed requests
//! never enter the Raft log. The store repeats only [`check_txn_intervals`]
//! at apply time, because its atomicity argument depends on it (see
//! `Store::apply_batch`).
//!
//! Invariants:
//! 1. Each check accepts exactly what etcd 3.4's corresponding check
//!    accepts, including its quirks: a delete with `range_end == "\0"` is
//!    an interval that etcd's interval tree never matches, so it does not
//!    conflict with puts.
//! 2. Checks are pure: no store access.

use crate::error::MvccError;
use crate::types::{DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};

/// etcd's default `--max-txn-ops`.
pub const TXN_OPS_MAX_DEFAULT: usize = 128;

/// etcd's `checkRangeRequest`.
pub fn check_range(r: &RangeRequest) -> Result<(), MvccError> {
    if r.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    Ok(())
}

/// etcd's `checkPutRequest`.
pub fn check_put(r: &PutRequest) -> Result<(), MvccError> {
    if r.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(MvccError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(MvccError::LeaseProvided);
    }
    Ok(())
}

/// etcd's `checkDeleteRequest`.
pub fn check_delete_range(r: &DeleteRangeRequest) -> Result<(), MvccError> {
    if r.key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    Ok(())
}

/// etcd's `checkTxnRequest` followed by `checkIntervals` on both branches,
/// as `kvServer.Txn` runs them.
pub fn check_txn(r: &TxnRequest, txn_ops_max: usize) -> Result<(), MvccError> {
    check_txn_ops(r, txn_ops_max as i64)?;
    check_txn_intervals(r)
}

fn check_txn_ops(r: &TxnRequest, txn_ops_max: i64) -> Result<(), MvccError> {
    let opc = r.compare.len().max(r.success.len()).max(r.failure.len()) as i64;
    if opc > txn_ops_max {
        return Err(MvccError::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(MvccError::EmptyKey);
    }
    for op in r.success.iter().chain(&r.failure) {
        match op {
            RequestOp::Range(q) => check_range(q)?,
            RequestOp::Put(q) => check_put(q)?,
            RequestOp::DeleteRange(q) => check_delete_range(q)?,
            RequestOp::Txn(t) => check_txn_ops(t, txn_ops_max - opc)?,
        }
    }
    Ok(())
}

/// Rejects a transaction that writes a key twice in one branch path:
/// etcd's `checkIntervals` on `success` and on `failure`.
pub fn check_txn_intervals(r: &TxnRequest) -> Result<(), MvccError> {
    intervals(&r.success)?;
    intervals(&r.failure)?;
    Ok(())
}

/// A delete interval as etcd's `adt` builds it: a point when `end` is
/// empty, else `[key, end)` compared bytewise (so `end == "\0"` is empty).
struct Interval<'a> {
    key: &'a [u8],
    end: &'a [u8],
}

impl Interval<'_> {
    fn contains(&self, k: &[u8]) -> bool {
        if self.end.is_empty() {
            k == self.key
        } else {
            self.key <= k && k < self.end
        }
    }
}

/// etcd's `checkIntervals`: returns the puts and deletes of this level and
/// below.
fn intervals(reqs: &[RequestOp]) -> Result<(Vec<&[u8]>, Vec<Interval<'_>>), MvccError> {
    let mut dels: Vec<Interval<'_>> = reqs
        .iter()
        .filter_map(|op| match op {
            RequestOp::DeleteRange(d) => Some(Interval {
                key: &d.key,
                end: &d.range_end,
            }),
            _ => None,
        })
        .collect();
    let hit = |dels: &[Interval<'_>], k: &[u8]| dels.iter().any(|d| d.contains(k));

    let mut puts: Vec<&[u8]> = Vec::new();
    for op in reqs {
        let RequestOp::Txn(t) = op else { continue };
        let (puts_then, dels_then) = intervals(&t.success)?;
        let (puts_else, dels_else) = intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || hit(&dels, k) {
                return Err(MvccError::DuplicateKey);
            }
            puts.push(k);
        }
        for k in &puts_else {
            // Then and else are exclusive: a key put by both is fine.
            if (puts.contains(k) && !puts_then.contains(k)) || hit(&dels, k) {
                return Err(MvccError::DuplicateKey);
            }
            puts.push(k);
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in reqs {
        let RequestOp::Put(p) = op else { continue };
        let k = p.key.as_slice();
        if puts.contains(&k) || hit(&dels, k) {
            return Err(MvccError::DuplicateKey);
        }
        puts.push(k);
    }
    Ok((puts, dels))
}
