#!/usr/bin/env bash
# The seed's square workload end to end on this host: one taskq-master on an
# ephemeral 127.0.0.1 port, K taskq-worker processes on queue bench.tasks,
# and taskq-square-bench putting N tasks and checking every result.
# Builds nothing: it runs the binaries in $BUILD_DIR (default build/release).
# Everything it starts is stopped on exit, Ctrl-C or SIGTERM.
#
# The master is durable by default (SQLite, --fsync always) with its data
# dir under $DATA_DIR (default: the build directory, a real disk: fsync on a
# tmpfs would measure nothing).
#
# usage: bench/square.sh [--tasks N] [--workers K] [--concurrency C]
#                        [--batch B] [--prefetch P] [--fsync always|interval|never]
#                        [--store sqlite|memory] [-- BENCH_FLAGS...]
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"
build_dir=${BUILD_DIR:-$repo/build/release}

tasks=100000
workers=4
concurrency=4
batch=500
prefetch=64
fsync=always
store=sqlite
bench_extra=()

usage() {
  cat >&2 <<'EOF2'
usage: bench/square.sh [--tasks N] [--workers K] [--concurrency C]
                       [--batch B] [--prefetch P] [-- BENCH_FLAGS...]
  --tasks N        tasks measured (default 100000)
  --workers K      taskq-worker processes (default 4)
  --concurrency C  handler slots per worker (default 4)
  --batch B        tasks per Put (default 500)
  --prefetch P     worker credits beyond concurrency (default 64)
  --fsync P        the master's fsync policy: always, interval or never (default always)
  --store S        sqlite (durable, default) or memory
  BENCH_FLAGS      passed to taskq-square-bench (e.g. --window 5000)
  env BUILD_DIR    where the binaries are (default build/release)
  env DATA_DIR     where the master's data dir is made (default BUILD_DIR)
EOF2
  exit 2
}

while [[ $# -gt 0 ]]; do
  case $1 in
    --tasks) tasks=${2:?}; shift 2 ;;
    --workers) workers=${2:?}; shift 2 ;;
    --concurrency) concurrency=${2:?}; shift 2 ;;
    --batch) batch=${2:?}; shift 2 ;;
    --prefetch) prefetch=${2:?}; shift 2 ;;
    --fsync) fsync=${2:?}; shift 2 ;;
    --store) store=${2:?}; shift 2 ;;
    --) shift; bench_extra=("$@"); break ;;
    -h|--help) usage ;;
    *) echo "square.sh: unknown argument $1" >&2; usage ;;
  esac
done

master_bin=$build_dir/taskq-master
worker_bin=$build_dir/taskq-worker
bench_bin=$build_dir/bench/taskq-square-bench
for bin in "$master_bin" "$worker_bin" "$bench_bin"; do
  if [[ ! -x $bin ]]; then
    echo "square.sh: $bin not found. Build first:" >&2
    echo "  cmake --preset release && cmake --build --preset release" >&2
    echo "or point BUILD_DIR at a build directory that has it." >&2
    exit 2
  fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/taskq-square.XXXXXX")
data_dir=$(mktemp -d "${DATA_DIR:-$build_dir}/taskq-square-data.XXXXXX")
pids=()
master_pid=

# Sends SIGTERM to everything we started, waits up to 10 s, then SIGKILL.
# shellcheck disable=SC2317  # reached through the trap
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  stop_processes square.sh "${pids[@]}"
  if ((status != 0)); then dump_logs "$tmp"; fi
  rm -rf "$tmp" "$data_dir"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_master square.sh "$master_bin" "$tmp" "$store" "$data_dir" "$fsync" 15
echo "master:  $master_addr (pid $master_pid)"

for ((w = 1; w <= workers; w++)); do
  "$worker_bin" --master "$master_addr" --token-file "$token_file" \
    --queue bench.tasks --concurrency "$concurrency" --prefetch "$prefetch" \
    --id "bench-worker-$w" --log-level warning >"$tmp/worker-$w.log" 2>&1 &
  pids+=("$!")
done
echo "workers: $workers x (concurrency $concurrency, prefetch $prefetch)"
echo "bench:   $tasks tasks, batch $batch"
echo

# In the background so that a signal to this script is handled at once.
bench_status=0
"$bench_bin" --master "$master_addr" --token-file "$token_file" \
  --tasks "$tasks" --batch "$batch" --min-workers "$workers" "${bench_extra[@]}" &
bench_pid=$!
pids+=("$bench_pid")
wait "$bench_pid" || bench_status=$?

echo
report_process taskq-master "$master_pid"
for ((w = 1; w <= workers; w++)); do
  report_process "worker-$w" "${pids[$w]}"
done
for pid in "${pids[@]:0:workers+1}"; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "square.sh: process $pid died during the run" >&2
    bench_status=1
  fi
done
exit "$bench_status"
