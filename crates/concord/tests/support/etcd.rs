//! The reference peer: a real etcd cluster of separate processes, and
//! etcdctl runs whose output tests compare between etcd and Concord.

use super::{free_ports, tail, ChildGuard};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh etcd cluster gets to report healthy.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether `program --version` runs.
pub fn on_path(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A real etcd cluster of separate processes, killed when dropped (their
/// logs printed if a test is failing).
pub struct Etcd {
    processes: Vec<ChildGuard>,
    /// Client port of member `i` (named `n{i+1}`).
    pub client_ports: Vec<u16>,
    /// Peer port of member `i`.
    pub peer_ports: Vec<u16>,
    dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts `size` members with the test timers and `token`.
    pub fn start(size: usize, token: &str) -> Etcd {
        let dir = tempfile::Builder::new()
            .prefix("etcd-test-")
            .tempdir()
            .expect("temp dir");
        let ports = free_ports(size * 2);
        let client_ports: Vec<u16> = (0..size).map(|i| ports[2 * i]).collect();
        let peer_ports: Vec<u16> = (0..size).map(|i| ports[2 * i + 1]).collect();
        let initial_cluster = (0..size)
            .map(|i| format!("n{}=http://127.0.0.1:{}", i + 1, peer_ports[i]))
            .collect::<Vec<_>>()
            .join(",");
        let mut processes = Vec::new();
        for i in 0..size {
            let name = format!("n{}", i + 1);
            let log =
                std::fs::File::create(dir.path().join(format!("{name}.log"))).expect("etcd log");
            let client = format!("http://127.0.0.1:{}", client_ports[i]);
            let peer = format!("http://127.0.0.1:{}", peer_ports[i]);
            let child = Command::new("etcd")
                .args(["--name", &name])
                .arg("--data-dir")
                .arg(dir.path().join(&name))
                .args(["--listen-client-urls", &client])
                .args(["--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer])
                .args(["--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &initial_cluster])
                .args(["--initial-cluster-token", token])
                .args(["--initial-cluster-state", "new"])
                .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
                .args(["--logger", "zap"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log handle"))
                .stderr(log)
                .spawn()
                .expect("spawn etcd");
            processes.push(ChildGuard::new(format!("etcd {name}"), child));
        }
        Etcd {
            processes,
            client_ports,
            peer_ports,
            dir,
        }
    }

    /// Waits until `etcdctl endpoint health` passes on every member.
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + HEALTHY_TIMEOUT;
        loop {
            let health = etcdctl(&self.endpoints(), &["endpoint", "health"], None);
            if health.code == Some(0) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy: {health:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `127.0.0.1:<client port>` of every member, comma-separated.
    pub fn endpoints(&self) -> String {
        self.client_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The tail of every member's log.
    pub fn logs(&self) -> String {
        (0..self.processes.len())
            .map(|i| {
                let path = self.dir.path().join(format!("n{}.log", i + 1));
                format!("--- etcd n{} ---\n{}", i + 1, tail(&path, 20))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for p in &mut self.processes {
            p.kill();
        }
    }
}

/// What one etcdctl run printed.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Only the `Error: ...` lines: the rest of stderr is client logging
    /// with timestamps and random client ids.
    pub errors: String,
}

/// An etcdctl (API v3) command line against `endpoints`, with bounded dial
/// and command timeouts.
pub fn etcdctl_command(endpoints: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(["--dial-timeout=5s", "--command-timeout=15s"])
        .args(args)
        .stdin(Stdio::null());
    cmd
}

/// Runs etcdctl to completion, feeding it `stdin` if given.
pub fn etcdctl(endpoints: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = etcdctl_command(endpoints, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn etcdctl");
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input
                .write_all(text.as_bytes())
                .expect("write etcdctl stdin");
        }
    }
    // etcdctl's own --dial-timeout and --command-timeout bound this wait.
    let out = child.wait_with_output().expect("wait for etcdctl");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        errors: String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| l.starts_with("Error:"))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}
