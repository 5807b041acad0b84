//! Conversions between etcd's protobuf messages and the MVCC store's own
//! types. This is the only place (with the services beside it) where
//! protobuf types meet the store: the store and Raft never see them.
//!
//! Invariant: a conversion never panics on client input; unknown enum
//! values and missing oneofs become `InvalidArgument` errors.

use concord_etcd_proto::etcdserverpb as pb;
use concord_etcd_proto::mvccpb;
use concord_mvcc as mvcc;
use tonic::Status;

/// A protobuf KeyValue from the store's.
pub fn kv_to_pb(kv: mvcc::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

/// The store's RangeRequest from etcd's.
pub fn range_from_pb(r: pb::RangeRequest) -> Result<mvcc::RangeRequest, Status> {
    let sort_order = match r.sort_order {
        0 => mvcc::SortOrder::None,
        1 => mvcc::SortOrder::Ascend,
        2 => mvcc::SortOrder::Descend,
        other => {
            return Err(Status::invalid_argument(format!(
                "unknown sort order {other}"
            )))
        }
    };
    let sort_target = match r.sort_target {
        0 => mvcc::SortTarget::Key,
        1 => mvcc::SortTarget::Version,
        2 => mvcc::SortTarget::Create,
        3 => mvcc::SortTarget::Mod,
        4 => mvcc::SortTarget::Value,
        other => {
            return Err(Status::invalid_argument(format!(
                "unknown sort target {other}"
            )))
        }
    };
    Ok(mvcc::RangeRequest {
        key: r.key,
        range_end: r.range_end,
        limit: r.limit,
        revision: r.revision,
        sort_order,
        sort_target,
        serializable: r.serializable,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    })
}

/// etcd's RangeResponse from the store's.
pub fn range_to_pb(r: mvcc::RangeResponse, header: pb::ResponseHeader) -> pb::RangeResponse {
    pb::RangeResponse {
        header: Some(header),
        kvs: r.kvs.into_iter().map(kv_to_pb).collect(),
        more: r.more,
        count: r.count,
    }
}

/// The store's PutRequest from etcd's.
pub fn put_from_pb(r: pb::PutRequest) -> mvcc::PutRequest {
    mvcc::PutRequest {
        key: r.key,
        value: r.value,
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

/// etcd's PutResponse from the store's.
pub fn put_to_pb(r: mvcc::PutResponse, header: pb::ResponseHeader) -> pb::PutResponse {
    pb::PutResponse {
        header: Some(header),
        prev_kv: r.prev_kv.map(kv_to_pb),
    }
}

/// The store's DeleteRangeRequest from etcd's.
pub fn delete_from_pb(r: pb::DeleteRangeRequest) -> mvcc::DeleteRangeRequest {
    mvcc::DeleteRangeRequest {
        key: r.key,
        range_end: r.range_end,
        prev_kv: r.prev_kv,
    }
}

/// etcd's DeleteRangeResponse from the store's.
pub fn delete_to_pb(
    r: mvcc::DeleteRangeResponse,
    header: pb::ResponseHeader,
) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: Some(header),
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(kv_to_pb).collect(),
    }
}

fn compare_from_pb(c: pb::Compare) -> Result<mvcc::Compare, Status> {
    use pb::compare::{CompareTarget, TargetUnion};
    let result = match c.result {
        0 => mvcc::CompareResult::Equal,
        1 => mvcc::CompareResult::Greater,
        2 => mvcc::CompareResult::Less,
        3 => mvcc::CompareResult::NotEqual,
        other => {
            return Err(Status::invalid_argument(format!(
                "unknown compare result {other}"
            )))
        }
    };
    let target_kind = CompareTarget::try_from(c.target)
        .map_err(|_| Status::invalid_argument(format!("unknown compare target {}", c.target)))?;
    // etcd reads the operand that matches `target`; an unset oneof is the
    // zero value of that operand.
    let target = match (target_kind, c.target_union) {
        (CompareTarget::Version, Some(TargetUnion::Version(v))) => mvcc::CompareTarget::Version(v),
        (CompareTarget::Version, _) => mvcc::CompareTarget::Version(0),
        (CompareTarget::Create, Some(TargetUnion::CreateRevision(v))) => {
            mvcc::CompareTarget::Create(v)
        }
        (CompareTarget::Create, _) => mvcc::CompareTarget::Create(0),
        (CompareTarget::Mod, Some(TargetUnion::ModRevision(v))) => mvcc::CompareTarget::Mod(v),
        (CompareTarget::Mod, _) => mvcc::CompareTarget::Mod(0),
        (CompareTarget::Value, Some(TargetUnion::Value(v))) => mvcc::CompareTarget::Value(v),
        (CompareTarget::Value, _) => mvcc::CompareTarget::Value(Vec::new()),
        (CompareTarget::Lease, Some(TargetUnion::Lease(v))) => mvcc::CompareTarget::Lease(v),
        (CompareTarget::Lease, _) => mvcc::CompareTarget::Lease(0),
    };
    Ok(mvcc::Compare {
        key: c.key,
        range_end: c.range_end,
        result,
        target,
    })
}

fn op_from_pb(op: pb::RequestOp) -> Result<mvcc::RequestOp, Status> {
    use pb::request_op::Request;
    match op.request {
        Some(Request::RequestRange(r)) => Ok(mvcc::RequestOp::Range(range_from_pb(r)?)),
        Some(Request::RequestPut(r)) => Ok(mvcc::RequestOp::Put(put_from_pb(r))),
        Some(Request::RequestDeleteRange(r)) => Ok(mvcc::RequestOp::DeleteRange(delete_from_pb(r))),
        Some(Request::RequestTxn(r)) => Ok(mvcc::RequestOp::Txn(txn_from_pb(r)?)),
        None => Err(Status::invalid_argument("etcdserver: request op is empty")),
    }
}

/// The store's TxnRequest from etcd's.
pub fn txn_from_pb(r: pb::TxnRequest) -> Result<mvcc::TxnRequest, Status> {
    Ok(mvcc::TxnRequest {
        compare: r
            .compare
            .into_iter()
            .map(compare_from_pb)
            .collect::<Result<_, _>>()?,
        success: r
            .success
            .into_iter()
            .map(op_from_pb)
            .collect::<Result<_, _>>()?,
        failure: r
            .failure
            .into_iter()
            .map(op_from_pb)
            .collect::<Result<_, _>>()?,
    })
}

/// etcd's TxnResponse from the store's. Only the top-level response carries
/// the full `header`; as in etcd 3.4 (`applyTxn`), the responses inside it
/// carry just their own revision (a read before the txn's first write sees
/// the revision before it), and a nested txn's header is empty.
pub fn txn_to_pb(r: mvcc::TxnResponse, header: pb::ResponseHeader) -> pb::TxnResponse {
    pb::TxnResponse {
        header: Some(header),
        succeeded: r.succeeded,
        responses: nested_responses_to_pb(r.responses),
    }
}

fn nested_header(revision: i64) -> pb::ResponseHeader {
    pb::ResponseHeader {
        revision,
        ..Default::default()
    }
}

fn nested_responses_to_pb(ops: Vec<mvcc::ResponseOp>) -> Vec<pb::ResponseOp> {
    use pb::response_op::Response;
    ops.into_iter()
        .map(|op| pb::ResponseOp {
            response: Some(match op {
                mvcc::ResponseOp::Range(r) => {
                    let header = nested_header(r.revision);
                    Response::ResponseRange(range_to_pb(r, header))
                }
                mvcc::ResponseOp::Put(r) => {
                    let header = nested_header(r.revision);
                    Response::ResponsePut(put_to_pb(r, header))
                }
                mvcc::ResponseOp::DeleteRange(r) => {
                    let header = nested_header(r.revision);
                    Response::ResponseDeleteRange(delete_to_pb(r, header))
                }
                mvcc::ResponseOp::Txn(r) => {
                    let header = nested_header(r.revision);
                    Response::ResponseTxn(txn_to_pb(r, header))
                }
            }),
        })
        .collect()
}
