//! `concord dev`: a local cluster of separate `concord serve` processes in
//! one command, on etcd's customary ports (client 2379, 22379, 32379, ...).
//! Ctrl-C stops every member cleanly.

use anyhow::{bail, Context};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Client ports of the members, in order (peer port = client port + 1).
const CLIENT_PORTS: [u16; 7] = [2379, 22379, 32379, 42379, 52379, 62379, 12379];

/// How long members get to stop after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Flags of `concord dev`.
#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Number of members (1 to 7).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Folder holding every member's data and log.
    #[arg(long, default_value = "concord-dev")]
    data_dir: PathBuf,
}

struct Members(Vec<(String, Child)>);

impl Drop for Members {
    fn drop(&mut self) {
        for (_, child) in &self.0 {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
        }
        let deadline = Instant::now() + STOP_GRACE;
        for (name, child) in &mut self.0 {
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        eprintln!("{name} stopped ({status})");
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        eprintln!("{name} killed");
                        break;
                    }
                }
            }
        }
    }
}

/// Runs the local cluster until Ctrl-C.
pub fn run(args: DevArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.nodes > CLIENT_PORTS.len() {
        bail!("--nodes must be between 1 and {}", CLIENT_PORTS.len());
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let exe = std::env::current_exe().context("locating the concord binary")?;
    let names: Vec<String> = (1..=args.nodes).map(|i| format!("infra{i}")).collect();
    let cluster: Vec<String> = names
        .iter()
        .zip(CLIENT_PORTS)
        .map(|(n, port)| format!("{n}=http://127.0.0.1:{}", port + 1))
        .collect();
    let cluster = cluster.join(",");
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))?;

    let mut members = Members(Vec::new());
    let mut endpoints = Vec::new();
    for (name, port) in names.iter().zip(CLIENT_PORTS) {
        let log_path = args.data_dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let client = format!("http://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{}", port + 1);
        let child = Command::new(&exe)
            .arg("serve")
            .args(["--name", name])
            .arg("--data-dir")
            .arg(args.data_dir.join(name))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &cluster])
            .args(["--initial-cluster-token", "concord-dev"])
            .args(["--initial-cluster-state", "new"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        members.0.push((name.clone(), child));
        endpoints.push(format!("127.0.0.1:{port}"));
    }
    let endpoints = endpoints.join(",");
    println!(
        "Concord dev cluster: {} members, data and logs in {}",
        args.nodes,
        args.data_dir.display()
    );
    for (name, port) in names.iter().zip(CLIENT_PORTS) {
        println!(
            "  {name}: client http://127.0.0.1:{port}  peer http://127.0.0.1:{}",
            port + 1
        );
    }
    println!("Try:");
    println!("  ETCDCTL_API=3 etcdctl --endpoints={endpoints} put greeting hello");
    println!("  ETCDCTL_API=3 etcdctl --endpoints={endpoints} get greeting");
    println!("  ETCDCTL_API=3 etcdctl --endpoints={endpoints} endpoint status -w table");
    println!("Press Ctrl-C to stop.");
    loop {
        if stop.load(Ordering::Relaxed) {
            println!("stopping...");
            drop(members);
            return Ok(());
        }
        for (name, child) in &mut members.0 {
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "{name} exited ({status}); see {}",
                    args.data_dir.join(format!("{name}.log")).display()
                );
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
