//! etcdctl 3.4 coordination and maintenance commands against a 3-member
//! Concord cluster: `watch`, `lease`, `lock`, `elect`, `alarm`, `defrag`
//! (compared with a real etcd 3.4 cluster running the same command lines,
//! after normalizing ids, ports and TTL countdowns), `member add --learner`
//! / `promote` / `remove` with the added member really started and caught
//! up, and `snapshot save` restored with `concord snapshot restore`.
//!
//! `etcdctl snapshot restore` and `etcdctl snapshot status` cannot read a
//! Concord snapshot: etcd's is its bbolt database file, ours is the Concord
//! store's own stream in etcd's outer shape (padding and sha256 trailer,
//! which `snapshot save` checks). A Concord snapshot is restored with
//! `concord snapshot restore`, whose flags follow etcdctl's.
//!
//! Runs when `etcdctl` and `etcd` are on PATH; otherwise prints why it
//! skips and passes. Every child (members, etcd, long-running etcdctl) is
//! killed when the test ends or fails.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::etcd::{etcdctl_command, on_path, Etcd, Output};
use support::{free_ports, runtime, ChildGuard, Cluster};

/// How long a long-running etcdctl gets to print an expected line.
const LINE_TIMEOUT: Duration = Duration::from_secs(20);

fn tools_present() -> bool {
    for tool in ["etcdctl", "etcd"] {
        if !on_path(tool) {
            println!("{tool} not installed: skipping");
            return false;
        }
    }
    true
}

/// Runs etcdctl to completion with no input.
fn etcdctl(endpoints: &str, args: &[&str]) -> Output {
    support::etcd::etcdctl(endpoints, args, None)
}

/// A long-running etcdctl (watch, lock, elect) whose stdout lines arrive on
/// a channel; killed when dropped.
struct Running {
    guard: ChildGuard,
    lines: mpsc::Receiver<String>,
    what: String,
}

impl Running {
    fn start(endpoints: &str, args: &[&str]) -> Running {
        let mut child = etcdctl_command(endpoints, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcdctl");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            guard: ChildGuard::new(format!("etcdctl {}", args.join(" ")), child),
            lines,
            what: format!("etcdctl {}", args.join(" ")),
        }
    }

    /// The next `n` lines, or a panic naming what was printed so far.
    fn lines(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + LINE_TIMEOUT;
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => got.push(line),
                Err(_) => panic!("{}: expected {n} lines, got {got:?}", self.what),
            }
        }
        got
    }

    /// Whether nothing is printed for `quiet`.
    fn silent_for(&self, quiet: Duration) -> Result<(), String> {
        match self.lines.recv_timeout(quiet) {
            Ok(line) => Err(line),
            Err(_) => Ok(()),
        }
    }

    /// SIGTERM (etcdctl lock and elect release on it) and wait.
    fn terminate(mut self) {
        self.guard.terminate(Duration::from_secs(10));
    }
}

/// One side of a comparison and how its volatile tokens are renamed.
struct Side {
    name: &'static str,
    endpoints: String,
    /// (from, to) replacements: ports, member ids.
    renames: Vec<(String, String)>,
}

impl Side {
    fn run(&self, args: &[&str]) -> Output {
        etcdctl(&self.endpoints, args)
    }

    /// Renames ports and member ids, masks hex ids (leases, lock
    /// and election keys) and lease countdowns.
    fn normalize(&self, text: &str) -> String {
        let mut text = text.to_string();
        for (from, to) in &self.renames {
            text = text.replace(from, to);
        }
        mask_hex_ids(&mask_remaining(&text))
    }
}

/// Replaces every run of 10 to 16 hex digits by `<hex>` (lease ids and
/// the keys made from them; etcdctl prints some ids without leading
/// zeros).
fn mask_hex_ids(text: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if (10..=16).contains(&run.len()) {
            out.push_str("<hex>");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_hexdigit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// `remaining(97s)` -> `remaining(<s>)`: a countdown that moves.
fn mask_remaining(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("remaining(") {
        out.push_str(&rest[..at + "remaining(".len()]);
        rest = &rest[at + "remaining(".len()..];
        let end = rest.find(')').unwrap_or(rest.len());
        out.push_str("<s>");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The lease id (hex) in "lease 694d7b9d8a6c1c04 granted with TTL(100s)".
fn lease_id(granted: &str) -> String {
    granted
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no lease id in {granted:?}"))
        .to_string()
}

/// The reference etcd and Concord clusters, with their sides.
struct Pair {
    etcd: Etcd,
    /// Owned so its members live (and die) with the pair.
    _concord: Cluster,
    sides: [Side; 2],
    /// Member ids (decimal) of each side, by member index.
    ids: [Vec<u64>; 2],
}

impl Pair {
    fn start(runtime: &tokio::runtime::Runtime) -> Pair {
        let etcd = Etcd::start(3, "etcdctl-coord");
        etcd.wait_healthy();
        let concord = runtime.block_on(Cluster::start(3));
        let etcd_ids = runtime.block_on(async {
            let mut ids = Vec::new();
            for p in &etcd.client_ports {
                let mut c = support::connect(&[format!("http://127.0.0.1:{p}")]).await;
                ids.push(c.status().await.unwrap().header().unwrap().member_id());
            }
            ids
        });
        let concord_ids = runtime.block_on(concord.member_ids());
        let renames = |ports: &[u16], ids: &[u64]| {
            let mut r = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                r.push((id.to_string(), format!("<member n{}>", i + 1)));
                r.push((format!("{id:x}"), format!("<member n{}>", i + 1)));
            }
            for (i, p) in ports.iter().enumerate() {
                r.push((format!("127.0.0.1:{p}"), format!("<client n{}>", i + 1)));
            }
            r
        };
        let concord_ports: Vec<u16> = concord.members.iter().map(|m| m.client_port).collect();
        let sides = [
            Side {
                name: "etcd",
                endpoints: etcd.endpoints(),
                renames: renames(&etcd.client_ports, &etcd_ids),
            },
            Side {
                name: "concord",
                endpoints: concord
                    .members
                    .iter()
                    .map(|m| m.client_addr())
                    .collect::<Vec<_>>()
                    .join(","),
                renames: renames(&concord_ports, &concord_ids),
            },
        ];
        Pair {
            etcd,
            _concord: concord,
            sides,
            ids: [etcd_ids, concord_ids],
        }
    }

    /// Runs `args` on both sides; the normalized outputs must match, and
    /// the reference must exit with `code`. Returns the raw outputs.
    fn same(&self, args: &[&str], code: i32, mismatches: &mut Vec<String>) -> [Output; 2] {
        let outs = [self.sides[0].run(args), self.sides[1].run(args)];
        assert_eq!(
            outs[0].code,
            Some(code),
            "etcd answered `etcdctl {}` unexpectedly: {:?}\n{}",
            args.join(" "),
            outs[0],
            self.etcd.logs()
        );
        self.compare(&format!("etcdctl {}", args.join(" ")), &outs, mismatches);
        outs
    }

    fn compare(&self, what: &str, outs: &[Output; 2], mismatches: &mut Vec<String>) {
        let n: Vec<(Option<i32>, String, String)> = outs
            .iter()
            .zip(&self.sides)
            .map(|(o, s)| (o.code, s.normalize(&o.stdout), s.normalize(&o.errors)))
            .collect();
        if n[0] != n[1] {
            mismatches.push(format!(
                "{what}\n  etcd:    {:?}\n  concord: {:?}",
                n[0], n[1]
            ));
        }
    }

    /// Lines printed by a long-running etcdctl on both sides, compared.
    fn same_lines(
        &self,
        what: &str,
        running: &[Running; 2],
        n: usize,
        mismatches: &mut Vec<String>,
    ) -> [Vec<String>; 2] {
        let got = [running[0].lines(n), running[1].lines(n)];
        let norm: Vec<Vec<String>> = got
            .iter()
            .zip(&self.sides)
            .map(|(lines, s)| lines.iter().map(|l| s.normalize(l)).collect())
            .collect();
        if norm[0] != norm[1] {
            mismatches.push(format!(
                "{what}\n  etcd:    {:?}\n  concord: {:?}",
                norm[0], norm[1]
            ));
        }
        got
    }

    fn start_both(&self, args: &[&str]) -> [Running; 2] {
        [
            Running::start(&self.sides[0].endpoints, args),
            Running::start(&self.sides[1].endpoints, args),
        ]
    }
}

fn assert_no_mismatch(mismatches: &[String]) {
    assert!(
        mismatches.is_empty(),
        "{} etcdctl outputs differ between etcd and Concord:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

/// `watch` from a past revision with `--prefix` (history, then live
/// events), and `watch` of one key with `--rev`, on both clusters.
#[test]
fn etcdctl_watch_matches_etcd() {
    if !tools_present() {
        return;
    }
    let runtime = runtime();
    let pair = Pair::start(&runtime);
    let mut mismatches = Vec::new();
    // Both fresh clusters are at revision 1: these puts get 2, 3, 4.
    pair.same(&["put", "w/a", "1"], 0, &mut mismatches);
    pair.same(&["put", "other", "x"], 0, &mut mismatches);
    pair.same(&["put", "w/b", "2"], 0, &mut mismatches);
    let watch = pair.start_both(&["watch", "--prefix", "w/", "--rev=2"]);
    let single = pair.start_both(&["watch", "w/a", "--rev=2", "--prev-kv"]);
    // History: PUT w/a 1, PUT w/b 2 (three lines each).
    pair.same_lines(
        "watch --prefix --rev=2 (history)",
        &watch,
        6,
        &mut mismatches,
    );
    pair.same_lines("watch w/a --rev=2 (history)", &single, 3, &mut mismatches);
    pair.same(&["put", "w/a", "3"], 0, &mut mismatches);
    pair.same(&["del", "w/b"], 0, &mut mismatches);
    pair.same(&["put", "x/not-watched", "4"], 0, &mut mismatches);
    // A DELETE prints the key and an empty value.
    let live = pair.same_lines("watch --prefix (live)", &watch, 6, &mut mismatches);
    assert_eq!(
        live[1],
        ["PUT", "w/a", "3", "DELETE", "w/b", ""],
        "concord watch"
    );
    // --prev-kv prints the previous key and value before the new one.
    let single_live = pair.same_lines("watch w/a --prev-kv (live)", &single, 5, &mut mismatches);
    assert_eq!(single_live[1], ["PUT", "w/a", "1", "w/a", "3"]);
    for r in watch.iter().chain(&single) {
        if let Err(line) = r.silent_for(Duration::from_millis(300)) {
            mismatches.push(format!("{} printed more: {line:?}", r.what));
        }
    }
    assert_no_mismatch(&mismatches);
}

/// `lease grant / keep-alive --once / timetolive --keys / list / revoke`.
#[test]
fn etcdctl_lease_matches_etcd() {
    if !tools_present() {
        return;
    }
    let runtime = runtime();
    let pair = Pair::start(&runtime);
    let mut mismatches = Vec::new();
    let granted = pair.same(&["lease", "grant", "100"], 0, &mut mismatches);
    let ids: Vec<String> = granted.iter().map(|o| lease_id(&o.stdout)).collect();
    let per_side = |args: &dyn Fn(&str) -> Vec<String>, code: i32, mismatches: &mut Vec<String>| {
        let outs: Vec<Output> = (0..2)
            .map(|s| {
                let a = args(&ids[s]);
                let a: Vec<&str> = a.iter().map(String::as_str).collect();
                pair.sides[s].run(&a)
            })
            .collect();
        assert_eq!(outs[0].code, Some(code), "etcd: {:?}", outs[0]);
        let what = format!("etcdctl {}", args("<id>").join(" "));
        pair.compare(&what, &[outs[0].clone(), outs[1].clone()], mismatches);
        outs
    };
    per_side(
        &|id| {
            vec![
                "put".into(),
                "leased".into(),
                "v".into(),
                format!("--lease={id}"),
            ]
        },
        0,
        &mut mismatches,
    );
    let kept = per_side(
        &|id| {
            vec![
                "lease".into(),
                "keep-alive".into(),
                "--once".into(),
                id.into(),
            ]
        },
        0,
        &mut mismatches,
    );
    assert!(
        kept[1].stdout.contains("keepalived with TTL(100)"),
        "{kept:?}"
    );
    let ttl = per_side(
        &|id| {
            vec![
                "lease".into(),
                "timetolive".into(),
                "--keys".into(),
                id.into(),
            ]
        },
        0,
        &mut mismatches,
    );
    assert!(ttl[1].stdout.contains("attached keys([leased])"), "{ttl:?}");
    let listed = pair.same(&["lease", "list"], 0, &mut mismatches);
    assert!(listed[1].stdout.starts_with("found 1 leases"), "{listed:?}");
    per_side(
        &|id| vec!["lease".into(), "revoke".into(), id.into()],
        0,
        &mut mismatches,
    );
    pair.same(&["get", "leased"], 0, &mut mismatches);
    per_side(
        &|id| vec!["lease".into(), "timetolive".into(), id.into()],
        0,
        &mut mismatches,
    );
    pair.same(&["lease", "list"], 0, &mut mismatches);
    assert_no_mismatch(&mismatches);
}

/// `lock NAME` held by one etcdctl keeps `lock NAME -- cmd` waiting; once
/// the holder is stopped the command runs under the lock (its output is
/// etcdctl's output).
#[test]
fn etcdctl_lock_matches_etcd() {
    if !tools_present() {
        return;
    }
    let runtime = runtime();
    let pair = Pair::start(&runtime);
    let mut mismatches = Vec::new();
    let holder = pair.start_both(&["lock", "mylock"]);
    let held = pair.same_lines("lock mylock (holder)", &holder, 1, &mut mismatches);
    assert!(held[1][0].starts_with("mylock/"), "{held:?}");
    let waiter = pair.start_both(&[
        "lock",
        "mylock",
        "--",
        "sh",
        "-c",
        "echo under-lock $ETCD_LOCK_KEY",
    ]);
    for (w, side) in waiter.iter().zip(&pair.sides) {
        if let Err(line) = w.silent_for(Duration::from_secs(2)) {
            panic!(
                "{}: the waiter ran while the lock was held: {line}",
                side.name
            );
        }
    }
    let [h0, h1] = holder;
    h0.terminate();
    h1.terminate();
    let ran = pair.same_lines("lock mylock -- cmd (waiter)", &waiter, 1, &mut mismatches);
    assert!(ran[1][0].starts_with("under-lock mylock/"), "{ran:?}");
    // The waiter released the lock when its command ended.
    pair.same(
        &["get", "mylock", "--prefix", "--keys-only"],
        0,
        &mut mismatches,
    );
    assert_no_mismatch(&mismatches);
}

/// `elect NAME PROPOSAL` campaigns and prints the leader; `elect -l NAME`
/// sees it, and sees the next leader once the first one stops.
#[test]
fn etcdctl_elect_matches_etcd() {
    if !tools_present() {
        return;
    }
    let runtime = runtime();
    let pair = Pair::start(&runtime);
    let mut mismatches = Vec::new();
    let first = pair.start_both(&["elect", "myelection", "p1"]);
    let won = pair.same_lines("elect myelection p1", &first, 2, &mut mismatches);
    assert!(
        won[1][0].starts_with("myelection/") && won[1][1] == "p1",
        "{won:?}"
    );
    let listen = pair.start_both(&["elect", "-l", "myelection"]);
    let seen = pair.same_lines("elect -l myelection", &listen, 2, &mut mismatches);
    assert_eq!(seen[1], won[1], "the listener sees the leader");
    let second = pair.start_both(&["elect", "myelection", "p2"]);
    for (s, side) in second.iter().zip(&pair.sides) {
        if let Err(line) = s.silent_for(Duration::from_secs(1)) {
            panic!("{}: p2 won while p1 leads: {line}", side.name);
        }
    }
    let [f0, f1] = first;
    f0.terminate();
    f1.terminate();
    let next = pair.same_lines("elect myelection p2", &second, 2, &mut mismatches);
    assert_eq!(next[1][1], "p2");
    let seen = pair.same_lines("elect -l myelection (next)", &listen, 2, &mut mismatches);
    assert_eq!(seen[1], next[1]);
    assert_no_mismatch(&mismatches);
}

/// `alarm list` / `alarm disarm` with a NOSPACE alarm raised through the
/// Maintenance API on both clusters, a put refused meanwhile.
#[test]
fn etcdctl_alarm_matches_etcd() {
    if !tools_present() {
        return;
    }
    let runtime = runtime();
    let pair = Pair::start(&runtime);
    let mut mismatches = Vec::new();
    pair.same(&["alarm", "list"], 0, &mut mismatches);
    pair.same(&["alarm", "disarm"], 0, &mut mismatches);
    pair.same(&["put", "k", "v"], 0, &mut mismatches);
    for (side, ids) in pair.sides.iter().zip(&pair.ids) {
        let endpoint = format!("http://{}", side.endpoints.split(',').next().unwrap());
        runtime.block_on(async {
            let mut c = support::connect(&[endpoint]).await;
            let mut options = etcd_client::AlarmOptions::new();
            options.with_member(ids[1]);
            c.alarm(
                etcd_client::AlarmAction::Activate,
                etcd_client::AlarmType::Nospace,
                Some(options),
            )
            .await
            .unwrap_or_else(|e| panic!("{}: activate NOSPACE: {e}", side.name));
        });
    }
    // Concord refuses writes on the member that receives them, once the
    // alarm has applied there (alarm.rs, difference 1): wait until every
    // member lists it (a linearizable GET on that member).
    for side in &pair.sides {
        for endpoint in side.endpoints.split(',') {
            support::must_wait_for_blocking("every member to list the alarm", || {
                let out = etcdctl(endpoint, &["alarm", "list"]);
                if out.stdout.contains("alarm:NOSPACE") {
                    Ok(())
                } else {
                    Err(out)
                }
            });
        }
    }
    let listed = pair.same(&["alarm", "list"], 0, &mut mismatches);
    assert_eq!(
        listed[1].stdout,
        format!("memberID:{} alarm:NOSPACE \n", pair.ids[1][1])
    );
    let refused = pair.same(&["put", "k", "v2"], 1, &mut mismatches);
    assert_eq!(
        refused[1].errors,
        "Error: etcdserver: mvcc: database space exceeded"
    );
    pair.same(&["get", "k"], 0, &mut mismatches);
    pair.same(&["del", "k"], 0, &mut mismatches);
    pair.same(&["alarm", "disarm"], 0, &mut mismatches);
    pair.same(&["alarm", "list"], 0, &mut mismatches);
    pair.same(&["put", "k", "v3"], 0, &mut mismatches);
    pair.same(&["get", "k"], 0, &mut mismatches);
    assert_no_mismatch(&mismatches);
}

/// `defrag` of every endpoint, after compaction, with the data intact.
#[test]
fn etcdctl_defrag_matches_etcd() {
    if !tools_present() {
        return;
    }
    let runtime = runtime();
    let pair = Pair::start(&runtime);
    let mut mismatches = Vec::new();
    for i in 0..20 {
        pair.same(&["put", "d/k", &format!("v{i}")], 0, &mut mismatches);
    }
    pair.same(&["compaction", "20"], 0, &mut mismatches);
    pair.same(&["defrag"], 0, &mut mismatches);
    pair.same(&["get", "d/k"], 0, &mut mismatches);
    pair.same(&["put", "d/k", "after"], 0, &mut mismatches);
    assert_no_mismatch(&mismatches);
}

/// `member add --learner` (sent to a follower), the learner started with
/// `--initial-cluster-state existing` catching up, `member promote`, and
/// `member remove`, all through etcdctl.
#[test]
fn etcdctl_member_add_learner_promote_remove() {
    if !on_path("etcdctl") {
        println!("etcdctl not installed: skipping");
        return;
    }
    let runtime = runtime();
    let mut cluster = runtime.block_on(Cluster::start(3));
    let leader = runtime.block_on(cluster.wait_leader());
    let follower = (leader + 1) % 3;
    let via = cluster.members[follower].client_addr();
    for i in 0..20 {
        let out = etcdctl(&via, &["put", &format!("before/{i}"), "v"]);
        assert_eq!(out.code, Some(0), "{out:?}");
    }
    let new = cluster.reserve_member();
    let peer = cluster.members[new].peer_url();
    let name = cluster.members[new].name.clone();
    let added = etcdctl(
        &via,
        &[
            "member",
            "add",
            &name,
            "--learner",
            &format!("--peer-urls={peer}"),
        ],
    );
    assert_eq!(added.code, Some(0), "{added:?}");
    let lines: Vec<&str> = added.stdout.lines().collect();
    assert!(
        lines[0].starts_with("Member ") && lines[0].contains(" added to cluster "),
        "{added:?}"
    );
    // etcdctl prints ids here as `%16x`: padded with spaces when shorter.
    let id = lines[0].split_whitespace().nth(1).unwrap().to_string();
    let env: BTreeMap<&str, &str> = lines
        .iter()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k, v.trim_matches('"')))
        .collect();
    assert_eq!(env.get("ETCD_NAME"), Some(&name.as_str()), "{added:?}");
    assert_eq!(env.get("ETCD_INITIAL_CLUSTER_STATE"), Some(&"existing"));
    assert_eq!(
        env.get("ETCD_INITIAL_ADVERTISE_PEER_URLS"),
        Some(&peer.as_str())
    );
    let initial_cluster = env["ETCD_INITIAL_CLUSTER"].to_string();
    assert!(initial_cluster.contains(&format!("{name}={peer}")));
    let listed = etcdctl(&via, &["member", "list"]);
    assert!(
        listed
            .stdout
            .contains(&format!("{id}, unstarted, , {peer}, , true")),
        "{listed:?}"
    );

    cluster.start_joining(new, &initial_cluster);
    let learner = cluster.members[new].client_addr();
    support::must_wait_for_blocking("the learner to catch up", || {
        let out = etcdctl(&learner, &["get", "before/19", "--consistency=s"]);
        if out.stdout == "before/19\nv\n" {
            Ok(())
        } else {
            Err(out)
        }
    });
    // Once running, the learner publishes its name and client URLs.
    let started = format!(
        "{id}, started, {name}, {peer}, {}, true",
        cluster.members[new].client_url()
    );
    support::must_wait_for_blocking("the learner listed as started", || {
        let listed = etcdctl(&via, &["member", "list"]);
        if listed.stdout.contains(&started) {
            Ok(())
        } else {
            Err(listed)
        }
    });

    let promoted = etcdctl(&via, &["member", "promote", &id]);
    assert_eq!(promoted.code, Some(0), "{promoted:?}");
    assert!(
        promoted
            .stdout
            .starts_with(&format!("Member {id:>16} promoted in cluster ")),
        "{promoted:?}"
    );
    let listed = etcdctl(&via, &["member", "list"]);
    assert!(
        listed
            .stdout
            .contains(&format!("{id}, started, {name}, {peer}"))
            && listed.stdout.contains(", false\n"),
        "{listed:?}"
    );
    assert!(!listed.stdout.contains(", true"), "{listed:?}");
    // The promoted member votes and serves linearizable writes and reads.
    let put = etcdctl(&learner, &["put", "after", "promote"]);
    assert_eq!(put.code, Some(0), "{put:?}");

    let removed = etcdctl(&via, &["member", "remove", &id]);
    assert_eq!(removed.code, Some(0), "{removed:?}");
    assert!(
        removed
            .stdout
            .starts_with(&format!("Member {id:>16} removed from cluster ")),
        "{removed:?}"
    );
    let listed = etcdctl(&via, &["member", "list"]);
    assert_eq!(listed.stdout.lines().count(), 3, "{listed:?}");
    assert!(!listed.stdout.contains(&id), "{listed:?}");
    let put = etcdctl(&via, &["put", "after", "remove"]);
    assert_eq!(put.code, Some(0), "{put:?}");
}

/// `etcdctl snapshot save` from a member, `concord snapshot restore` into a
/// new data directory, and a new single-member cluster served from it that
/// shows the keys (etcdctl snapshot restore cannot read our format; see
/// the module doc).
#[test]
fn etcdctl_snapshot_save_then_concord_restore() {
    if !on_path("etcdctl") {
        println!("etcdctl not installed: skipping");
        return;
    }
    let runtime = runtime();
    let cluster = runtime.block_on(Cluster::start(3));
    let endpoints = cluster
        .members
        .iter()
        .map(|m| m.client_addr())
        .collect::<Vec<_>>()
        .join(",");
    for i in 0..10 {
        let out = etcdctl(&endpoints, &["put", &format!("snap/{i}"), &format!("v{i}")]);
        assert_eq!(out.code, Some(0), "{out:?}");
    }
    let file = cluster.dir().join("backup.db");
    let file_arg = file.to_string_lossy().to_string();
    let first = cluster.members[0].client_addr();
    let saved = etcdctl(&first, &["snapshot", "save", &file_arg]);
    assert_eq!(saved.code, Some(0), "{saved:?}");
    assert!(
        saved
            .stdout
            .contains(&format!("Snapshot saved at {file_arg}")),
        "{saved:?}"
    );

    let ports = free_ports(2);
    let client = format!("http://127.0.0.1:{}", ports[0]);
    let peer = format!("http://127.0.0.1:{}", ports[1]);
    let data_dir = cluster.dir().join("restored");
    let restore = Command::new(support::concord_bin())
        .args(["snapshot", "restore", &file_arg, "--name", "r1"])
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--initial-cluster", &format!("r1={peer}")])
        .args(["--initial-cluster-token", "restored"])
        .args(["--initial-advertise-peer-urls", &peer])
        .output()
        .expect("run concord snapshot restore");
    assert!(restore.status.success(), "{restore:?}");

    let log_path = cluster.dir().join("restored.log");
    let _member = serve_single(&data_dir, &client, &peer, &log_path);
    let addr = client.trim_start_matches("http://").to_string();
    let got = support::must_wait_for_blocking("the restored member to serve", || {
        let out = etcdctl(&addr, &["get", "snap/", "--prefix"]);
        if out.code == Some(0) && !out.stdout.is_empty() {
            Ok(out)
        } else {
            Err(out)
        }
    });
    let want: String = (0..10).map(|i| format!("snap/{i}\nv{i}\n")).collect();
    assert_eq!(got.stdout, want);
    let listed = etcdctl(&addr, &["member", "list"]);
    assert_eq!(listed.stdout.lines().count(), 1, "{listed:?}");
    assert!(listed.stdout.contains(", started, r1, "), "{listed:?}");
    let put = etcdctl(&addr, &["put", "snap/new", "x"]);
    assert_eq!(put.code, Some(0), "{put:?}");
}

/// `concord serve` of a single restored member; killed when dropped.
fn serve_single(data_dir: &Path, client: &str, peer: &str, log_path: &Path) -> ChildGuard {
    let log = std::fs::File::create(log_path).expect("log");
    let child = Command::new(support::concord_bin())
        .args(["serve", "--name", "r1"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen-client-urls", client])
        .args(["--advertise-client-urls", client])
        .args(["--listen-peer-urls", peer])
        .args(["--initial-advertise-peer-urls", peer])
        .args(["--initial-cluster", &format!("r1={peer}")])
        .args(["--initial-cluster-token", "restored"])
        .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn concord serve");
    ChildGuard::new("restored r1", child)
}
