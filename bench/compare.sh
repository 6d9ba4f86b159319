#!/usr/bin/env bash
# taskq side by side with its peers on this host, in one run: the seed's
# square workload (N tasks "i" -> results "i * i = i*i", 4 worker
# processes, a collector that checks every result exactly once) on
#   - redis 7 lists (AOF off, everysec, always; one command per step, or
#     batched: LPUSH 500, BLMPOP 64 + one LPUSH per worker batch, BLMPOP 1000),
#   - beanstalkd (binlog, fsync at most every second; one command per step),
#   - the raw gRPC floor (taskq-echo-server: unary and bidi-stream echo),
#   - taskq (--fsync always, --fsync interval, --store memory; bench/square.sh's
#     shape: Put 500, window 1000, 4 workers x concurrency 4, prefetch 64),
# all systems one after the other within a round, R rounds (interleaved, so
# that a change in the machine's load hits every system alike). Then the
# single-task round trip (put -> result, one at a time) of each, and
# taskq's unary Put+Get pairs/s against raw unary echo calls/s.
# Prints the tables (README.md in this directory says what each row does).
#
# Installs redis-server and beanstalkd from Debian's apt if missing (root).
# Builds nothing: runs the binaries in $BUILD_DIR (default build/release).
# Every server is started on a free 127.0.0.1 port with its data in a temp
# dir under $DATA_DIR (default: the build directory, a real disk: fsync on
# a tmpfs would measure nothing); everything it starts is stopped and the
# temp dirs are removed on exit, failure, Ctrl-C or SIGTERM. Each client is
# bounded (--timeout, default 300 s) and checks its results; a failed run
# shows as FAIL in the tables and makes the exit status 1.
#
# usage: bench/compare.sh [--quick] [--tasks N] [--rounds R] [--workers K]
#                         [--rtt-tasks N] [--unary-pairs N] [--unary-seconds S]
#                         [--timeout S] [--no-install]
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$repo/bench/lib.sh"
build_dir=${BUILD_DIR:-$repo/build/release}

tasks=100000
rounds=2
workers=4
rtt_tasks=2000
unary_pairs=20000
unary_seconds=10
client_timeout=300
install=1

usage() {
  cat >&2 <<'EOF2'
usage: bench/compare.sh [--quick] [--tasks N] [--rounds R] [--workers K]
                        [--rtt-tasks N] [--unary-pairs N] [--unary-seconds S]
                        [--timeout S] [--no-install]
  --quick            smoke run: 20000 tasks, 1 round, 500 round trips, 3000 pairs
  --tasks N          square tasks per throughput run (default 100000)
  --rounds R         rounds, each running every system once (default 2)
  --workers K        worker processes for every system (default 4)
  --rtt-tasks N      one-at-a-time round trips per system (default 2000)
  --unary-pairs N    taskq Put+Get pairs and unary echo calls (default 20000)
  --unary-seconds S  stop the pairs after S seconds (default 10)
  --timeout S        kill a client run after S seconds (default 300)
  --no-install       do not apt-get install redis-server / beanstalkd
  env BUILD_DIR      where the binaries are (default build/release)
  env DATA_DIR       where the servers' data dirs are made (default BUILD_DIR)
EOF2
  exit 2
}

while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) tasks=20000; rounds=1; rtt_tasks=500; unary_pairs=3000; unary_seconds=5; shift ;;
    --tasks) tasks=${2:?}; shift 2 ;;
    --rounds) rounds=${2:?}; shift 2 ;;
    --workers) workers=${2:?}; shift 2 ;;
    --rtt-tasks) rtt_tasks=${2:?}; shift 2 ;;
    --unary-pairs) unary_pairs=${2:?}; shift 2 ;;
    --unary-seconds) unary_seconds=${2:?}; shift 2 ;;
    --timeout) client_timeout=${2:?}; shift 2 ;;
    --no-install) install=0; shift ;;
    -h|--help) usage ;;
    *) echo "compare.sh: unknown argument $1" >&2; usage ;;
  esac
done
for n in "$tasks" "$rounds" "$workers" "$rtt_tasks" "$unary_pairs" "$unary_seconds" "$client_timeout"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "compare.sh: '$n' is not a positive integer" >&2; usage; }
done

# --- the peers, from Debian --------------------------------------------------
if ((install)); then
  missing=()
  for p in redis-server beanstalkd; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    if ((EUID != 0)); then
      echo "compare.sh: ${missing[*]} not installed; run as root, or: sudo apt-get install ${missing[*]}" >&2
      exit 2
    fi
    echo "installing ${missing[*]} from apt"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
for cmd in redis-server beanstalkd timeout; do
  command -v "$cmd" >/dev/null || { echo "compare.sh: $cmd not found" >&2; exit 2; }
done
redis_version=$(redis-server --version | sed -n 's/.* v=\([0-9.]*\).*/\1/p')
if ((${redis_version%%.*} < 7)); then
  echo "compare.sh: redis $redis_version has no BLMPOP (needs 7.0); the batched rows need it" >&2
  exit 2
fi
beanstalkd_version=$(beanstalkd -v 2>&1 | awk '{print $2}')

bench_dir=$build_dir/bench
for bin in "$build_dir/taskq-master" "$build_dir/taskq-worker" "$bench_dir/taskq-square-bench" \
           "$bench_dir/taskq-echo-server" "$bench_dir/taskq-echo-bench" \
           "$bench_dir/taskq-redis-bench" "$bench_dir/taskq-beanstalk-bench" \
           "$bench_dir/taskq-unary-bench"; do
  if [[ ! -x $bin ]]; then
    echo "compare.sh: $bin not found. Build first:" >&2
    echo "  cmake --preset release && cmake --build --preset release" >&2
    exit 2
  fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/taskq-compare.XXXXXX")
data_root=$(mktemp -d "${DATA_DIR:-$build_dir}/taskq-compare-data.XXXXXX")
mkdir "$tmp/logs"
results=$tmp/results
: >"$results"
pids=()     # everything of the current system that is running
failures=0
finished=0  # set once every run is done (a failed run shows in the tables)

# shellcheck disable=SC2317  # reached through the trap
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  stop_processes compare.sh "${pids[@]}"
  if ((status != 0 && !finished)); then dump_logs "$tmp/logs"; fi
  rm -rf "$tmp" "$data_root"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Stops the current system's servers and workers.
stop_all() {
  stop_processes compare.sh "${pids[@]}"
  pids=()
}

# record KEY VALUE...: one line of the results file.
record() { echo "$*" >>"$results"; }

# client KEY CMD...: runs a measuring client (bounded by --timeout) in the
# background, so that a signal is handled at once, and records its RESULT
# line as "KEY tasks_per_s p50_ms p99_ms", or "KEY FAIL".
client() {
  local key=$1 status=0 pid
  shift
  timeout -k 5 "$client_timeout" "$@" >"$tmp/logs/$key.out" 2>"$tmp/logs/$key.log" &
  pid=$!
  pids+=("$pid")
  wait "$pid" || status=$?
  local line
  line=$(grep '^RESULT ' "$tmp/logs/$key.out" || true)
  if ((status != 0)) || [[ -z $line || $line != *" ok=1"* ]]; then
    echo "  $key: FAILED (exit $status); its stderr:" >&2
    tail -n 5 "$tmp/logs/$key.log" >&2
    record "$key" FAIL
    failures=$((failures + 1))
    return 0
  fi
  local rate p50 p99
  rate=$(sed -n 's/.* tasks_per_s=\([0-9.]*\).*/\1/p' <<<"$line")
  p50=$(sed -n 's/.* p50_ms=\([0-9.]*\).*/\1/p' <<<"$line")
  p99=$(sed -n 's/.* p99_ms=\([0-9.]*\).*/\1/p' <<<"$line")
  record "$key" "$rate" "$p50" "$p99"
  printf '  %-28s %9s /s  p50 %s ms  p99 %s ms\n' "$key" "$rate" "$p50" "$p99"
}

# start_redis none|everysec|always: a fresh redis on a free port; sets $server.
start_redis() {
  local dir port aof=(--appendonly no)
  dir=$(mktemp -d "$data_root/redis.XXXXXX")
  port=$(free_port)
  [[ $1 == none ]] || aof=(--appendonly yes --appendfsync "$1")
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save '' "${aof[@]}" \
    --protected-mode no --daemonize no --logfile "$tmp/logs/redis.log" &
  pids+=("$!")
  wait_port_open compare.sh "$!" "$port" 15
  server=127.0.0.1:$port
}

# run_redis ROW none|everysec|always one|batched ROUND
run_redis() {
  local row=$1 fsync=$2 style=$3 round=$4 w
  start_redis "$fsync"
  for ((w = 1; w <= workers; w++)); do
    "$bench_dir/taskq-redis-bench" worker --server "$server" --style "$style" --seconds 900 \
      >>"$tmp/logs/redis-worker.log" 2>&1 &
    pids+=("$!")
  done
  client "$row.tput.$round" "$bench_dir/taskq-redis-bench" run --server "$server" \
    --style "$style" --tasks "$tasks"
  if [[ $style == one ]]; then
    client "$row.rtt.$round" "$bench_dir/taskq-redis-bench" run --server "$server" \
      --style one --window 1 --tasks "$rtt_tasks" --warmup 100
  fi
  stop_all
}

# run_beanstalkd ROW ROUND: binlog with fsync at most every 1000 ms.
run_beanstalkd() {
  local row=$1 round=$2 dir port w
  dir=$(mktemp -d "$data_root/beanstalkd.XXXXXX")
  port=$(free_port)
  beanstalkd -l 127.0.0.1 -p "$port" -b "$dir" -f 1000 >"$tmp/logs/beanstalkd.log" 2>&1 &
  pids+=("$!")
  wait_port_open compare.sh "$!" "$port" 15
  server=127.0.0.1:$port
  for ((w = 1; w <= workers; w++)); do
    "$bench_dir/taskq-beanstalk-bench" worker --server "$server" --seconds 900 \
      >>"$tmp/logs/beanstalk-worker.log" 2>&1 &
    pids+=("$!")
  done
  client "$row.tput.$round" "$bench_dir/taskq-beanstalk-bench" run --server "$server" \
    --tasks "$tasks"
  client "$row.rtt.$round" "$bench_dir/taskq-beanstalk-bench" run --server "$server" \
    --window 1 --tasks "$rtt_tasks" --warmup 100
  stop_all
}

# run_echo ROUND: every echo row against one taskq-echo-server.
run_echo() {
  local round=$1 port_file=$tmp/echo.port
  rm -f "$port_file"
  "$bench_dir/taskq-echo-server" --port-file "$port_file" >"$tmp/logs/echo-server.log" 2>&1 &
  pids+=("$!")
  local deadline=$((SECONDS + 15))
  until [[ -s $port_file ]]; do
    kill -0 "${pids[-1]}" 2>/dev/null || { echo "compare.sh: taskq-echo-server exited" >&2; exit 1; }
    ((SECONDS < deadline)) || { echo "compare.sh: taskq-echo-server wrote no port file" >&2; exit 1; }
    sleep 0.05
  done
  server=$(head -n1 "$port_file")
  client "echo-unary4.tput.$round" "$bench_dir/taskq-echo-bench" unary --server "$server" \
    --threads "$workers" --calls "$tasks"
  client "echo-stream1.tput.$round" "$bench_dir/taskq-echo-bench" stream --server "$server" \
    --window 1000 --batch 1 --calls "$tasks"
  client "echo-stream64.tput.$round" "$bench_dir/taskq-echo-bench" stream --server "$server" \
    --window 1000 --batch 64 --calls "$tasks"
  client "echo-unary1.rtt.$round" "$bench_dir/taskq-echo-bench" unary --server "$server" \
    --threads 1 --calls "$unary_pairs"
  client "echo-stream-w1.rtt.$round" "$bench_dir/taskq-echo-bench" stream --server "$server" \
    --window 1 --batch 1 --calls "$rtt_tasks"
  stop_all
}

# run_taskq ROW ROUND MASTER_FLAGS...: a master, K workers, then the square
# run (master CPU and peak RSS recorded around it), the round trip run and
# the unary pairs, all against that master.
run_taskq() {
  local row=$1 round=$2 w
  shift 2
  local dir port_file=$tmp/master.port token_file=$tmp/master.token
  dir=$(mktemp -d "$data_root/taskq.XXXXXX")
  rm -f "$port_file" "$token_file"
  "$build_dir/taskq-master" --listen 127.0.0.1:0 --port-file "$port_file" \
    --token-file "$token_file" --log-level warning --data-dir "$dir" "$@" \
    >"$tmp/logs/master.log" 2>&1 &
  local master_pid=$!
  pids+=("$master_pid")
  wait_master_ready compare.sh "$master_pid" "$port_file" "$token_file" 15
  local master
  master=$(head -n1 "$port_file")
  for ((w = 1; w <= workers; w++)); do
    "$build_dir/taskq-worker" --master "$master" --token-file "$token_file" \
      --queue bench.tasks --concurrency 4 --prefetch 64 --id "compare-worker-$w" \
      --log-level warning >>"$tmp/logs/taskq-worker.log" 2>&1 &
    pids+=("$!")
  done
  local connect=(--master "$master" --token-file "$token_file")
  local ticks_before ticks_after
  ticks_before=$(cpu_ticks "$master_pid")
  client "$row.tput.$round" "$bench_dir/taskq-square-bench" "${connect[@]}" \
    --tasks "$tasks" --batch 500 --min-workers "$workers"
  ticks_after=$(cpu_ticks "$master_pid")
  # Master CPU over the whole run, its 1000 warmup tasks included.
  record "$row.cpu.$round" "$(awk -v t=$((ticks_after - ticks_before)) -v hz="$(getconf CLK_TCK)" \
    -v n=$((tasks + 1000)) 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')"
  record "$row.rss.$round" $(($(peak_rss_kb "$master_pid") / 1024))
  client "$row.rtt.$round" "$bench_dir/taskq-square-bench" "${connect[@]}" \
    --tasks "$rtt_tasks" --batch 1 --window 1 --producers 1 --warmup 100 --min-workers "$workers"
  client "$row.unary.$round" "$bench_dir/taskq-unary-bench" "${connect[@]}" \
    --pairs "$unary_pairs" --seconds "$unary_seconds"
  stop_all
}

echo "compare.sh: $tasks tasks, $rounds round(s), $workers workers; redis $redis_version, beanstalkd $beanstalkd_version"
echo "load before: $(uptime)"
started=$SECONDS
for ((round = 1; round <= rounds; round++)); do
  echo "round $round/$rounds"
  run_redis redis-batched-everysec everysec batched "$round"
  run_taskq taskq-interval "$round" --store sqlite --fsync interval
  run_redis redis-batched-always always batched "$round"
  run_taskq taskq-always "$round" --store sqlite --fsync always
  run_redis redis-batched-none none batched "$round"
  run_taskq taskq-memory "$round" --store memory
  run_echo "$round"
  run_redis redis-one-everysec everysec one "$round"
  run_beanstalkd beanstalkd "$round"
done
echo "load after:  $(uptime)"
echo "took $((SECONDS - started)) s"
echo
finished=1

# --- the tables ---------------------------------------------------------------
# get KEY FIELD: FIELD (1 = rate, 2 = p50, 3 = p99) of KEY's line, or FAIL.
get() {
  awk -v k="$1" -v f="$2" '$1 == k {print ($2 == "FAIL" ? "FAIL" : $(f + 1)); found = 1}
                           END {if (!found) print "-"}' "$results"
}
# per_round ROW METRIC FIELD [DIVISOR_ROW DIVISOR_METRIC DIVISOR_FIELD FACTOR]:
# the value of each round joined by " / ", or its ratio to FACTOR x the
# divisor's value in the same round.
per_round() {
  local out=() r v d
  for ((r = 1; r <= rounds; r++)); do
    v=$(get "$1.$2.$r" "$3")
    if [[ $# -gt 3 ]]; then
      d=$(get "$4.$5.$r" "$6")
      v=$(awk -v a="$v" -v b="$d" -v f="$7" \
        'BEGIN {if (a + 0 > 0 && b + 0 > 0) printf "%.3f", a / (b * f); else print "-"}')
    fi
    out+=("$v")
  done
  local joined
  joined=$(IFS='/'; echo "${out[*]}")
  echo "${joined//\// / }"
}

batched_redis="LPUSH 500 / BLMPOP 64 + one LPUSH per batch / BLMPOP 1000, window 1000"
taskq_batching="Put 500, window 1000, 4 workers x concurrency 4, prefetch 64"
echo "## Square workload: $tasks tasks, $workers worker processes, tasks/s per round (ratio: to batched redis of equal durability, same round)"
echo
echo "| system | durability | batching | tasks/s | ratio |"
echo "|---|---|---|---|---|"
# row|system|durability|batching|base row
while IFS='|' read -r row system durability batching base; do
  printf '| %s | %s | %s | %s | %s |\n' "$system" "$durability" "$batching" \
    "$(per_round "$row" tput 1)" "$(per_round "$row" tput 1 "$base" tput 1 1)"
done <<EOF
redis-batched-none|redis $redis_version lists|none (no AOF, no RDB)|$batched_redis|redis-batched-none
redis-batched-everysec|redis $redis_version lists|AOF, fsync everysec|$batched_redis|redis-batched-everysec
redis-batched-always|redis $redis_version lists|AOF, fsync always|$batched_redis|redis-batched-always
redis-one-everysec|redis $redis_version lists|AOF, fsync everysec|one command per step (LPUSH / BRPOP + LPUSH / BRPOP), window 1000|redis-batched-everysec
beanstalkd|beanstalkd $beanstalkd_version|binlog, fsync every ≤ 1 s (-f 1000)|one command per step (put / reserve + put + delete / reserve + delete), window 1000|redis-batched-everysec
echo-unary4|raw gRPC unary echo|none|$workers threads, one item per call|redis-batched-none
echo-stream1|raw gRPC bidi-stream echo|none|one item per message, window 1000|redis-batched-none
echo-stream64|raw gRPC bidi-stream echo|none|64 items per message, window 1000|redis-batched-none
taskq-always|**taskq --fsync always**|fsync before the ack (group commit)|$taskq_batching|redis-batched-always
taskq-interval|**taskq --fsync interval**|fsync every 10 ms (--fsync-interval-ms)|$taskq_batching|redis-batched-everysec
taskq-memory|**taskq --store memory**|none|$taskq_batching|redis-batched-none
EOF
echo
echo "## Single-task round trip: put -> result, one at a time, $rtt_tasks tasks (ratio: p50 to two raw gRPC stream round trips, same round)"
echo
echo "| system | p50 ms | p99 ms | p50 ratio |"
echo "|---|---|---|---|"
while IFS='|' read -r row system; do
  printf '| %s | %s | %s | %s |\n' "$system" "$(per_round "$row" rtt 2)" \
    "$(per_round "$row" rtt 3)" "$(per_round "$row" rtt 2 echo-stream-w1 rtt 2 2)"
done <<EOF
echo-stream-w1|raw gRPC bidi-stream echo, one message round trip
echo-unary1|raw gRPC unary echo, one call
redis-one-everysec|redis lists, AOF everysec (LPUSH, BRPOP + LPUSH, BRPOP)
beanstalkd|beanstalkd, binlog fsync ≤ 1 s
taskq-always|taskq --fsync always
taskq-interval|taskq --fsync interval
taskq-memory|taskq --store memory
EOF
echo
echo "## Unary: one Put + one Get of one task at a time (client library) vs raw unary echo calls (ratio: pairs/s to half the echo calls/s, same round)"
echo
echo "| system | per s | ratio |"
echo "|---|---|---|"
printf '| raw gRPC unary echo, calls | %s | |\n' "$(per_round echo-unary1 rtt 1)"
while IFS='|' read -r row system; do
  printf '| %s | %s | %s |\n' "$system" "$(per_round "$row" unary 1)" \
    "$(per_round "$row" unary 1 echo-unary1 rtt 1 0.5)"
done <<EOF
taskq-always|taskq --fsync always, pairs
taskq-interval|taskq --fsync interval, pairs
taskq-memory|taskq --store memory, pairs
EOF
echo
echo "## taskq master during the square run (CPU includes the 1000 warmup tasks)"
echo
echo "| taskq | master CPU µs per task | peak RSS MiB |"
echo "|---|---|---|"
for row in taskq-always taskq-interval taskq-memory; do
  printf '| %s | %s | %s |\n' "${row#taskq-}" "$(per_round "$row" cpu 1)" "$(per_round "$row" rss 1)"
done
if ((failures > 0)); then
  echo
  echo "compare.sh: $failures run(s) FAILED (see above)" >&2
  exit 1
fi
