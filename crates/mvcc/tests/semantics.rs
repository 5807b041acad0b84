//! etcd 3.4 semantics, one behaviour per test: revisions, Range options,
//! Put flags, DeleteRange, Txn, Compact, leases, errors.

mod common;

use common::*;
use concord_mvcc::*;

#[test]
fn empty_store_is_at_revision_one_and_writes_bump_by_one() {
    let mut h = Harness::new();
    assert_eq!(h.rev(), 1);
    assert_eq!(h.store.compact_revision(), -1);
    assert_eq!(h.put("a", "1").revision, 2);
    assert_eq!(h.put("a", "2").revision, 3);
    let kv = h.get("a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    assert_eq!(kv.value, b"2");
    assert_eq!(h.del("a", "").revision, 4);
    assert!(h.get("a").is_none());
    // A delete that deletes nothing does not bump.
    let d = h.del("a", "");
    assert_eq!((d.deleted, d.revision, h.rev()), (0, 4, 4));
    // Re-creation gets a new create_revision and version 1.
    h.put("a", "3");
    let kv = h.get("a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
}

#[test]
fn put_events_and_prev_kv() {
    let mut h = Harness::new();
    let out = h.ok(Command::Put(put_req("k", "v1")));
    assert_eq!(out.revision, Revision(2));
    assert_eq!(out.events.len(), 1);
    assert_eq!(out.events[0].kind, EventKind::Put);
    assert!(out.events[0].prev_kv.is_none());
    let mut req = put_req("k", "v2");
    req.prev_kv = true;
    let out = h.ok(Command::Put(req));
    let Response::Put(p) = out.response else {
        panic!()
    };
    assert_eq!(p.prev_kv.unwrap().value, b"v1");
    // Apply's events carry no prev_kv (no read back for them); the watch
    // layer reads it at the revision before the event.
    assert!(out.events[0].prev_kv.is_none());
    let reader = h.store.reader();
    assert_eq!(reader.prev_version(b"k", 3).unwrap().unwrap().value, b"v1");
    assert_eq!(
        reader.prev_version(b"k", 2).unwrap(),
        None,
        "a create has none"
    );
    assert_eq!(reader.prev_version(b"k", 1).unwrap(), None);
    let d = h.ok(Command::DeleteRange(DeleteRangeRequest {
        key: "k".into(),
        ..Default::default()
    }));
    let ev = &d.events[0];
    assert_eq!(ev.kind, EventKind::Delete);
    assert_eq!(
        ev.kv,
        KeyValue {
            key: b"k".to_vec(),
            mod_revision: 4,
            ..Default::default()
        }
    );
    assert!(ev.prev_kv.is_none());
    assert_eq!(reader.prev_version(b"k", 4).unwrap().unwrap().value, b"v2");
    let Response::DeleteRange(d) = d.response else {
        panic!()
    };
    assert!(d.prev_kvs.is_empty(), "prev_kvs only when asked");
    h.ok(Command::Put(put_req("k", "v3"))); // 5
    h.ok(Command::Compact(CompactionRequest {
        revision: 5,
        ..Default::default()
    }));
    assert_eq!(
        reader.prev_version(b"k", 4).unwrap(),
        None,
        "compacted: none, as etcd"
    );
}

#[test]
fn ignore_value_and_ignore_lease() {
    let mut h = Harness::new();
    let ignore_value = PutRequest {
        key: "k".into(),
        ignore_value: true,
        ..Default::default()
    };
    let err = h.apply(Command::Put(ignore_value.clone())).unwrap_err();
    assert_eq!(err.to_string(), "etcdserver: key not found");
    assert_eq!(err.grpc_code_name(), "InvalidArgument");
    assert_eq!(h.rev(), 1, "a failed put does not bump");
    h.ok(Command::LeaseGrant(LeaseGrantRequest { id: 7, ttl: 60 }));
    h.ok(Command::Put(PutRequest {
        key: "k".into(),
        value: "v".into(),
        lease: 7,
        ..Default::default()
    }));
    h.ok(Command::Put(ignore_value));
    let kv = h.get("k").unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.lease, kv.version),
        (&b"v"[..], 0, 2),
        "ignore_value keeps value, lease 0 detaches"
    );
    h.ok(Command::Put(PutRequest {
        key: "k".into(),
        value: "v".into(),
        lease: 7,
        ..Default::default()
    }));
    h.ok(Command::Put(PutRequest {
        key: "k".into(),
        value: "w".into(),
        ignore_lease: true,
        ..Default::default()
    }));
    let kv = h.get("k").unwrap();
    assert_eq!((kv.value.as_slice(), kv.lease), (&b"w"[..], 7));
    // API-layer checks.
    let bad = PutRequest {
        key: "k".into(),
        value: "x".into(),
        ignore_value: true,
        ..Default::default()
    };
    assert_eq!(
        check::check_put(&bad).unwrap_err().to_string(),
        "etcdserver: value is provided"
    );
    let bad = PutRequest {
        key: "k".into(),
        lease: 7,
        ignore_lease: true,
        ..Default::default()
    };
    assert_eq!(
        check::check_put(&bad).unwrap_err().to_string(),
        "etcdserver: lease is provided"
    );
    assert_eq!(
        check::check_put(&put_req("", "x")).unwrap_err().to_string(),
        "etcdserver: key is not provided"
    );
}

#[test]
fn put_with_unknown_lease_fails() {
    let mut h = Harness::new();
    let err = h
        .apply(Command::Put(PutRequest {
            key: "k".into(),
            lease: 99,
            ..Default::default()
        }))
        .unwrap_err();
    assert_eq!(err.to_string(), "etcdserver: requested lease not found");
    assert_eq!(err.grpc_code_name(), "NotFound");
    assert_eq!(h.rev(), 1);
    assert_eq!(
        h.store.applied_index(),
        1,
        "a failed command still consumes its index"
    );
}

fn fill(h: &mut Harness) {
    // key: create/mod/version after fill
    h.put("a", "3"); // rev 2
    h.put("b", "1"); // rev 3
    h.put("c", "2"); // rev 4
    h.put("b", "0"); // rev 5: b version 2
    h.put("d", "9"); // rev 6
}

#[test]
fn range_key_forms() {
    let mut h = Harness::new();
    fill(&mut h);
    h.put("ba", "x"); // rev 7
    assert_eq!(keys(&h.store.range(&range_req("b", "")).unwrap()), ["b"]);
    assert_eq!(
        keys(&h.store.range(&range_req("b", "c")).unwrap()),
        ["b", "ba"]
    );
    assert_eq!(
        keys(&h.store.range(&range_req("b", "\0")).unwrap()),
        ["b", "ba", "c", "d"]
    );
    assert_eq!(
        keys(&h.store.range(&range_req("\0", "\0")).unwrap()),
        ["a", "b", "ba", "c", "d"]
    );
    assert!(
        h.store.range(&range_req("c", "b")).unwrap().kvs.is_empty(),
        "end before key is empty"
    );
    let r = h.store.range(&range_req("zz", "")).unwrap();
    assert_eq!((r.kvs.len(), r.count, r.revision), (0, 0, 7));
}

#[test]
fn range_limit_count_more() {
    let mut h = Harness::new();
    fill(&mut h);
    let mut req = range_req("a", "\0");
    req.limit = 2;
    let r = h.store.range(&req).unwrap();
    assert_eq!(
        (keys(&r), r.more, r.count),
        (vec!["a".to_string(), "b".into()], true, 4)
    );
    req.limit = 4;
    let r = h.store.range(&req).unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (4, false, 4));
    req.limit = -1;
    assert_eq!(
        h.store.range(&req).unwrap().kvs.len(),
        4,
        "negative limit is no limit"
    );
    req.count_only = true;
    req.limit = 1;
    let r = h.store.range(&req).unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (0, false, 4));
}

#[test]
fn range_keys_only() {
    let mut h = Harness::new();
    fill(&mut h);
    let mut req = range_req("a", "\0");
    req.keys_only = true;
    req.sort_target = SortTarget::Value;
    req.sort_order = SortOrder::Descend;
    let r = h.store.range(&req).unwrap();
    assert_eq!(
        keys(&r),
        ["d", "a", "c", "b"],
        "sorted by value even when keys_only"
    );
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty() && kv.version > 0));
}

#[test]
fn range_sorting_matches_etcd() {
    let mut h = Harness::new();
    fill(&mut h);
    let sorted = |order, target| {
        let mut req = range_req("a", "\0");
        req.sort_order = order;
        req.sort_target = target;
        keys(&h.store.range(&req).unwrap())
    };
    assert_eq!(
        sorted(SortOrder::None, SortTarget::Key),
        ["a", "b", "c", "d"]
    );
    assert_eq!(
        sorted(SortOrder::Descend, SortTarget::Key),
        ["d", "c", "b", "a"]
    );
    // etcd quirk: NONE with a non-key target sorts ascending by it.
    assert_eq!(
        sorted(SortOrder::None, SortTarget::Value),
        ["b", "c", "a", "d"]
    );
    assert_eq!(
        sorted(SortOrder::Ascend, SortTarget::Mod),
        ["a", "c", "b", "d"]
    );
    assert_eq!(
        sorted(SortOrder::Descend, SortTarget::Create),
        ["d", "c", "b", "a"]
    );
    // Ties keep key order: versions are a1 b2 c1 d1.
    assert_eq!(
        sorted(SortOrder::Ascend, SortTarget::Version),
        ["a", "c", "d", "b"]
    );
    assert_eq!(
        sorted(SortOrder::Descend, SortTarget::Version),
        ["b", "a", "c", "d"]
    );
    // Sorting happens before the limit.
    let mut req = range_req("a", "\0");
    req.sort_order = SortOrder::Descend;
    req.limit = 1;
    let r = h.store.range(&req).unwrap();
    assert_eq!(
        (keys(&r), r.more, r.count),
        (vec!["d".to_string()], true, 4)
    );
}

#[test]
fn range_revision_filters_prune_kvs_but_not_count() {
    let mut h = Harness::new();
    fill(&mut h);
    let mut req = range_req("a", "\0");
    req.min_mod_revision = 4;
    let r = h.store.range(&req).unwrap();
    assert_eq!(
        (keys(&r), r.count),
        (vec!["b".to_string(), "c".into(), "d".into()], 4)
    );
    req.max_mod_revision = 5;
    assert_eq!(keys(&h.store.range(&req).unwrap()), ["b", "c"]);
    let mut req = range_req("a", "\0");
    req.max_create_revision = 3;
    req.limit = 1;
    let r = h.store.range(&req).unwrap();
    assert_eq!(
        (keys(&r), r.more, r.count),
        (vec!["a".to_string()], true, 4)
    );
    let mut req = range_req("a", "\0");
    req.min_create_revision = 4;
    assert_eq!(keys(&h.store.range(&req).unwrap()), ["c", "d"]);
}

#[test]
fn range_at_past_revisions() {
    let mut h = Harness::new();
    fill(&mut h);
    h.del("c", ""); // rev 7
    let at = |h: &Harness, rev: i64| {
        let mut req = range_req("a", "\0");
        req.revision = rev;
        h.store.range(&req)
    };
    assert_eq!(keys(&at(&h, 1).unwrap()), Vec::<String>::new());
    assert_eq!(keys(&at(&h, 3).unwrap()), ["a", "b"]);
    let r = at(&h, 4).unwrap();
    assert_eq!(r.kvs[1].value, b"1");
    assert_eq!(r.revision, 7, "header revision is the current one");
    assert_eq!(at(&h, 5).unwrap().kvs[1].value, b"0");
    assert_eq!(keys(&at(&h, 6).unwrap()), ["a", "b", "c", "d"]);
    assert_eq!(keys(&at(&h, 7).unwrap()), ["a", "b", "d"]);
    let mut single = range_req("c", "");
    single.revision = 6;
    assert_eq!(h.store.range(&single).unwrap().kvs[0].value, b"2");
    let err = at(&h, 8).unwrap_err();
    assert_eq!(
        err.to_string(),
        "etcdserver: mvcc: required revision is a future revision"
    );
    assert_eq!(err.grpc_code_name(), "OutOfRange");
}

#[test]
fn compaction_edges() {
    let mut h = Harness::new();
    fill(&mut h); // rev 6
    h.del("c", ""); // 7
    h.put("a", "new"); // 8
    h.ok(Command::Compact(CompactionRequest {
        revision: 7,
        physical: true,
    }));
    assert_eq!(h.store.compact_revision(), 7);
    assert_eq!(h.rev(), 8, "compaction does not bump");
    let at = |h: &Harness, rev: i64| {
        let mut req = range_req("a", "\0");
        req.revision = rev;
        h.store.range(&req)
    };
    let err = at(&h, 6).unwrap_err();
    assert_eq!(
        err.to_string(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    // etcd 3.4 allows reading at exactly the compacted revision.
    let r = at(&h, 7).unwrap();
    assert_eq!(keys(&r), ["a", "b", "d"]);
    assert_eq!(r.kvs[0].value, b"3");
    assert_eq!(at(&h, 8).unwrap().kvs[0].value, b"new");
    // Compacting again at or below, or in the future, fails.
    let err = h
        .apply(Command::Compact(CompactionRequest {
            revision: 7,
            physical: false,
        }))
        .unwrap_err();
    assert!(matches!(
        err,
        MvccError::Compacted {
            compact_revision: 7
        }
    ));
    let err = h
        .apply(Command::Compact(CompactionRequest {
            revision: 9,
            physical: false,
        }))
        .unwrap_err();
    assert!(matches!(
        err,
        MvccError::FutureRevision {
            current_revision: 8
        }
    ));
    // Compacting at the current revision keeps the latest of each key.
    h.ok(Command::Compact(CompactionRequest {
        revision: 8,
        physical: false,
    }));
    assert_eq!(keys(&at(&h, 8).unwrap()), ["a", "b", "d"]);
    assert_eq!(
        h.get("b").unwrap().version,
        2,
        "versions survive compaction"
    );
    // A watch may start at the compacted revision (etcd: only strictly
    // below is compacted) and sees what is kept there; from 7 it fails.
    let evs = h
        .store
        .reader()
        .events_since(8, b"a", b"\0", 0)
        .unwrap()
        .events;
    assert_eq!(evs.len(), 1);
    assert_eq!(
        (evs[0].kv.value.as_slice(), evs[0].prev_kv.is_none()),
        (&b"new"[..], true)
    );
    assert!(matches!(
        h.store.reader().events_since(7, b"a", b"\0", 0),
        Err(MvccError::Compacted {
            compact_revision: 8
        })
    ));
}

#[test]
fn compaction_of_zero_on_fresh_store_like_etcd() {
    let mut h = Harness::new();
    h.ok(Command::Compact(CompactionRequest {
        revision: 0,
        physical: false,
    }));
    assert_eq!(h.store.compact_revision(), 0);
    assert!(h
        .apply(Command::Compact(CompactionRequest {
            revision: 0,
            physical: false
        }))
        .is_err());
    h.ok(Command::Compact(CompactionRequest {
        revision: 1,
        physical: false,
    }));
}

#[test]
fn delete_range_counts_and_uses_one_revision() {
    let mut h = Harness::new();
    fill(&mut h);
    let out = h.ok(Command::DeleteRange(DeleteRangeRequest {
        key: "b".into(),
        range_end: "\0".into(),
        prev_kv: true,
    }));
    assert_eq!(out.revision, Revision(7));
    assert_eq!(out.events.len(), 3);
    assert!(out.events.iter().all(|e| e.kv.mod_revision == 7));
    let Response::DeleteRange(d) = out.response else {
        panic!()
    };
    assert_eq!((d.deleted, d.revision, d.prev_kvs.len()), (3, 7, 3));
    assert_eq!(d.prev_kvs[0].value, b"0");
    assert_eq!(keys(&h.store.range(&range_req("a", "\0")).unwrap()), ["a"]);
}

#[test]
fn txn_compares_all_targets() {
    let mut h = Harness::new();
    fill(&mut h);
    let check = |h: &mut Harness, c: Compare| {
        h.txn(TxnRequest {
            compare: vec![c],
            ..Default::default()
        })
        .unwrap()
        .succeeded
    };
    use CompareResult::*;
    assert!(check(&mut h, cmp("b", Equal, CompareTarget::Version(2))));
    assert!(check(&mut h, cmp("b", Greater, CompareTarget::Create(2))));
    assert!(check(&mut h, cmp("b", Less, CompareTarget::Mod(6))));
    assert!(check(
        &mut h,
        cmp("b", NotEqual, CompareTarget::Value(b"1".to_vec()))
    ));
    assert!(check(&mut h, cmp("b", Equal, CompareTarget::Lease(0))));
    assert!(!check(&mut h, cmp("b", Equal, CompareTarget::Mod(4))));
    // Missing key: zero for numbers; always false for values.
    assert!(check(&mut h, cmp("zz", Equal, CompareTarget::Create(0))));
    assert!(check(&mut h, cmp("zz", Equal, CompareTarget::Version(0))));
    assert!(!check(
        &mut h,
        cmp("zz", Equal, CompareTarget::Value(vec![]))
    ));
    assert!(!check(
        &mut h,
        cmp("zz", NotEqual, CompareTarget::Value(b"x".to_vec()))
    ));
    // Range compare: every key must hold.
    let mut c = cmp("a", Greater, CompareTarget::Version(0));
    c.range_end = b"\0".to_vec();
    assert!(check(&mut h, c.clone()));
    c.target = CompareTarget::Version(1);
    assert!(!check(&mut h, c));
    assert_eq!(h.rev(), 6, "read-only txns do not bump");
}

#[test]
fn txn_one_revision_and_reads_see_earlier_writes() {
    let mut h = Harness::new();
    fill(&mut h); // rev 6
    let req = TxnRequest {
        compare: vec![cmp(
            "a",
            CompareResult::Equal,
            CompareTarget::Value(b"3".to_vec()),
        )],
        success: vec![
            RequestOp::Range(range_req("x", "")),
            RequestOp::Put(put_req("x", "1")),
            RequestOp::Range(range_req("x", "")),
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: "c".into(),
                ..Default::default()
            }),
            RequestOp::Put(put_req("y", "2")),
        ],
        failure: vec![],
    };
    let out = h.ok(Command::Txn(req));
    assert_eq!(out.revision, Revision(7));
    assert_eq!(
        out.events
            .iter()
            .map(|e| e.kv.mod_revision)
            .collect::<Vec<_>>(),
        [7, 7, 7]
    );
    let Response::Txn(t) = out.response else {
        panic!()
    };
    assert!(t.succeeded);
    assert_eq!(t.revision, 7);
    let ResponseOp::Range(before) = &t.responses[0] else {
        panic!()
    };
    assert_eq!((before.kvs.len(), before.revision), (0, 6));
    let ResponseOp::Put(p) = &t.responses[1] else {
        panic!()
    };
    assert_eq!(p.revision, 7);
    let ResponseOp::Range(after) = &t.responses[2] else {
        panic!()
    };
    assert_eq!(
        (after.kvs[0].value.as_slice(), after.revision),
        (&b"1"[..], 7)
    );
    let ResponseOp::DeleteRange(d) = &t.responses[3] else {
        panic!()
    };
    assert_eq!(d.deleted, 1);
    assert_eq!(h.rev(), 7);
    // A failing compare with an empty failure branch changes nothing.
    let t = h
        .txn(TxnRequest {
            compare: vec![cmp(
                "a",
                CompareResult::Equal,
                CompareTarget::Value(b"nope".to_vec()),
            )],
            success: vec![RequestOp::Put(put_req("z", "1"))],
            failure: vec![],
        })
        .unwrap();
    assert!(!t.succeeded && t.responses.is_empty());
    assert_eq!((t.revision, h.rev()), (7, 7));
    // A txn whose only write deletes nothing does not bump either.
    let t = h
        .txn(TxnRequest {
            success: vec![RequestOp::DeleteRange(DeleteRangeRequest {
                key: "nothing".into(),
                ..Default::default()
            })],
            ..Default::default()
        })
        .unwrap();
    assert_eq!((t.revision, h.rev()), (7, 7));
}

#[test]
fn nested_txn_compares_see_the_pre_txn_state() {
    let mut h = Harness::new();
    h.put("a", "1"); // rev 2
    let nested = TxnRequest {
        // `a` is deleted by the outer txn before this runs, but etcd
        // evaluates every compare against the state before the txn.
        compare: vec![cmp("a", CompareResult::Equal, CompareTarget::Version(1))],
        success: vec![RequestOp::Put(put_req("n", "then"))],
        failure: vec![RequestOp::Put(put_req("n", "else"))],
    };
    let t = h
        .txn(TxnRequest {
            compare: vec![],
            success: vec![
                RequestOp::DeleteRange(DeleteRangeRequest {
                    key: "a".into(),
                    ..Default::default()
                }),
                RequestOp::Txn(nested),
            ],
            failure: vec![],
        })
        .unwrap();
    assert_eq!(t.revision, 3);
    let ResponseOp::Txn(inner) = &t.responses[1] else {
        panic!()
    };
    assert!(inner.succeeded);
    assert_eq!(inner.revision, 0, "etcd leaves nested headers empty");
    assert_eq!(h.get("n").unwrap().value, b"then");
}

#[test]
fn txn_errors_change_nothing() {
    let mut h = Harness::new();
    h.put("a", "1");
    // Lease check runs before any op of the branch.
    let err = h
        .txn(TxnRequest {
            success: vec![
                RequestOp::Put(put_req("x", "1")),
                RequestOp::Put(PutRequest {
                    key: "y".into(),
                    lease: 5,
                    ..Default::default()
                }),
            ],
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err.to_string(), "etcdserver: requested lease not found");
    assert!(h.get("x").is_none());
    // Range revision checks.
    let mut future = range_req("a", "");
    future.revision = 10;
    let err = h
        .txn(TxnRequest {
            success: vec![RequestOp::Range(future)],
            ..Default::default()
        })
        .unwrap_err();
    assert!(matches!(err, MvccError::FutureRevision { .. }));
    // ignore_value is checked against the pre-txn state.
    let err = h
        .txn(TxnRequest {
            success: vec![
                RequestOp::Put(put_req("new", "1")),
                RequestOp::Put(PutRequest {
                    key: "new2".into(),
                    ignore_value: true,
                    ..Default::default()
                }),
            ],
            ..Default::default()
        })
        .unwrap_err();
    assert!(matches!(err, MvccError::KeyNotFound));
    // Duplicate keys are refused (API layer and apply).
    let dup = TxnRequest {
        success: vec![
            RequestOp::Put(put_req("d", "1")),
            RequestOp::Put(put_req("d", "2")),
        ],
        ..Default::default()
    };
    assert!(matches!(
        check::check_txn(&dup, 128),
        Err(MvccError::DuplicateKey)
    ));
    assert_eq!(
        h.txn(dup).unwrap_err().to_string(),
        "etcdserver: duplicate key given in txn request"
    );
    let del_then_put = TxnRequest {
        success: vec![
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: "a".into(),
                range_end: "b".into(),
                prev_kv: false,
            }),
            RequestOp::Put(put_req("a", "2")),
        ],
        ..Default::default()
    };
    assert!(matches!(h.txn(del_then_put), Err(MvccError::DuplicateKey)));
    assert_eq!(h.rev(), 2);
}

#[test]
fn check_txn_follows_etcd() {
    let put = |k: &str| RequestOp::Put(put_req(k, "v"));
    let nested = |s: Vec<RequestOp>, f: Vec<RequestOp>| {
        RequestOp::Txn(TxnRequest {
            compare: vec![],
            success: s,
            failure: f,
        })
    };
    // The same key in then and else of one nested txn is fine.
    let ok = TxnRequest {
        success: vec![nested(vec![put("k")], vec![put("k")])],
        ..Default::default()
    };
    assert!(check::check_txn(&ok, 128).is_ok());
    // A put at the outer level clashing with a nested put is not.
    let bad = TxnRequest {
        success: vec![nested(vec![put("k")], vec![]), put("k")],
        ..Default::default()
    };
    assert!(matches!(
        check::check_txn(&bad, 128),
        Err(MvccError::DuplicateKey)
    ));
    let many = TxnRequest {
        success: (0..129).map(|i| put(&i.to_string())).collect(),
        ..Default::default()
    };
    assert_eq!(
        check::check_txn(&many, 128).unwrap_err().to_string(),
        "etcdserver: too many operations in txn request"
    );
    let empty_cmp = TxnRequest {
        compare: vec![cmp("", CompareResult::Equal, CompareTarget::Version(0))],
        ..Default::default()
    };
    assert!(matches!(
        check::check_txn(&empty_cmp, 128),
        Err(MvccError::EmptyKey)
    ));
}

#[test]
fn leases_grant_attach_revoke_in_one_revision() {
    let mut h = Harness::new();
    let g = h.ok(Command::LeaseGrant(LeaseGrantRequest { id: 42, ttl: 30 }));
    assert_eq!(
        g.response,
        Response::LeaseGrant(LeaseGrantResponse {
            revision: 1,
            id: 42,
            ttl: 30
        })
    );
    let err = h
        .apply(Command::LeaseGrant(LeaseGrantRequest { id: 42, ttl: 30 }))
        .unwrap_err();
    assert_eq!(
        (err.to_string().as_str(), err.grpc_code_name()),
        ("etcdserver: lease already exists", "FailedPrecondition")
    );
    assert!(matches!(
        h.apply(Command::LeaseGrant(LeaseGrantRequest { id: 0, ttl: 30 })),
        Err(MvccError::LeaseNotFound)
    ));
    let err = h
        .apply(Command::LeaseGrant(LeaseGrantRequest {
            id: 1,
            ttl: LEASE_TTL_MAX_SECS + 1,
        }))
        .unwrap_err();
    assert_eq!(err.to_string(), "etcdserver: too large lease TTL");
    for k in ["c", "a", "b"] {
        h.ok(Command::Put(PutRequest {
            key: k.into(),
            value: "v".into(),
            lease: 42,
            ..Default::default()
        }));
    }
    h.put("b", "no lease now"); // detaches b
    h.put("z", "untouched");
    let info = h.store.reader().lease(42).unwrap().unwrap();
    assert_eq!(info.keys, [b"a".to_vec(), b"c".to_vec()]);
    assert_eq!((info.granted_ttl, info.remaining_ttl), (30, 0));
    h.ok(Command::LeaseCheckpoint(LeaseCheckpointRequest {
        checkpoints: vec![
            LeaseCheckpoint {
                id: 42,
                remaining_ttl: 12,
            },
            LeaseCheckpoint {
                id: 9,
                remaining_ttl: 1,
            },
        ],
    }));
    assert_eq!(
        h.store.reader().lease(42).unwrap().unwrap().remaining_ttl,
        12
    );
    let before = h.rev();
    let out = h.ok(Command::LeaseRevoke(LeaseRevokeRequest { id: 42 }));
    assert_eq!(out.revision.get(), before + 1);
    assert_eq!(
        out.response,
        Response::LeaseRevoke(LeaseRevokeResponse {
            revision: before + 1
        })
    );
    let deleted: Vec<_> = out
        .events
        .iter()
        .map(|e| (e.kind, e.kv.key.clone(), e.kv.mod_revision))
        .collect();
    assert_eq!(
        deleted,
        [
            (EventKind::Delete, b"a".to_vec(), before + 1),
            (EventKind::Delete, b"c".to_vec(), before + 1)
        ]
    );
    assert_eq!(
        keys(&h.store.range(&range_req("a", "\0")).unwrap()),
        ["b", "z"]
    );
    assert!(h.store.reader().lease(42).unwrap().is_none());
    assert!(matches!(
        h.apply(Command::LeaseRevoke(LeaseRevokeRequest { id: 42 })),
        Err(MvccError::LeaseNotFound)
    ));
    // Revoking a lease with no keys does not bump the revision.
    h.ok(Command::LeaseGrant(LeaseGrantRequest { id: 43, ttl: 5 }));
    let r = h.rev();
    h.ok(Command::LeaseRevoke(LeaseRevokeRequest { id: 43 }));
    assert_eq!(h.rev(), r);
    assert!(h.store.reader().leases().unwrap().is_empty());
    h.store.reader().verify().unwrap();
}

#[test]
fn deleting_a_leased_key_detaches_it() {
    let mut h = Harness::new();
    h.ok(Command::LeaseGrant(LeaseGrantRequest { id: 1, ttl: 30 }));
    h.ok(Command::Put(PutRequest {
        key: "k".into(),
        lease: 1,
        ..Default::default()
    }));
    h.del("k", "");
    assert!(h.store.reader().lease(1).unwrap().unwrap().keys.is_empty());
    let out = h.ok(Command::LeaseRevoke(LeaseRevokeRequest { id: 1 }));
    assert!(out.events.is_empty());
}

#[test]
fn events_since_reads_history_in_order() {
    let mut h = Harness::new();
    fill(&mut h); // a2 b3 c4 b5 d6
    h.ok(Command::Txn(TxnRequest {
        success: vec![
            RequestOp::Put(put_req("a", "t")),
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: "b".into(),
                ..Default::default()
            }),
        ],
        ..Default::default()
    })); // 7
    let r = h.store.reader();
    let all = r.events_since(1, b"a", b"\0", 0).unwrap();
    let revs: Vec<_> = all.events.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(revs, [2, 3, 4, 5, 6, 7, 7]);
    assert_eq!(all.next_revision, 8);
    let b = r.events_since(4, b"b", b"", 0).unwrap();
    assert_eq!(b.events.len(), 2);
    // History carries no prev_kv (the watch layer reads it with
    // prev_version for watchers that ask); the versions before are these.
    assert!(b.events.iter().all(|e| e.prev_kv.is_none()));
    let prev = |e: &Event| r.prev_version(&e.kv.key, e.kv.mod_revision).unwrap();
    assert_eq!(prev(&b.events[0]).unwrap().value, b"1");
    assert_eq!(b.events[1].kind, EventKind::Delete);
    assert_eq!(prev(&b.events[1]).unwrap().value, b"0");
    let prefix = r.events_since(1, b"b", b"c", 0).unwrap();
    assert_eq!(prefix.events.len(), 3);
    // The limit never splits a revision.
    let first = r.events_since(6, b"a", b"\0", 2).unwrap();
    assert_eq!(first.events.len(), 3);
    assert_eq!(first.next_revision, 8);
    let first = r.events_since(2, b"a", b"\0", 1).unwrap();
    assert_eq!((first.events.len(), first.next_revision), (1, 3));
    let future = r.events_since(100, b"a", b"\0", 0).unwrap();
    assert_eq!(
        (
            future.events.len(),
            future.next_revision,
            future.current_revision
        ),
        (0, 100, 7)
    );
    // Events as returned by apply equal events read back.
    let out = h.ok(Command::Put(put_req("c", "again")));
    let reader = h.store.reader();
    let back = reader
        .events_since(out.revision.get(), b"\0", b"\0", 0)
        .unwrap();
    assert_eq!(back.events, out.events);
    let prev = reader.prev_version(b"c", out.revision.get()).unwrap();
    assert_eq!(prev.unwrap().value, b"2");
}

#[test]
fn hash_kv_is_deterministic_and_checks_revisions() {
    let build = || {
        let mut h = Harness::new();
        fill(&mut h);
        h.del("a", "");
        h
    };
    let (h1, mut h2) = (build(), build());
    let a = h1.store.reader().hash_kv(0).unwrap();
    assert_eq!(a, h2.store.reader().hash_kv(0).unwrap());
    assert_eq!((a.revision, a.compact_revision), (7, -1));
    assert_ne!(a.hash, h1.store.reader().hash_kv(6).unwrap().hash);
    h2.put("x", "y");
    assert_ne!(h2.store.reader().hash_kv(0).unwrap().hash, a.hash);
    assert_eq!(
        h2.store.reader().hash_kv(7).unwrap().hash,
        a.hash,
        "hash at a revision ignores later writes"
    );
    assert!(matches!(
        h1.store.reader().hash_kv(8),
        Err(MvccError::FutureRevision { .. })
    ));
    h2.ok(Command::Compact(CompactionRequest {
        revision: 5,
        physical: true,
    }));
    assert!(matches!(
        h2.store.reader().hash_kv(5),
        Err(MvccError::Compacted { .. })
    ));
    h2.store.reader().hash_kv(6).unwrap();
}

#[test]
fn errors_map_to_grpc_codes() {
    assert_eq!(
        MvccError::Compacted {
            compact_revision: 1
        }
        .grpc_code_name(),
        "OutOfRange"
    );
    assert_eq!(
        MvccError::FutureRevision {
            current_revision: 1
        }
        .grpc_code_name(),
        "OutOfRange"
    );
    assert_eq!(MvccError::DuplicateKey.grpc_code_name(), "InvalidArgument");
    assert_eq!(MvccError::Corrupt("x".into()).grpc_code_name(), "Internal");
    assert!(!MvccError::Corrupt("x".into()).is_request_error());
    assert!(MvccError::KeyNotFound.is_request_error());
}
