//! A single member started in-process on ephemeral ports: writes, reads,
//! restart recovery (WAL replay and snapshot plus WAL), and clean shutdown.
//! Multi-process clusters are tested in `crates/concord/tests`.

use concord_etcd_proto::etcdserverpb as pb;
use concord_etcd_proto::etcdserverpb::kv_client::KvClient;
use concord_node::config::NodeConfig;
use concord_node::node::{start, RunningNode};
use std::path::Path;
use std::time::{Duration, Instant};

fn config(dir: &Path, snapshot_count: u64) -> NodeConfig {
    let mut c = NodeConfig::single_default();
    c.name = "solo".into();
    c.data_dir = dir.to_path_buf();
    c.listen_client_urls = vec!["http://127.0.0.1:0".into()];
    c.advertise_client_urls = c.listen_client_urls.clone();
    // The peer URL is this member's identity; nobody connects to it in a
    // one-member cluster, so an ephemeral port is fine.
    c.listen_peer_urls = vec!["http://127.0.0.1:0".into()];
    c.initial_advertise_peer_urls = c.listen_peer_urls.clone();
    c.initial_cluster = vec![("solo".into(), "http://127.0.0.1:0".into())];
    c.heartbeat_interval_ms = 10;
    c.election_timeout_ms = 100;
    c.snapshot_count = snapshot_count;
    // Compact right up to each snapshot, so 75 writes leave a snapshot.
    c.snapshot_catchup_entries = 0;
    c
}

fn client(node: &RunningNode) -> KvClient<tonic::transport::Channel> {
    let url = format!("http://{}", node.client_addrs[0]);
    node.runtime().block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match KvClient::connect(url.clone()).await {
                Ok(c) => return c,
                Err(e) if Instant::now() > deadline => panic!("cannot connect to {url}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
}

fn put(
    node: &RunningNode,
    kv: &mut KvClient<tonic::transport::Channel>,
    key: &str,
    value: &str,
) -> i64 {
    node.runtime().block_on(async {
        // The member needs an election timeout to become leader.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let request = pb::PutRequest {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
                ..Default::default()
            };
            match kv.put(request).await {
                Ok(r) => return r.into_inner().header.expect("header").revision,
                Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(s) => panic!("put {key} failed: {s}"),
            }
        }
    })
}

fn get(
    node: &RunningNode,
    kv: &mut KvClient<tonic::transport::Channel>,
    key: &str,
) -> Option<(String, i64)> {
    node.runtime().block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let request = pb::RangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            };
            match kv.range(request).await {
                Ok(r) => {
                    let r = r.into_inner();
                    return r.kvs.first().map(|kv| {
                        (
                            String::from_utf8(kv.value.clone()).expect("utf8"),
                            kv.mod_revision,
                        )
                    });
                }
                Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(s) => panic!("get {key} failed: {s}"),
            }
        }
    })
}

#[test]
fn writes_survive_restart_by_wal_replay() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(config(dir.path(), 10_000)).expect("start");
    let mut kv = client(&node);
    assert_eq!(
        put(&node, &mut kv, "a", "1"),
        2,
        "first write on an empty store is revision 2"
    );
    assert_eq!(put(&node, &mut kv, "b", "2"), 3);
    assert_eq!(get(&node, &mut kv, "a"), Some(("1".into(), 2)));
    drop(kv);
    node.shutdown().expect("clean shutdown");

    let node = start(config(dir.path(), 10_000)).expect("restart");
    let mut kv = client(&node);
    assert_eq!(get(&node, &mut kv, "a"), Some(("1".into(), 2)));
    assert_eq!(get(&node, &mut kv, "b"), Some(("2".into(), 3)));
    assert_eq!(
        put(&node, &mut kv, "c", "3"),
        4,
        "revisions continue after restart"
    );
    drop(kv);
    node.shutdown().expect("clean shutdown");
}

#[test]
fn writes_survive_restart_from_snapshot_and_wal() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(config(dir.path(), 20)).expect("start");
    let mut kv = client(&node);
    for i in 0..75 {
        put(&node, &mut kv, &format!("k{i:03}"), &format!("v{i}"));
    }
    drop(kv);
    node.shutdown().expect("clean shutdown");
    let snapshots = std::fs::read_dir(dir.path().join("member/wal"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .map(|e| e.path().extension().is_some_and(|x| x == "snap"))
                .unwrap_or(false)
        })
        .count();
    assert!(
        snapshots > 0,
        "75 writes with --snapshot-count 20 must have snapshotted"
    );

    let node = start(config(dir.path(), 20)).expect("restart");
    let mut kv = client(&node);
    for i in 0..75 {
        let got = get(&node, &mut kv, &format!("k{i:03}"));
        assert_eq!(got.map(|g| g.0), Some(format!("v{i}")), "key k{i:03}");
    }
    drop(kv);
    node.shutdown().expect("clean shutdown");
}

/// A member's own snapshot only refers to its store (the store is not
/// copied), so a store lost behind the snapshot must stop the member with a
/// clear error instead of serving an empty state.
#[test]
fn a_store_lost_behind_its_snapshot_reference_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(config(dir.path(), 20)).expect("start");
    let mut kv = client(&node);
    for i in 0..45 {
        put(&node, &mut kv, &format!("k{i:03}"), "v");
    }
    drop(kv);
    node.shutdown().expect("clean shutdown");
    std::fs::remove_file(dir.path().join("member/db")).unwrap();
    match start(config(dir.path(), 20)) {
        Ok(_) => panic!("started with its store gone"),
        Err(e) => assert!(
            e.to_string().contains("the db file was replaced or lost"),
            "{e}"
        ),
    }
}

#[test]
fn a_second_member_on_the_same_ports_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(config(dir.path(), 10_000)).expect("start");
    let other = tempfile::tempdir().unwrap();
    let mut clash = config(other.path(), 10_000);
    clash.listen_client_urls = vec![format!("http://{}", node.client_addrs[0])];
    match start(clash) {
        Ok(_) => panic!("a second member bound the same client port"),
        Err(e) => assert!(e.to_string().contains("cannot listen on client URL"), "{e}"),
    }
    node.shutdown().expect("clean shutdown");
}
