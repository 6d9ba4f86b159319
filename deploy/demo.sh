#!/usr/bin/env bash
# The seed's distributed-process example, on this machine: builds taskq,
# starts a master on 127.0.0.1 (ephemeral port, token in a temp dir) and two
# workers, squares 1..10 through them, then stops everything it started,
# also on Ctrl-C or failure.
#
#   deploy/demo.sh                 (TASKQ_BIN_DIR=DIR: use binaries built there)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { printf '==> %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

work=""
submit_pid=""
pids=()  # each started with setsid: its pid is also its process group id

stop_all() {
  trap - EXIT INT TERM
  local pid alive
  if [[ -n $submit_pid ]]; then  # the CLI pipeline, if still running
    kill -TERM -- "-$submit_pid" 2>/dev/null || true
  fi
  if [[ ${#pids[@]} -gt 0 ]]; then
    say "Stopping the workers and the master"
    # Newest first: workers drain, then the master shuts down.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
      kill -TERM -- "-${pids[i]}" 2>/dev/null || true
    done
    for _ in $(seq 100); do  # up to 10 s for a clean exit
      alive=0
      for pid in "${pids[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
      [[ $alive -eq 0 ]] && break
      sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
  fi
  [[ -n $work ]] && rm -rf -- "$work"
}
trap stop_all EXIT
trap 'echo; say "Interrupted"; exit 130' INT
trap 'exit 143' TERM

# Starts "$@" in its own session and process group, logging to $work/$name.log.
start() {
  local name=$1; shift
  setsid "$@" >"$work/$name.log" 2>&1 </dev/null &
  pids+=("$!")
}

cd "$root"
if [[ -n ${TASKQ_BIN_DIR:-} ]]; then
  bin=$TASKQ_BIN_DIR
  say "Using the binaries in $bin"
else
  say "Checking build dependencies"
  deploy/install-deps.sh
  say "Building taskq (release preset; the first build takes a few minutes)"
  cmake --preset release >/dev/null
  cmake --build --preset release --target taskq-master taskq-worker taskq >/dev/null
  bin="$root/build/release"
fi
for b in taskq-master taskq-worker taskq; do
  [[ -x $bin/$b ]] || die "$bin/$b is missing"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/taskq-demo.XXXXXX")
token="$work/token"

say "Starting the master on 127.0.0.1"
start master "$bin/taskq-master" --listen 127.0.0.1:0 --port-file "$work/port" \
  --token-file "$token" --data-dir "$work/data"
for _ in $(seq 300); do  # up to 30 s
  [[ -s $work/port ]] && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/master.log" >&2; die "the master did not start"; }
  sleep 0.1
done
[[ -s $work/port ]] || die "the master wrote no port file; see $work/master.log"
master=$(tr -d '[:space:]' <"$work/port")
say "Master listening on $master (token in $token, mode $(stat -c %a "$token"))"

for n in 1 2; do
  start "worker-$n" "$bin/taskq-worker" --master "$master" --token-file "$token" \
    --queue tasks --concurrency 2 --id "demo-worker-$n"
done
for n in 1 2; do
  for _ in $(seq 300); do
    grep -q 'connected to' "$work/worker-$n.log" 2>/dev/null && break
    kill -0 "${pids[n]}" 2>/dev/null || { cat "$work/worker-$n.log" >&2; die "worker $n exited"; }
    sleep 0.1
  done
  grep -q 'connected to' "$work/worker-$n.log" || die "worker $n did not connect"
done
say "Two workers connected"

say "Submitting 1..10 to the square handler; results as they arrive:"
# In the background and in its own process group, so that a signal to this
# script is handled at once (bash runs traps only between foreground
# commands) and stop_all can stop the whole pipeline.
# shellcheck disable=SC2016  # $1... expand in the inner shell
setsid bash -c 'set -o pipefail
  "$1" --master "$2" --token-file "$3" submit --queue tasks --handler square \
    --wait --wait-timeout 60 "${@:4}" | sed -u "s/^/    /"' \
  demo-submit "$bin/taskq" "$master" "$token" $(seq 1 10) &
submit_pid=$!
wait "$submit_pid" || die "taskq submit failed (exit $?)"
submit_pid=""
say "All ten results are in"
