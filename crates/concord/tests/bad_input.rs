//! Bad input gets etcd's error code and message, and the member keeps
//! serving every other client (DESIGN rule 5): oversized requests, empty
//! keys, oversized or self-conflicting transactions, bad revisions, unknown
//! leases, clients that vanish mid-request, and junk bytes on the client and
//! peer ports.

mod support;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{assert_grpc_error, grpc_status, must_wait_for, Cluster, ClusterOptions};

const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Asserts the member behind `client` still takes writes and serves reads,
/// and returns the revision of the probe write.
async fn assert_serving(client: &mut Client, probe: &str) -> i64 {
    let put = client
        .put(probe, "ok", None)
        .await
        .unwrap_or_else(|e| panic!("member stopped serving writes ({probe}): {e}"));
    let revision = put.header().expect("header").revision();
    let got = client
        .get(probe, None)
        .await
        .unwrap_or_else(|e| panic!("member stopped serving reads ({probe}): {e}"));
    assert_eq!(got.kvs().len(), 1, "probe {probe} not readable: {got:?}");
    assert_eq!(got.kvs()[0].mod_revision(), revision);
    revision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_get_etcd_errors() {
    let mut cluster = Cluster::start_with(ClusterOptions {
        max_request_bytes: Some(MAX_REQUEST_BYTES),
        ..ClusterOptions::new(3)
    })
    .await;
    let mut c = cluster.client(0).await;
    let mut other = cluster.client(1).await;
    assert_eq!(assert_serving(&mut other, "probe/0").await, 2);

    // Over --max-request-bytes, for every kind of request.
    const TOO_LARGE: &str = "etcdserver: request is too large";
    let big = vec![b'v'; MAX_REQUEST_BYTES + 1];
    assert_grpc_error(
        c.put("big", big.clone(), None).await,
        "InvalidArgument",
        TOO_LARGE,
    );
    assert_grpc_error(c.get(big.clone(), None).await, "InvalidArgument", TOO_LARGE);
    assert_grpc_error(
        c.delete(big.clone(), None).await,
        "InvalidArgument",
        TOO_LARGE,
    );
    assert_grpc_error(
        c.txn(Txn::new().and_then([TxnOp::put("big", big.clone(), None)]))
            .await,
        "InvalidArgument",
        TOO_LARGE,
    );
    // Just under the limit is fine.
    let fits = vec![b'v'; MAX_REQUEST_BYTES - 64];
    let ok = c
        .put("fits", fits.clone(), None)
        .await
        .expect("a request under the limit");
    assert_eq!(ok.header().unwrap().revision(), 3);
    // Far beyond the limit plus gRPC's framing allowance the transport
    // refuses the message before it is decoded. (grpc-go, hence etcd, says
    // ResourceExhausted "grpc: received message larger than max"; tonic says
    // OutOfRange "Error, decoded message length too large". Both refuse.)
    let huge = vec![b'h'; MAX_REQUEST_BYTES + 1024 * 1024];
    let status = grpc_status(c.put("huge", huge, None).await);
    assert!(
        ["ResourceExhausted", "OutOfRange"].contains(&status.code.as_str()),
        "a message beyond the transport limit: {status:?}"
    );
    assert_eq!(
        assert_serving(&mut c, "probe/1").await,
        4,
        "refused requests make no revision"
    );

    // Empty keys.
    const NO_KEY: &str = "etcdserver: key is not provided";
    assert_grpc_error(c.put("", "v", None).await, "InvalidArgument", NO_KEY);
    assert_grpc_error(c.get("", None).await, "InvalidArgument", NO_KEY);
    assert_grpc_error(c.delete("", None).await, "InvalidArgument", NO_KEY);
    assert_grpc_error(
        c.txn(Txn::new().when([Compare::value("", CompareOp::Equal, "v")]))
            .await,
        "InvalidArgument",
        NO_KEY,
    );
    assert_grpc_error(
        c.txn(Txn::new().and_then([TxnOp::put("", "v", None)]))
            .await,
        "InvalidArgument",
        NO_KEY,
    );
    assert_grpc_error(
        c.txn(Txn::new().or_else([TxnOp::get("", None)])).await,
        "InvalidArgument",
        NO_KEY,
    );

    // More than --max-txn-ops (128) operations in one branch; 128 is fine.
    const TOO_MANY: &str = "etcdserver: too many operations in txn request";
    let puts = |n: usize| -> Vec<TxnOp> {
        (0..n)
            .map(|i| TxnOp::put(format!("ops/{i}"), "v", None))
            .collect()
    };
    assert_grpc_error(
        c.txn(Txn::new().and_then(puts(129))).await,
        "InvalidArgument",
        TOO_MANY,
    );
    assert_grpc_error(
        c.txn(Txn::new().or_else(puts(129))).await,
        "InvalidArgument",
        TOO_MANY,
    );
    let compares: Vec<Compare> = (0..129)
        .map(|i| Compare::version(format!("ops/{i}"), CompareOp::Equal, 0))
        .collect();
    assert_grpc_error(
        c.txn(Txn::new().when(compares)).await,
        "InvalidArgument",
        TOO_MANY,
    );
    let max = c
        .txn(Txn::new().and_then(puts(128)))
        .await
        .expect("128 ops are allowed");
    assert_eq!(
        max.header().unwrap().revision(),
        5,
        "one revision for 128 puts"
    );
    let written = c
        .get(
            "ops/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap();
    assert_eq!(written.count(), 128);

    // The same key written twice in one txn branch.
    const DUPLICATE: &str = "etcdserver: duplicate key given in txn request";
    assert_grpc_error(
        c.txn(Txn::new().and_then([TxnOp::put("dup", "1", None), TxnOp::put("dup", "2", None)]))
            .await,
        "InvalidArgument",
        DUPLICATE,
    );
    assert_grpc_error(
        c.txn(Txn::new().or_else([TxnOp::put("dup", "1", None), TxnOp::delete("dup", None)]))
            .await,
        "InvalidArgument",
        DUPLICATE,
    );
    assert_grpc_error(
        c.txn(Txn::new().and_then([
            TxnOp::put("dup/a", "1", None),
            TxnOp::delete("dup/", Some(DeleteOptions::new().with_prefix())),
        ]))
        .await,
        "InvalidArgument",
        DUPLICATE,
    );
    let nested_dup = Txn::new().and_then([
        TxnOp::put("dup", "1", None),
        TxnOp::txn(Txn::new().and_then([TxnOp::put("dup", "2", None)])),
    ]);
    assert_grpc_error(c.txn(nested_dup).await, "InvalidArgument", DUPLICATE);
    // The same key in different branches, or read twice, is fine.
    let branches = c
        .txn(
            Txn::new()
                .and_then([
                    TxnOp::put("dup", "1", None),
                    TxnOp::get("dup", None),
                    TxnOp::get("dup", None),
                ])
                .or_else([TxnOp::put("dup", "2", None)]),
        )
        .await
        .expect("one write per branch");
    assert_eq!(branches.header().unwrap().revision(), 6);

    // Revisions out of range.
    const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
    const FUTURE: &str = "etcdserver: mvcc: required revision is a future revision";
    assert_grpc_error(
        c.get("dup", Some(GetOptions::new().with_revision(7))).await,
        "OutOfRange",
        FUTURE,
    );
    assert_grpc_error(
        c.get("dup", Some(GetOptions::new().with_revision(i64::MAX)))
            .await,
        "OutOfRange",
        FUTURE,
    );
    c.compact(5, None).await.expect("compact 5");
    assert_grpc_error(
        c.get("dup", Some(GetOptions::new().with_revision(4))).await,
        "OutOfRange",
        COMPACTED,
    );
    assert_grpc_error(c.compact(3, None).await, "OutOfRange", COMPACTED);
    assert_grpc_error(c.compact(100, None).await, "OutOfRange", FUTURE);

    // A put with a lease that does not exist: refused, nothing written.
    const NO_LEASE: &str = "etcdserver: requested lease not found";
    assert_grpc_error(
        c.put(
            "leased",
            "v",
            Some(PutOptions::new().with_lease(0x1234_5678)),
        )
        .await,
        "NotFound",
        NO_LEASE,
    );
    assert_grpc_error(
        c.txn(Txn::new().and_then([TxnOp::put(
            "leased",
            "v",
            Some(PutOptions::new().with_lease(7)),
        )]))
        .await,
        "NotFound",
        NO_LEASE,
    );
    let absent = c.get("leased", None).await.expect("get leased");
    assert_eq!(
        (absent.count(), absent.header().unwrap().revision()),
        (0, 6),
        "no write, no revision"
    );

    // Every member is alive and serving; other clients never noticed.
    cluster.assert_all_alive();
    assert_eq!(assert_serving(&mut other, "probe/2").await, 7);
    assert_eq!(assert_serving(&mut c, "probe/3").await, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_vanishing_mid_request_do_not_hurt() {
    let mut cluster = Cluster::start(3).await;
    let target = 0;
    const VALUE_BYTES: usize = 32 * 1024;
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();

    // Writers on their own connections, aborted (task and connection gone)
    // while their puts are in flight.
    let mut writers = Vec::new();
    for w in 0..6 {
        let mut client = cluster.client(target).await;
        let acked = Arc::clone(&acked);
        writers.push(tokio::spawn(async move {
            for n in 0.. {
                let key = format!("gone/{w}/{n}");
                if client
                    .put(key.as_str(), vec![b'x'; VALUE_BYTES], None)
                    .await
                    .is_ok()
                {
                    acked.lock().unwrap().push(key);
                }
            }
        }));
    }
    let counter = Arc::clone(&acked);
    must_wait_for(
        "writers to get 12 acknowledgements",
        Duration::from_secs(20),
        move || {
            let n = counter.lock().unwrap().len();
            async move {
                if n >= 12 {
                    Ok(())
                } else {
                    Err(n)
                }
            }
        },
    )
    .await;
    for writer in &writers {
        writer.abort();
    }
    for writer in writers {
        let _ = writer.await;
    }

    // Clients that give up after a millisecond: the request is cancelled
    // (HTTP/2 RST_STREAM) while the member is still working on it.
    let impatient = Client::connect(
        [cluster.members[target].client_url()],
        Some(ConnectOptions::new().with_timeout(Duration::from_millis(1))),
    )
    .await
    .expect("connect impatient client");
    let mut cancelled = 0;
    for n in 0..30 {
        let mut c = impatient.clone();
        if c.put(format!("cancel/{n}"), vec![b'y'; VALUE_BYTES], None)
            .await
            .is_err()
        {
            cancelled += 1;
        }
    }
    drop(impatient);
    eprintln!("{cancelled} of 30 impatient puts were cancelled by the client");

    // The member serves new clients, and everything acknowledged is there in
    // full; nothing is half-written.
    cluster.assert_all_alive();
    let mut c = cluster.client(target).await;
    assert_serving(&mut c, "after/disconnects").await;
    let acked = acked.lock().unwrap().clone();
    for key in &acked {
        let got = c.get(key.as_str(), None).await.expect("get acked key");
        assert_eq!(got.kvs().len(), 1, "acknowledged {key} is missing");
        assert_eq!(
            got.kvs()[0].value().len(),
            VALUE_BYTES,
            "{key} has a torn value"
        );
    }
    for prefix in ["gone/", "cancel/"] {
        let all = c
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .expect("scan");
        for kv in all.kvs() {
            assert_eq!(
                kv.value().len(),
                VALUE_BYTES,
                "{:?} has a torn value",
                kv.key_str()
            );
        }
    }
    // Other members agree (HashKV at the same revision).
    let revision = assert_serving(&mut c, "after/hash").await;
    let mut hashes = Vec::new();
    for i in 0..3 {
        let member = cluster.client(i).await;
        let what = format!("HashKV of n{} at {revision}", i + 1);
        hashes.push(
            must_wait_for(&what, Duration::from_secs(10), move || {
                let mut member = member.clone();
                async move {
                    member
                        .hash_kv(revision)
                        .await
                        .map(|h| h.hash())
                        .map_err(|e| e.to_string())
                }
            })
            .await,
        );
    }
    assert!(
        hashes.windows(2).all(|w| w[0] == w[1]),
        "members diverged: {hashes:?}"
    );
}

/// Deterministic junk.
fn junk(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Writes `bytes` to `addr`, reads whatever comes back for a moment (the
/// server may answer or close), then closes. Errors are expected.
fn send_raw(addr: &str, bytes: &[u8]) {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        panic!("cannot connect to {addr}");
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = stream.write_all(bytes);
    let _ = stream.flush();
    let mut buf = [0u8; 4096];
    let _ = stream.read(&mut buf);
}

/// CRC-32C (Castagnoli), as the peer frame header carries.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A peer frame: length and CRC-32C of the payload, then the payload.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The peer `Hello` frame: kind 1, sender id, cluster id.
fn hello(from: u64, cluster_id: u64) -> Vec<u8> {
    let mut payload = vec![1u8];
    payload.extend_from_slice(&from.to_le_bytes());
    payload.extend_from_slice(&cluster_id.to_le_bytes());
    frame(&payload)
}

/// A 3-member cluster for the peer-port tests: the cluster, its leader's
/// and a follower's index, the member ids by index, and the cluster id
/// (what a `Hello` must name).
async fn cluster_for_peer_tests() -> (Cluster, usize, usize, Vec<u64>, u64) {
    let cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let follower = (leader + 1) % 3;
    let ids = cluster.member_ids().await;
    let cluster_id = cluster
        .status(leader)
        .await
        .expect("status")
        .header()
        .expect("header")
        .cluster_id();
    (cluster, leader, follower, ids, cluster_id)
}

/// Waits until `member` serves `count` keys under `prefix` at `revision`
/// from its own store (serializable), i.e. has replicated that far.
async fn wait_replicated(
    member: Client,
    what: &str,
    prefix: &'static str,
    revision: i64,
    count: i64,
) {
    must_wait_for(what, Duration::from_secs(10), move || {
        let mut member = member.clone();
        async move {
            let resp = member
                .get(
                    prefix,
                    Some(GetOptions::new().with_prefix().with_serializable()),
                )
                .await
                .map_err(|e| e.to_string())?;
            if resp.header().unwrap().revision() == revision && resp.count() == count {
                Ok(())
            } else {
                Err(format!("{resp:?}"))
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_on_client_and_peer_ports_leaves_members_healthy() {
    let (mut cluster, leader, follower, ids, cluster_id) = cluster_for_peer_tests().await;

    // A connection that sends half a preface and then just sits there.
    let idle =
        TcpStream::connect(cluster.members[follower].client_addr()).expect("idle connection");
    (&idle)
        .write_all(b"PRI * HTTP/2.0\r\n")
        .expect("write half preface");

    let client_junk: Vec<Vec<u8>> = vec![
        junk(1, 1),
        junk(2, 100),
        junk(3, 64 * 1024),
        b"GET /v3/kv/range HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{{{{{".to_vec(),
        // HTTP/2 preface, then a frame header announcing 16 MiB, then junk.
        [
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".as_slice(),
            &[0xff, 0xff, 0xff, 0x00, 0x00, 0, 0, 0, 1],
            &junk(4, 512),
        ]
        .concat(),
        // Preface, empty SETTINGS, then a HEADERS frame of junk HPACK.
        [
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".as_slice(),
            &[0, 0, 0, 4, 0, 0, 0, 0, 0],
            &[0, 0, 32, 1, 4, 0, 0, 0, 1],
            &junk(5, 32),
        ]
        .concat(),
    ];
    let peer_junk: Vec<Vec<u8>> = vec![
        junk(6, 3),
        junk(7, 4096),
        // Frame headers claiming a zero, an oversized and a huge payload.
        vec![0; 8],
        [(65u32 * 1024 * 1024).to_le_bytes(), [0; 4]].concat(),
        [(64u32 * 1024 * 1024).to_le_bytes(), [0; 4]].concat(),
        // A frame with a bad checksum.
        {
            let mut f = hello(ids[leader], cluster_id);
            f[4] ^= 0xff;
            f
        },
        // Hello from another cluster, then from an unknown member.
        hello(ids[leader], cluster_id ^ 1),
        hello(0xdead_beef, cluster_id),
        // A real member's Hello followed by junk frames: that connection
        // only is dropped.
        [
            hello(ids[(follower + 1) % 3], cluster_id),
            frame(&junk(8, 64)),
            frame(&[2, 0xff, 0xff, 0xff, 0xff]),
        ]
        .concat(),
        [
            hello(ids[(follower + 1) % 3], cluster_id),
            frame(&[3, 0xff, 0xff, 0xff, 0x7f]),
        ]
        .concat(),
        [
            hello(ids[(follower + 1) % 3], cluster_id),
            hello(ids[(follower + 1) % 3], cluster_id),
        ]
        .concat(),
    ];
    for target in [follower, leader] {
        let client_addr = cluster.members[target].client_addr();
        let peer_addr = cluster.members[target].peer_addr();
        let junk_client = client_junk.clone();
        let junk_peer = peer_junk.clone();
        tokio::task::spawn_blocking(move || {
            for bytes in &junk_client {
                send_raw(&client_addr, bytes);
            }
            for bytes in &junk_peer {
                send_raw(&peer_addr, bytes);
            }
        })
        .await
        .expect("junk sender");
    }

    // Every member is alive, the cluster takes writes through every member,
    // and replication to the junk-fed follower still works.
    cluster.assert_all_alive();
    let mut revision = 0;
    for i in 0..3 {
        let mut c = cluster.client(i).await;
        revision = assert_serving(&mut c, &format!("after-junk/n{}", i + 1)).await;
    }
    for i in 0..3 {
        let member = cluster.client(i).await;
        let what = format!("n{} to replicate up to revision {revision}", i + 1);
        wait_replicated(member, &what, "after-junk/", revision, 3).await;
    }
    let mut health = cluster.client(follower).await;
    let status = health.status().await.expect("status after junk");
    assert_ne!(
        status.leader(),
        0,
        "the junk-fed follower still knows a leader"
    );
    drop(idle);
}

/// Far more connections than the loop reads at once
/// (`replica::MAX_INBOUND_PEERS`) that pass the peer handshake under a real
/// member's id (here the leader's): those beyond the limit are refused and
/// closed, and the leader's own connection keeps working, so the follower
/// keeps replicating.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_handshaken_peer_connections_leaves_replication_working() {
    let (mut cluster, leader, follower, ids, cluster_id) = cluster_for_peer_tests().await;
    let peer_addr = cluster.members[follower].peer_addr();
    let flood = tokio::task::spawn_blocking(move || {
        (0..200)
            .map(|_| {
                let mut stream = TcpStream::connect(&peer_addr).expect("peer connection");
                stream
                    .write_all(&hello(ids[leader], cluster_id))
                    .expect("hello");
                stream
            })
            .collect::<Vec<_>>()
    })
    .await
    .expect("flood");

    cluster.assert_all_alive();
    let mut writer = cluster.client(leader).await;
    let revision = assert_serving(&mut writer, "after-flood/").await;
    let member = cluster.client(follower).await;
    let what = format!("the flooded follower to replicate revision {revision}");
    wait_replicated(member, &what, "after-flood/", revision, 1).await;
    drop(flood);
}

/// Out-of-range settings are refused at start with a message naming the
/// flag, before anything listens or touches the data directory.
#[test]
fn out_of_range_flags_are_refused_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (flag, value) in [
        ("--snapshot-count", "0"),
        ("--snapshot-count", "10000001"),
        ("--experimental-snapshot-catchup-entries", "1000001"),
        (
            "--experimental-snapshot-catchup-entries",
            "18446744073709551615",
        ),
    ] {
        let data = dir.path().join("data");
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_concord"))
            .args(["serve", "--name", "m", "--data-dir"])
            .arg(&data)
            .args([flag, value])
            // Port 1 is never bound here: refusing must come first.
            .args(["--listen-client-urls", "http://127.0.0.1:1"])
            .args(["--listen-peer-urls", "http://127.0.0.1:1"])
            .args(["--initial-advertise-peer-urls", "http://127.0.0.1:1"])
            .args(["--initial-cluster", "m=http://127.0.0.1:1"])
            .output()
            .expect("run concord serve");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{flag} {value} was accepted");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
        assert!(
            !data.exists(),
            "{flag} {value}: the data directory was created"
        );
    }
}
