#!/usr/bin/env bash
# Crash soak: runs the crash test (tests/crash_test.cc: kill -9 of the master
# under load, then checks that no acknowledged put is lost and no result is
# duplicated) with many more kills than ctest's default 5.
#
# Usage:
#   tests/crash_soak.sh [ROUNDS] [RUNS]
#     ROUNDS  kills per run (default 20)
#     RUNS    how many times to run the test (default 1)
#   TASKQ_CRASH_SEED=N tests/crash_soak.sh   replays a run's random kill delays
#   TASKQ_BUILD_DIR=build-x tests/crash_soak.sh   another build (default build/release)
#
# Builds nothing: build first, e.g.
#   cmake --preset release && cmake --build --preset release --target crash_test \
#     taskq-master taskq-worker taskq
# Prints the per-round "[crash]" lines and the summary of each run; on a
# failure also the test's failure output, and keeps the whole log. Exit
# status: 0 if every run passed, 1 otherwise.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
build="${TASKQ_BUILD_DIR:-build/release}"
[[ "$build" = /* ]] || build="$root/$build"
rounds="${1:-20}"
runs="${2:-1}"
bin="$build/tests/crash_test"

if [[ ! -x "$bin" ]]; then
  echo "crash_soak: $bin not found; build the crash_test target first (see the top of $0)" >&2
  exit 2
fi
if ! [[ "$rounds" =~ ^[1-9][0-9]*$ && "$runs" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [ROUNDS] [RUNS]" >&2
  exit 2
fi

failed=0
for ((run = 1; run <= runs; run++)); do
  log="$(mktemp "${TMPDIR:-/tmp}/taskq-crash-soak.XXXXXX")"
  echo "== run $run/$runs: $rounds kills (log $log)"
  status=0
  TASKQ_CRASH_ROUNDS="$rounds" "$bin" --gtest_color=no >"$log" 2>&1 || status=$?
  grep '^\[crash\]' "$log" || true
  if [[ $status -eq 0 ]]; then
    echo "== run $run: PASSED"
    rm -f "$log"
  else
    failed=1
    echo "== run $run: FAILED (exit $status); failure output:"
    grep -E -A 30 'Failure|FAILED' "$log" | head -n 200 || true
    echo "== full log kept: $log"
  fi
done
exit "$failed"
