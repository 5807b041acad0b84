//! `--op chain-probe`: the machine's floor for a replicated durable write.
//!
//! The fsync probe measures one durable write alone. A put to a 3-member
//! Raft group does more that no implementation can skip: the request
//! crosses to the leader, the leader sends the entry to both followers,
//! all three write and sync at once on the same disk, and the leader
//! answers once it and one follower hold the entry durably. This probe
//! does exactly that and nothing else, with the fewest threads it can:
//!
//! ```text
//!  client --TCP--> leader --TCP--> follower 1: pwrite + fdatasync, ack
//!                         --TCP--> follower 2: pwrite + fdatasync, ack
//!                  leader: pwrite + fdatasync (after the sends)
//!                  leader: first ack --TCP--> client
//! ```
//!
//! Four threads (client, leader, two followers) in this process, each
//! syncing its own preallocated file in `--probe-dir`, talking over
//! loopback TCP with Nagle off; no encoding, no log, no state machine, no
//! runtime. Its p50 is the cost of the chain's physics on this machine
//! (two TCP round trips, three concurrent syncs, the thread wake-ups
//! between them), which any member process pays at least.
//!
//! Invariants: every answer follows the leader's own sync and at least one
//! follower's acknowledgement of that very request (acks carry the
//! request's number); the files are bounded by
//! [`crate::fsync_probe::PROBE_FILE_MAX_BYTES`] and removed however the run ends;
//! every thread ends when the client hangs up.

use crate::error::BenchError;
use crate::fsync_probe::ProbeFile;
use crate::options::BenchConfig;
use crate::report::{ClientTally, Report};
use crate::schedule::Schedule;
use rustix::event::{PollFd, PollFlags};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Instant;

/// A request or an ack is identified by its number (little-endian u64).
const SEQ_BYTES: usize = 8;

fn net(what: &'static str) -> impl FnOnce(std::io::Error) -> BenchError {
    move |source| BenchError::Io {
        what,
        path: "loopback".into(),
        source,
    }
}

/// A connected pair of loopback sockets, Nagle off on both.
fn pair() -> Result<(TcpStream, TcpStream), BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(net("binding"))?;
    let address = listener.local_addr().map_err(net("binding"))?;
    let near = TcpStream::connect(address).map_err(net("connecting"))?;
    let (far, _) = listener.accept().map_err(net("accepting"))?;
    for stream in [&near, &far] {
        stream
            .set_nodelay(true)
            .map_err(net("setting TCP_NODELAY"))?;
    }
    Ok((near, far))
}

/// Reads one frame; `Ok(false)` when the peer hung up cleanly first.
fn read_frame(stream: &mut TcpStream, frame: &mut [u8]) -> Result<bool, BenchError> {
    match stream.read_exact(frame) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(net("reading")(e)),
    }
}

fn seq_of(frame: &[u8]) -> u64 {
    let mut bytes = [0u8; SEQ_BYTES];
    bytes.copy_from_slice(&frame[..SEQ_BYTES]);
    u64::from_le_bytes(bytes)
}

/// A follower: each frame written and synced, then acknowledged.
fn follower(
    mut from_leader: TcpStream,
    mut file: ProbeFile,
    frame_bytes: usize,
) -> Result<(), BenchError> {
    let mut frame = vec![0u8; frame_bytes];
    while read_frame(&mut from_leader, &mut frame)? {
        file.append_durably(&frame)?;
        from_leader
            .write_all(&frame[..SEQ_BYTES])
            .map_err(net("acknowledging"))?;
    }
    Ok(())
}

/// The leader: forwards each request to both followers, syncs its own
/// copy, waits for the first follower that acknowledged it, answers.
fn leader(
    mut from_client: TcpStream,
    mut followers: [TcpStream; 2],
    mut file: ProbeFile,
    frame_bytes: usize,
) -> Result<(), BenchError> {
    let mut frame = vec![0u8; frame_bytes];
    let mut acked = [0u64; 2];
    let mut ack = [0u8; SEQ_BYTES];
    let result = (|| {
        while read_frame(&mut from_client, &mut frame)? {
            let seq = seq_of(&frame);
            for follower in &mut followers {
                follower.write_all(&frame).map_err(net("replicating"))?;
            }
            file.append_durably(&frame)?;
            while acked.iter().all(|&a| a < seq) {
                let [first, second] = &followers;
                let mut fds = [
                    PollFd::new(first, PollFlags::IN),
                    PollFd::new(second, PollFlags::IN),
                ];
                rustix::event::poll(&mut fds, None)
                    .map_err(std::io::Error::from)
                    .map_err(net("polling"))?;
                let readable: Vec<bool> = fds.iter().map(|fd| !fd.revents().is_empty()).collect();
                for (i, follower) in followers.iter_mut().enumerate() {
                    if readable[i] {
                        if !read_frame(follower, &mut ack)? {
                            return Err(net("reading an ack")(
                                std::io::ErrorKind::UnexpectedEof.into(),
                            ));
                        }
                        acked[i] = seq_of(&ack);
                    }
                }
            }
            from_client
                .write_all(&frame[..SEQ_BYTES])
                .map_err(net("answering"))?;
        }
        Ok(())
    })();
    // The followers end on the hang-up, also after an error here; their
    // last acks are read to the end, so a slower follower's final ack is
    // not written into a closed socket.
    for follower in &mut followers {
        let _ = follower.shutdown(Shutdown::Write);
        let _ = std::io::copy(follower, &mut std::io::sink());
    }
    result
}

/// Runs the probe (one client, closed loop) and reports the client's
/// request-to-answer latency.
pub fn run(config: &BenchConfig) -> Result<Report, BenchError> {
    let frame_bytes = SEQ_BYTES + config.val_size;
    let file = |role: &str| {
        ProbeFile::create(config.probe_dir.join(format!(
            ".concord-chain-probe.{}.{role}",
            std::process::id()
        )))
    };
    let (mut client, leader_from_client) = pair()?;
    let (to_first, first_from_leader) = pair()?;
    let (to_second, second_from_leader) = pair()?;
    let files = [file("leader")?, file("follower1")?, file("follower2")?];
    let [leader_file, first_file, second_file] = files;
    let threads = [
        spawn("chain-follower1", move || {
            follower(first_from_leader, first_file, frame_bytes)
        })?,
        spawn("chain-follower2", move || {
            follower(second_from_leader, second_file, frame_bytes)
        })?,
        spawn("chain-leader", move || {
            leader(
                leader_from_client,
                [to_first, to_second],
                leader_file,
                frame_bytes,
            )
        })?,
    ];
    let mut frame = crate::keys::value(frame_bytes);
    let mut answer = [0u8; SEQ_BYTES];
    let mut tally = ClientTally::default();
    let start = Instant::now();
    let schedule = Schedule::new(start, None, config.total, config.duration);
    let mut seq = 0u64;
    let measured = (|| {
        while let Some(ticket) = schedule.take(Instant::now()) {
            seq += 1;
            frame[..SEQ_BYTES].copy_from_slice(&seq.to_le_bytes());
            client.write_all(&frame).map_err(net("sending"))?;
            if !read_frame(&mut client, &mut answer)? || seq_of(&answer) != seq {
                return Err(net("reading the answer")(std::io::Error::other(
                    "the leader answered out of order or hung up",
                )));
            }
            tally.latencies.record(ticket.due.elapsed());
        }
        Ok(())
    })();
    let elapsed = start.elapsed();
    let _ = client.shutdown(Shutdown::Both);
    drop(client);
    let mut failure = measured.err();
    for thread in threads {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(_) => {
                failure = failure.or(Some(net("probe thread")(std::io::Error::other("panicked"))))
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(Report::new(config, &tally, 0, elapsed)),
    }
}

fn spawn(
    name: &str,
    body: impl FnOnce() -> Result<(), BenchError> + Send + 'static,
) -> Result<std::thread::JoinHandle<Result<(), BenchError>>, BenchError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .map_err(net("starting a probe thread"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{parse, Op};

    #[test]
    fn every_request_is_answered_and_the_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let probe_dir = dir.path().to_str().unwrap();
        let config = parse(&[
            "--op",
            "chain-probe",
            "--total",
            "50",
            "--probe-dir",
            probe_dir,
        ])
        .unwrap();
        assert_eq!(config.op, Op::ChainProbe);
        let report = run(&config).unwrap();
        assert_eq!((report.ok, report.errors), (50, 0));
        assert!(report.endpoints.is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
