#!/usr/bin/env bash
# bench/race.sh: Concord against etcd, side by side, on this machine.
#
# Starts a 3-member etcd (Debian's etcd-server, default flags: WAL fsync on
# every Ready) and a 3-member Concord (default flags: one WAL fsync per
# Ready) on loopback, then runs the same load matrix against each, in
# alternation (A B, then B A next round, ...), with `concord bench`, which
# speaks the etcd v3 gRPC protocol to both. For every cell it records the
# bench's JSON line and the CPU seconds the three member processes used
# (utime+stime from /proc/<pid>/stat), and prints medians over the rounds:
# ops/s, p50/p99 latency, CPU per op, and the ratio Concord/etcd.
#
# Also measured: this machine's fsync latency (the physical floor of a
# durable write) and, with --with-1m-keys, member RSS after loading
# 1,000,000 keys into clusters restarted empty (so both hold the same data)
# and the time a killed member takes to restart and rejoin.
#
# Usage: bench/race.sh [--rounds N] [--cell-seconds S] [--with-1m-keys]
#                      [--concord-bin PATH] [--work DIR] [--cells REGEX]
# (--concord-bin skips the build and races that binary instead; --cells
# runs only the matrix cells whose names match, e.g. '^put-1c$'.)
# Every loop is bounded in count and time; every server started here is
# killed on exit.
set -euo pipefail

ROUNDS=3
CELL_SECONDS=6
WITH_1M=0
BUILD=1
CONCORD_BIN=""
WORK=""
CELLS_MATCHING="."
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift 2 ;;
    --cell-seconds) CELL_SECONDS="$2"; shift 2 ;;
    --with-1m-keys) WITH_1M=1; shift ;;
    --concord-bin) CONCORD_BIN="$2"; BUILD=0; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    --cells) CELLS_MATCHING="$2"; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

# Ports: away from etcd's customary 2379/2380 and from `concord dev`, and
# below Linux's ephemeral range (32768-60999), where an outgoing connection
# can hold a port a member wants to listen on. Member i (0-based) uses
# client BASE+10*i and peer BASE+10*i+1.
ETCD_BASE=13379
CONCORD_BASE=14379
# Keys preloaded for the range cells (every range hits an existing key).
KEY_SPACE=10000
BIG_KEYS=1000000
# Upper bounds of the waiting loops, in seconds.
START_LIMIT=60
REJOIN_LIMIT=600
POLL=0.05

REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
export ETCDCTL_API=3

command -v python3 >/dev/null || { echo "race.sh needs python3 (for the summary table)" >&2; exit 1; }
if ! command -v etcd >/dev/null; then
  echo "== installing Debian's etcd-server"
  apt-get install -y etcd-server etcd-client >/dev/null || { apt-get update >/dev/null && apt-get install -y etcd-server etcd-client >/dev/null; }
fi
command -v etcdctl >/dev/null || apt-get install -y etcd-client >/dev/null

if [ "$BUILD" = 1 ]; then
  echo "== building concord (release)"
  cargo build --release -p concord >&2
fi
[ -n "$CONCORD_BIN" ] || CONCORD_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/concord"
[ -x "$CONCORD_BIN" ] || { echo "no executable $CONCORD_BIN" >&2; exit 1; }

[ -n "$WORK" ] || WORK="$(mktemp -d /var/tmp/concord-race.XXXXXX)"
mkdir -p "$WORK"
# A private copy: a rebuild during the race must not change what is raced.
CONCORD="$WORK/concord"
cp "$CONCORD_BIN" "$CONCORD"
RESULTS="$WORK/results.jsonl"
: > "$RESULTS"
echo "== work dir $WORK (data, logs, results.jsonl)"

declare -A PIDS      # "etcd0" -> pid
declare -A CMDS      # "etcd0" -> command line (for restarts)
cleanup() {
  for name in "${!PIDS[@]}"; do
    kill -9 "${PIDS[$name]}" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  # The members' data (gigabytes after the 1M-key part) is of no use once
  # they are gone; the logs and results.jsonl stay.
  rm -rf "$WORK"/etcd[0-9] "$WORK"/concord[0-9] "$CONCORD"
}
trap cleanup EXIT
trap 'echo "race.sh: command failed at line $LINENO" >&2' ERR
trap 'exit 130' INT TERM

client_url() { echo "http://127.0.0.1:$(( $1 + 10 * $2 ))"; }
peer_url() { echo "http://127.0.0.1:$(( $1 + 10 * $2 + 1 ))"; }
endpoints() { # base -> host:port,host:port,host:port
  local base=$1 out="" i
  for i in 0 1 2; do out="$out${out:+,}127.0.0.1:$(( base + 10 * i ))"; done
  echo "$out"
}
base_of() { if [ "$1" = etcd ]; then echo $ETCD_BASE; else echo $CONCORD_BASE; fi; }

start_member() { # sys index
  local sys=$1 i=$2 base cluster="" j cmd
  base=$(base_of "$sys")
  for j in 0 1 2; do cluster="$cluster${cluster:+,}${sys}$j=$(peer_url "$base" "$j")"; done
  local common=(--name "${sys}$i" --data-dir "$WORK/$sys$i"
    --listen-client-urls "$(client_url "$base" "$i")" --advertise-client-urls "$(client_url "$base" "$i")"
    --listen-peer-urls "$(peer_url "$base" "$i")" --initial-advertise-peer-urls "$(peer_url "$base" "$i")"
    --initial-cluster "$cluster" --initial-cluster-token "race-$sys" --initial-cluster-state new)
  if [ "$sys" = etcd ]; then
    cmd=(etcd "${common[@]}")
  else
    cmd=("$CONCORD" serve "${common[@]}")
  fi
  CMDS["$sys$i"]="${cmd[*]}"
  RUST_LOG=warn "${cmd[@]}" >>"$WORK/$sys$i.log" 2>&1 &
  PIDS["$sys$i"]=$!
}

wait_healthy() { # sys -> waits until every member answers a linearizable get
  local sys=$1 base deadline
  base=$(base_of "$sys")
  deadline=$(( $(date +%s) + START_LIMIT ))
  for i in 0 1 2; do
    until etcdctl --endpoints="127.0.0.1:$(( base + 10 * i ))" --command-timeout=2s get race-health >/dev/null 2>&1; do
      [ "$(date +%s)" -lt "$deadline" ] || { echo "$sys member $i not healthy after ${START_LIMIT}s; see $WORK/$sys$i.log" >&2; exit 1; }
      sleep $POLL
    done
  done
}

leader_endpoint() { # sys -> host:port of the current leader ("" if none found)
  local sys=$1 attempt out
  for attempt in 1 2 3 4 5; do
    out=$(etcdctl --endpoints="$(endpoints "$(base_of "$sys")")" --command-timeout=3s endpoint status -w json 2>/dev/null | python3 -c '
import json, sys
try:
    for s in json.load(sys.stdin):
        st = s["Status"]
        if st["header"]["member_id"] == st["leader"]:
            print(s["Endpoint"]); break
except ValueError:
    pass
' || true)
    if [ -n "$out" ]; then echo "$out"; return 0; fi
    sleep 0.5
  done
  echo ""
}

usage() { # sys -> "<cpu ticks> <bytes written to disk>" summed over its members
  local sys=$1 ticks=0 bytes=0 i t b
  for i in 0 1 2; do
    t=$(awk '{print $14 + $15}' "/proc/${PIDS[$sys$i]}/stat" 2>/dev/null || echo 0)
    b=$(awk '/^write_bytes/{print $2}' "/proc/${PIDS[$sys$i]}/io" 2>/dev/null || echo 0)
    ticks=$(( ticks + t )); bytes=$(( bytes + b ))
  done
  echo "$ticks $bytes"
}
CLK_TCK=$(getconf CLK_TCK)

# One cell: run the bench against a system, record JSON + CPU.
run_cell() { # sys round cell bench-args...
  local sys=$1 round=$2 cell=$3; shift 3
  local eps before after json
  # Writes and single-client cells go to the leader (as etcd's published
  # figures do); reads with many clients are spread over all members.
  if [[ "$cell" != range*-64c ]]; then
    eps=$(leader_endpoint "$sys")
    [ -n "$eps" ] || eps=$(endpoints "$(base_of "$sys")")
  else
    eps=$(endpoints "$(base_of "$sys")")
  fi
  before=$(usage "$sys")
  json=$(timeout $(( CELL_SECONDS + 60 )) "$CONCORD" bench --endpoints "$eps" "$@" 2>>"$WORK/bench.err" | tail -1 || true)
  after=$(usage "$sys")
  if [[ "$json" != "{"* ]]; then
    json='{"failed":true}'
  fi
  python3 - "$sys" "$round" "$cell" "$before" "$after" "$CLK_TCK" "$json" >>"$RESULTS" <<'EOF'
import json, sys
sys_, rnd, cell, before, after, hz, line = sys.argv[1:]
(t0, b0), (t1, b1) = [map(int, x.split()) for x in (before, after)]
r = json.loads(line)
r.update(system=sys_, round=int(rnd), cell=cell, cpu_s=(t1 - t0) / int(hz), disk_bytes=b1 - b0)
print(json.dumps(r))
EOF
  printf '  %-7s round %s %-22s %s\n' "$sys" "$round" "$cell" \
    "$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("FAILED (see bench.err)" if r.get("failed") else "%.0f ops/s p50 %.2f ms p99 %.2f ms errors %d" % (r["ops_per_s"], r["latency_ms"]["p50"], r["latency_ms"]["p99"], r["errors"]))' "$json")"
}

# ---------------------------------------------------------------- machine
echo "== machine: $(nproc) CPUs, $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(df -h "$WORK" | awk 'NR==2{print $1" "$2}'), $(uname -r)"
# The disk's floor drifts (shared, possibly rate-limited virtual disks), so
# it is probed at the start and once per round; the table shows the median.
fsync_probe() { # label
  local json
  json=$("$CONCORD" bench --op fsync-probe --probe-dir "$WORK" --val-size 256 --total 2000 --duration 3s | tail -1)
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r.update(system="disk", cell="fsync-probe", round=sys.argv[2]); print(json.dumps(r))' "$json" "$1" >>"$WORK/fsync.jsonl"
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("  fsync probe %-8s p50 %.3f ms p99 %.3f ms" % (sys.argv[2], r["latency_ms"]["p50"], r["latency_ms"]["p99"]))' "$json" "$1"
  # The least a replicated put does on this machine (see chain_probe.rs).
  json=$("$CONCORD" bench --op chain-probe --probe-dir "$WORK" --val-size 256 --total 2000 --duration 3s | tail -1)
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r.update(system="disk", cell="chain-probe", round=sys.argv[2]); print(json.dumps(r))' "$json" "$1" >>"$WORK/chain.jsonl"
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("  chain probe %-8s p50 %.3f ms p99 %.3f ms" % (sys.argv[2], r["latency_ms"]["p50"], r["latency_ms"]["p99"]))' "$json" "$1"
}
: >"$WORK/fsync.jsonl"
: >"$WORK/chain.jsonl"
echo "== fsync probe (256 B written into a preallocated file + fdatasync, as the WALs do, in $WORK)"
echo "   and chain probe (client -> leader -> 2 followers over loopback TCP, 3 concurrent syncs, first ack)"
fsync_probe start

# ---------------------------------------------------------------- clusters
echo "== starting etcd $(etcd --version | head -1 | awk '{print $3}') and concord, 3 members each"
for i in 0 1 2; do start_member etcd $i; start_member concord $i; done
wait_healthy etcd
wait_healthy concord
for sys in etcd concord; do
  echo "== preloading $KEY_SPACE keys into $sys"
  "$CONCORD" bench --endpoints "$(leader_endpoint $sys)" --op put --sequential-keys \
    --key-space $KEY_SPACE --total $KEY_SPACE --clients 64 --conns 8 --duration 120s | tail -1 >/dev/null
done

# ---------------------------------------------------------------- matrix
# name | bench flags (the duration bound is added below)
CELLS=(
  "put-1c|--op put --clients 1 --conns 1"
  "put-64c|--op put --clients 64 --conns 8"
  "put-256c|--op put --clients 256 --conns 16"
  "range-lin-1c|--op range --clients 1 --conns 1"
  "range-lin-64c|--op range --clients 64 --conns 8"
  "range-ser-1c|--op range-serializable --clients 1 --conns 1"
  "range-ser-64c|--op range-serializable --clients 64 --conns 8"
  "txn-cas-64c|--op txn-cas --clients 64 --conns 8"
  "watch-500/s|--op watch-latency --clients 16 --conns 4 --watchers 4 --rate 500"
)
echo "== matrix: ${#CELLS[@]} cells x 2 systems x $ROUNDS rounds, ${CELL_SECONDS}s each"
for round in $(seq 1 "$ROUNDS"); do
  if [ $(( round % 2 )) = 1 ]; then order="etcd concord"; else order="concord etcd"; fi
  fsync_probe "round$round"
  for entry in "${CELLS[@]}"; do
    cell=${entry%%|*}
    [[ $cell =~ $CELLS_MATCHING ]] || continue
    read -r -a flags <<<"${entry#*|}"
    for sys in $order; do
      run_cell "$sys" "$round" "$cell" "${flags[@]}" --key-space $KEY_SPACE --total 0 --duration "${CELL_SECONDS}s"
    done
  done
done

# ---------------------------------------------------------------- 1M keys
BIG_JSON="$WORK/big.jsonl"
: >"$BIG_JSON"
# Each system starts this part afresh: the matrix leaves each store with
# the history of the writes it completed, and Concord completes about twice
# as many in the same time, so without this the two would restart with
# different amounts of data.
restart_empty() { # sys
  local sys=$1 i
  for i in 0 1 2; do
    kill -9 "${PIDS[$sys$i]}" 2>/dev/null || true
    wait "${PIDS[$sys$i]}" 2>/dev/null || true
    rm -rf "${WORK:?}/$sys$i"
  done
  for i in 0 1 2; do start_member "$sys" "$i"; done
  wait_healthy "$sys"
}
if [ "$WITH_1M" = 1 ]; then
  for sys in etcd concord; do
    echo "== $sys: restarting with empty data dirs, then loading $BIG_KEYS keys"
    restart_empty "$sys"
    load=$("$CONCORD" bench --endpoints "$(leader_endpoint $sys)" --op put --sequential-keys \
      --key-space $BIG_KEYS --total $BIG_KEYS --clients 256 --conns 16 --duration 1200s | tail -1)
    sleep 2
    rss=""
    for i in 0 1 2; do
      rss="$rss${rss:+,}$(awk '/VmRSS/{print $2}' "/proc/${PIDS[$sys$i]}/status")"
    done
    du_kb=$(du -sk "$WORK/${sys}0" | awk '{print $1}')
    # Kill a follower with all that data, restart it, time until it serves a
    # linearizable read (it has a leader and has applied through the read index).
    leader=$(leader_endpoint $sys)
    victim=""
    for i in 0 1 2; do
      [ "127.0.0.1:$(( $(base_of $sys) + 10 * i ))" = "$leader" ] || { victim=$i; break; }
    done
    kill -9 "${PIDS[$sys$victim]}"; wait "${PIDS[$sys$victim]}" 2>/dev/null || true
    # Writes the victim misses while down, so rejoining includes catching up.
    "$CONCORD" bench --endpoints "$leader" --op put --clients 16 --conns 4 --total 5000 --duration 60s | tail -1 >/dev/null
    t0=$(date +%s.%N)
    RUST_LOG=warn ${CMDS[$sys$victim]} >>"$WORK/$sys$victim.log" 2>&1 &
    PIDS["$sys$victim"]=$!
    ep="127.0.0.1:$(( $(base_of $sys) + 10 * victim ))"
    deadline=$(( $(date +%s) + REJOIN_LIMIT ))
    until etcdctl --endpoints="$ep" --command-timeout=1s get race-health >/dev/null 2>&1; do
      [ "$(date +%s)" -lt "$deadline" ] || { echo "$sys member $victim did not rejoin in ${REJOIN_LIMIT}s" >&2; break; }
      sleep $POLL
    done
    t1=$(date +%s.%N)
    python3 - "$sys" "$load" "$rss" "$du_kb" "$t0" "$t1" >>"$BIG_JSON" <<'EOF'
import json, sys
sys_, load, rss, du, t0, t1 = sys.argv[1:]
l = json.loads(load)
print(json.dumps(dict(system=sys_, load_s=l["elapsed_s"], load_ops_per_s=l["ops_per_s"], load_errors=l["errors"],
    load_error_kinds=l["error_kinds"],
    rss_kb=[int(x) for x in rss.split(",")], data_dir_kb=int(du), rejoin_s=float(t1) - float(t0))))
EOF
    tail -1 "$BIG_JSON"
  done
fi

# ---------------------------------------------------------------- table
python3 - "$RESULTS" "$WORK/fsync.jsonl" "$BIG_JSON" "$WORK/chain.jsonl" <<'EOF'
import json, statistics, sys
results, fsync_path, big_path, chain_path = sys.argv[1:]
rows = [json.loads(l) for l in open(results) if l.strip()]
probes = [json.loads(l) for l in open(fsync_path) if l.strip()]
fsync = dict(latency_ms=dict(p50=statistics.median(p["latency_ms"]["p50"] for p in probes),
                             p99=statistics.median(p["latency_ms"]["p99"] for p in probes)))
fsync_range = (min(p["latency_ms"]["p50"] for p in probes), max(p["latency_ms"]["p50"] for p in probes))
chains = [json.loads(l) for l in open(chain_path) if l.strip()]
chain_p50 = statistics.median(p["latency_ms"]["p50"] for p in chains) if chains else None
big = {r["system"]: r for r in (json.loads(l) for l in open(big_path) if l.strip())}
cells = list(dict.fromkeys(r["cell"] for r in rows))

def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

def stats(sys_, cell):
    rs = [r for r in rows if r["system"] == sys_ and r["cell"] == cell and not r.get("failed")]
    if not rs:
        return None
    # watch-latency: `ok` counts events (puts x watchers); CPU is per put.
    done = [r.get("puts_ok", r["ok"]) for r in rs]
    cpu_per_op = [r["cpu_s"] / n * 1e6 if n else None for r, n in zip(rs, done)]
    kib_per_op = [r["disk_bytes"] / n / 1024 if n else None for r, n in zip(rs, done)]
    return dict(ops=med([r["ops_per_s"] for r in rs]), p50=med([r["latency_ms"]["p50"] for r in rs]),
                p99=med([r["latency_ms"]["p99"] for r in rs]), cpu=med(cpu_per_op), kib=med(kib_per_op),
                errors=sum(r["errors"] for r in rs), spread=[round(r["ops_per_s"]) for r in rs])

def fmt(v, d=0):
    return "n/a" if v is None else f"{v:,.{d}f}"

def ratio(c, e):
    return "n/a" if c is None or e is None or e == 0 else f"{c / e:.2f}"

print()
print(f"fsync floor (256 B written into a preallocated file + fdatasync, as the WALs do), median of {len(probes)} probes: p50 {fsync['latency_ms']['p50']:.3f} ms "
      f"(probes ranged {fsync_range[0]:.3f}-{fsync_range[1]:.3f} ms), p99 {fsync['latency_ms']['p99']:.3f} ms")
if chains:
    print(f"chain floor (the least a 3-member put does: client -> leader -> 2 followers, 3 concurrent syncs, first ack; "
          f"threads of one process), median of {len(chains)} probes: p50 {chain_p50:.3f} ms "
          f"(ranged {min(p['latency_ms']['p50'] for p in chains):.3f}-{max(p['latency_ms']['p50'] for p in chains):.3f} ms)")
print()
print("medians over rounds; ratio = Concord / etcd; CPU = member CPU (3 processes) per op, in microseconds;")
print("disk = bytes the 3 members wrote to the block device per op (/proc/<pid>/io write_bytes), KiB")
head = "| cell | etcd ops/s | Concord ops/s | ratio | etcd p50 ms | Concord p50 ms | ratio | etcd p99 ms | Concord p99 ms | ratio | etcd CPU us/op | Concord CPU us/op | ratio | etcd disk KiB/op | Concord disk KiB/op | errors e/c |"
print(head)
print("|" + "---|" * (head.count("|") - 1))
S = {}
for cell in cells:
    e, c = stats("etcd", cell), stats("concord", cell)
    S[cell] = (e, c)
    g = lambda s, k: None if s is None else s[k]
    print(f"| {cell} | {fmt(g(e,'ops'))} | {fmt(g(c,'ops'))} | {ratio(g(c,'ops'), g(e,'ops'))} "
          f"| {fmt(g(e,'p50'),2)} | {fmt(g(c,'p50'),2)} | {ratio(g(c,'p50'), g(e,'p50'))} "
          f"| {fmt(g(e,'p99'),2)} | {fmt(g(c,'p99'),2)} | {ratio(g(c,'p99'), g(e,'p99'))} "
          f"| {fmt(g(e,'cpu'))} | {fmt(g(c,'cpu'))} | {ratio(g(c,'cpu'), g(e,'cpu'))} "
          f"| {fmt(g(e,'kib'),1)} | {fmt(g(c,'kib'),1)} "
          f"| {g(e,'errors') if e else 'n/a'}/{g(c,'errors') if c else 'n/a'} |")
print()
print("ops/s per round (spread):")
for cell in cells:
    e, c = S[cell]
    print(f"  {cell:16} etcd {e['spread'] if e else 'n/a'}  concord {c['spread'] if c else 'n/a'}")
if big:
    print()
    print("| 1M keys | etcd | Concord | ratio |")
    print("|---|---|---|---|")
    e, c = big.get("etcd"), big.get("concord")
    def b(k, f=lambda x: x):
        ev = f(e[k]) if e else None
        cv = f(c[k]) if c else None
        return ev, cv
    for label, key, f, d in [("load time s", "load_s", float, 1), ("load ops/s", "load_ops_per_s", float, 0),
                             ("RSS per member MiB (mean)", "rss_kb", lambda v: sum(v) / len(v) / 1024, 0),
                             ("RSS max member MiB", "rss_kb", lambda v: max(v) / 1024, 0),
                             ("data dir MiB (member 0)", "data_dir_kb", lambda v: v / 1024, 0),
                             ("restart + rejoin s", "rejoin_s", float, 2)]:
        ev, cv = b(key, f)
        print(f"| {label} | {fmt(ev, d)} | {fmt(cv, d)} | {ratio(cv, ev)} |")
    for sys_, r in big.items():
        if r.get("load_error_kinds"):
            print(f"  {sys_} load errors: {r['load_error_kinds']}")

# Targets of issue 6.
def tgt(name, ok):
    print(f"  [{'met' if ok else 'NOT met' if ok is not None else 'n/a'}] {name}")
def get(cell, sys_, k):
    e, c = S.get(cell, (None, None))
    s = e if sys_ == "etcd" else c
    return None if s is None else s[k]
def cmp(cell, k, pred):
    e, c = get(cell, "etcd", k), get(cell, "concord", k)
    return None if e is None or c is None else pred(c, e)
print()
print("targets (issue 6):")
tgt("put 64 clients >= 3x etcd ops/s", cmp("put-64c", "ops", lambda c, e: c >= 3 * e))
tgt("put 256 clients >= 3x etcd ops/s", cmp("put-256c", "ops", lambda c, e: c >= 3 * e))
tgt("CPU per put (64c) <= 1/3 etcd", cmp("put-64c", "cpu", lambda c, e: c * 3 <= e))
tgt("CPU per put (256c) <= 1/3 etcd", cmp("put-256c", "cpu", lambda c, e: c * 3 <= e))
tgt("linearizable range 64c >= 3x etcd", cmp("range-lin-64c", "ops", lambda c, e: c >= 3 * e))
tgt("serializable range 64c >= 2x etcd", cmp("range-ser-64c", "ops", lambda c, e: c >= 2 * e))
tgt("single-client put p50 <= etcd", cmp("put-1c", "p50", lambda c, e: c <= e))
p50 = get("put-1c", "concord", "p50")
tgt(f"single-client put p50 <= 3x fsync p50 ({fsync['latency_ms']['p50']:.3f} ms)",
    None if p50 is None else p50 <= 3 * fsync["latency_ms"]["p50"])
if p50 is not None and chain_p50:
    print(f"        (Concord's single-client put p50 is {p50 / chain_p50:.2f}x the chain floor, {chain_p50:.3f} ms)")
tgt("p99 at 64 clients (put) <= 1/2 etcd", cmp("put-64c", "p99", lambda c, e: 2 * c <= e))
tgt("p99 at 64 clients (linearizable range) <= 1/2 etcd", cmp("range-lin-64c", "p99", lambda c, e: 2 * c <= e))
if big.get("etcd") and big.get("concord"):
    tgt("member RSS with 1M keys <= etcd (max member)", max(big["concord"]["rss_kb"]) <= max(big["etcd"]["rss_kb"]))
    tgt("restart-and-rejoin <= etcd", big["concord"]["rejoin_s"] <= big["etcd"]["rejoin_s"])
else:
    tgt("member RSS with 1M keys <= etcd (run with --with-1m-keys)", None)
    tgt("restart-and-rejoin <= etcd (run with --with-1m-keys)", None)
EOF
echo
echo "raw results: $RESULTS"
