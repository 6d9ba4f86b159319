#!/usr/bin/env bash
# Starts (or stops) taskq workers on other hosts over ssh.
#
#   launch-workers.sh --master HOST:PORT --token-file PATH [options] HOST...
#   launch-workers.sh --stop [--remote-dir DIR] HOST...
#
# For each HOST ([user@]name): copies the token with scp into
# ~/<remote-dir>/token (directory 0700, file 0600), then starts --count
# workers there with nohup, each logging to ~/<remote-dir>/worker-N.log and
# recording its pid in ~/<remote-dir>/worker-N.pid. Workers already running
# under those pid files are left alone. --stop sends them SIGTERM (they
# finish their running tasks, then exit) and waits for them.
#
# Options:
#   --master HOST:PORT      the master workers connect to (required to start)
#   --token-file PATH       local token file, mode 0600 (required to start)
#   --count N               workers per host (default 1)
#   --queue Q               queue to serve; repeatable (default: tasks)
#   --concurrency N         tasks per worker at a time (default: its cores)
#   --tls                   connect with TLS (needed unless the master is
#                           reached over loopback or runs --insecure)
#   --tls-ca FILE           CA certificate, copied next to the token
#   --tls-server-name NAME  name to check in the master's certificate
#   --allow-exec 'NAME=PROGRAM ARG...'
#                           an exec command, passed to the worker (one
#                           value, quoted for the remote shell); repeatable
#   --allow-exec-args NAME  passed to the worker; repeatable
#   --worker-bin PATH       taskq-worker on the remote hosts (default:
#                           taskq-worker, found in the remote PATH)
#   --remote-dir DIR        directory relative to the remote home
#                           (default: .taskq)
#   --ssh-option OPT        extra ssh/scp -o option, e.g. ConnectTimeout=5;
#                           repeatable (BatchMode=yes is always set)
#   --stop                  stop the workers this script started
#   --dry-run               print the ssh/scp commands instead of running them
#
# The token never appears on a command line: scp copies the file.
set -euo pipefail

usage() { sed -n '2,37s/^# \{0,1\}//p' "$0"; }
die() { printf 'launch-workers: %s\n' "$*" >&2; exit 2; }
say() { printf '==> %s\n' "$*"; }

# Single-quotes a value for the remote POSIX shell.
sq() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

master="" token_file="" count=1 concurrency="" tls=0 tls_ca="" tls_server_name=""
worker_bin=taskq-worker remote_dir=.taskq stop=0 dry_run=0
queues=() allow_exec=() allow_exec_args=() ssh_opts=(-o BatchMode=yes) hosts=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --master|--token-file|--count|--queue|--concurrency|--tls-ca|--tls-server-name|\
    --allow-exec|--allow-exec-args|--worker-bin|--remote-dir|--ssh-option)
      [[ $# -ge 2 ]] || die "$1 needs a value" ;;
  esac
  case "$1" in
    --master) master=${2-}; shift 2 ;;
    --token-file) token_file=${2-}; shift 2 ;;
    --count) count=${2-}; shift 2 ;;
    --queue) queues+=("${2-}"); shift 2 ;;
    --concurrency) concurrency=${2-}; shift 2 ;;
    --tls) tls=1; shift ;;
    --tls-ca) tls_ca=${2-}; tls=1; shift 2 ;;
    --tls-server-name) tls_server_name=${2-}; shift 2 ;;
    --allow-exec) allow_exec+=("${2-}"); shift 2 ;;
    --allow-exec-args) allow_exec_args+=("${2-}"); shift 2 ;;
    --worker-bin) worker_bin=${2-}; shift 2 ;;
    --remote-dir) remote_dir=${2-}; shift 2 ;;
    --ssh-option) ssh_opts+=(-o "${2-}"); shift 2 ;;
    --stop) stop=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; hosts+=("$@"); break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) hosts+=("$1"); shift ;;
  esac
done

[[ ${#hosts[@]} -gt 0 ]] || die "no hosts given (see --help)"
for h in "${hosts[@]}"; do
  [[ $h =~ ^[A-Za-z0-9_][A-Za-z0-9_.@%:-]*$ ]] || die "bad host name: $h"
done
[[ $remote_dir =~ ^[A-Za-z0-9_.][A-Za-z0-9_./-]*$ && $remote_dir != *..* ]] \
  || die "--remote-dir must be a plain path relative to the remote home: $remote_dir"

if [[ $stop -eq 0 ]]; then
  [[ -n $master ]] || die "--master HOST:PORT is required"
  master_re='^[][A-Za-z0-9_.:-]+:[0-9]+$'
  [[ $master =~ $master_re ]] || die "--master must be HOST:PORT: $master"
  [[ -n $token_file ]] || die "--token-file is required"
  [[ -r $token_file ]] || die "cannot read token file $token_file"
  [[ $(stat -c %a "$token_file") =~ ^[4-7]00$ ]] \
    || die "token file $token_file is readable by others; run: chmod 600 $token_file"
  [[ $count =~ ^[1-9][0-9]*$ ]] || die "--count must be a positive number: $count"
  [[ -z $concurrency || $concurrency =~ ^[1-9][0-9]*$ ]] || die "bad --concurrency: $concurrency"
  [[ -z $tls_ca || -r $tls_ca ]] || die "cannot read --tls-ca file $tls_ca"
  [[ ${#queues[@]} -gt 0 ]] || queues=(tasks)
  for q in "${queues[@]}"; do
    [[ $q =~ ^[A-Za-z0-9_:-][A-Za-z0-9_.:-]*$ ]] || die "bad queue name: $q"
  done
fi

run() {
  if [[ $dry_run -eq 1 ]]; then
    printf '+'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}
# Runs a POSIX sh script (given on stdin) on a host, in its home directory.
remote() {
  local host=$1
  if [[ $dry_run -eq 1 ]]; then
    printf '+ ssh %s sh -s <<EOF\n%s\nEOF\n' "$host" "$(cat)"
  else
    ssh "${ssh_opts[@]}" "$host" 'cd && sh -s'
  fi
}

rdir=$(sq "$remote_dir")

stop_host() {
  local host=$1
  remote "$host" <<EOF
dir=$rdir
found=0
for pidf in "\$dir"/worker-*.pid; do
  [ -f "\$pidf" ] || continue
  pid=\$(cat "\$pidf")
  if kill -0 "\$pid" 2>/dev/null && grep -q taskq-worker "/proc/\$pid/cmdline" 2>/dev/null; then
    kill -TERM "\$pid" && found=\$((found + 1)) && echo "  $host: stopping worker pid \$pid"
  fi
  rm -f "\$pidf"
done
# Workers finish their running tasks first (--drain-timeout, 30 s default).
for _ in \$(seq 45); do
  pgrep -u "\$(id -u)" -f "taskq-worker.*--token-file \$dir/token" >/dev/null || break
  sleep 1
done
echo "  $host: \$found worker(s) stopped"
EOF
}

start_host() {
  local host=$1
  # 1. A private, empty token file for scp to fill (never world-readable).
  remote "$host" <<EOF
umask 077
mkdir -p $rdir && chmod 700 $rdir && : > $rdir/token.new && chmod 600 $rdir/token.new
EOF
  run scp -q "${ssh_opts[@]}" "$token_file" "$host:$remote_dir/token.new"
  if [[ -n $tls_ca ]]; then
    run scp -q "${ssh_opts[@]}" "$tls_ca" "$host:$remote_dir/ca.crt"
  fi

  # 2. Worker flags, each quoted for the remote shell.
  local flags
  flags="--master $(sq "$master") --token-file \"\$dir/token\""
  for q in "${queues[@]}"; do flags+=" --queue $(sq "$q")"; done
  [[ -n $concurrency ]] && flags+=" --concurrency $concurrency"
  [[ $tls -eq 1 ]] && flags+=" --tls"
  [[ -n $tls_ca ]] && flags+=" --tls-ca \"\$dir/ca.crt\""
  [[ -n $tls_server_name ]] && flags+=" --tls-server-name $(sq "$tls_server_name")"
  for p in "${allow_exec[@]}"; do flags+=" --allow-exec $(sq "$p")"; done
  for p in "${allow_exec_args[@]}"; do flags+=" --allow-exec-args $(sq "$p")"; done

  # 3. Install the token, start the workers that are not running yet.
  remote "$host" <<EOF
set -e
umask 077
dir=$rdir
chmod 600 "\$dir/token.new" && mv -f "\$dir/token.new" "\$dir/token"
i=1
while [ "\$i" -le $count ]; do
  pidf="\$dir/worker-\$i.pid"
  if [ -f "\$pidf" ] && kill -0 "\$(cat "\$pidf")" 2>/dev/null; then
    echo "  $host: worker \$i already running (pid \$(cat "\$pidf"))"
  else
    nohup $(sq "$worker_bin") $flags --id "\$(hostname)-\$i" \
      >"\$dir/worker-\$i.log" 2>&1 </dev/null &
    echo \$! >"\$pidf"
    echo "  $host: started worker \$i (pid \$!, log ~/\$dir/worker-\$i.log)"
  fi
  i=\$((i + 1))
done
EOF
}

failed=0
for host in "${hosts[@]}"; do
  if [[ $stop -eq 1 ]]; then
    say "Stopping workers on $host"
    stop_host "$host" || { echo "  $host: FAILED" >&2; failed=1; }
  else
    say "Starting $count worker(s) on $host"
    start_host "$host" || { echo "  $host: FAILED" >&2; failed=1; }
  fi
done
exit "$failed"
