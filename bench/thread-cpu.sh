#!/usr/bin/env bash
# bench/thread-cpu.sh: where a 3-member Concord spends its CPU per op, by
# thread, under one bench load (by default puts from one client to the
# leader), for A/B runs of two builds.
#
# Starts a fresh 3-member cluster of --bin on loopback, finds the leader,
# warms up for 2 s, then reads utime+stime of every member thread from
# /proc/<pid>/task/*/stat before and after a --seconds run of
# `concord bench` and prints CPU microseconds per completed op per thread
# (L = the leader's, F = a follower's) and the bench's p50.
#
# Usage: bench/thread-cpu.sh --bin PATH [--clients N] [--conns N]
#                            [--seconds S] [--port-base P] [--work DIR]
# Every member started here is killed on exit; the load is bounded by
# --seconds.
set -euo pipefail

BIN=""
CLIENTS=1
CONNS=1
SECONDS_RUN=6
PORT_BASE=23000
WORK=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN="$2"; shift 2 ;;
    --clients) CLIENTS="$2"; shift 2 ;;
    --conns) CONNS="$2"; shift 2 ;;
    --seconds) SECONDS_RUN="$2"; shift 2 ;;
    --port-base) PORT_BASE="$2"; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ -x "$BIN" ] || { echo "--bin must name a concord binary" >&2; exit 2; }
command -v etcdctl >/dev/null || { echo "needs etcdctl (apt-get install etcd-client)" >&2; exit 2; }
OWN_WORK=0
if [ -z "$WORK" ]; then WORK=$(mktemp -d -t concord-thread-cpu.XXXXXX); OWN_WORK=1; fi
mkdir -p "$WORK"

client_port() { echo $(( PORT_BASE + 10 * $1 )); }
peer_port() { echo $(( PORT_BASE + 10 * $1 + 1 )); }
cluster=""
for j in 0 1 2; do cluster="$cluster${cluster:+,}m$j=http://127.0.0.1:$(peer_port $j)"; done
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"/m?/
  [ "$OWN_WORK" = 0 ] || rm -rf "$WORK"
}
trap cleanup EXIT
for i in 0 1 2; do
  RUST_LOG=warn "$BIN" serve --name "m$i" --data-dir "$WORK/m$i" \
    --listen-client-urls "http://127.0.0.1:$(client_port $i)" --advertise-client-urls "http://127.0.0.1:$(client_port $i)" \
    --listen-peer-urls "http://127.0.0.1:$(peer_port $i)" --initial-advertise-peer-urls "http://127.0.0.1:$(peer_port $i)" \
    --initial-cluster "$cluster" --initial-cluster-token thread-cpu --initial-cluster-state new >"$WORK/m$i.log" 2>&1 &
  pids+=($!)
done

# The leader: the member whose status names itself; bounded wait.
leader=""
for _ in $(seq 1 100); do
  for i in 0 1 2; do
    if etcdctl --endpoints="127.0.0.1:$(client_port $i)" --command-timeout=1s endpoint status -w json 2>/dev/null |
      python3 -c 'import json,sys; s=json.load(sys.stdin)[0]["Status"]; sys.exit(0 if s["leader"]==s["header"]["member_id"] else 1)' 2>/dev/null; then
      leader=$i
    fi
  done
  [ -n "$leader" ] && break
  sleep 0.1
done
[ -n "$leader" ] || { echo "no leader within 10 s; see $WORK/m*.log" >&2; exit 1; }
endpoint="127.0.0.1:$(client_port "$leader")"

load() { # seconds
  "$BIN" bench --endpoints "$endpoint" --op put --clients "$CLIENTS" --conns "$CONNS" --total 0 --duration "${1}s"
}
snapshot() {
  for pid in "${pids[@]}"; do
    for task in /proc/"$pid"/task/*; do
      echo "$pid $(cat "$task/comm") $(awk '{print $14 + $15}' "$task/stat")"
    done
  done
}
load 2 >/dev/null
snapshot >"$WORK/before"
load "$SECONDS_RUN" | tail -1 >"$WORK/bench.json"
snapshot >"$WORK/after"

python3 - "$WORK" "${pids[$leader]}" "$(getconf CLK_TCK)" <<'EOF'
import json, sys
work, leader, ticks = sys.argv[1], sys.argv[2], int(sys.argv[3])
def read(name):
    out = {}
    for line in open(f"{work}/{name}"):
        pid, comm, t = line.split()
        out[(pid, comm)] = out.get((pid, comm), 0) + int(t)
    return out
before, after = read("before"), read("after")
report = json.load(open(f"{work}/bench.json"))
ok = report["ok"]
print(f"{ok} ops, {report['ops_per_s']:.0f} ops/s, p50 {report['latency_ms']['p50']:.3f} ms")
total = 0.0
for key in sorted(after, key=lambda k: (k[0] != leader, k)):
    us = (after[key] - before.get(key, 0)) * 1e6 / ticks / ok
    total += us
    if us > 0:
        print(f"  {'L' if key[0] == leader else 'F'} {key[0]:>7} {key[1]:16} {us:7.1f} us/op")
print(f"  total {total:.1f} us/op")
EOF
