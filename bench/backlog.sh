#!/usr/bin/env bash
# What a large backlog costs the durable master, on this host:
#  1. start a taskq-master on an ephemeral 127.0.0.1 port with a fresh data
#     dir (the time to its port file is the empty-store start-up);
#  2. taskq-backlog-bench fill: put N tasks of B-byte payloads on queue
#     `backlog` from K concurrent Put streams (batches of 1000): put rate;
#  3. the master's RSS (VmRSS, VmHWM) before and after, RSS per queued task,
#     and the data dir's size;
#  4. kill -9 the master and start it again on the same data dir, timing
#     from the exec to its "store: recovered" log line, its port file and
#     the first Get (lease, nowait, 1 task) that returns a task; the RSS
#     after recovery. (Skipped with --store memory: nothing survives.)
#  5. with --drain: take every task and report the drain rate.
# Builds nothing: it runs the binaries in $BUILD_DIR (default build/release).
# Everything it starts is stopped, and the data dir removed, on exit,
# Ctrl-C or SIGTERM. Every step has a time limit (--timeout).
#
# usage: bench/backlog.sh [--tasks N] [--bytes B] [--fsync always|interval|never]
#                         [--store sqlite|memory] [--streams K] [--batch N]
#                         [--drain] [--cold] [--timeout S] [-- MASTER_FLAGS...]
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${BUILD_DIR:-$repo/build/release}

tasks=1000000
bytes=100
fsync=always
store=sqlite
streams=4
batch=1000
drain=0
cold=0
step_timeout=600
master_extra=()

usage() {
  cat >&2 <<'EOF2'
usage: bench/backlog.sh [--tasks N] [--bytes B] [--fsync P] [--store S]
                        [--streams K] [--batch N] [--drain] [--cold] [--timeout S]
                        [-- MASTER_FLAGS...]
  --tasks N      tasks put on queue `backlog` (default 1000000)
  --bytes B      payload bytes per task, random (default 100)
  --fsync P      the master's fsync policy: always, interval or never (default always)
  --store S      sqlite (durable, default) or memory (no restart step)
  --streams K    concurrent Put streams (default 4)
  --batch N      tasks per Put (default 1000)
  --drain        after the restart, take every task and report the drain rate
  --cold         before the restart, drop the data files from the page cache
                 (posix_fadvise DONTNEED, needs python3): a cold recovery
  --timeout S    limit of each step (fill, drain; start-up: 120 s) (default 600)
  MASTER_FLAGS   passed to both starts of taskq-master (e.g. --memory-budget-mb 64)
  env BUILD_DIR  where the binaries are (default build/release)
  env DATA_DIR   where the master's data dir is made (default BUILD_DIR; not a tmpfs)
EOF2
  exit 2
}

while [[ $# -gt 0 ]]; do
  case $1 in
    --tasks) tasks=${2:?}; shift 2 ;;
    --bytes) bytes=${2:?}; shift 2 ;;
    --fsync) fsync=${2:?}; shift 2 ;;
    --store) store=${2:?}; shift 2 ;;
    --streams) streams=${2:?}; shift 2 ;;
    --batch) batch=${2:?}; shift 2 ;;
    --drain) drain=1; shift ;;
    --cold) cold=1; shift ;;
    --timeout) step_timeout=${2:?}; shift 2 ;;
    --) shift; master_extra=("$@"); break ;;
    -h|--help) usage ;;
    *) echo "backlog.sh: unknown argument $1" >&2; usage ;;
  esac
done

master_bin=$build_dir/taskq-master
bench_bin=$build_dir/bench/taskq-backlog-bench
for bin in "$master_bin" "$bench_bin"; do
  if [[ ! -x $bin ]]; then
    echo "backlog.sh: $bin not found. Build first:" >&2
    echo "  cmake --preset release && cmake --build --preset release" >&2
    echo "or point BUILD_DIR at a build directory that has it." >&2
    exit 2
  fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/taskq-backlog.XXXXXX")
data_dir=$(mktemp -d "${DATA_DIR:-$build_dir}/taskq-backlog-data.XXXXXX")
if [[ $(stat -f -c %T "$data_dir") == tmpfs ]]; then
  echo "backlog.sh: warning: $data_dir is on a tmpfs: fsync and disk sizes mean nothing there" >&2
fi
token_file=$tmp/token
port_file=$tmp/port
pid_file=$tmp/master.pid
master_log=$tmp/master.log
master_pid=
bg_pid=

# The master is started by taskq-backlog-bench, so it is not our child: it
# is watched through /proc (a zombie counts as gone).
alive() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}

# Waits up to $2 seconds for pid $1 to be gone.
wait_gone() {
  local deadline=$((SECONDS + $2))
  while alive "$1" && ((SECONDS < deadline)); do sleep 0.05; done
  ! alive "$1"
}

# shellcheck disable=SC2317  # reached through the trap
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [[ -n $bg_pid ]]; then
    kill -TERM "$bg_pid" 2>/dev/null || true
    wait "$bg_pid" 2>/dev/null || true
  fi
  # The pid file names the latest master, which a start interrupted before
  # it printed its pid may not have reported yet.
  local pid
  for pid in $master_pid $(cat "$pid_file" 2>/dev/null); do
    alive "$pid" || continue
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" 10; then
      echo "backlog.sh: master $pid ignored SIGTERM for 10 s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
      wait_gone "$pid" 5 || true
    fi
  done
  if ((status != 0)) && [[ -s $master_log ]]; then
    echo "--- last lines of the master's log ---" >&2
    tail -n 20 "$master_log" >&2
  fi
  rm -rf "$tmp" "$data_dir"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# run NAME CMD...: runs CMD in the background (so that a signal to this
# script is handled at once), its stdout kept in $tmp/NAME.out and shown.
run() {
  local name=$1 status=0
  shift
  "$@" >"$tmp/$name.out" &
  bg_pid=$!
  wait "$bg_pid" || status=$?
  bg_pid=
  cat "$tmp/$name.out"
  return "$status"
}

# field KEY FILE: the value of KEY=value on the RESULT line of FILE.
field() {
  sed -n "s/^RESULT.* $1=\([^ ]*\).*/\1/p" "$2"
}

# kB of VmRSS or VmHWM of a live process.
proc_kb() {
  awk -v key="$2:" '$1 == key {print $2}' "/proc/$1/status"
}

mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }

# Apparent bytes of one file of the data dir (0 if absent).
file_bytes() { stat -c %s "$data_dir/$1" 2>/dev/null || echo 0; }

# "taskq.db X MiB, -wal Y MiB, -shm Z MiB; apparent A MiB, allocated B MiB"
describe_data_dir() {
  local apparent allocated
  apparent=$(du -sb "$data_dir" | awk '{print $1}')
  allocated=$(du -s --block-size=1 "$data_dir" | awk '{print $1}')
  printf 'taskq.db %s MiB, -wal %s MiB, -shm %s MiB; whole dir %s MiB apparent, %s MiB allocated' \
    "$(mib "$(file_bytes taskq.db)")" "$(mib "$(file_bytes taskq.db-wal)")" \
    "$(mib "$(file_bytes taskq.db-shm)")" "$(mib "$apparent")" "$(mib "$allocated")"
}

# With --store memory every task stays in memory and puts beyond
# --memory-budget-mb are refused: give the backlog room (~1.1 KiB a task
# plus its payload) unless the caller chose a budget.
budget_flags=()
if [[ $store == memory && " ${master_extra[*]} " != *" --memory-budget-mb "* ]]; then
  budget_flags=(--memory-budget-mb $(( (tasks * (1200 + bytes) >> 20) + 64 )))
fi
master_cmd=("$master_bin" --listen 127.0.0.1:0 --port-file "$port_file"
  --token-file "$token_file" --log-level info
  --store "$store" --data-dir "$data_dir" --fsync "$fsync" "${budget_flags[@]}" "${master_extra[@]}")

echo "backlog: $tasks tasks x $bytes B, store $store, fsync $fsync, $streams Put streams x batch $batch"
if ((${#master_extra[@]})); then echo "master flags: ${master_extra[*]}"; fi
echo "data dir: $data_dir ($(stat -f -c %T "$data_dir"))"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

# 1. A fresh master.
run start1 "$bench_bin" start --port-file "$port_file" --log-file "$master_log" \
  --pid-file "$pid_file" --timeout 120 -- "${master_cmd[@]}"
master_pid=$(field pid "$tmp/start1.out")
address=$(field address "$tmp/start1.out")
start1_port_ms=$(field port_file_ms "$tmp/start1.out")
rss0=$(proc_kb "$master_pid" VmRSS)
hwm0=$(proc_kb "$master_pid" VmHWM)

# 2. The backlog.
run fill "$bench_bin" fill --master "$address" --token-file "$token_file" \
  --queue backlog --tasks "$tasks" --bytes "$bytes" --batch "$batch" \
  --streams "$streams" --timeout "$step_timeout"
rss1=$(proc_kb "$master_pid" VmRSS)
hwm1=$(proc_kb "$master_pid" VmHWM)
disk1=$(describe_data_dir)
apparent1=$(du -sb "$data_dir" | awk '{print $1}')
echo

# 3. kill -9 and recovery.
recovered=0
if [[ $store == sqlite ]]; then
  kill -KILL "$master_pid"
  if ! wait_gone "$master_pid" 10; then
    echo "backlog.sh: master $master_pid still there 10 s after SIGKILL" >&2
    exit 1
  fi
  echo "killed the master (kill -9); data dir: $(describe_data_dir)"
  if ((cold)); then
    python3 - "$data_dir" <<'EOF2'
import os, sys
for name in os.listdir(sys.argv[1]):
    path = os.path.join(sys.argv[1], name)
    if os.path.isfile(path):
        fd = os.open(path, os.O_RDONLY)
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
EOF2
    echo "dropped the data files from the page cache (cold recovery)"
  fi
  run start2 "$bench_bin" start --port-file "$port_file" --log-file "$master_log" \
    --pid-file "$pid_file" --token-file "$token_file" --probe-queue backlog \
    --timeout 120 -- "${master_cmd[@]}"
  master_pid=$(field pid "$tmp/start2.out")
  address=$(field address "$tmp/start2.out")
  rss2=$(proc_kb "$master_pid" VmRSS)
  hwm2=$(proc_kb "$master_pid" VmHWM)
  disk2=$(describe_data_dir)
  recovered=1
  echo
fi

# 4. Optionally, the drain.
if ((drain)); then
  run drain "$bench_bin" drain --master "$address" --token-file "$token_file" \
    --queue backlog --timeout "$step_timeout"
  rss3=$(proc_kb "$master_pid" VmRSS)
  hwm3=$(proc_kb "$master_pid" VmHWM)
  disk3=$(describe_data_dir)
  echo
fi

per_task_rss=$(awk -v a="$rss1" -v b="$rss0" -v n="$tasks" 'BEGIN {printf "%.0f", (a - b) * 1024 / n}')
per_task_disk=$(awk -v a="$apparent1" -v n="$tasks" 'BEGIN {printf "%.0f", a / n}')
echo "==== backlog summary: $tasks tasks x $bytes B, store $store, fsync $fsync${master_extra[*]:+, master flags ${master_extra[*]}} ===="
printf 'empty start:   port file %s ms after exec\n' "$start1_port_ms"
printf 'put:           %s tasks in %s s = %s tasks/s (%s streams x batch %s; Put round trip mean %s, p99 %s, max %s ms)\n' \
  "$(field tasks "$tmp/fill.out")" "$(field seconds "$tmp/fill.out")" \
  "$(field tasks_per_s "$tmp/fill.out")" "$streams" "$batch" \
  "$(field put_rtt_mean_ms "$tmp/fill.out")" "$(field put_rtt_p99_ms "$tmp/fill.out")" \
  "$(field put_rtt_max_ms "$tmp/fill.out")"
printf 'master RSS:    before %s MiB (VmHWM %s), after the puts %s MiB (VmHWM %s): %s B per queued task\n' \
  "$(mib $((rss0 * 1024)))" "$(mib $((hwm0 * 1024)))" "$(mib $((rss1 * 1024)))" \
  "$(mib $((hwm1 * 1024)))" "$per_task_rss"
printf 'data dir:      %s; %s B per task (apparent)\n' "$disk1" "$per_task_disk"
if ((recovered)); then
  printf 'restart after kill -9 (%s page cache), from exec:\n' "$( ((cold)) && echo cold || echo warm)"
  printf '  recovery log line  seen at %s ms (stamped %s ms), says "in %s ms"\n' \
    "$(field recovered_line_ms "$tmp/start2.out")" "$(field recovered_stamp_ms "$tmp/start2.out")" \
    "$(field stated_ms "$tmp/start2.out")"
  printf '  port file          %s ms\n' "$(field port_file_ms "$tmp/start2.out")"
  printf '  first task (Get)   %s ms  <- serving again\n' "$(field first_task_ms "$tmp/start2.out")"
  printf 'RSS recovered: %s MiB (VmHWM %s MiB)\n' "$(mib $((rss2 * 1024)))" "$(mib $((hwm2 * 1024)))"
  printf 'data dir:      %s (after recovery)\n' "$disk2"
else
  echo "restart:       skipped (--store memory keeps nothing across kill -9)"
fi
if ((drain)); then
  printf 'drain:         %s tasks in %s s = %s tasks/s\n' "$(field tasks "$tmp/drain.out")" \
    "$(field seconds "$tmp/drain.out")" "$(field tasks_per_s "$tmp/drain.out")"
  printf 'RSS drained:   %s MiB (VmHWM %s MiB); data dir %s\n' "$(mib $((rss3 * 1024)))" \
    "$(mib $((hwm3 * 1024)))" "$disk3"
fi
if grep -q ' ERROR \| WARNING ' "$master_log"; then
  echo "--- warnings and errors in the master's log ---"
  grep ' ERROR \| WARNING ' "$master_log" | tail -n 20
fi
echo "RESULT backlog tasks=$tasks bytes=$bytes store=$store fsync=$fsync" \
  "put_per_s=$(field tasks_per_s "$tmp/fill.out") rss_before_kb=$rss0 rss_after_kb=$rss1" \
  "hwm_after_kb=$hwm1 rss_per_task_b=$per_task_rss disk_bytes=$apparent1" \
  "recovered_line_ms=$( ((recovered)) && field recovered_line_ms "$tmp/start2.out" || echo -)" \
  "stated_ms=$( ((recovered)) && field stated_ms "$tmp/start2.out" || echo -)" \
  "port_file_ms=$( ((recovered)) && field port_file_ms "$tmp/start2.out" || echo -)" \
  "first_task_ms=$( ((recovered)) && field first_task_ms "$tmp/start2.out" || echo -)" \
  "rss_recovered_kb=${rss2:--} drain_per_s=$( ((drain)) && field tasks_per_s "$tmp/drain.out" || echo -)"
