//! The server side of etcd's `clientv3/concurrency` recipes, shared by the
//! Lock and Election services: a queue of owner keys under a prefix,
//! ordered by create revision.
//!
//! ```text
//!  name/<lease hex A>  create_revision 10   <- owner (lowest create revision)
//!  name/<lease hex B>  create_revision 12   waits for the deletion of A
//!  name/<lease hex C>  create_revision 15   waits for the deletion of B, then
//!                                           checks again for anything below 15
//! ```
//! An owner key is attached to its client's lease, so it disappears when the
//! lease is revoked or expires: a crashed owner releases the queue. The
//! owner key's create revision is the fencing token: a write guarded by
//! `Compare(CreateRevision(owner key) == token)` in a Txn fails once the
//! owner lost the key, even if the old owner does not know it yet.
//!
//! Invariants:
//! 1. A waiter is told it owns the queue only when no key under the prefix
//!    has a lower create revision in this member's store, at a revision at
//!    or after its own key's creation (the store has applied its own key,
//!    hence every key created before it).
//! 2. Unlike etcd 3.4, a waiter whose own key disappears while it waits
//!    (lease expired, revoked, key deleted) is answered with an error, never
//!    told it owns the queue.
//! 3. A waiter that stops waiting (client gone, error) deletes its own key,
//!    guarded by its create revision, so it cannot delete a later holder's.

use super::{mvcc_status, server_status, Api};
use crate::watch_hub::{CursorError, EventCursor, KeyRange};
use concord_mvcc::{
    Command, Compare, CompareResult, CompareTarget, DeleteRangeRequest, EventKind, KeyValue,
    PutRequest, RangeRequest, RangeResponse, RequestOp, Response, ResponseOp, SortOrder,
    SortTarget, TxnRequest, TxnResponse,
};
use tonic::{Code, Status};

/// The owner key of `lease` in the queue `name`: `name/<lease in hex>`.
pub fn owner_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key
}

/// `name` + "/".
pub fn queue_prefix(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix
}

/// etcd's `GetPrefixRangeEnd`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.last_mut() {
        if *last < 0xff {
            *last += 1;
            return end;
        }
        end.pop();
    }
    vec![0]
}

fn compare_create(key: &[u8], revision: i64) -> Compare {
    Compare {
        key: key.to_vec(),
        range_end: Vec::new(),
        result: CompareResult::Equal,
        target: CompareTarget::Create(revision),
    }
}

fn get(key: &[u8]) -> RequestOp {
    RequestOp::Range(RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    })
}

/// etcd's `WithFirstCreate` (or `WithLastCreate`) over a prefix.
fn top_by_create(prefix: &[u8], order: SortOrder, max_create_revision: i64) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: order,
        sort_target: SortTarget::Create,
        max_create_revision,
        ..Default::default()
    }
}

/// Runs a Txn through Raft: the response and the revision after it.
///
/// A Txn that puts (enqueue, Proclaim) is refused while a NOSPACE alarm is
/// active, as KV.Txn refuses it (etcd's v3lock and v3election write
/// through the quota-checked KV); deletes (Unlock, Resign, withdrawing a
/// waiter) still go through, so a full cluster can release its locks.
pub async fn txn(api: &Api, request: TxnRequest) -> Result<(TxnResponse, i64), Status> {
    if super::kv::txn_puts(&request) {
        api.refuse_if_out_of_space()?;
    }
    let output = api
        .shared
        .propose(Command::Txn(request))
        .await
        .map_err(server_status)?;
    match output.response {
        Response::Txn(response) => Ok((response, output.revision.0)),
        _ => Err(Status::internal("concord: unexpected response to txn")),
    }
}

/// Reads this member's store (no Raft round).
pub async fn range_local(api: &Api, request: RangeRequest) -> Result<RangeResponse, Status> {
    let reader = api.shared.reader.clone();
    tokio::task::spawn_blocking(move || reader.range(&request))
        .await
        .map_err(|_| Status::internal("concord: range task failed"))?
        .map_err(|e| mvcc_status(&e))
}

/// The first key (lowest create revision) under `prefix`, linearizably.
pub async fn first_created(api: &Api, prefix: &[u8]) -> Result<(Option<KeyValue>, i64), Status> {
    api.shared.read_barrier().await.map_err(server_status)?;
    let response = range_local(api, top_by_create(prefix, SortOrder::Ascend, 0)).await?;
    Ok((response.kvs.into_iter().next(), response.revision))
}

fn range_of(op: Option<&ResponseOp>) -> Option<&RangeResponse> {
    match op {
        Some(ResponseOp::Range(r)) => Some(r),
        _ => None,
    }
}

/// A key put in a queue.
pub struct Enqueued {
    /// The owner key's create revision (the fencing token).
    pub revision: i64,
    /// The store revision after the Txn (its header revision).
    pub header_revision: i64,
    /// The key already existed (same lease queued before): its value.
    pub existing_value: Option<Vec<u8>>,
    /// The first key of the queue, as read in the same Txn.
    pub owner: Option<KeyValue>,
}

/// etcd's `Mutex.Lock` / `Election.Campaign` first step: put `key` with
/// `lease` unless it exists, and read the queue's first key, atomically.
pub async fn enqueue(
    api: &Api,
    prefix: &[u8],
    key: &[u8],
    value: Vec<u8>,
    lease: i64,
) -> Result<Enqueued, Status> {
    let put = RequestOp::Put(PutRequest {
        key: key.to_vec(),
        value,
        lease,
        ..Default::default()
    });
    let owner = RequestOp::Range(top_by_create(prefix, SortOrder::Ascend, 0));
    let request = TxnRequest {
        compare: vec![compare_create(key, 0)],
        success: vec![put, owner.clone()],
        failure: vec![get(key), owner],
    };
    let (response, header_revision) = txn(api, request).await?;
    let owner = range_of(response.responses.get(1)).and_then(|r| r.kvs.first().cloned());
    if response.succeeded {
        return Ok(Enqueued {
            revision: header_revision,
            header_revision,
            existing_value: None,
            owner,
        });
    }
    let existing = range_of(response.responses.first())
        .and_then(|r| r.kvs.first().cloned())
        .ok_or_else(|| Status::internal("concord: queue key vanished inside a txn"))?;
    Ok(Enqueued {
        revision: existing.create_revision,
        header_revision,
        existing_value: Some(existing.value),
        owner,
    })
}

/// Puts `value` on `key` if `key` still has create revision `revision`.
/// Returns whether it did, and the revision after the Txn.
pub async fn put_if_owner(
    api: &Api,
    key: &[u8],
    revision: i64,
    value: Vec<u8>,
    lease: i64,
) -> Result<(bool, i64), Status> {
    let request = TxnRequest {
        compare: vec![compare_create(key, revision)],
        success: vec![RequestOp::Put(PutRequest {
            key: key.to_vec(),
            value,
            lease,
            ..Default::default()
        })],
        failure: Vec::new(),
    };
    let (response, header) = txn(api, request).await?;
    Ok((response.succeeded, header))
}

/// Deletes `key` if it still has create revision `revision` (invariant 3).
pub async fn delete_if_owner(api: &Api, key: &[u8], revision: i64) -> Result<i64, Status> {
    let request = TxnRequest {
        compare: vec![compare_create(key, revision)],
        success: vec![RequestOp::DeleteRange(DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })],
        failure: Vec::new(),
    };
    Ok(txn(api, request).await?.1)
}

/// The error of invariant 2.
pub fn key_lost() -> Status {
    Status::new(
        Code::Aborted,
        "concord: the owner key was deleted while waiting (lease expired or revoked, or key deleted)",
    )
}

/// Deletes a waiter's key when the waiting future is dropped or fails
/// before it is disarmed (invariant 3).
pub struct Withdraw {
    api: Option<Api>,
    key: Vec<u8>,
    revision: i64,
}

impl Withdraw {
    /// Armed: dropping it deletes `key` if its create revision is `revision`.
    pub fn new(api: &Api, key: &[u8], revision: i64) -> Withdraw {
        Withdraw {
            api: Some(api.clone()),
            key: key.to_vec(),
            revision,
        }
    }

    /// The wait succeeded: keep the key.
    pub fn disarm(mut self) {
        self.api = None;
    }
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        if let Some(api) = self.api.take() {
            let key = std::mem::take(&mut self.key);
            let revision = self.revision;
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = delete_if_owner(&api, &key, revision).await;
                });
            }
        }
    }
}

/// etcd's `waitDeletes`: waits until no key under `prefix` was created
/// before `revision` (the caller's own key, `key`). Returns the store
/// revision at which that was seen (etcd answers with that header).
pub async fn wait_for_turn(
    api: &Api,
    prefix: &[u8],
    key: &[u8],
    revision: i64,
) -> Result<i64, Status> {
    loop {
        let mine = range_local(
            api,
            RangeRequest {
                key: key.to_vec(),
                ..Default::default()
            },
        )
        .await?;
        if mine.kvs.first().map(|kv| kv.create_revision) != Some(revision) {
            return Err(key_lost());
        }
        let before =
            range_local(api, top_by_create(prefix, SortOrder::Descend, revision - 1)).await?;
        let Some(predecessor) = before.kvs.into_iter().next() else {
            return Ok(before.revision);
        };
        let from = before.revision.max(mine.revision) + 1;
        match wait_gone(api, &predecessor, key, revision, from).await {
            Ok(Gone::Predecessor) => {}
            Ok(Gone::Mine) => return Err(key_lost()),
            // History we needed was compacted: look again.
            Err(CursorError::Compacted { .. }) => {}
            Err(e) => return Err(Status::unavailable(e.to_string())),
        }
    }
}

enum Gone {
    Predecessor,
    Mine,
}

/// Waits from revision `from` until the predecessor key or our own key is
/// deleted (or re-created with another create revision).
async fn wait_gone(
    api: &Api,
    predecessor: &KeyValue,
    key: &[u8],
    revision: i64,
    from: i64,
) -> Result<Gone, CursorError> {
    let shared = std::sync::Arc::clone(&api.shared);
    let mut theirs = EventCursor::new(
        shared.clone(),
        KeyRange::new(predecessor.key.clone(), Vec::new()),
        from,
    );
    let mut ours = EventCursor::new(shared, KeyRange::new(key.to_vec(), Vec::new()), from);
    let ended = |events: &[concord_mvcc::Event], create: i64| {
        events
            .iter()
            .any(|e| e.kind == EventKind::Delete || e.kv.create_revision != create)
    };
    loop {
        tokio::select! {
            events = theirs.next() => {
                if ended(&events?, predecessor.create_revision) {
                    return Ok(Gone::Predecessor);
                }
            }
            events = ours.next() => {
                if ended(&events?, revision) {
                    return Ok(Gone::Mine);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_prefixes_follow_etcd() {
        assert_eq!(
            owner_key(b"lock/", 0x694d_8077_1d5a_0b11),
            b"lock/694d80771d5a0b11".to_vec()
        );
        assert_eq!(queue_prefix(b"l"), b"l/".to_vec());
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
