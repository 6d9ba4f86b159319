# shellcheck shell=bash
# Shell helpers shared by the benchmark scripts (square.sh, soak.sh):
# stopping what a script started, showing its logs when it failed, waiting
# for the master's port file, and a process's peak RSS and CPU. Source it;
# it defines functions only.

# Sends SIGTERM to every pid, waits up to 10 s in all, then SIGKILLs what
# is left and reaps them. $1 names the script in its messages.
stop_processes() {
  local script=$1 pid
  shift
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  local deadline=$((SECONDS + 10))
  for pid in "$@"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "$script: pid $pid ignored SIGTERM for 10 s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
}

# Prints the last lines of every non-empty *.log in directory $1 (stderr).
dump_logs() {
  local log
  [[ -d $1 ]] || return 0
  for log in "$1"/*.log; do
    [[ -s $log ]] || continue
    echo "--- last lines of $(basename "$log") ---" >&2
    tail -n 20 "$log" >&2
  done
}

# Waits until the master (pid $2) has written port file $3 and token file
# $4, at most $5 seconds; exits the script with a message otherwise.
wait_master_ready() {
  local script=$1 pid=$2 port_file=$3 token_file=$4 timeout=$5
  local deadline=$((SECONDS + timeout))
  until [[ -s $port_file && -s $token_file ]]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$script: taskq-master exited during startup" >&2
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      echo "$script: taskq-master wrote no port file within $timeout s" >&2
      exit 1
    fi
    sleep 0.05
  done
}

# Prints the peak RSS (VmHWM) and CPU seconds (user+system) of live process
# $2, labelled $1.
report_process() {
  local name=$1 pid=$2
  [[ -r /proc/$pid/status ]] || return 0
  local hwm ticks cpu
  hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
  # Fields 14 and 15 of /proc/PID/stat, counted after the ")" of comm.
  ticks=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')
  cpu=$(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", t / hz}')
  printf '%-12s peak RSS (VmHWM) %6d MiB (%d kB), CPU %s s\n' \
    "$name" $((hwm / 1024)) "$hwm" "$cpu"
}
