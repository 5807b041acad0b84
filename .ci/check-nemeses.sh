#!/usr/bin/env bash
# Short `concord check` runs on a 3-member cluster: the register workload
# under each nemesis (partition, kill, pause, clock, member) and the lock
# workload under pause and partition; fails if any verdict is not valid
# (exit code 0).
#
#   bash .ci/check-nemeses.sh                  # the seven runs below; 22 s each, ~3.5 min
#   CHECK_TIME_LIMIT=30 CHECK_RUNS="register:partition,kill lock:pause" bash .ci/check-nemeses.sh
#   CHECK_NEMESES="partition pause" bash .ci/check-nemeses.sh   # register runs only (as before)
#   CHECK_OUT=/tmp/ci-check bash .ci/check-nemeses.sh   # keep the output folders there
#
# Each run writes history.jsonl, nemesis.log, verdict.txt and report.html
# (and for lock: resource.jsonl, fenced.jsonl) under
# $CHECK_OUT/<workload>-<nemesis>/; a failing run's folder is kept whole
# and named, a passing run's without its members' data directories.
set -euo pipefail
cd "$(dirname "$0")/.."

time_limit="${CHECK_TIME_LIMIT:-22}"
default_runs="register:partition register:kill register:pause register:clock register:member lock:pause lock:partition"
if [ -n "${CHECK_NEMESES:-}" ]; then
  runs=""
  for nemesis in $CHECK_NEMESES; do runs="$runs register:$nemesis"; done
else
  runs="${CHECK_RUNS:-$default_runs}"
fi
out="${CHECK_OUT:-$(mktemp -d -t concord-check-ci.XXXXXX)}"
mkdir -p "$out"

cargo build -q -p concord
# A full disk makes members exit at start; say up front how much is free.
df -h "$out" | tail -1 | awk '{print "free space for the runs: " $4 " on " $6}'
# Run a private copy: another build in the shared target folder must not
# replace the binary under the members (they are restarted by the kill and
# member nemeses from this path).
bin="$out/concord"
cp target/debug/concord "$bin"

failed=()
summary=()
for run in $runs; do
  workload="${run%%:*}"
  nemesis="${run#*:}"
  dir="$out/$workload-${nemesis//,/+}"
  rm -rf "$dir"
  echo "-- concord check --workload $workload --nemesis $nemesis --time-limit $time_limit --out $dir"
  start=$SECONDS
  set +e
  "$bin" check --nodes 3 --workload "$workload" --nemesis "$nemesis" \
    --time-limit "$time_limit" --out "$dir"
  code=$?
  set -e
  verdict="$(head -1 "$dir/verdict.txt" 2>/dev/null || echo "no verdict (exit $code)")"
  ops="$(sed -n 's/^operations: //p' "$dir/verdict.txt" 2>/dev/null | head -1)"
  summary+=("$(printf '%-9s %-12s %-18s %4ss  %s' "$workload" "$nemesis" "$verdict" "$((SECONDS - start))" "$ops")")
  if [ "$code" -eq 0 ]; then
    # A passing run keeps its history, logs and report; its members' data
    # directories (a preallocated 64 MiB WAL segment each, ~200 MiB a run)
    # go, or seven runs would take 1.5 GiB of the machine's disk.
    rm -rf "$dir"/cluster/*/
  else
    failed+=("$workload/$nemesis: $verdict, see $dir")
    # CI keeps only this output: quote how each member's log ends.
    for member_log in "$dir"/cluster/*.log; do
      [ -f "$member_log" ] || continue
      echo "-- the end of $member_log"
      tail -n 15 "$member_log"
    done
  fi
done

echo "== concord check summary (outputs in $out)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED:"
  printf '  %s\n' "${failed[@]}"
  exit 1
fi
rm -f "$bin"
