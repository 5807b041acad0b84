#!/usr/bin/env bash
# bench/rejoin.sh: how long a killed Concord follower with a large store
# takes to restart and serve again, and whether it caught up from the log or
# by a snapshot from the leader.
#
# Starts 3 members on loopback (client ports BASE, BASE+10, BASE+20; peer
# port = client port + 1), loads KEYS keys through the leader, kills a
# follower with SIGKILL, makes MISSED more puts without it, restarts it and
# times until it answers a linearizable get. Prints the time and whether its
# log says it installed a snapshot.
#
# Usage: bench/rejoin.sh [--bin PATH] [--keys N] [--missed N] [--base PORT]
#                        [-- extra `concord serve` flags for every member]
# Every wait is bounded; every member is killed and the data dir removed on
# exit.
set -euo pipefail

BIN=""
KEYS=1000000
MISSED=5000
BASE=15379
START_LIMIT=60
REJOIN_LIMIT=600
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN="$2"; shift 2 ;;
    --keys) KEYS="$2"; shift 2 ;;
    --missed) MISSED="$2"; shift 2 ;;
    --base) BASE="$2"; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
REPO="$(cd "$(dirname "$0")/.." && pwd)"
[ -n "$BIN" ] || BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/concord"
[ -x "$BIN" ] || { echo "no executable $BIN (cargo build --release -p concord)" >&2; exit 1; }
command -v etcdctl >/dev/null || { echo "rejoin.sh needs etcdctl (apt-get install etcd-client)" >&2; exit 1; }
export ETCDCTL_API=3
# The snapshot-install line is logged at info.
export RUST_LOG="${RUST_LOG:-info}"

WORK="$(mktemp -d /var/tmp/concord-rejoin.XXXXXX)"
declare -a CMD PID
cleanup() {
  for pid in "${PID[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

port() { echo $(( BASE + 10 * $1 )); }
cluster=""
for i in 0 1 2; do
  cluster="$cluster${cluster:+,}m$i=http://127.0.0.1:$(( $(port $i) + 1 ))"
done
start() {
  local i=$1
  "$BIN" serve --name "m$i" --data-dir "$WORK/m$i" \
    --listen-client-urls "http://127.0.0.1:$(port "$i")" \
    --advertise-client-urls "http://127.0.0.1:$(port "$i")" \
    --listen-peer-urls "http://127.0.0.1:$(( $(port "$i") + 1 ))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$(( $(port "$i") + 1 ))" \
    --initial-cluster "$cluster" --initial-cluster-token rejoin \
    --initial-cluster-state new "${EXTRA[@]}" >>"$WORK/m$i.log" 2>&1 &
  PID[$i]=$!
}
for i in 0 1 2; do start "$i"; done
endpoints="127.0.0.1:$(port 0),127.0.0.1:$(port 1),127.0.0.1:$(port 2)"
deadline=$(( $(date +%s) + START_LIMIT ))
until etcdctl --endpoints="$endpoints" --command-timeout=1s put rejoin-warm x >/dev/null 2>&1; do
  [ "$(date +%s)" -lt "$deadline" ] || { echo "cluster did not start" >&2; exit 1; }
  sleep 0.2
done
leader=$(etcdctl --endpoints="$endpoints" endpoint status | awk -F', ' '$5 == "true" {print $1}')
echo "== loading $KEYS keys through $leader"
"$BIN" bench --endpoints "$leader" --op put --sequential-keys --key-space "$KEYS" \
  --total "$KEYS" --clients 256 --conns 16 --duration 1200s | tail -1
victim=""
for i in 0 1 2; do
  [ "127.0.0.1:$(port "$i")" = "$leader" ] || { victim=$i; break; }
done
echo "== killing m$victim, then $MISSED puts without it"
kill -9 "${PID[$victim]}"; wait "${PID[$victim]}" 2>/dev/null || true
"$BIN" bench --endpoints "$leader" --op put --clients 16 --conns 4 --total "$MISSED" \
  --duration 120s | tail -1
offset=$(stat -c %s "$WORK/m$victim.log")
t0=$(date +%s.%N)
start "$victim"
deadline=$(( $(date +%s) + REJOIN_LIMIT ))
until etcdctl --endpoints="127.0.0.1:$(port "$victim")" --command-timeout=1s get rejoin-warm >/dev/null 2>&1; do
  [ "$(date +%s)" -lt "$deadline" ] || { echo "m$victim did not rejoin in ${REJOIN_LIMIT}s" >&2; exit 1; }
  sleep 0.05
done
t1=$(date +%s.%N)
how="from the log"
if tail -c +"$(( offset + 1 ))" "$WORK/m$victim.log" | grep -q "installed a snapshot from the leader"; then
  how="by a snapshot from the leader"
fi
python3 -c "import sys; print(f'rejoin {float(sys.argv[2]) - float(sys.argv[1]):.2f} s, caught up {sys.argv[3]}')" "$t0" "$t1" "$how"
