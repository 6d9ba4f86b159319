#!/usr/bin/env bash
# The square workload with Python workers beside C++ workers, interleaved on
# one master in the same run: each round runs taskq-square-bench once with K
# C++ taskq-worker processes and once with K Python workers
# (`python3 -m taskq worker bench/python_square_worker.py`), then prints
# tasks/s of each and the ratio Python / C++ (issue 16's target: >= 0.25).
# Builds nothing: it runs the binaries in $BUILD_DIR (default build/release)
# and Debian's /usr/bin/python3 with clients/python and $BUILD_DIR/python on
# PYTHONPATH. Everything it starts is stopped on exit, Ctrl-C or SIGTERM.
#
# usage: bench/python_square.sh [--tasks N] [--workers K] [--concurrency C]
#            [--prefetch P] [--rounds R] [--store sqlite|memory]
#            [--fsync always|interval|never] [--inline] [--async] [--profile]
#            [-- BENCH_FLAGS...]
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"
build_dir=${BUILD_DIR:-$repo/build/release}
python=${PYTHON:-/usr/bin/python3}

tasks=50000
workers=4
concurrency=4
prefetch=64
rounds=2
store=sqlite
fsync=always
inline=0
async=0
profile=0
bench_extra=()

usage() {
  cat >&2 <<'EOF2'
usage: bench/python_square.sh [--tasks N] [--workers K] [--concurrency C]
           [--prefetch P] [--rounds R] [--store S] [--fsync P] [--inline] [--async] [--profile]
           [-- BENCH_FLAGS...]
  --tasks N        tasks measured per run (default 50000)
  --workers K      worker processes of each kind (default 4)
  --concurrency C  handler slots per worker (default 4)
  --prefetch P     worker credits beyond concurrency (default 64)
  --rounds R       C++ run then Python run, R times (default 2)
  --store S        sqlite (durable, default) or memory
  --fsync P        the master's fsync policy (default always)
  --inline         Python handler runs inline (no thread-pool hand-off)
  --async          Python handler is an async def (runs on the asyncio loop)
  --profile        profile Python worker 1 (all its threads) with cProfile; prints its top functions
  BENCH_FLAGS      passed to taskq-square-bench (e.g. --window 5000)
  env BUILD_DIR    where the binaries are (default build/release)
  env DATA_DIR     where the master's data dir is made (default BUILD_DIR)
  env PYTHON       the interpreter (default /usr/bin/python3: Debian's, with grpc)
EOF2
  exit 2
}

while [[ $# -gt 0 ]]; do
  case $1 in
    --tasks) tasks=${2:?}; shift 2 ;;
    --workers) workers=${2:?}; shift 2 ;;
    --concurrency) concurrency=${2:?}; shift 2 ;;
    --prefetch) prefetch=${2:?}; shift 2 ;;
    --rounds) rounds=${2:?}; shift 2 ;;
    --store) store=${2:?}; shift 2 ;;
    --fsync) fsync=${2:?}; shift 2 ;;
    --inline) inline=1; shift ;;
    --async) async=1; shift ;;
    --profile) profile=1; shift ;;
    --) shift; bench_extra=("$@"); break ;;
    -h|--help) usage ;;
    *) echo "python_square.sh: unknown argument $1" >&2; usage ;;
  esac
done

master_bin=$build_dir/taskq-master
worker_bin=$build_dir/taskq-worker
bench_bin=$build_dir/bench/taskq-square-bench
for bin in "$master_bin" "$worker_bin" "$bench_bin"; do
  if [[ ! -x $bin ]]; then
    echo "python_square.sh: $bin not found. Build first:" >&2
    echo "  cmake --preset release && cmake --build --preset release" >&2
    exit 2
  fi
done
if [[ ! -f $build_dir/python/taskq/v1/taskq_pb2.py ]]; then
  echo "python_square.sh: the Python stubs are missing in $build_dir/python; build first" >&2
  exit 2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/taskq-pysquare.XXXXXX")
data_dir=$(mktemp -d "${DATA_DIR:-$build_dir}/taskq-pysquare-data.XXXXXX")
pids=()
worker_pids=()

# shellcheck disable=SC2317  # reached through the trap
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  stop_processes python_square.sh "${worker_pids[@]}" "${pids[@]}"
  if ((status != 0)); then dump_logs "$tmp"; fi
  rm -rf "$tmp" "$data_dir"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_master python_square.sh "$master_bin" "$tmp" "$store" "$data_dir" "$fsync" 15
echo "master:  $master_addr (store $store, fsync $fsync)"
echo "workers: $workers x (concurrency $concurrency, prefetch $prefetch) of each kind; inline=$inline async=$async"
echo "bench:   $tasks tasks per run, $rounds round(s)"

export PYTHONPATH=$repo/clients/python:$build_dir/python${PYTHONPATH:+:$PYTHONPATH}
export PYTHONDONTWRITEBYTECODE=1
export TASKQ_BENCH_INLINE=$inline TASKQ_BENCH_ASYNC=$async

start_workers() {  # $1 = cxx | python, $2 = round
  local kind=$1 round=$2 w
  worker_pids=()
  for ((w = 1; w <= workers; w++)); do
    local log=$tmp/$kind-$round-$w.log
    if [[ $kind == cxx ]]; then
      "$worker_bin" --master "$master_addr" --token-file "$token_file" \
        --queue bench.tasks --concurrency "$concurrency" --prefetch "$prefetch" \
        --id "bench-cxx-$w" --log-level warning >"$log" 2>&1 &
    else
      local prof=
      if ((profile && w == 1)); then prof=$tmp/profile-$round.out; fi
      (cd "$repo/bench" && TASKQ_BENCH_PROFILE=$prof exec "$python" -m taskq worker python_square_worker \
        --master "$master_addr" --token-file "$token_file" --queue bench.tasks \
        --concurrency "$concurrency" --prefetch "$prefetch" --id "bench-py-$w" \
        --log-level warning) >"$log" 2>&1 &
    fi
    worker_pids+=("$!")
  done
}

# Runs taskq-square-bench against the live workers; writes "tasks/s max_ms"
# (of its RESULT line) to $tmp/rate. Exits the script if the run failed.
run_bench() {  # $1 = label
  local out status=0
  out=$("$bench_bin" --master "$master_addr" --token-file "$token_file" \
    --tasks "$tasks" --min-workers "$workers" "${bench_extra[@]}" 2>&1) || status=$?
  echo "$out" >"$tmp/bench-$1.log"
  if ((status != 0)); then
    echo "python_square.sh: the $1 run failed:" >&2
    echo "$out" >&2
    exit 1
  fi
  sed -n 's/^RESULT .*tasks_per_s=\([0-9.]*\).*max_ms=\([0-9.]*\).*/\1 \2/p' <<<"$out" >"$tmp/rate"
}

worker_cpu() {
  local pid total=0
  for pid in "${worker_pids[@]}"; do total=$((total + $(cpu_ticks "$pid"))); done
  awk -v t="$total" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", t / hz}'
}

declare -a cxx_rates py_rates
printf '\n%-6s %12s %10s %10s %12s %10s %10s %8s\n' round "C++ tasks/s" "C++ CPU s" \
  "C++ max ms" "Py tasks/s" "Py CPU s" "Py max ms" ratio
for ((r = 1; r <= rounds; r++)); do
  start_workers cxx "$r"
  run_bench "cxx-$r"
  read -r cxx cxx_max <"$tmp/rate"
  cxx_cpu=$(worker_cpu)
  stop_processes python_square.sh "${worker_pids[@]}"
  start_workers python "$r"
  run_bench "python-$r"
  read -r py py_max <"$tmp/rate"
  py_cpu=$(worker_cpu)
  stop_processes python_square.sh "${worker_pids[@]}"
  worker_pids=()
  cxx_rates+=("$cxx")
  py_rates+=("$py")
  printf '%-6s %12.0f %10s %10s %12.0f %10s %10s %8.3f\n' "$r" "$cxx" "$cxx_cpu" "$cxx_max" \
    "$py" "$py_cpu" "$py_max" "$(awk -v p="$py" -v c="$cxx" 'BEGIN {print p / c}')"
done
sum_cxx=$(printf '%s\n' "${cxx_rates[@]}" | awk '{s += $1} END {print s}')
sum_py=$(printf '%s\n' "${py_rates[@]}" | awk '{s += $1} END {print s}')
ratio=$(awk -v p="$sum_py" -v c="$sum_cxx" 'BEGIN {printf "%.3f", p / c}')
echo
echo "RESULT store=$store cxx_tasks_per_s=$(awk -v s="$sum_cxx" -v n="$rounds" 'BEGIN {printf "%.0f", s / n}') python_tasks_per_s=$(awk -v s="$sum_py" -v n="$rounds" 'BEGIN {printf "%.0f", s / n}') ratio=$ratio target=0.25"
if ((profile)); then
  for f in "$tmp"/profile-*.out; do
    echo
    echo "--- cProfile of Python worker 1 ($(basename "$f")), top 25 by own time ---"
    "$python" -c 'import pstats, sys; pstats.Stats(sys.argv[1]).sort_stats("tottime").print_stats(25)' "$f" |
      sed -n '/ncalls/,$p'
  done
fi
