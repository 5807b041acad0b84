#!/usr/bin/env bash
# One short `concord check` per nemesis against the register workload on a
# 3-member cluster; fails if any verdict is not valid (exit code 0).
#
#   bash .ci/check-nemeses.sh                  # partition, kill, pause, clock; 25 s each
#   CHECK_TIME_LIMIT=30 CHECK_NEMESES="partition,kill pause" bash .ci/check-nemeses.sh
#   CHECK_OUT=/tmp/ci-check bash .ci/check-nemeses.sh   # keep the output folders there
#
# Each run writes history.jsonl, nemesis.log, verdict.txt and report.html
# under $CHECK_OUT/<nemesis>/; a failing run's folder is kept and named.
set -euo pipefail
cd "$(dirname "$0")/.."

time_limit="${CHECK_TIME_LIMIT:-25}"
nemeses="${CHECK_NEMESES:-partition kill pause clock}"
out="${CHECK_OUT:-$(mktemp -d -t concord-check-ci.XXXXXX)}"
mkdir -p "$out"

cargo build -q -p concord
# Run a private copy: another build in the shared target folder must not
# replace the binary under the members (they are restarted by the kill
# nemesis from this path).
bin="$out/concord"
cp target/debug/concord "$bin"

failed=()
summary=()
for nemesis in $nemeses; do
  dir="$out/${nemesis//,/+}"
  rm -rf "$dir"
  echo "-- concord check --nemesis $nemesis --time-limit $time_limit --out $dir"
  start=$SECONDS
  set +e
  "$bin" check --nodes 3 --workload register --nemesis "$nemesis" \
    --time-limit "$time_limit" --out "$dir"
  code=$?
  set -e
  verdict="$(head -1 "$dir/verdict.txt" 2>/dev/null || echo "no verdict (exit $code)")"
  ops="$(sed -n 's/^operations: //p' "$dir/verdict.txt" 2>/dev/null | head -1)"
  summary+=("$(printf '%-12s %-18s %4ss  %s' "$nemesis" "$verdict" "$((SECONDS - start))" "$ops")")
  if [ "$code" -ne 0 ]; then
    failed+=("$nemesis: $verdict, see $dir")
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
