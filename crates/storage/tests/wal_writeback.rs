//! How many bytes a small synced append makes the kernel write back, with
//! the WAL's zeros written ahead of its records. Alone in its test binary
//! because it reads the process's own I/O counters (`/proc/self/io`), which
//! other tests running in parallel threads would disturb.

mod common;

use common::*;

fn write_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_small_synced_append_writes_back_pages_not_the_zeroed_stretch() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = open(tmp.path());
    s.append(&entries(1, 1, 1)).unwrap();
    s.sync().unwrap();
    let Some(before) = write_bytes() else {
        eprintln!("no /proc/self/io on this system: nothing to measure");
        return;
    };
    const APPENDS: u64 = 400;
    for i in 2..2 + APPENDS {
        s.append(&[entry(i, 1, &[7u8; 300])]).unwrap();
        s.sync().unwrap();
    }
    let per_append = (write_bytes().unwrap() - before) / APPENDS;
    // One 300-byte record dirties one or two pages; the stretch of zeros
    // ahead adds its 128 KiB once per ~400 such appends. Zeros written as
    // one large write made each sync write back a whole large folio
    // (tens of KiB).
    assert!(
        per_append < 12 << 10,
        "{per_append} bytes written back per 300-byte synced append"
    );
}
