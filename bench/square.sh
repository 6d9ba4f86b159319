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
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  local deadline=$((SECONDS + 10))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "square.sh: pid $pid ignored SIGTERM for 10 s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  if ((status != 0)) && [[ -d $tmp ]]; then
    local log
    for log in "$tmp"/*.log; do
      [[ -s $log ]] || continue
      echo "--- last lines of $(basename "$log") ---" >&2
      tail -n 20 "$log" >&2
    done
  fi
  rm -rf "$tmp" "$data_dir"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Prints "VmHWM <kB>" and CPU seconds (user+system) of a live process.
report_process() {
  local name=$1 pid=$2
  [[ -r /proc/$pid/status ]] || return 0
  local hwm ticks cpu
  hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
  # Fields 14 and 15 of /proc/PID/stat, counted after the ")" of comm.
  ticks=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')
  cpu=$(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", t / hz}')
  printf '%-10s peak RSS (VmHWM) %6d MiB (%d kB), CPU %s s\n' \
    "$name" $((hwm / 1024)) "$hwm" "$cpu"
}

token_file=$tmp/token
port_file=$tmp/port
# The master creates the token file (0600, random) when it does not exist.
"$master_bin" --listen 127.0.0.1:0 --port-file "$port_file" \
  --token-file "$token_file" --log-level warning \
  --store "$store" --data-dir "$data_dir" --fsync "$fsync" >"$tmp/master.log" 2>&1 &
master_pid=$!
pids+=("$master_pid")

deadline=$((SECONDS + 15))
until [[ -s $port_file && -s $token_file ]]; do
  if ! kill -0 "$master_pid" 2>/dev/null; then
    echo "square.sh: taskq-master exited during startup" >&2
    exit 1
  fi
  if ((SECONDS >= deadline)); then
    echo "square.sh: taskq-master wrote no port file within 15 s" >&2
    exit 1
  fi
  sleep 0.05
done
master_addr=$(head -n1 "$port_file")
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
