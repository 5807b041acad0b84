//! The etcd KV, Cluster and Maintenance APIs of a 3-member Concord cluster,
//! driven by the real `etcd-client` crate. Expected values are etcd 3.4's
//! (revisions start at 1 on an empty cluster; the first write gets 2).

mod support;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, GetResponse, KeyValue, PutOptions,
    SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use std::time::Duration;
use support::{assert_grpc_error, must_wait_for, Cluster};

const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const FUTURE: &str = "etcdserver: mvcc: required revision is a future revision";

/// (key, value, create_revision, mod_revision, version) of a KeyValue.
type Row = (String, String, i64, i64, i64);

fn row(kv: &KeyValue) -> Row {
    (
        String::from_utf8_lossy(kv.key()).into_owned(),
        String::from_utf8_lossy(kv.value()).into_owned(),
        kv.create_revision(),
        kv.mod_revision(),
        kv.version(),
    )
}

fn rows(resp: &GetResponse) -> Vec<Row> {
    resp.kvs().iter().map(row).collect()
}

fn keys(resp: &GetResponse) -> Vec<String> {
    resp.kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect()
}

fn r(key: &str, value: &str, create: i64, modified: i64, version: i64) -> Row {
    (
        key.to_string(),
        value.to_string(),
        create,
        modified,
        version,
    )
}

fn revision_of(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.expect("response has a header").revision()
}

async fn put(client: &mut Client, key: &str, value: &str) -> i64 {
    let resp = client
        .put(key, value, None)
        .await
        .unwrap_or_else(|e| panic!("put {key}={value}: {e}"));
    revision_of(resp.header())
}

async fn get(client: &mut Client, key: &str, options: GetOptions) -> GetResponse {
    client
        .get(key, Some(options))
        .await
        .unwrap_or_else(|e| panic!("get {key:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_supports_every_request_field() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let mut c = cluster.client_all().await;

    // An empty cluster is at revision 1.
    let empty = get(&mut c, "k/", GetOptions::new().with_prefix()).await;
    assert_eq!(
        (empty.count(), empty.kvs().len(), empty.more()),
        (0, 0, false)
    );
    assert_eq!(revision_of(empty.header()), 1, "empty cluster revision");

    // Every write bumps the revision by one; the first gets 2.
    let writes = [
        ("k/a", "3"),
        ("k/b", "1"),
        ("k/c", "2"),
        ("k/a", "4"),
        ("z", "z"),
        ("k/b", "0"),
        ("k/b", "5"),
    ];
    for (n, (key, value)) in writes.iter().enumerate() {
        assert_eq!(
            put(&mut c, key, value).await,
            n as i64 + 2,
            "revision of write {n} ({key})"
        );
    }
    // Now: k/a(c2,m5,v2,"4") k/b(c3,m8,v3,"5") k/c(c4,m4,v1,"2") z(c6,m6,v1)
    let ka = r("k/a", "4", 2, 5, 2);
    let kb = r("k/b", "5", 3, 8, 3);
    let kc = r("k/c", "2", 4, 4, 1);
    let z = r("z", "z", 6, 6, 1);

    let single = get(&mut c, "k/b", GetOptions::new()).await;
    assert_eq!(rows(&single), vec![kb.clone()]);
    assert_eq!((single.count(), single.more()), (1, false));
    assert_eq!(revision_of(single.header()), 8);

    let missing = get(&mut c, "k/nope", GetOptions::new()).await;
    assert_eq!(
        (missing.count(), missing.kvs().len()),
        (0, 0),
        "missing key: {missing:?}"
    );

    let prefix = get(&mut c, "k/", GetOptions::new().with_prefix()).await;
    assert_eq!(rows(&prefix), vec![ka.clone(), kb.clone(), kc.clone()]);
    assert_eq!((prefix.count(), prefix.more()), (3, false));

    // from-key "\0": every key.
    let all = get(&mut c, "\0", GetOptions::new().with_from_key()).await;
    assert_eq!(
        rows(&all),
        vec![ka.clone(), kb.clone(), kc.clone(), z.clone()]
    );
    let all2 = get(&mut c, "", GetOptions::new().with_all_keys()).await;
    assert_eq!(rows(&all2), rows(&all), "with_all_keys vs from-key \\0");
    let from_b = get(&mut c, "k/b", GetOptions::new().with_from_key()).await;
    assert_eq!(keys(&from_b), ["k/b", "k/c", "z"]);
    let interval = get(&mut c, "k/a", GetOptions::new().with_range("k/c")).await;
    assert_eq!(keys(&interval), ["k/a", "k/b"], "[k/a, k/c)");

    // limit: `more` and `count` describe the whole range.
    let limited = get(&mut c, "k/", GetOptions::new().with_prefix().with_limit(2)).await;
    assert_eq!(keys(&limited), ["k/a", "k/b"]);
    assert_eq!((limited.count(), limited.more()), (3, true), "limit 2 of 3");
    let exact = get(&mut c, "k/", GetOptions::new().with_prefix().with_limit(3)).await;
    assert_eq!(
        (exact.kvs().len(), exact.count(), exact.more()),
        (3, 3, false),
        "limit 3 of 3"
    );

    // revision: point-in-time reads; the header carries the current revision.
    let at4 = get(
        &mut c,
        "k/",
        GetOptions::new().with_prefix().with_revision(4),
    )
    .await;
    assert_eq!(
        rows(&at4),
        vec![
            r("k/a", "3", 2, 2, 1),
            r("k/b", "1", 3, 3, 1),
            r("k/c", "2", 4, 4, 1)
        ]
    );
    assert_eq!(
        revision_of(at4.header()),
        8,
        "header revision of a historic read"
    );
    let at7 = get(&mut c, "k/b", GetOptions::new().with_revision(7)).await;
    assert_eq!(rows(&at7), vec![r("k/b", "0", 3, 7, 2)]);
    let at1 = get(
        &mut c,
        "\0",
        GetOptions::new().with_from_key().with_revision(1),
    )
    .await;
    assert_eq!(
        (at1.count(), at1.kvs().len()),
        (0, 0),
        "nothing existed at revision 1"
    );
    let at8 = get(
        &mut c,
        "k/",
        GetOptions::new().with_prefix().with_revision(8),
    )
    .await;
    assert_eq!(rows(&at8), rows(&prefix), "revision = current");

    // Sorting, by every target; sorting happens before the limit.
    let sorted = |target, order| GetOptions::new().with_prefix().with_sort(target, order);
    let cases: Vec<(SortTarget, SortOrder, Vec<&str>)> = vec![
        (
            SortTarget::Key,
            SortOrder::Descend,
            vec!["k/c", "k/b", "k/a"],
        ),
        (
            SortTarget::Key,
            SortOrder::Ascend,
            vec!["k/a", "k/b", "k/c"],
        ),
        (
            SortTarget::Version,
            SortOrder::Ascend,
            vec!["k/c", "k/a", "k/b"],
        ),
        (
            SortTarget::Version,
            SortOrder::Descend,
            vec!["k/b", "k/a", "k/c"],
        ),
        (
            SortTarget::Create,
            SortOrder::Descend,
            vec!["k/c", "k/b", "k/a"],
        ),
        (
            SortTarget::Create,
            SortOrder::Ascend,
            vec!["k/a", "k/b", "k/c"],
        ),
        (
            SortTarget::Mod,
            SortOrder::Ascend,
            vec!["k/c", "k/a", "k/b"],
        ),
        (
            SortTarget::Mod,
            SortOrder::Descend,
            vec!["k/b", "k/a", "k/c"],
        ),
        (
            SortTarget::Value,
            SortOrder::Ascend,
            vec!["k/c", "k/a", "k/b"],
        ),
        (
            SortTarget::Value,
            SortOrder::Descend,
            vec!["k/b", "k/a", "k/c"],
        ),
    ];
    for (target, order, expected) in cases {
        let resp = get(&mut c, "k/", sorted(target, order)).await;
        assert_eq!(keys(&resp), expected, "sort by {target:?} {order:?}");
        let top = get(&mut c, "k/", sorted(target, order).with_limit(1)).await;
        assert_eq!(
            keys(&top),
            expected[..1],
            "sort by {target:?} {order:?} limit 1"
        );
        assert_eq!(
            (top.count(), top.more()),
            (3, true),
            "sort+limit count/more"
        );
    }

    // keys_only and count_only.
    let key_only = get(
        &mut c,
        "k/",
        GetOptions::new().with_prefix().with_keys_only(),
    )
    .await;
    assert_eq!(keys(&key_only), ["k/a", "k/b", "k/c"]);
    assert!(
        key_only
            .kvs()
            .iter()
            .all(|kv| kv.value().is_empty() && kv.mod_revision() > 0),
        "keys_only drops values and keeps metadata: {:?}",
        rows(&key_only)
    );
    let count_only = get(
        &mut c,
        "k/",
        GetOptions::new().with_prefix().with_count_only(),
    )
    .await;
    assert_eq!(
        (count_only.count(), count_only.kvs().len()),
        (3, 0),
        "count_only"
    );

    // min/max mod/create revision filters (count is not filtered, as in etcd).
    let filtered = |o: GetOptions| o.with_prefix();
    let cases: Vec<(GetOptions, Vec<&str>)> = vec![
        (
            filtered(GetOptions::new().with_min_mod_revision(5)),
            vec!["k/a", "k/b"],
        ),
        (
            filtered(GetOptions::new().with_max_mod_revision(5)),
            vec!["k/a", "k/c"],
        ),
        (
            filtered(GetOptions::new().with_min_create_revision(3)),
            vec!["k/b", "k/c"],
        ),
        (
            filtered(GetOptions::new().with_max_create_revision(3)),
            vec!["k/a", "k/b"],
        ),
        (
            filtered(
                GetOptions::new()
                    .with_min_mod_revision(5)
                    .with_max_create_revision(2),
            ),
            vec!["k/a"],
        ),
    ];
    for (options, expected) in cases {
        let label = format!("{options:?}");
        let resp = get(&mut c, "k/", options).await;
        assert_eq!(keys(&resp), expected, "filter {label}");
        assert_eq!(resp.count(), 3, "count ignores filters ({label})");
    }

    // serializable: served locally. On the leader it is current at once; on
    // a follower it converges.
    let mut on_leader = cluster.client(leader).await;
    let local = get(
        &mut on_leader,
        "k/",
        GetOptions::new().with_prefix().with_serializable(),
    )
    .await;
    assert_eq!(rows(&local), rows(&prefix), "serializable on the leader");
    for i in (0..3).filter(|&i| i != leader) {
        let mut follower = cluster.client(i).await;
        let what = format!(
            "serializable read on follower n{} to reach revision 8",
            i + 1
        );
        let resp = must_wait_for(&what, Duration::from_secs(10), || {
            let mut follower = follower.clone();
            async move {
                let resp = follower
                    .get(
                        "k/",
                        Some(GetOptions::new().with_prefix().with_serializable()),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                if revision_of(resp.header()) == 8 {
                    Ok(resp)
                } else {
                    Err(format!("at revision {}", revision_of(resp.header())))
                }
            }
        })
        .await;
        assert_eq!(
            rows(&resp),
            rows(&prefix),
            "serializable on follower n{}",
            i + 1
        );
        let header = resp.header().expect("header");
        assert_ne!(header.member_id(), 0);
        // Linearizable reads on a follower see the latest write immediately.
        let linear = get(&mut follower, "z", GetOptions::new()).await;
        assert_eq!(rows(&linear), vec![z.clone()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_and_delete_options() {
    let cluster = Cluster::start(3).await;
    let mut c = cluster.client_all().await;

    // prev_kv: absent on creation, the old pair afterwards.
    let first = c
        .put("p", "1", Some(PutOptions::new().with_prev_key()))
        .await
        .expect("put p=1");
    assert!(
        first.prev_key().is_none(),
        "no prev_kv on creation: {first:?}"
    );
    assert_eq!(revision_of(first.header()), 2);
    let second = c
        .put("p", "2", Some(PutOptions::new().with_prev_key()))
        .await
        .expect("put p=2");
    assert_eq!(second.prev_key().map(row), Some(r("p", "1", 2, 2, 1)));
    assert_eq!(revision_of(second.header()), 3);
    let plain = c.put("p", "3", None).await.expect("put p=3");
    assert!(plain.prev_key().is_none(), "prev_kv only when asked");

    // ignore_value: keeps the value, bumps version and mod revision.
    let kept = c
        .put(
            "p",
            "",
            Some(PutOptions::new().with_ignore_value().with_prev_key()),
        )
        .await
        .expect("put ignore_value");
    assert_eq!(revision_of(kept.header()), 5);
    assert_eq!(kept.prev_key().map(row), Some(r("p", "3", 2, 4, 3)));
    let now = get(&mut c, "p", GetOptions::new()).await;
    assert_eq!(
        rows(&now),
        vec![r("p", "3", 2, 5, 4)],
        "ignore_value keeps the value"
    );

    // ignore_lease: keeps the (zero) lease and sets the value.
    let lease_kept = c
        .put("p", "4", Some(PutOptions::new().with_ignore_lease()))
        .await
        .expect("put ignore_lease");
    assert_eq!(revision_of(lease_kept.header()), 6);
    let now = get(&mut c, "p", GetOptions::new()).await;
    assert_eq!(rows(&now), vec![r("p", "4", 2, 6, 5)]);
    assert_eq!(now.kvs()[0].lease(), 0);

    // The ignore_* flags on a missing key, or with the field they ignore.
    assert_grpc_error(
        c.put("absent", "", Some(PutOptions::new().with_ignore_value()))
            .await,
        "InvalidArgument",
        "etcdserver: key not found",
    );
    assert_grpc_error(
        c.put("absent", "x", Some(PutOptions::new().with_ignore_lease()))
            .await,
        "InvalidArgument",
        "etcdserver: key not found",
    );
    assert_grpc_error(
        c.put("p", "x", Some(PutOptions::new().with_ignore_value()))
            .await,
        "InvalidArgument",
        "etcdserver: value is provided",
    );
    assert_grpc_error(
        c.put(
            "p",
            "x",
            Some(PutOptions::new().with_ignore_lease().with_lease(5)),
        )
        .await,
        "InvalidArgument",
        "etcdserver: lease is provided",
    );
    let still = get(&mut c, "", GetOptions::new().with_all_keys()).await;
    assert_eq!(
        revision_of(still.header()),
        6,
        "refused puts change nothing"
    );
    assert_eq!(rows(&still), vec![r("p", "4", 2, 6, 5)]);

    // An empty value is a value.
    assert_eq!(put(&mut c, "empty", "").await, 7);
    let empty = get(&mut c, "empty", GetOptions::new()).await;
    assert_eq!(rows(&empty), vec![r("empty", "", 7, 7, 1)]);

    // DeleteRange: one revision for the whole range, prev_kv on request.
    for (n, key) in ["d/1", "d/2", "d/3", "e"].iter().enumerate() {
        assert_eq!(put(&mut c, key, key).await, 8 + n as i64);
    }
    let deleted = c
        .delete(
            "d/",
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .expect("delete d/ prefix");
    assert_eq!(deleted.deleted(), 3);
    assert_eq!(revision_of(deleted.header()), 12, "one revision per delete");
    let prev: Vec<Row> = deleted.prev_kvs().iter().map(row).collect();
    assert_eq!(
        prev,
        vec![
            r("d/1", "d/1", 8, 8, 1),
            r("d/2", "d/2", 9, 9, 1),
            r("d/3", "d/3", 10, 10, 1)
        ]
    );
    let gone = get(&mut c, "d/", GetOptions::new().with_prefix()).await;
    assert_eq!(gone.count(), 0);

    // Deleting nothing does not make a revision.
    let nothing = c
        .delete("d/", Some(DeleteOptions::new().with_prefix()))
        .await
        .expect("delete empty range");
    assert_eq!((nothing.deleted(), revision_of(nothing.header())), (0, 12));

    // Without prev_kv no pairs come back; from-key deletes to the end:
    // "e", "empty" and "p".
    let quiet = c
        .delete("e", Some(DeleteOptions::new().with_from_key()))
        .await
        .expect("delete from e");
    assert_eq!((quiet.deleted(), quiet.prev_kvs().len()), (3, 0));
    assert_eq!(revision_of(quiet.header()), 13);
    let none_left = get(&mut c, "\0", GetOptions::new().with_from_key()).await;
    assert_eq!(rows(&none_left), vec![], "nothing is left");

    // Re-creating a deleted key starts a new life: new create revision,
    // version 1; history still shows the old life.
    assert_eq!(put(&mut c, "p", "again").await, 14);
    let reborn = get(&mut c, "p", GetOptions::new()).await;
    assert_eq!(rows(&reborn), vec![r("p", "again", 14, 14, 1)]);
    let old = get(&mut c, "p", GetOptions::new().with_revision(12)).await;
    assert_eq!(rows(&old), vec![r("p", "4", 2, 6, 5)]);
    let dead = get(&mut c, "p", GetOptions::new().with_revision(13)).await;
    assert_eq!(dead.count(), 0, "deleted at 13");
    let single = c.delete("p", None).await.expect("delete p");
    assert_eq!((single.deleted(), revision_of(single.header())), (1, 15));
}

async fn txn(client: &mut Client, txn: Txn) -> TxnResponse {
    let label = format!("{txn:?}");
    client
        .txn(txn)
        .await
        .unwrap_or_else(|e| panic!("txn {label}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_compares_branches_and_nesting() {
    let cluster = Cluster::start(3).await;
    let mut c = cluster.client_all().await;
    assert_eq!(put(&mut c, "t/a", "10").await, 2);
    assert_eq!(put(&mut c, "t/a", "20").await, 3);
    // t/a: value "20", version 2, create 2, mod 3, lease 0.

    use CompareOp::{Equal, Greater, Less, NotEqual};
    let mut cases: Vec<(Compare, bool)> = Vec::new();
    for (op, yes, no) in [
        (Equal, "20", "10"),
        (Greater, "1", "3"),
        (Less, "3", "1"),
        (NotEqual, "10", "20"),
    ] {
        cases.push((Compare::value("t/a", op, yes), true));
        cases.push((Compare::value("t/a", op, no), false));
    }
    type Make = fn(&'static str, CompareOp, i64) -> Compare;
    let ints: [(Make, i64); 4] = [
        (|k, op, v| Compare::version(k, op, v), 2),
        (|k, op, v| Compare::create_revision(k, op, v), 2),
        (|k, op, v| Compare::mod_revision(k, op, v), 3),
        (|k, op, v| Compare::lease(k, op, v), 0),
    ];
    for (make, actual) in ints {
        for (op, yes, no) in [
            (Equal, actual, actual + 1),
            (Greater, actual - 1, actual),
            (Less, actual + 1, actual),
            (NotEqual, actual + 1, actual),
        ] {
            cases.push((make("t/a", op, yes), true));
            cases.push((make("t/a", op, no), false));
        }
    }
    // A missing key has version, create, mod and lease 0, and every VALUE
    // compare on it fails (etcd cannot tell a missing value from "").
    cases.push((Compare::version("t/missing", Equal, 0), true));
    cases.push((Compare::create_revision("t/missing", Equal, 0), true));
    cases.push((Compare::mod_revision("t/missing", Less, 1), true));
    cases.push((Compare::lease("t/missing", Equal, 0), true));
    cases.push((Compare::value("t/missing", Equal, ""), false));
    cases.push((Compare::value("t/missing", NotEqual, "x"), false));
    for (compare, expected) in cases {
        let label = format!("{compare:?}");
        let resp = txn(
            &mut c,
            Txn::new()
                .when([compare])
                .and_then([TxnOp::get("t/a", None)])
                .or_else([TxnOp::get("t/missing", None)]),
        )
        .await;
        assert_eq!(resp.succeeded(), expected, "compare {label}");
        assert_eq!(
            revision_of(resp.header()),
            3,
            "a read-only txn makes no revision ({label})"
        );
        let responses = resp.op_responses();
        match responses.as_slice() {
            [TxnOpResponse::Get(g)] => {
                let expected_keys: &[&str] = if expected { &["t/a"] } else { &[] };
                assert_eq!(keys(g), expected_keys, "branch read for {label}");
            }
            other => panic!("one Get response expected for {label}, got {other:?}"),
        }
    }

    // Compares over a range: every key in it must satisfy the compare.
    assert_eq!(put(&mut c, "t/b", "x").await, 4);
    let all_v2 = txn(
        &mut c,
        Txn::new().when([Compare::version("t/", Equal, 2).with_prefix()]),
    )
    .await;
    assert!(!all_v2.succeeded(), "t/b has version 1");
    let all_pos = txn(
        &mut c,
        Txn::new().when([Compare::version("t/", Greater, 0).with_prefix()]),
    )
    .await;
    assert!(all_pos.succeeded(), "every t/ key has version > 0");
    // Several compares are ANDed.
    let both = txn(
        &mut c,
        Txn::new().when([
            Compare::value("t/a", Equal, "20"),
            Compare::value("t/b", Equal, "y"),
        ]),
    )
    .await;
    assert!(!both.succeeded(), "second compare is false");

    // Success branch: several writes, one revision, reads see the txn's own
    // writes; a delete inside too.
    let cas = Txn::new()
        .when([Compare::value("t/a", Equal, "20")])
        .and_then([
            TxnOp::put("t/a", "30", Some(PutOptions::new().with_prev_key())),
            TxnOp::put("t/c", "c", None),
            TxnOp::get("t/", Some(GetOptions::new().with_prefix())),
            TxnOp::delete("t/b", Some(DeleteOptions::new().with_prev_key())),
        ])
        .or_else([TxnOp::put("t/else", "e", None)]);
    let ok = txn(&mut c, cas.clone()).await;
    assert!(ok.succeeded());
    assert_eq!(revision_of(ok.header()), 5, "the whole txn is one revision");
    match ok.op_responses().as_slice() {
        [TxnOpResponse::Put(p1), TxnOpResponse::Put(p2), TxnOpResponse::Get(g), TxnOpResponse::Delete(d)] =>
        {
            assert_eq!(p1.prev_key().map(row), Some(r("t/a", "20", 2, 3, 2)));
            assert!(p2.prev_key().is_none());
            assert_eq!(
                rows(g),
                vec![
                    r("t/a", "30", 2, 5, 3),
                    r("t/b", "x", 4, 4, 1),
                    r("t/c", "c", 5, 5, 1)
                ]
            );
            assert_eq!(d.deleted(), 1);
            assert_eq!(
                d.prev_kvs().iter().map(row).collect::<Vec<_>>(),
                vec![r("t/b", "x", 4, 4, 1)]
            );
            // etcd fills only the revision in the headers of responses
            // inside a txn; the txn's own header names member and term.
            let nested = [p1.header(), p2.header(), g.header(), d.header()];
            for (n, header) in nested.into_iter().enumerate() {
                let header = header.unwrap_or_else(|| panic!("nested response {n} has no header"));
                assert_eq!(
                    (
                        header.revision(),
                        header.cluster_id(),
                        header.member_id(),
                        header.raft_term()
                    ),
                    (5, 0, 0, 0),
                    "header of nested response {n}"
                );
            }
        }
        other => panic!("unexpected success responses: {other:?}"),
    }
    // The same CAS again fails and runs the failure branch.
    let failed = txn(&mut c, cas).await;
    assert!(!failed.succeeded());
    assert_eq!(revision_of(failed.header()), 6);
    assert!(matches!(
        failed.op_responses().as_slice(),
        [TxnOpResponse::Put(_)]
    ));
    let state = get(&mut c, "t/", GetOptions::new().with_prefix()).await;
    assert_eq!(
        rows(&state),
        vec![
            r("t/a", "30", 2, 5, 3),
            r("t/c", "c", 5, 5, 1),
            r("t/else", "e", 6, 6, 1)
        ]
    );

    // A read before the txn's first write sees the revision before it; a
    // read after it sees the txn's revision (etcd's nested header revision).
    let ordered = txn(
        &mut c,
        Txn::new().and_then([
            TxnOp::get("t/c", None),
            TxnOp::put("t/c", "c2", None),
            TxnOp::get("t/c", None),
            TxnOp::delete("t/none", None),
        ]),
    )
    .await;
    assert_eq!(revision_of(ordered.header()), 7);
    let nested_revisions: Vec<i64> = ordered
        .op_responses()
        .iter()
        .map(|op| match op {
            TxnOpResponse::Get(x) => revision_of(x.header()),
            TxnOpResponse::Put(x) => revision_of(x.header()),
            TxnOpResponse::Delete(x) => revision_of(x.header()),
            TxnOpResponse::Txn(x) => x.header().map_or(0, |h| h.revision()),
        })
        .collect();
    assert_eq!(nested_revisions, [6, 7, 7, 7], "nested header revisions");

    // Nested txn: the outer succeeds, the inner fails; one revision.
    let inner = Txn::new()
        .when([Compare::value("t/c", Equal, "nope")])
        .and_then([TxnOp::put("t/n", "yes", None)])
        .or_else([TxnOp::put("t/n", "no", None), TxnOp::get("t/n", None)]);
    let outer = Txn::new()
        .when([Compare::create_revision("t/a", Equal, 2)])
        .and_then([TxnOp::txn(inner), TxnOp::get("t/a", None)]);
    let nested = txn(&mut c, outer).await;
    assert!(nested.succeeded());
    assert_eq!(revision_of(nested.header()), 8);
    match nested.op_responses().as_slice() {
        [TxnOpResponse::Txn(t), TxnOpResponse::Get(g)] => {
            assert!(!t.succeeded(), "inner compare is false");
            // etcd leaves a nested txn's header empty.
            assert_eq!(
                t.header().map(|h| h.revision()).unwrap_or(0),
                0,
                "nested txn header"
            );
            match t.op_responses().as_slice() {
                [TxnOpResponse::Put(_), TxnOpResponse::Get(inner_get)] => {
                    assert_eq!(rows(inner_get), vec![r("t/n", "no", 8, 8, 1)]);
                }
                other => panic!("unexpected inner responses: {other:?}"),
            }
            assert_eq!(rows(g), vec![r("t/a", "30", 2, 5, 3)]);
        }
        other => panic!("unexpected nested responses: {other:?}"),
    }

    // No compares: the success branch runs. An empty txn changes nothing.
    let unconditional = txn(&mut c, Txn::new().and_then([TxnOp::put("t/u", "u", None)])).await;
    assert!(unconditional.succeeded());
    assert_eq!(revision_of(unconditional.header()), 9);
    let empty = txn(&mut c, Txn::new()).await;
    assert!(empty.succeeded());
    assert_eq!(
        revision_of(empty.header()),
        9,
        "an empty txn makes no revision"
    );
    // A txn whose branch writes nothing makes no revision either.
    let no_write = txn(
        &mut c,
        Txn::new()
            .when([Compare::value("t/a", Equal, "nope")])
            .and_then([TxnOp::put("t/x", "x", None)])
            .or_else([TxnOp::delete("t/none", None)]),
    )
    .await;
    assert!(!no_write.succeeded());
    assert_eq!(
        revision_of(no_write.header()),
        9,
        "deleting nothing in a txn makes no revision"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_and_revision_errors() {
    let cluster = Cluster::start(3).await;
    let mut c = cluster.client_all().await;
    for n in 1..=5 {
        assert_eq!(put(&mut c, "c/k", &format!("v{n}")).await, n + 1);
    }
    // Revisions 2..=6 hold v1..=v5.
    assert_grpc_error(
        c.get("c/k", Some(GetOptions::new().with_revision(7))).await,
        "OutOfRange",
        FUTURE,
    );

    let compacted = c.compact(4, None).await.expect("compact 4");
    assert_eq!(
        revision_of(compacted.header()),
        6,
        "compaction makes no revision"
    );
    assert_grpc_error(
        c.get("c/k", Some(GetOptions::new().with_revision(3))).await,
        "OutOfRange",
        COMPACTED,
    );
    assert_grpc_error(
        c.get("c/k", Some(GetOptions::new().with_revision(1))).await,
        "OutOfRange",
        COMPACTED,
    );
    let at4 = get(&mut c, "c/k", GetOptions::new().with_revision(4)).await;
    assert_eq!(
        rows(&at4),
        vec![r("c/k", "v3", 2, 4, 3)],
        "the compaction revision stays readable"
    );
    let at6 = get(&mut c, "c/k", GetOptions::new().with_revision(6)).await;
    assert_eq!(rows(&at6), vec![r("c/k", "v5", 2, 6, 5)]);
    assert_grpc_error(
        c.get("c/k", Some(GetOptions::new().with_revision(7))).await,
        "OutOfRange",
        FUTURE,
    );
    // Current reads are unaffected; revision 0 means current.
    let now = get(&mut c, "c/k", GetOptions::new().with_revision(0)).await;
    assert_eq!(rows(&now), vec![r("c/k", "v5", 2, 6, 5)]);

    // Compacting at or below the compaction point, or in the future.
    assert_grpc_error(c.compact(4, None).await, "OutOfRange", COMPACTED);
    assert_grpc_error(c.compact(2, None).await, "OutOfRange", COMPACTED);
    assert_grpc_error(c.compact(7, None).await, "OutOfRange", FUTURE);
    // Inside a txn the same errors apply to reads.
    assert_grpc_error(
        c.txn(Txn::new().and_then([TxnOp::get("c/k", Some(GetOptions::new().with_revision(3)))]))
            .await,
        "OutOfRange",
        COMPACTED,
    );

    // The next write still gets the next revision.
    assert_eq!(put(&mut c, "c/k", "v6").await, 7);
    let physical = c
        .compact(
            7,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .expect("physical compaction to the current revision");
    assert_eq!(revision_of(physical.header()), 7);
    assert_grpc_error(
        c.get("c/k", Some(GetOptions::new().with_revision(6))).await,
        "OutOfRange",
        COMPACTED,
    );
    let last = get(&mut c, "c/k", GetOptions::new()).await;
    assert_eq!(
        rows(&last),
        vec![r("c/k", "v6", 2, 7, 6)],
        "compaction keeps the latest version"
    );

    // Every member applied the compaction: HashKV agrees and reports it.
    // (HashKV at or below the compaction revision is refused, as in etcd.)
    assert_grpc_error(c.hash_kv(7).await, "OutOfRange", COMPACTED);
    let mut hashes = Vec::new();
    for i in 0..3 {
        let member = cluster.client(i).await;
        let what = format!("n{} to apply compaction at 7", i + 1);
        let hash = must_wait_for(&what, Duration::from_secs(10), || {
            let mut member = member.clone();
            async move {
                let h = member.hash_kv(0).await.map_err(|e| e.to_string())?;
                let at = revision_of(h.header());
                if h.compact_version() == 7 && at == 7 {
                    Ok(h.hash())
                } else {
                    Err(format!(
                        "compact revision {} at revision {at}",
                        h.compact_version()
                    ))
                }
            }
        })
        .await;
        hashes.push(hash);
        // Historic reads through this very member are refused too.
        let mut member = member.clone();
        assert_grpc_error(
            member
                .get(
                    "c/k",
                    Some(GetOptions::new().with_revision(5).with_serializable()),
                )
                .await,
            "OutOfRange",
            COMPACTED,
        );
    }
    assert!(
        hashes.windows(2).all(|w| w[0] == w[1]),
        "HashKV differs between members: {hashes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_members_and_forwarded_writes() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let ids = cluster.member_ids().await;
    assert!(ids.iter().all(|&id| id != 0), "member ids: {ids:x?}");
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "member ids must differ: {ids:x?}");

    // MemberList, asked of every member: same three members with names and
    // URLs (client URLs are published by each member once it has a leader).
    type MemberRow = (u64, String, Vec<String>, Vec<String>, bool);
    let expected: Vec<MemberRow> = cluster
        .members
        .iter()
        .enumerate()
        .map(|(j, m)| {
            (
                ids[j],
                m.name.clone(),
                vec![m.peer_url()],
                vec![m.client_url()],
                false,
            )
        })
        .collect();
    let mut cluster_ids = Vec::new();
    for (i, &id) in ids.iter().enumerate() {
        let client = cluster.client(i).await;
        let what = format!("n{} to list every member with its attributes", i + 1);
        let expected = &expected;
        let list = must_wait_for(&what, Duration::from_secs(10), move || {
            let mut client = client.clone();
            async move {
                let list = client.member_list().await.map_err(|e| e.to_string())?;
                let mut got: Vec<MemberRow> = list
                    .members()
                    .iter()
                    .map(|m| {
                        let urls = (m.peer_urls().to_vec(), m.client_urls().to_vec());
                        (m.id(), m.name().to_string(), urls.0, urls.1, m.is_learner())
                    })
                    .collect();
                got.sort_by(|a, b| a.1.cmp(&b.1));
                if &got == expected {
                    Ok(list)
                } else {
                    Err(format!("{got:?}"))
                }
            }
        })
        .await;
        let header = list.header().expect("member list header");
        assert_eq!(
            header.member_id(),
            id,
            "MemberList header names the member that answered"
        );
        cluster_ids.push(header.cluster_id());
    }
    assert!(
        cluster_ids[0] != 0 && cluster_ids.iter().all(|&c| c == cluster_ids[0]),
        "cluster ids {cluster_ids:x?}"
    );

    // Writes through each member, followers included (forwarded to the
    // leader); headers name the answering member, the cluster and the term.
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let mut expected_revision = 1;
    for &i in followers.iter().chain([leader].iter()) {
        let mut client = cluster.client(i).await;
        let key = format!("via/n{}", i + 1);
        let status = client.status().await.expect("status");
        let resp = client
            .put(key.as_str(), "x", None)
            .await
            .unwrap_or_else(|e| panic!("put via n{}: {e}", i + 1));
        expected_revision += 1;
        let header = resp.header().expect("put header");
        assert_eq!(header.revision(), expected_revision, "put via n{}", i + 1);
        assert_eq!(
            header.member_id(),
            ids[i],
            "put header member id via n{}",
            i + 1
        );
        assert_eq!(header.cluster_id(), cluster_ids[0]);
        assert!(
            header.raft_term() >= status.raft_term() && header.raft_term() > 0,
            "raft term {header:?}"
        );
        assert_eq!(
            status.leader(),
            ids[leader],
            "status of n{} names the leader",
            i + 1
        );

        // A delete and a txn through the same member.
        let txn = client
            .txn(Txn::new().and_then([TxnOp::put(format!("{key}/txn"), "t", None)]))
            .await
            .expect("txn via member");
        expected_revision += 1;
        assert_eq!(
            (
                txn.header().unwrap().revision(),
                txn.header().unwrap().member_id()
            ),
            (expected_revision, ids[i])
        );
        let del = client
            .delete(format!("{key}/txn"), None)
            .await
            .expect("delete via member");
        expected_revision += 1;
        assert_eq!(
            (del.deleted(), del.header().unwrap().revision()),
            (1, expected_revision)
        );

        // Every member's linearizable read sees the write at once.
        for (j, &reader_id) in ids.iter().enumerate() {
            let mut reader = cluster.client(j).await;
            let got = get(&mut reader, &key, GetOptions::new()).await;
            assert_eq!(
                rows(&got),
                vec![r(
                    &key,
                    "x",
                    expected_revision - 2,
                    expected_revision - 2,
                    1
                )],
                "n{} reading {key}",
                j + 1
            );
            let header = got.header().expect("range header");
            assert_eq!(header.member_id(), reader_id);
            assert_eq!(header.revision(), expected_revision);
        }
    }

    // Status of every member: version, leader, indexes, term.
    for i in 0..3 {
        let status = cluster.status(i).await.expect("status");
        assert_eq!(status.version(), "3.4.23");
        assert_eq!(status.leader(), ids[leader]);
        // Each member served a linearizable read of every write above.
        assert!(
            status.raft_index() > 0 && status.raft_applied_index() > 0,
            "raft indexes of n{}: {status:?}",
            i + 1
        );
        assert!(status.db_size() > 0, "db size of n{}", i + 1);
        assert!(!status.is_learner());
        let header = status.header().expect("status header");
        assert_eq!(
            (header.member_id(), header.cluster_id()),
            (ids[i], cluster_ids[0])
        );
        assert!(header.raft_term() > 0);
    }

    // Alarm list is empty; HashKV agrees everywhere once applied.
    let mut c = cluster.client(leader).await;
    let alarms = c
        .alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None,
        )
        .await
        .expect("alarm list");
    assert!(alarms.alarms().is_empty(), "no alarms: {alarms:?}");
    let leader_hash = c.hash_kv(expected_revision).await.expect("hashkv").hash();
    for i in followers {
        let member = cluster.client(i).await;
        let what = format!("HashKV of n{} to match the leader's", i + 1);
        must_wait_for(&what, Duration::from_secs(10), || {
            let mut member = member.clone();
            async move {
                let h = member
                    .hash_kv(expected_revision)
                    .await
                    .map_err(|e| e.to_string())?
                    .hash();
                if h == leader_hash {
                    Ok(())
                } else {
                    Err(format!("{h} vs {leader_hash}"))
                }
            }
        })
        .await;
    }

    // MoveLeader to a follower: the cluster follows, and writes still work.
    let target = (leader + 1) % 3;
    c.move_leader(ids[target]).await.expect("move leader");
    let cl = &cluster;
    let target_id = ids[target];
    let new_leader = must_wait_for(
        "leadership to move",
        Duration::from_secs(10),
        move || async move {
            let status = cl.status(target).await.map_err(|e| e.to_string())?;
            if status.leader() == target_id {
                Ok(target)
            } else {
                Err(format!("leader is {:x}", status.leader()))
            }
        },
    )
    .await;
    let mut c = cluster.client(new_leader).await;
    assert_eq!(put(&mut c, "after-move", "x").await, expected_revision + 1);
}
