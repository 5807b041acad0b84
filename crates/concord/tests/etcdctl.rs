//! etcdctl 3.4 against a real etcd 3.4 and against Concord: the same command
//! lines, in the same order, on two fresh 3-member clusters, and the outputs
//! compared after normalizing what legitimately differs (cluster and member
//! ids, raft terms and indexes, database sizes, ports, timings).
//!
//! Runs when `etcdctl` is on PATH (and `etcd` for the reference cluster);
//! otherwise prints why it skips and passes.

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};
use support::etcd::{etcdctl, on_path, Etcd, Output};
use support::Cluster;

/// One side of the comparison: how to rewrite its addresses and ids.
struct Side {
    name: &'static str,
    endpoints: String,
    /// "127.0.0.1:<port>" -> "<client nX>" / "<peer nX>".
    ports: Vec<(String, String)>,
}

impl Side {
    fn new(
        name: &'static str,
        endpoints: String,
        client_ports: &[u16],
        peer_ports: &[u16],
    ) -> Side {
        let mut ports = Vec::new();
        for (i, p) in client_ports.iter().enumerate() {
            ports.push((format!("127.0.0.1:{p}"), format!("<client n{}>", i + 1)));
        }
        for (i, p) in peer_ports.iter().enumerate() {
            ports.push((format!("127.0.0.1:{p}"), format!("<peer n{}>", i + 1)));
        }
        Side {
            name,
            endpoints,
            ports,
        }
    }

    fn addresses(&self, text: &str) -> String {
        let mut text = text.to_string();
        for (from, to) in &self.ports {
            text = text.replace(from, to);
        }
        text
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        etcdctl(&self.endpoints, args, stdin)
    }
}

/// JSON fields whose values legitimately differ between two clusters.
const VOLATILE_FIELDS: [&str; 10] = [
    "cluster_id",
    "member_id",
    "raft_term",
    "ID",
    "leader",
    "raftIndex",
    "raftTerm",
    "raftAppliedIndex",
    "dbSize",
    "dbSizeInUse",
];

/// Replaces volatile values by a marker (keeping whether the field is
/// present), and addresses by names.
fn normalize_json(value: &mut Value, side: &Side) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if VOLATILE_FIELDS.contains(&key.as_str()) {
                    *v = Value::String("<volatile>".into());
                } else {
                    normalize_json(v, side);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| normalize_json(v, side)),
        Value::String(s) => *s = side.addresses(s),
        _ => {}
    }
}

/// How a command's stdout is compared.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// Byte for byte (after address renaming).
    Text,
    /// One JSON document, volatile fields masked.
    Json,
    /// Lines compared as a sorted set, with a per-line rewrite.
    SortedLines(fn(&str) -> String),
}

fn normalize(out: &Output, shape: Shape, side: &Side) -> Output {
    let stdout = match shape {
        Shape::Text => side.addresses(&out.stdout),
        Shape::Json => match serde_json::from_str::<Value>(out.stdout.trim()) {
            Ok(mut value) => {
                normalize_json(&mut value, side);
                serde_json::to_string_pretty(&value).expect("json")
            }
            Err(e) => format!("(not JSON: {e}) {}", out.stdout),
        },
        Shape::SortedLines(rewrite) => {
            let mut lines: Vec<String> = side.addresses(&out.stdout).lines().map(rewrite).collect();
            lines.sort();
            lines.join("\n")
        }
    };
    Output {
        code: out.code,
        stdout,
        errors: side.addresses(&out.errors),
    }
}

/// `member list` line "8e9e05c52164694d, started, n1, ..." without the id.
fn without_member_id(line: &str) -> String {
    match line.split_once(", ") {
        Some((_, rest)) => format!("<id>, {rest}"),
        None => line.to_string(),
    }
}

/// `endpoint health` line without the timing.
fn without_timing(line: &str) -> String {
    match line.split_once("took = ") {
        Some((head, _)) => format!("{head}took = <t>"),
        None => line.to_string(),
    }
}

/// Every `Status.leader` names a member that answered in the same output.
fn assert_leader_known(side: &Side, stdout: &str) {
    let value: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{}: endpoint status -w json is not JSON ({e}): {stdout}",
            side.name
        )
    });
    let entries = value
        .as_array()
        .unwrap_or_else(|| panic!("{}: not an array: {value}", side.name));
    let ids: Vec<&Value> = entries
        .iter()
        .map(|e| &e["Status"]["header"]["member_id"])
        .collect();
    for e in entries {
        let leader = &e["Status"]["leader"];
        assert!(
            ids.contains(&leader),
            "{}: leader {leader} is none of {ids:?}",
            side.name
        );
    }
}

#[test]
fn etcdctl_sees_concord_as_it_sees_etcd() {
    if !on_path("etcdctl") {
        println!("etcdctl not installed: skipping");
        return;
    }
    if !on_path("etcd") {
        println!("etcd not installed (needed as the reference): skipping");
        return;
    }
    let runtime = support::runtime();
    let etcd = Etcd::start(3, "etcdctl-compat");
    let concord = runtime.block_on(Cluster::start(3));

    let reference = Side::new(
        "etcd",
        etcd.endpoints(),
        &etcd.client_ports,
        &etcd.peer_ports,
    );
    let concord_ports: (Vec<u16>, Vec<u16>) = (
        concord.members.iter().map(|m| m.client_port).collect(),
        concord.members.iter().map(|m| m.peer_port).collect(),
    );
    let subject = Side::new(
        "concord",
        concord
            .members
            .iter()
            .map(|m| m.client_addr())
            .collect::<Vec<_>>()
            .join(","),
        &concord_ports.0,
        &concord_ports.1,
    );

    // The reference cluster must be up before anything is compared.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let health = reference.run(&["endpoint", "health"], None);
        if health.code == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "etcd did not become healthy: {health:?}\n{}",
            etcd.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let txn_cas = "value(\"foo\") = \"bar\"\n\nput foo baz\nget foo\n\nput foo nope\n\n";
    let txn_mixed =
        "version(\"foo/a\") > \"0\"\nmod(\"foo/b\") < \"100\"\ncreate(\"foo/none\") = \"0\"\n\n\
                     get foo --prefix\nput foo/new n\nget foo/new\ndel nothing\n\nget zoo\n\n";
    type Step<'a> = (Vec<&'a str>, Option<&'a str>, Shape);
    let steps: Vec<Step> = vec![
        (vec!["get", "foo"], None, Shape::Text),
        (vec!["get", "foo", "-w", "json"], None, Shape::Json),
        (vec!["put", "foo", "bar"], None, Shape::Text),
        (vec!["put", "foo/a", "1"], None, Shape::Text),
        (vec!["put", "foo/b", "2"], None, Shape::Text),
        (vec!["put", "foo/c", "3"], None, Shape::Text),
        (vec!["put", "zoo", "z"], None, Shape::Text),
        (vec!["put", "foo/a", "4", "-w", "json"], None, Shape::Json),
        (vec!["get", "foo"], None, Shape::Text),
        (vec!["get", "foo", "--prefix"], None, Shape::Text),
        (
            vec!["get", "foo", "--prefix", "-w", "json"],
            None,
            Shape::Json,
        ),
        (vec!["get", "", "--from-key"], None, Shape::Text),
        (
            vec!["get", "foo/b", "--from-key", "-w", "json"],
            None,
            Shape::Json,
        ),
        (vec!["get", "foo/a", "foo/c"], None, Shape::Text),
        (vec!["get", "foo/a", "--rev=3"], None, Shape::Text),
        (
            vec!["get", "foo/a", "--rev=3", "-w", "json"],
            None,
            Shape::Json,
        ),
        (
            vec!["get", "foo", "--prefix", "--limit=2", "-w", "json"],
            None,
            Shape::Json,
        ),
        (
            vec!["get", "foo", "--prefix", "--limit=2"],
            None,
            Shape::Text,
        ),
        (
            vec![
                "get",
                "foo",
                "--prefix",
                "--sort-by=MODIFY",
                "--order=DESCEND",
            ],
            None,
            Shape::Text,
        ),
        (
            vec![
                "get",
                "foo",
                "--prefix",
                "--sort-by=VALUE",
                "--order=ASCEND",
                "--keys-only",
            ],
            None,
            Shape::Text,
        ),
        (
            vec![
                "get",
                "foo",
                "--prefix",
                "--sort-by=CREATE",
                "--order=DESCEND",
                "--limit=1",
            ],
            None,
            Shape::Text,
        ),
        (
            vec![
                "get",
                "foo",
                "--prefix",
                "--sort-by=VERSION",
                "--order=DESCEND",
                "-w",
                "json",
            ],
            None,
            Shape::Json,
        ),
        (
            vec!["get", "foo", "--prefix", "--keys-only"],
            None,
            Shape::Text,
        ),
        (
            vec!["get", "foo", "--prefix", "--keys-only", "-w", "json"],
            None,
            Shape::Json,
        ),
        (
            vec!["get", "foo", "--prefix", "--print-value-only"],
            None,
            Shape::Text,
        ),
        // (etcdctl 3.4 has no --count-only: that flag is 3.5+.)
        (
            vec!["get", "foo", "--prefix", "--consistency=s"],
            None,
            Shape::Text,
        ),
        (vec!["put", "foo/a", "5", "--prev-kv"], None, Shape::Text),
        (
            vec!["put", "foo/a", "--ignore-value", "-w", "json"],
            None,
            Shape::Json,
        ),
        (vec!["get", "foo/a", "-w", "json"], None, Shape::Json),
        (
            vec!["put", "foo/lease", "v", "--lease=1234"],
            None,
            Shape::Text,
        ),
        (vec!["put", "", "v"], None, Shape::Text),
        (vec!["txn", "-i"], Some(txn_cas), Shape::Text),
        (vec!["txn", "-i"], Some(txn_cas), Shape::Text),
        (vec!["txn", "-w", "json"], Some(txn_cas), Shape::Json),
        (vec!["txn", "-w", "json"], Some(txn_mixed), Shape::Json),
        (
            vec!["get", "foo", "--prefix", "-w", "json"],
            None,
            Shape::Json,
        ),
        (vec!["del", "foo/c", "--prev-kv"], None, Shape::Text),
        (vec!["del", "nothing"], None, Shape::Text),
        (
            vec!["del", "foo/", "--prefix", "-w", "json"],
            None,
            Shape::Json,
        ),
        (vec!["put", "foo/d", "d"], None, Shape::Text),
        (vec!["del", "foo/", "--from-key"], None, Shape::Text),
        (
            vec!["get", "", "--from-key", "-w", "json"],
            None,
            Shape::Json,
        ),
        (vec!["compaction", "5"], None, Shape::Text),
        (vec!["get", "foo/a", "--rev=4"], None, Shape::Text),
        (
            vec!["get", "foo/a", "--rev=5", "-w", "json"],
            None,
            Shape::Json,
        ),
        (vec!["get", "foo", "--rev=1000"], None, Shape::Text),
        (vec!["compaction", "3"], None, Shape::Text),
        (vec!["compaction", "1000"], None, Shape::Text),
        (vec!["compaction", "--physical", "8"], None, Shape::Text),
        (
            vec!["get", "", "--from-key", "--rev=8", "-w", "json"],
            None,
            Shape::Json,
        ),
        (vec!["endpoint", "status", "-w", "json"], None, Shape::Json),
        (
            vec!["endpoint", "health"],
            None,
            Shape::SortedLines(without_timing),
        ),
        (
            vec!["member", "list"],
            None,
            Shape::SortedLines(without_member_id),
        ),
        (vec!["alarm", "list"], None, Shape::Text),
    ];

    // Commands etcd refuses (exit code 1 with an "Error:" line); every other
    // one must succeed on the reference, so a comparison of two identical
    // failures (say, nothing listening) cannot pass unnoticed.
    let refused: [&[&str]; 6] = [
        &["put", "foo/lease", "v", "--lease=1234"],
        &["put", "", "v"],
        &["get", "foo/a", "--rev=4"],
        &["get", "foo", "--rev=1000"],
        &["compaction", "3"],
        &["compaction", "1000"],
    ];
    let mut mismatches: Vec<String> = Vec::new();
    let mut raw: BTreeMap<&str, Vec<Output>> = BTreeMap::new();
    for (args, stdin, shape) in &steps {
        let want = reference.run(args, *stdin);
        let expect_refusal = refused.contains(&args.as_slice());
        assert_eq!(
            (want.code, want.errors.is_empty()),
            (Some(if expect_refusal { 1 } else { 0 }), !expect_refusal),
            "the reference etcd did not answer `etcdctl {}` as expected: {want:?}",
            args.join(" ")
        );
        let got = subject.run(args, *stdin);
        let (want_n, got_n) = (
            normalize(&want, *shape, &reference),
            normalize(&got, *shape, &subject),
        );
        if want_n != got_n {
            mismatches.push(format!(
                "etcdctl {}\n  etcd:    {want_n:?}\n  concord: {got_n:?}",
                args.join(" ")
            ));
        }
        raw.entry("etcd").or_default().push(want);
        raw.entry("concord").or_default().push(got);
    }
    eprintln!(
        "compared {} etcdctl commands; {} differ",
        steps.len(),
        mismatches.len()
    );
    assert!(
        mismatches.is_empty(),
        "{} of {} etcdctl commands differ between etcd and Concord:\n{}",
        mismatches.len(),
        steps.len(),
        mismatches.join("\n")
    );

    // Beyond the masked comparison: the masked fields are really there and
    // consistent on Concord's side.
    let status_step = steps
        .iter()
        .position(|(args, _, _)| args[..2] == ["endpoint", "status"])
        .expect("status step");
    assert_leader_known(&reference, &raw["etcd"][status_step].stdout);
    assert_leader_known(&subject, &raw["concord"][status_step].stdout);
    let member_list = steps
        .iter()
        .position(|(args, _, _)| args[..2] == ["member", "list"])
        .expect("member list step");
    let listed = &raw["concord"][member_list].stdout;
    for m in &concord.members {
        assert!(
            listed.contains(&format!(
                ", {}, {}, {}, false",
                m.name,
                m.peer_url(),
                m.client_url()
            )),
            "member list lacks {}: {listed}",
            m.name
        );
    }
    // The mixed txn took its success branch on both (its compares hold).
    let mixed_step = steps
        .iter()
        .position(|(_, stdin, _)| *stdin == Some(txn_mixed))
        .expect("mixed txn step");
    for side in ["etcd", "concord"] {
        let out = &raw[side][mixed_step].stdout;
        assert!(
            out.contains("\"succeeded\":true"),
            "{side}: mixed txn did not succeed: {out}"
        );
    }
    // The reference really is etcd 3.4, so the comparison means something.
    let version = Command::new("etcd")
        .arg("--version")
        .output()
        .expect("etcd --version");
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.contains("etcd Version: 3.4"),
        "reference etcd is not 3.4: {version}"
    );
}

/// clientv3 3.4 dials one endpoint as `passthrough:///http://host:port`, so
/// its `:authority` header carries the scheme. etcd takes that; before
/// api/authority.rs, Concord's HTTP/2 server refused such streams with
/// PROTOCOL_ERROR, and these commands failed with http:// endpoints.
#[test]
fn etcdctl_takes_endpoints_with_a_scheme() {
    if !on_path("etcdctl") {
        println!("etcdctl not installed: skipping");
        return;
    }
    let runtime = support::runtime();
    let concord = runtime.block_on(Cluster::start(3));
    let one = concord.members[0].client_url();
    let all = concord
        .members
        .iter()
        .map(|m| m.client_url())
        .collect::<Vec<_>>()
        .join(",");
    let ok = |endpoints: &str, args: &[&str]| -> String {
        let out = etcdctl(endpoints, args, None);
        assert_eq!(
            out.code,
            Some(0),
            "etcdctl --endpoints={endpoints} {args:?}: {out:?}"
        );
        out.stdout
    };
    let json = |text: &str| -> Value { serde_json::from_str(text).expect("etcdctl json") };

    assert_eq!(ok(&one, &["put", "scheme", "http"]).trim(), "OK");
    assert_eq!(ok(&one, &["get", "scheme"]), "scheme\nhttp\n");

    let status = json(&ok(&one, &["endpoint", "status", "-w", "json"]));
    let statuses = status.as_array().expect("status list");
    assert_eq!(statuses.len(), 1, "{status}");
    assert_eq!(statuses[0]["Endpoint"], one.as_str());
    assert_ne!(statuses[0]["Status"]["leader"], 0, "{status}");

    // `--cluster` lists the client URLs members have published; each
    // publishes them by a proposal of its own once it has a leader (as in
    // etcd), which may come a moment after the cluster answers.
    let mut expected: Vec<String> = concord.members.iter().map(|m| m.client_url()).collect();
    expected.sort();
    support::must_wait_for_blocking("every member's client URL in --cluster", || {
        let cluster = json(&ok(
            &one,
            &["endpoint", "status", "--cluster", "-w", "json"],
        ));
        let mut endpoints: Vec<String> = cluster
            .as_array()
            .expect("status list")
            .iter()
            .map(|s| s["Endpoint"].as_str().expect("endpoint").to_string())
            .collect();
        endpoints.sort();
        if endpoints == expected {
            Ok(())
        } else {
            Err(format!("{endpoints:?}"))
        }
    });

    let hashes = json(&ok(&one, &["endpoint", "hashkv", "-w", "json"]));
    assert_eq!(hashes.as_array().expect("hash list").len(), 1, "{hashes}");
    assert_ne!(hashes[0]["HashKV"]["hash"], 0, "{hashes}");

    let defrag = ok(&one, &["defrag"]);
    assert_eq!(
        defrag.trim(),
        format!("Finished defragmenting etcd member[{one}]")
    );

    // Several schemed endpoints go through clientv3's own balancer.
    assert_eq!(ok(&all, &["get", "scheme", "--print-value-only"]), "http\n");
    let health = etcdctl(&all, &["endpoint", "health", "--cluster"], None);
    assert_eq!(health.code, Some(0), "{health:?}");
}
