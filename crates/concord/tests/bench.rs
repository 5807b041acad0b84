//! `concord bench` against a real 3-member cluster: every op completes its
//! requests and reports them, refusals are counted by the server's own
//! error, and an endpoint nobody listens on is a setup error, not a hang.

mod support;

use serde_json::Value;
use std::process::{Command, Output};
use support::{concord_bin, free_ports, runtime, Cluster, ClusterOptions};

fn bench(endpoints: &str, args: &[&str]) -> Output {
    Command::new(concord_bin())
        .args([
            "bench",
            "--endpoints",
            endpoints,
            "--request-timeout",
            "10s",
        ])
        .args(args)
        .output()
        .expect("running concord bench")
}

/// The report's JSON line (the last line of stdout).
fn report(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().expect("a report line");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"))
}

fn endpoints(cluster: &Cluster) -> String {
    cluster.endpoints().join(",")
}

#[test]
fn every_op_completes_its_requests_against_a_cluster() {
    let rt = runtime();
    let cluster = rt.block_on(Cluster::start(3));
    let all = endpoints(&cluster);
    for op in [
        "put",
        "range",
        "range-serializable",
        "txn-cas",
        "watch-latency",
        "lease-keepalive",
    ] {
        let total = 120;
        let json = report(&bench(
            &all,
            &[
                "--op",
                op,
                "--total",
                &total.to_string(),
                "--clients",
                "6",
                "--conns",
                "3",
                "--key-space",
                "40",
            ],
        ));
        assert_eq!(json["ok"], total, "{op}: {json}");
        assert_eq!(json["errors"], 0, "{op}: {json}");
        assert!(
            json["latency_ms"]["p50"].as_f64().unwrap() > 0.0,
            "{op}: {json}"
        );
    }
    // Client threads, connections and clients in shapes that leave a
    // thread without clients or a connection with several.
    for (threads, conns, clients) in [("4", "4", "2"), ("3", "2", "5"), ("1", "3", "7")] {
        let json = report(&bench(
            &all,
            &[
                "--op",
                "put",
                "--total",
                "50",
                "--threads",
                threads,
                "--conns",
                conns,
                "--clients",
                clients,
                "--key-space",
                "40",
            ],
        ));
        assert_eq!(json["ok"], 50, "threads {threads} conns {conns}: {json}");
        assert_eq!(json["errors"], 0, "threads {threads} conns {conns}: {json}");
    }
    // The puts (and swaps) really happened: the keys are there.
    let mut client = rt.block_on(cluster.client(0));
    let keys = rt
        .block_on(
            client.get(
                "0",
                Some(
                    etcd_client::GetOptions::new()
                        .with_range(":")
                        .with_count_only(),
                ),
            ),
        )
        .expect("count the bench keys");
    assert!(
        (1..=40).contains(&keys.count()),
        "bench keys: {}",
        keys.count()
    );
}

#[test]
fn refusals_are_counted_under_the_servers_error() {
    let rt = runtime();
    let mut options = ClusterOptions::new(3);
    options.max_request_bytes = Some(1024);
    let cluster = rt.block_on(Cluster::start_with(options));
    let json = report(&bench(
        &endpoints(&cluster),
        &["--op", "put", "--total", "30", "--val-size", "4096"],
    ));
    assert_eq!(json["ok"], 0, "{json}");
    assert_eq!(json["errors"], 30, "{json}");
    let kinds = json["error_kinds"].as_object().expect("error kinds");
    assert_eq!(kinds.len(), 1, "{json}");
    let (kind, count) = kinds.iter().next().unwrap();
    assert!(
        kind.contains("InvalidArgument") && kind.contains("etcdserver: request is too large"),
        "{kind}"
    );
    assert_eq!(count, 30);
    // A put that fits still succeeds on the same cluster.
    let json = report(&bench(
        &endpoints(&cluster),
        &["--op", "put", "--total", "10", "--val-size", "100"],
    ));
    assert_eq!(json["ok"], 10, "{json}");
}

#[test]
fn one_dead_endpoint_among_live_ones_stops_the_run_with_its_address() {
    let rt = runtime();
    let cluster = rt.block_on(Cluster::start(1));
    let dead = format!("127.0.0.1:{}", free_ports(1)[0]);
    let endpoints = format!("{},{dead}", cluster.members[0].client_addr());
    // Connection 1 (the dead endpoint) belongs to the second client thread;
    // the first connects fine and must not wait forever for the start.
    let output = bench(
        &endpoints,
        &[
            "--op",
            "put",
            "--total",
            "5",
            "--conns",
            "2",
            "--threads",
            "2",
        ],
    );
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&dead), "{stderr}");
}

#[test]
fn an_endpoint_nobody_listens_on_is_a_setup_error() {
    let port = free_ports(1)[0];
    for op in ["put", "lease-keepalive"] {
        let output = bench(&format!("127.0.0.1:{port}"), &["--op", op, "--total", "5"]);
        assert!(!output.status.success(), "{op}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("127.0.0.1:{port}")),
            "{op}: {stderr}"
        );
    }
}
