# shellcheck shell=bash
# Shell helpers shared by the benchmark scripts (square.sh, soak.sh,
# compare.sh, python_square.sh): stopping what a script started, showing its
# logs when it failed, starting a master and waiting for its port file or a
# server's port, a free port, and a process's peak RSS and CPU. Source it; it defines functions
# only.

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

# Starts taskq-master $2 on a free loopback port: store $4 in data dir $5,
# --fsync $6, output in $3/master.log; the master creates its token file
# (0600). Adds its pid to the caller's `pids` (so the caller's cleanup stops
# it) and waits up to $7 s for it to listen ($1 names the script in
# messages). Sets master_pid, master_addr, port_file and token_file.
start_master() {
  local script=$1 bin=$2 dir=$3 store=$4 data_dir=$5 fsync=$6 timeout=$7
  token_file=$dir/token
  port_file=$dir/port
  "$bin" --listen 127.0.0.1:0 --port-file "$port_file" \
    --token-file "$token_file" --log-level warning \
    --store "$store" --data-dir "$data_dir" --fsync "$fsync" >"$dir/master.log" 2>&1 &
  master_pid=$!
  pids+=("$master_pid")
  wait_master_ready "$script" "$master_pid" "$port_file" "$token_file" "$timeout"
  master_addr=$(head -n1 "$port_file")
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

# CPU clock ticks (user+system) process $1 has used so far; 0 if gone.
cpu_ticks() {
  [[ -r /proc/$1/stat ]] || { echo 0; return 0; }
  sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# Peak RSS (VmHWM) of process $1 in kB; 0 if gone.
peak_rss_kb() {
  [[ -r /proc/$1/status ]] || { echo 0; return 0; }
  awk '/^VmHWM:/ {print $2}' "/proc/$1/status"
}

# Prints a free TCP port on 127.0.0.1 (for servers that cannot bind port 0
# and report it, like redis-server and beanstalkd). Another process may
# take it before the server binds it: callers check the server came up.
free_port() {
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    return
  fi
  local port
  while :; do
    port=$((20000 + RANDOM % 30000))
    # A refused connect means nothing listens there.
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
}

# Waits until something accepts connections on 127.0.0.1:$3 while process
# $2 lives, at most $4 seconds; exits the script with a message otherwise.
# $1 names the script in its messages.
wait_port_open() {
  local script=$1 pid=$2 port=$3 timeout=$4
  local deadline=$((SECONDS + timeout))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$script: the server on port $port (pid $pid) exited during startup" >&2
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      echo "$script: nothing listens on port $port after $timeout s" >&2
      exit 1
    fi
    sleep 0.05
  done
}
