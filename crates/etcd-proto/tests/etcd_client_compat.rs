//! The real `etcd-client` crate (0.21, generated from etcd's own protos)
//! against servers generated from Concord's protos. Every call crossing the
//! wire here proves the full gRPC path `/<package>.<Service>/<Method>` and
//! the field numbers of the messages involved.
//!
//! Opt-in, because `etcd-client`'s build script needs a `protoc`:
//!
//! ```sh
//! cargo install protox --features bin   # or: apt-get install protobuf-compiler
//! PROTOC=$(command -v protox) cargo test -p concord-etcd-proto --features etcd-client-compat
//! ```

mod common;

use std::time::Duration;

use common::{MiniEtcd, CLUSTER_ID, MEMBER_ID};
use etcd_client::{
    AlarmAction, AlarmType, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType,
    GetOptions, LeaderKey, LeaseTimeToLiveOptions, LockOptions, MemberAddOptions, Permission,
    PermissionType, ProclaimOptions, PutOptions, ResignOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

async fn start() -> (MiniEtcd, Client, String) {
    let server = MiniEtcd::default();
    let addr = server.serve().await;
    let endpoint = format!("http://{addr}");
    let client = Client::connect([endpoint.as_str()], None).await.unwrap();
    (server, client, endpoint)
}

#[tokio::test]
async fn kv_through_etcd_client() {
    let (_server, mut c, _) = start().await;

    let put = c.put("foo", "bar", None).await.unwrap();
    let h = put.header().unwrap();
    assert_eq!(
        (h.cluster_id(), h.member_id(), h.revision(), h.raft_term()),
        (CLUSTER_ID, MEMBER_ID, 2, 1)
    );
    c.put("foo/1", "x", None).await.unwrap();
    c.put("foo/2", "y", None).await.unwrap();
    let prev = c
        .put("foo", "baz", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(prev.prev_key().unwrap().value(), b"bar");

    let got = c.get("foo", None).await.unwrap();
    let kv = &got.kvs()[0];
    assert_eq!((kv.key(), kv.value()), (&b"foo"[..], &b"baz"[..]));
    assert_eq!(
        (kv.create_revision(), kv.mod_revision(), kv.version()),
        (2, 5, 2)
    );

    let prefixed = c
        .get(
            "foo/",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_limit(1)
                    .with_keys_only(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(prefixed.count(), 2);
    assert!(prefixed.more());
    assert_eq!(prefixed.kvs().len(), 1);
    assert_eq!(prefixed.kvs()[0].key(), b"foo/1");
    assert!(prefixed.kvs()[0].value().is_empty());

    // Txn: CAS on the value, with a put and a get in the success branch.
    let txn = Txn::new()
        .when([Compare::value("foo", CompareOp::Equal, "baz")])
        .and_then([
            TxnOp::put("foo", "qux", None),
            TxnOp::get("foo/", Some(GetOptions::new().with_prefix())),
        ])
        .or_else([TxnOp::get("foo", None)]);
    let r = c.txn(txn).await.unwrap();
    assert!(r.succeeded());
    let ops = r.op_responses();
    assert!(matches!(ops[0], TxnOpResponse::Put(_)));
    match &ops[1] {
        TxnOpResponse::Get(g) => assert_eq!(g.count(), 2),
        other => panic!("unexpected {other:?}"),
    }
    let stale = Txn::new()
        .when([Compare::mod_revision("foo", CompareOp::Less, 2)])
        .and_then([TxnOp::delete("foo", None)])
        .or_else([TxnOp::get("foo", None)]);
    let r = c.txn(stale).await.unwrap();
    assert!(!r.succeeded());
    match &r.op_responses()[0] {
        TxnOpResponse::Get(g) => assert_eq!(g.kvs()[0].value(), b"qux"),
        other => panic!("unexpected {other:?}"),
    }

    let del = c
        .delete(
            "foo/",
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    assert_eq!(del.deleted(), 2);
    assert_eq!(del.prev_kvs().len(), 2);

    c.compact(2, None).await.unwrap();
    let err = c.compact(10_000, None).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("etcdserver: mvcc: required revision is a future revision"),
        "{err}"
    );
}

#[tokio::test]
async fn watch_through_etcd_client() {
    let (_server, mut c, _) = start().await;
    let mut stream = c
        .watch(
            "w/",
            Some(WatchOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    let created = timeout(T, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(created.created());
    let id = created.watch_id();

    c.put("w/a", "1", None).await.unwrap();
    c.put("w/a", "2", None).await.unwrap();
    c.delete("w/a", None).await.unwrap();
    c.put("other", "x", None).await.unwrap();

    let mut seen = Vec::new();
    while seen.len() < 3 {
        let resp = timeout(T, stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(resp.watch_id(), id);
        for ev in resp.events() {
            let kv = ev.kv().unwrap();
            seen.push((
                ev.event_type(),
                kv.value().to_vec(),
                kv.mod_revision(),
                ev.prev_kv().map(|p| p.value().to_vec()),
            ));
        }
    }
    assert_eq!(
        seen,
        [
            (EventType::Put, b"1".to_vec(), 2, None),
            (EventType::Put, b"2".to_vec(), 3, Some(b"1".to_vec())),
            (EventType::Delete, Vec::new(), 4, Some(b"2".to_vec())),
        ]
    );

    stream.request_progress().await.unwrap();
    let progress = timeout(T, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(progress.watch_id(), -1);
    assert_eq!(progress.header().unwrap().revision(), 5);

    stream.cancel(id).await.unwrap();
    let canceled = timeout(T, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(canceled.canceled());
}

#[tokio::test]
async fn lease_through_etcd_client() {
    let (_server, mut c, _) = start().await;
    let grant = c.lease_grant(30, None).await.unwrap();
    let id = grant.id();
    assert_eq!(grant.ttl(), 30);
    c.put("leased", "v", Some(PutOptions::new().with_lease(id)))
        .await
        .unwrap();
    assert_eq!(c.get("leased", None).await.unwrap().kvs()[0].lease(), id);

    let (mut keeper, mut responses) = c.lease_keep_alive(id).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let ka = timeout(T, responses.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((ka.id(), ka.ttl()), (id, 30));

    let ttl = c
        .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!(ttl.granted_ttl(), 30);
    assert_eq!(ttl.keys(), [b"leased".to_vec()]);

    let leases = c.leases().await.unwrap();
    assert_eq!(leases.leases().len(), 1);
    assert_eq!(leases.leases()[0].id(), id);

    c.lease_revoke(id).await.unwrap();
    assert_eq!(c.get("leased", None).await.unwrap().count(), 0);
    let err = c.lease_revoke(id).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("etcdserver: requested lease not found"),
        "{err}"
    );
}

#[tokio::test]
async fn cluster_and_maintenance_through_etcd_client() {
    let (_server, mut c, _) = start().await;

    let list = c.member_list().await.unwrap();
    let m = &list.members()[0];
    assert_eq!(
        (m.id(), m.name(), m.is_learner()),
        (MEMBER_ID, "mini", false)
    );
    assert_eq!(m.peer_urls(), ["http://127.0.0.1:2380"]);
    assert_eq!(m.client_urls(), ["http://127.0.0.1:2379"]);

    let added = c
        .member_add(
            ["http://127.0.0.2:2380"],
            Some(MemberAddOptions::new().with_is_learner()),
        )
        .await
        .unwrap();
    let new = added.member().unwrap();
    assert!(new.is_learner());
    assert_eq!(added.member_list().len(), 2);
    let new_id = new.id();
    let promoted = c.member_promote(new_id).await.unwrap();
    assert!(promoted.members().iter().all(|m| !m.is_learner()));
    let updated = c
        .member_update(new_id, vec!["http://127.0.0.3:2380".to_string()])
        .await
        .unwrap();
    assert!(updated
        .members()
        .iter()
        .any(|m| m.peer_urls() == ["http://127.0.0.3:2380"]));
    assert_eq!(c.member_remove(new_id).await.unwrap().members().len(), 1);

    let st = c.status().await.unwrap();
    assert_eq!(st.version(), "3.4.0");
    assert_eq!((st.db_size(), st.raft_used_db_size()), (4096, 2048));
    assert_eq!(st.leader(), MEMBER_ID);
    assert!(!st.is_learner());

    let alarms = c
        .alarm(AlarmAction::Activate, AlarmType::Nospace, None)
        .await
        .unwrap();
    assert_eq!(alarms.alarms()[0].alarm(), AlarmType::Nospace);
    let alarms = c
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .unwrap();
    assert_eq!(alarms.alarms().len(), 1);

    assert_eq!(c.hash().await.unwrap().hash(), 0xDEAD_BEEF);
    assert_eq!(c.hash_kv(0).await.unwrap().compact_version(), 1);
    c.defragment().await.unwrap();
    c.move_leader(MEMBER_ID).await.unwrap();

    let mut snap = c.snapshot().await.unwrap();
    let mut blob = Vec::new();
    while let Some(chunk) = timeout(T, snap.message()).await.unwrap().unwrap() {
        blob.extend_from_slice(chunk.blob());
    }
    assert_eq!(blob, b"snapshot");
}

#[tokio::test]
async fn auth_through_etcd_client_and_token_metadata() {
    let (server, mut c, endpoint) = start().await;

    c.user_add("root", "pw", None).await.unwrap();
    c.role_add("reader").await.unwrap();
    c.role_grant_permission("reader", Permission::read("app/").with_prefix())
        .await
        .unwrap();
    let perms = c.role_get("reader").await.unwrap().permissions();
    assert_eq!(perms[0].get_type(), PermissionType::Read as i32);
    assert_eq!(perms[0].key(), b"app/");
    assert_eq!(perms[0].range_end(), b"app0");
    c.user_grant_role("root", "reader").await.unwrap();
    assert_eq!(c.user_get("root").await.unwrap().roles(), ["reader"]);
    assert_eq!(c.user_list().await.unwrap().users(), ["root"]);
    assert_eq!(c.role_list().await.unwrap().roles(), ["reader"]);
    c.auth_enable().await.unwrap();

    // A client with credentials calls Authenticate on connect and then sends
    // the token as `token` metadata.
    let mut authed = Client::connect(
        [endpoint.as_str()],
        Some(ConnectOptions::new().with_user("root", "pw")),
    )
    .await
    .unwrap();
    authed.get("app/x", None).await.unwrap();
    assert_eq!(server.tokens_seen(), ["tok-root"]);

    let bad = Client::connect(
        [endpoint.as_str()],
        Some(ConnectOptions::new().with_user("root", "wrong")),
    )
    .await;
    let err = bad.err().expect("wrong password must fail");
    assert!(err.to_string().contains("authentication failed"), "{err}");

    c.user_revoke_role("root", "reader").await.unwrap();
    c.role_revoke_permission("reader", "app/", None)
        .await
        .unwrap();
    c.user_change_password("root", "pw2").await.unwrap();
    c.role_delete("reader").await.unwrap();
    c.auth_disable().await.unwrap();
    c.user_delete("root").await.unwrap();
}

#[tokio::test]
async fn lock_and_election_through_etcd_client() {
    let (_server, mut c, _) = start().await;
    let lease = c.lease_grant(30, None).await.unwrap().id();

    let held = c
        .lock("mtx", Some(LockOptions::new().with_lease(lease)))
        .await
        .unwrap();
    assert_eq!(held.key(), format!("mtx/{lease:x}").as_bytes());
    let owner = c.get(held.key(), None).await.unwrap();
    assert_eq!(owner.kvs()[0].lease(), lease);
    c.unlock(held.key()).await.unwrap();
    assert_eq!(c.get(held.key(), None).await.unwrap().count(), 0);

    let mut observe = c.observe("el").await.unwrap();
    let won = c.campaign("el", "v1", lease).await.unwrap();
    let leader: LeaderKey = won.leader().unwrap().clone();
    assert_eq!(leader.name(), b"el");
    assert_eq!(leader.lease(), lease);
    assert_eq!(leader.rev(), won.header().unwrap().revision());

    let first = timeout(T, observe.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.kv().unwrap().value(), b"v1");

    c.proclaim(
        "v2",
        Some(ProclaimOptions::new().with_leader(leader.clone())),
    )
    .await
    .unwrap();
    let second = timeout(T, observe.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.kv().unwrap().value(), b"v2");
    let now = c.leader("el").await.unwrap();
    assert_eq!(now.kv().unwrap().key(), leader.key());

    c.resign(Some(ResignOptions::new().with_leader(leader)))
        .await
        .unwrap();
    assert!(c.leader("el").await.is_err());
}
