//! The apply path's cost: how fast the store applies puts and how many
//! bytes each put writes to the database file.
//!
//! ```text
//! cargo run --release -p concord-mvcc --example apply_cost [puts] [keys] [value_bytes] [batch] [random|sequential]
//! ```
//!
//! Defaults: 200,000 puts of 256-byte values over 10,000 random keys, in
//! batches of 64 commands, with deferred durability (what the node runs).
//! `sequential` cycles through the keys in order instead, so that
//! `1000000 1000000 256 64 sequential` builds a store of exactly one
//! million keys (and reports how long reopening it takes).
//! Prints puts/s, the growth of the file and the bytes this process wrote
//! (`/proc/self/io` `write_bytes`, Linux only) per put, and the time to
//! reopen the store (which rebuilds the in-memory key index).
//!
//! A benchmark, not a test: numbers depend on the machine (DESIGN:
//! "measured by benchmarks, never by timed tests").

use std::time::Instant;

use concord_mvcc::{Command, CommitDurability, PutRequest, Store, StoreOptions};

/// Bytes this process caused to be written to storage so far (Linux).
fn write_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
}

/// Resident set size in KiB (Linux).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// xorshift64*: a fixed seed, so every run writes the same keys.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .map(|a| a.parse().expect("numeric argument"))
        .unwrap_or(default)
}

fn main() {
    let puts = arg(1, 200_000);
    let keys = arg(2, 10_000);
    let value_bytes = arg(3, 256) as usize;
    let batch = arg(4, 64) as usize;
    let sequential = match std::env::args().nth(5).as_deref() {
        None | Some("random") => false,
        Some("sequential") => true,
        Some(other) => panic!("key order {other:?}: random or sequential"),
    };

    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("mvcc.redb");
    let options = StoreOptions {
        commit_durability: CommitDurability::Deferred,
        ..StoreOptions::default()
    };
    let mut store = Store::open(&path, options.clone()).expect("open");
    let size_before = std::fs::metadata(&path).expect("stat").len();
    let written_before = write_bytes();

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut index = 0u64;
    let mut commands = Vec::with_capacity(batch);
    let start = Instant::now();
    while index < puts {
        commands.clear();
        while commands.len() < batch && index < puts {
            index += 1;
            let n = if sequential {
                (index - 1) % keys
            } else {
                rng.next() % keys
            };
            let key = format!("/registry/key/{n:08}");
            let mut value = vec![0u8; value_bytes];
            for chunk in value.chunks_mut(8) {
                let r = rng.next().to_le_bytes();
                chunk.copy_from_slice(&r[..chunk.len()]);
            }
            commands.push((
                index,
                Command::Put(PutRequest {
                    key: key.into_bytes(),
                    value,
                    ..PutRequest::default()
                }),
            ));
        }
        for out in store.apply_batch(&commands).expect("apply") {
            out.expect("put");
        }
    }
    let elapsed = start.elapsed();
    // What the runs wrote before the last durable commit plus this flush
    // is everything the puts cost.
    store.flush().expect("flush");
    let elapsed_flushed = start.elapsed();
    let size_after = std::fs::metadata(&path).expect("stat").len();
    let written = match (written_before, write_bytes()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let rss = rss_kib();
    drop(store);

    let reopen = Instant::now();
    let store = Store::open(&path, options).expect("reopen");
    let reopen = reopen.elapsed();
    assert_eq!(store.applied_index(), puts);
    let rss_reopened = rss_kib();
    // Equal across store versions for the same puts (members compare it).
    let hash = store.reader().hash_kv(0).expect("hash").hash;

    let per_put = |bytes: u64| bytes as f64 / puts as f64;
    let order = if sequential { "sequential" } else { "random" };
    println!(
        "{puts} puts, {keys} {order} keys, {value_bytes}-byte values, batches of {batch}, deferred durability"
    );
    println!(
        "apply:   {:.0} puts/s ({:.2} s; {:.2} s with the final flush)",
        puts as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        elapsed_flushed.as_secs_f64()
    );
    println!(
        "file:    {} -> {} bytes, {:.0} bytes of growth per put",
        size_before,
        size_after,
        per_put(size_after.saturating_sub(size_before))
    );
    match written {
        Some(w) => println!(
            "written: {} bytes (/proc/self/io write_bytes), {:.0} bytes per put",
            w,
            per_put(w)
        ),
        None => println!("written: /proc/self/io unavailable"),
    }
    if let Some(rss) = rss {
        println!("rss:     {} MiB after the run", rss / 1024);
    }
    println!("reopen:  {:.1} ms", reopen.as_secs_f64() * 1e3);
    if let Some(rss) = rss_reopened {
        println!("rss:     {} MiB after reopening", rss / 1024);
    }
    println!("hash_kv: {hash:#010x}");
}
