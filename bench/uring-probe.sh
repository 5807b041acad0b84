#!/usr/bin/env bash
# Does a durable 4 KiB append need a helper thread? Compares, with fio at
# queue depth 1 on this machine's disk, the ways a WAL can make one write
# durable:
#   buffered  pwrite + fdatasync (Concord's WAL today, on its own thread)
#   direct    O_DIRECT + O_DSYNC pwritev2, blocking
#   uring     O_DIRECT + O_DSYNC through io_uring (what a loop could submit
#             and reap from its own poll, with no thread of ours)
#   uring-buf buffered write + fsync through io_uring (the kernel punts the
#             sync to an iou-wrk worker thread)
# The file is written in full first (--overwrite=1), as Concord zeroes a
# segment ahead of its records, so a sync commits no extent conversion.
# Each line gives write (and sync) latency p50/p99, context switches per
# op, system CPU, and how many iou-wrk kernel threads were seen mid-run.
# With --jobs 3 the methods run three writers at once, as the three
# members of a cluster on one disk do.
#
#   bash bench/uring-probe.sh [--ops 4000] [--rounds 2] [--jobs 1] [--dir DIR]
#
# Installs fio if missing (apt). Every run is bounded by --ops; the data
# folder is removed at the end.
set -euo pipefail

ops=4000 rounds=2 jobs=1 dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --ops) ops="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --dir) dir="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
command -v fio >/dev/null 2>&1 || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio >/dev/null
}
work="$(mktemp -d "${dir:-${TMPDIR:-/tmp}}/uring-probe.XXXXXX")"
trap 'rm -rf "$work"' EXIT

probe() {
  local label="$1"; shift
  rm -f "$work"/w.*
  fio --name=w --directory="$work" --size=64m --bs=4k --rw=write \
    --overwrite=1 --number_ios="$ops" --iodepth=1 --numjobs="$jobs" --output-format=json \
    "$@" > "$work/out.json" 2> "$work/err" &
  local pid=$! workers=0 seen
  # Sample the kernel's io_uring worker threads while fio runs.
  for _ in 1 2 3 4 5; do
    sleep 0.2
    seen=$(ps -eLo comm | grep -c '^iou-wrk' || true)
    [ "$seen" -gt "$workers" ] && workers=$seen
  done
  wait "$pid" || { cat "$work/err" >&2; return 1; }
  python3 - "$label" "$workers" "$ops" "$work/out.json" <<'PY'
import json, sys
label, workers, ops, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
jobs = json.load(open(path))["jobs"]
def pct(lat, p):
    return lat.get("percentile", {}).get(p, 0) / 1000
w50 = [pct(j["write"]["clat_ns"], "50.000000") for j in jobs]
w99 = [pct(j["write"]["clat_ns"], "99.000000") for j in jobs]
s50 = [pct(j.get("sync", {}).get("lat_ns", {}), "50.000000") for j in jobs]
ctx = sum(j["ctx"] for j in jobs) / (ops * len(jobs))
sys_cpu = sum(j["sys_cpu"] for j in jobs) / len(jobs)
fmt = lambda xs: "/".join(f"{x:.0f}" for x in xs)
print(f"{label:10s} write p50 {fmt(w50):>11s} us  p99 {fmt(w99):>11s} us  "
      f"sync p50 {fmt(s50):>11s} us  ctx/op {ctx:4.2f}  sys {sys_cpu:4.1f}%  "
      f"iou-wrk {workers}")
PY
}

echo "fio $(fio --version), $ops ops per writer, $jobs writer(s), in $work"
for round in $(seq "$rounds"); do
  echo "-- round $round"
  probe buffered  --ioengine=psync --fdatasync=1
  probe direct    --ioengine=pvsync2 --direct=1 --sync=dsync
  probe uring     --ioengine=io_uring --direct=1 --sync=dsync
  probe uring-buf --ioengine=io_uring --fdatasync=1
done
