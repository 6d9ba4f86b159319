#!/usr/bin/env bash
# Soak of the durable master under steady put/complete load, on this host:
# one taskq-master on an ephemeral 127.0.0.1 port (SQLite store, data dir
# under $DATA_DIR), K taskq-worker processes running the built-in `square`
# handler on queue soak.tasks, and taskq-soak-bench putting tasks with
# reply_to and reading and checking their results, at most --window in
# flight, for M minutes. Every S seconds it prints a row: elapsed, tasks
# completed, tasks/s and latency of the interval, the sizes of taskq.db,
# -wal and -shm, the master's RSS and CPU. At the end: whether disk and
# RSS stayed bounded (max of the second half of the samples vs the first).
# Builds nothing: it runs the binaries in $BUILD_DIR (default build/release).
# Everything it starts is stopped, and the data dir removed, on exit,
# Ctrl-C or SIGTERM.
#
# usage: bench/soak.sh [--minutes M] [--interval-s S] [--fsync P] [--store S]
#                      [--workers K] [--concurrency C] [--window W] [--batch B]
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"
build_dir=${BUILD_DIR:-$repo/build/release}

minutes=10
interval=10
fsync=always
store=sqlite
workers=2
concurrency=4
window=1000
batch=100

usage() {
  cat >&2 <<'EOF2'
usage: bench/soak.sh [--minutes M] [--interval-s S] [--fsync P] [--store S]
                     [--workers K] [--concurrency C] [--window W] [--batch B]
  --minutes M      how long the load runs (default 10)
  --interval-s S   seconds between samples (default 10)
  --fsync P        the master's fsync policy: always, interval or never (default always)
  --store S        sqlite (durable, default) or memory
  --workers K      taskq-worker processes (default 2)
  --concurrency C  handler slots per worker (default 4)
  --window W       most tasks in flight, put but result not read (default 1000)
  --batch B        tasks per Put (default 100)
  env BUILD_DIR    where the binaries are (default build/release)
  env DATA_DIR     where the master's data dir is made (default BUILD_DIR; not a tmpfs)
EOF2
  exit 2
}

while [[ $# -gt 0 ]]; do
  case $1 in
    --minutes) minutes=${2:?}; shift 2 ;;
    --interval-s) interval=${2:?}; shift 2 ;;
    --fsync) fsync=${2:?}; shift 2 ;;
    --store) store=${2:?}; shift 2 ;;
    --workers) workers=${2:?}; shift 2 ;;
    --concurrency) concurrency=${2:?}; shift 2 ;;
    --window) window=${2:?}; shift 2 ;;
    --batch) batch=${2:?}; shift 2 ;;
    -h|--help) usage ;;
    *) echo "soak.sh: unknown argument $1" >&2; usage ;;
  esac
done

master_bin=$build_dir/taskq-master
worker_bin=$build_dir/taskq-worker
soak_bin=$build_dir/bench/taskq-soak-bench
for bin in "$master_bin" "$worker_bin" "$soak_bin"; do
  if [[ ! -x $bin ]]; then
    echo "soak.sh: $bin not found. Build first:" >&2
    echo "  cmake --preset release && cmake --build --preset release" >&2
    echo "or point BUILD_DIR at a build directory that has it." >&2
    exit 2
  fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/taskq-soak.XXXXXX")
data_dir=$(mktemp -d "${DATA_DIR:-$build_dir}/taskq-soak-data.XXXXXX")
if [[ $(stat -f -c %T "$data_dir") == tmpfs ]]; then
  echo "soak.sh: warning: $data_dir is on a tmpfs: fsync and disk sizes mean nothing there" >&2
fi
pids=()        # master, then workers
driver_pid=

# Stops the driver first (it stops putting and awaits its results, up to
# 10 s), then the workers and the master: SIGTERM, up to 10 s, SIGKILL.
# shellcheck disable=SC2317  # reached through the trap
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  local deadline
  if [[ -n $driver_pid ]]; then
    kill -TERM "$driver_pid" 2>/dev/null || true
    deadline=$((SECONDS + 15))
    while kill -0 "$driver_pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    kill -KILL "$driver_pid" 2>/dev/null || true
    wait "$driver_pid" 2>/dev/null || true
  fi
  stop_processes soak.sh "${pids[@]}"
  if ((status != 0)); then dump_logs "$tmp"; fi
  rm -rf "$tmp" "$data_dir"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM


start_master soak.sh "$master_bin" "$tmp" "$store" "$data_dir" "$fsync" 60

for ((w = 1; w <= workers; w++)); do
  "$worker_bin" --master "$master_addr" --token-file "$token_file" \
    --queue soak.tasks --concurrency "$concurrency" \
    --id "soak-worker-$w" --log-level warning >"$tmp/worker-$w.log" 2>&1 &
  pids+=("$!")
done

echo "master:  $master_addr (pid $master_pid), store $store, fsync $fsync"
echo "data:    $data_dir ($(stat -f -c %T "$data_dir"))"
echo "workers: $workers x concurrency $concurrency"
echo "started: $(date -u +%Y-%m-%dT%H:%M:%SZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo

# In the background so that a signal to this script is handled at once.
driver_status=0
"$soak_bin" --master "$master_addr" --token-file "$token_file" --queue soak.tasks \
  --seconds $((minutes * 60)) --sample-interval "$interval" --window "$window" \
  --batch "$batch" --min-workers "$workers" --data-dir "$data_dir" \
  --master-pid "$master_pid" &
driver_pid=$!
wait "$driver_pid" || driver_status=$?
driver_pid=

echo
echo "ended:   $(date -u +%Y-%m-%dT%H:%M:%SZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
report_process taskq-master "$master_pid"
for ((w = 1; w <= workers; w++)); do
  report_process "worker-$w" "${pids[$w]}"
done
for pid in "${pids[@]}"; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "soak.sh: process $pid died during the run" >&2
    driver_status=1
  fi
done
if grep -q ' ERROR \| WARNING ' "$tmp/master.log"; then
  echo "--- warnings and errors in the master's log ---"
  grep ' ERROR \| WARNING ' "$tmp/master.log" | tail -n 20
fi
exit "$driver_status"
