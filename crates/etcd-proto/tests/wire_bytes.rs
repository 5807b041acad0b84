//! Field numbers and wire types, checked against protobuf bytes computed by
//! hand from etcd v3.4's declarations (tag byte = field_number << 3 | wire_type;
//! wire type 0 = varint, 2 = length-delimited).

use concord_etcd_proto::etcdserverpb::{
    compare, range_request, request_op, watch_create_request, watch_request, Compare, PutRequest,
    RangeRequest, RangeResponse, RequestOp, ResponseHeader, TxnRequest, WatchCreateRequest,
    WatchRequest,
};
use concord_etcd_proto::mvccpb::KeyValue;
use prost::Message;

#[test]
fn range_request_bytes() {
    let req = RangeRequest {
        key: b"foo".to_vec(),
        range_end: b"fop".to_vec(),
        limit: 10,
        revision: 5,
        sort_order: range_request::SortOrder::Descend as i32,
        sort_target: range_request::SortTarget::Mod as i32,
        serializable: true,
        keys_only: true,
        count_only: true,
        min_mod_revision: 1,
        max_mod_revision: 2,
        min_create_revision: 3,
        max_create_revision: 4,
    };
    #[rustfmt::skip]
    let want: &[u8] = &[
        0x0a, 3, b'f', b'o', b'o', // 1 key
        0x12, 3, b'f', b'o', b'p', // 2 range_end
        0x18, 10,                  // 3 limit
        0x20, 5,                   // 4 revision
        0x28, 2,                   // 5 sort_order = DESCEND
        0x30, 3,                   // 6 sort_target = MOD
        0x38, 1,                   // 7 serializable
        0x40, 1,                   // 8 keys_only
        0x48, 1,                   // 9 count_only
        0x50, 1,                   // 10 min_mod_revision
        0x58, 2,                   // 11 max_mod_revision
        0x60, 3,                   // 12 min_create_revision
        0x68, 4,                   // 13 max_create_revision
    ];
    assert_eq!(req.encode_to_vec(), want);
    assert_eq!(RangeRequest::decode(want).unwrap(), req);
}

#[test]
fn put_request_bytes() {
    let req = PutRequest {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        lease: 300,
        prev_kv: true,
        ignore_value: true,
        ignore_lease: true,
    };
    #[rustfmt::skip]
    let want: &[u8] = &[
        0x0a, 1, b'k',   // 1 key
        0x12, 1, b'v',   // 2 value
        0x18, 0xac, 0x02, // 3 lease = 300 (varint)
        0x20, 1,         // 4 prev_kv
        0x28, 1,         // 5 ignore_value
        0x30, 1,         // 6 ignore_lease
    ];
    assert_eq!(req.encode_to_vec(), want);
}

#[test]
fn txn_request_bytes() {
    let req = TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::NotEqual as i32,
            target: compare::CompareTarget::Mod as i32,
            key: b"a".to_vec(),
            target_union: Some(compare::TargetUnion::ModRevision(7)),
            range_end: b"b".to_vec(),
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: b"a".to_vec(),
                value: b"1".to_vec(),
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: b"a".to_vec(),
                ..Default::default()
            })),
        }],
    };
    #[rustfmt::skip]
    let want: &[u8] = &[
        // 1 compare (13 bytes)
        0x0a, 13,
            0x08, 3,             // result = NOT_EQUAL
            0x10, 2,             // target = MOD
            0x1a, 1, b'a',       // key
            0x30, 7,             // 6 mod_revision (oneof target_union)
            0x82, 0x04, 1, b'b', // 64 range_end: tag 64<<3|2 = 514 = varint 82 04
        // 2 success: RequestOp{ 2 request_put: PutRequest{key, value} }
        0x12, 8,
            0x12, 6,
                0x0a, 1, b'a',
                0x12, 1, b'1',
        // 3 failure: RequestOp{ 1 request_range: RangeRequest{key} }
        0x1a, 5,
            0x0a, 3,
                0x0a, 1, b'a',
    ];
    assert_eq!(req.encode_to_vec(), want);
    assert_eq!(TxnRequest::decode(want).unwrap(), req);
}

#[test]
fn watch_create_request_bytes() {
    let req = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: b"w".to_vec(),
                start_revision: 9,
                filters: vec![
                    watch_create_request::FilterType::Noput as i32,
                    watch_create_request::FilterType::Nodelete as i32,
                ],
                prev_kv: true,
                watch_id: 4,
                fragment: true,
                ..Default::default()
            },
        )),
    };
    #[rustfmt::skip]
    let want: &[u8] = &[
        0x0a, 15,                 // 1 create_request
            0x0a, 1, b'w',        // 1 key
            0x18, 9,              // 3 start_revision
            0x2a, 2, 0x00, 0x01,  // 5 filters, packed (proto3 default): NOPUT, NODELETE
            0x30, 1,              // 6 prev_kv
            0x38, 4,              // 7 watch_id
            0x40, 1,              // 8 fragment
    ];
    assert_eq!(req.encode_to_vec(), want);
}

/// Decoding direction: a RangeResponse as etcd would send it.
#[test]
fn range_response_decodes_hand_bytes() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x0a, 8,                       // 1 header
            0x08, 1, 0x10, 2, 0x18, 3, 0x20, 4,
        0x12, 15,                      // 2 kvs[0]: KeyValue
            0x0a, 1, b'k',             // 1 key
            0x10, 2,                   // 2 create_revision
            0x18, 3,                   // 3 mod_revision
            0x20, 1,                   // 4 version
            0x2a, 1, b'v',             // 5 value
            0x30, 0x80, 0x01,          // 6 lease = 128
        0x18, 1,                       // 3 more
        0x20, 7,                       // 4 count
    ];
    let resp = RangeResponse::decode(bytes).unwrap();
    assert_eq!(
        resp,
        RangeResponse {
            header: Some(ResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: 3,
                raft_term: 4,
            }),
            kvs: vec![KeyValue {
                key: b"k".to_vec(),
                create_revision: 2,
                mod_revision: 3,
                version: 1,
                value: b"v".to_vec(),
                lease: 128,
            }],
            more: true,
            count: 7,
        }
    );
}
