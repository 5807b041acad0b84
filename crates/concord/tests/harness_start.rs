//! The check harness's cluster start says why a member did not come up,
//! and retries only the one failure that is not the member's fault: a port
//! of the probed-free block taken by another program before the member
//! bound it.
//!
//! A wrapper script stands in for `concord serve`: it fails some starts
//! the way the real binary does (a message on stderr, exit code 1) and
//! runs the real binary otherwise. It counts its starts in a file, so the
//! tests can tell how many attempts the harness made.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use concord_harness::{Cluster, ClusterSpec, HarnessError};

/// Writes `dir/concord-wrapper`: the `start`-th start (from 1) of member
/// `name` fails with `message`; every other start runs the real concord.
/// Members start concurrently, so each counts its own starts in
/// `dir/starts-<name>`.
fn wrapper(dir: &Path, name: &str, start: u32, message: &str) -> PathBuf {
    let path = dir.join("concord-wrapper");
    let script = format!(
        "#!/bin/sh\n\
         name=$3\n\
         counter='{dir}/starts-'$name\n\
         n=$(( $(cat \"$counter\" 2>/dev/null || echo 0) + 1 ))\n\
         echo $n > \"$counter\"\n\
         if [ \"$name\" = {name} ] && [ $n -eq {start} ]; then\n\
           echo 'concord: starting member: {message}' >&2; exit 1\n\
         fi\n\
         exec '{real}' \"$@\"\n",
        dir = dir.display(),
        real = env!("CARGO_BIN_EXE_concord"),
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Starts of each member, n1 first.
fn starts(dir: &Path) -> Vec<u32> {
    ["n1", "n2", "n3"]
        .iter()
        .map(|name| {
            std::fs::read_to_string(dir.join(format!("starts-{name}")))
                .map_or(0, |s| s.trim().parse().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_lost_its_port_is_retried_on_a_fresh_block() {
    let dir = tempfile::tempdir().unwrap();
    let bin = wrapper(
        dir.path(),
        "n1",
        1,
        "invalid configuration: cannot listen on client URL 127.0.0.1:1: \
         Address already in use (os error 98)",
    );
    let cluster = Cluster::start(ClusterSpec::new(3, &bin, dir.path().join("cluster")))
        .await
        .expect("the second attempt starts all three members");
    assert_eq!(cluster.len(), 3);
    // n1 started in the failed attempt and in the one that worked; n2 and
    // n3 may have been stopped in the first before their wrappers counted.
    let starts = starts(dir.path());
    assert_eq!(starts[0], 2, "{starts:?}");
    assert!(
        starts[1..].iter().all(|n| (1..=2).contains(n)),
        "{starts:?}"
    );
    let n1_log = std::fs::read_to_string(dir.path().join("cluster/n1.log")).unwrap();
    assert!(n1_log.contains("Address already in use"), "{n1_log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_exits_for_another_reason_fails_the_start_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let bin = wrapper(dir.path(), "n2", 1, "data dir is damaged beyond repair");
    let error = Cluster::start(ClusterSpec::new(3, &bin, dir.path().join("cluster")))
        .await
        .expect_err("n2 exits at start");
    match &error {
        HarnessError::NotReady {
            name,
            exit,
            log_tail,
            ..
        } => {
            assert_eq!(name, "n2");
            assert_eq!(exit.as_deref(), Some("exit status: 1"));
            assert!(log_tail.contains("damaged beyond repair"), "{log_tail}");
        }
        other => panic!("expected NotReady, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("exited before it was ready (exit status: 1)")
            && message.contains("damaged"),
        "{message}"
    );
    // Not retried: n1 and n2 started once (n3 may have been stopped
    // before its wrapper counted).
    let starts = starts(dir.path());
    assert_eq!(starts[..2], [1, 1], "{starts:?}");
    assert!(starts[2] <= 1, "{starts:?}");
}
