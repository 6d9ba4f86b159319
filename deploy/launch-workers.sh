#!/usr/bin/env bash
# Starts, lists or stops taskq workers on other hosts over ssh, and says
# plainly when a worker is not serving.
#
#   launch-workers.sh --join FILE [options] HOST...
#   launch-workers.sh --master HOST:PORT --token-file PATH [options] HOST...
#   launch-workers.sh --list [--join FILE | --master HOST:PORT --token-file PATH] HOST...
#   launch-workers.sh --stop HOST...
#
# Start, for each HOST ([user@]name, one after the other): checks over ssh
# that taskq-worker runs there, copies the join bundle with scp into
# ~/<remote-dir>/join (or the token into ~/<remote-dir>/token; directory
# 0700, file 0600), starts --count workers
# with nohup (log ~/<remote-dir>/worker-N.log, the previous one kept as
# worker-N.log.1 ... .K; pid in worker-N.pid), then waits until the master
# lists them: the workers count of each --queue, read with the taskq CLI on
# this host, must grow by the number started. A host fails when ssh cannot
# log in, the binary is missing or broken, a worker exits, or the master
# does not list the workers within --wait seconds (the workers started there
# are then stopped again). Exit 0 only when every host succeeded.
#
# Options:
#   --join FILE             a join bundle, mode 0600 (`taskq credential
#                           create NAME --role worker --queues ... --bundle
#                           FILE`): the master's addresses, its CA and the
#                           workers' credential, copied to each host; the
#                           workers start with --join. Replaces --master,
#                           --token-file and the TLS options (--master still
#                           overrides the bundle's addresses)
#   --check-join FILE       the bundle this host checks the master's counts
#                           with (default: --join; a worker credential may
#                           not list queues, so then only the workers' logs
#                           are checked: pass an admin or reader bundle)
#   --master HOST:PORT      the master workers connect to (required to
#                           start without --join)
#   --token-file PATH       local token file, mode 0600 (required to start
#                           without --join)
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
#   --worker-arg ARG        any other worker argument, e.g. --worker-arg
#                           --log-level=debug; repeatable
#   --worker-bin PATH       taskq-worker on the remote hosts (default:
#                           taskq-worker, found in the remote PATH)
#   --remote-dir DIR        directory relative to the remote home
#                           (default: .taskq)
#   --keep-logs K           old logs kept per worker (default 5)
#   --wait SECONDS          how long the master may take to list the new
#                           workers of a host (default 30; 0: do not check)
#   --check-master HOST:PORT  where this host reaches the master, if not
#                           at --master (the check uses the same token/TLS)
#   --taskq-bin PATH        the taskq CLI used for the check (default: taskq
#                           in PATH)
#   --accept-new-host-keys  trust the host key of a host ssh has never seen
#                           (StrictHostKeyChecking=accept-new; a changed
#                           key is still refused)
#   --ssh-config FILE       ssh/scp -F FILE
#   --ssh-option OPT        extra ssh/scp -o option, e.g. ConnectTimeout=5;
#                           repeatable (BatchMode=yes is always set)
#   --list                  show each host's workers: pid, running or not,
#                           connected or not (its log), and the master's
#                           counts when --join, or --master and --token-file, are given
#   --stop                  stop the workers this script started (SIGTERM:
#                           they finish their tasks first)
#   --stop-timeout SECONDS  how long --stop waits for them (default 45)
#   --dry-run               print the commands instead of running them, as
#                           a shell script (they can be pasted)
#
# Exit status: 0 every host fine, 1 some host failed, 2 bad usage or the
# master cannot be checked from here. The token (or bundle) never appears on a command
# line: scp copies the file.
set -euo pipefail

usage() { sed -n '2,/^set -euo/{/^#/!q;s/^# \{0,1\}//p}' "$0"; }
die() { printf 'launch-workers: %s\n' "$*" >&2; exit 2; }
# In --dry-run, progress lines are shell comments: the output is a script.
say() { printf '%s==> %s\n' "${comment-}" "$*"; }
note() { printf '%s  %s\n' "${comment-}" "$*"; }
# Single-quotes a value for a POSIX shell.
sq() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

join="" check_join="" master="" token_file="" count=1 concurrency="" tls=0 tls_ca="" tls_server_name=""
worker_bin=taskq-worker remote_dir=.taskq keep_logs=5 wait_s=30 check_master=""
taskq_bin=taskq accept_new=0 ssh_config="" mode=start stop_timeout=45 dry_run=0
queues=() allow_exec=() allow_exec_args=() worker_extra=() ssh_extra=() hosts=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --join|--check-join|--master|--token-file|--count|--queue|--concurrency|--tls-ca|--tls-server-name|\
    --allow-exec|--allow-exec-args|--worker-arg|--worker-bin|--remote-dir|--keep-logs|--wait|\
    --check-master|--taskq-bin|--ssh-config|--ssh-option|--stop-timeout)
      [[ $# -ge 2 ]] || die "$1 needs a value" ;;
  esac
  case "$1" in
    --join) join=$2; shift 2 ;;
    --check-join) check_join=$2; shift 2 ;;
    --master) master=$2; shift 2 ;;
    --token-file) token_file=$2; shift 2 ;;
    --count) count=$2; shift 2 ;;
    --queue) queues+=("$2"); shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --tls) tls=1; shift ;;
    --tls-ca) tls_ca=$2; tls=1; shift 2 ;;
    --tls-server-name) tls_server_name=$2; shift 2 ;;
    --allow-exec) allow_exec+=("$2"); shift 2 ;;
    --allow-exec-args) allow_exec_args+=("$2"); shift 2 ;;
    --worker-arg) worker_extra+=("$2"); shift 2 ;;
    --worker-bin) worker_bin=$2; shift 2 ;;
    --remote-dir) remote_dir=$2; shift 2 ;;
    --keep-logs) keep_logs=$2; shift 2 ;;
    --wait) wait_s=$2; shift 2 ;;
    --check-master) check_master=$2; shift 2 ;;
    --taskq-bin) taskq_bin=$2; shift 2 ;;
    --accept-new-host-keys) accept_new=1; shift ;;
    --ssh-config) ssh_config=$2; shift 2 ;;
    --ssh-option) ssh_extra+=(-o "$2"); shift 2 ;;
    --list) mode=list; shift ;;
    --stop) mode=stop; shift ;;
    --stop-timeout) stop_timeout=$2; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; hosts+=("$@"); break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) hosts+=("$1"); shift ;;
  esac
done

# ---------------------------------------------------------------- checks
[[ ${#hosts[@]} -gt 0 ]] || die "no hosts given (see --help)"
for h in "${hosts[@]}"; do
  [[ $h =~ ^[A-Za-z0-9_][A-Za-z0-9_.@%-]*$ ]] || die "bad host name: $h"
done
[[ $remote_dir =~ ^[A-Za-z0-9_.][A-Za-z0-9_./-]*$ && $remote_dir != *..* ]] \
  || die "--remote-dir must be a plain path relative to the remote home: $remote_dir"
[[ $stop_timeout =~ ^[0-9]+$ ]] || die "--stop-timeout must be a number of seconds: $stop_timeout"
[[ -z $ssh_config || -r $ssh_config ]] || die "cannot read --ssh-config file $ssh_config"
master_re='^[][A-Za-z0-9_.:-]+:[0-9]+$'
[[ -z $tls_server_name || $tls -eq 1 ]] || die "--tls-server-name needs --tls (or --tls-ca)"

# A bundle file: readable here and by no one else (it holds a secret).
check_bundle() {  # check_bundle FLAG FILE
  [[ -r $2 ]] || die "cannot read $1 file $2"
  [[ $(stat -L -c %a "$2") =~ ^[4-7]00$ ]] \
    || die "$1 file $2 is readable by others (it holds a secret); run: chmod 600 $2"
  grep -q '^master:' "$2" \
    || die "$1 $2 is not a join bundle (no master: line; make one with taskq credential create NAME --role worker --queues Q --bundle FILE)"
}
if [[ -n $join ]]; then
  [[ -z $token_file && $tls -eq 0 && -z $tls_server_name ]] \
    || die "--join holds the credential and the master's CA: leave out --token-file, --tls, --tls-ca and --tls-server-name"
  check_bundle --join "$join"
  [[ -z $check_join ]] || check_bundle --check-join "$check_join"
  [[ -z $master || $master =~ $master_re ]] || die "--master must be HOST:PORT: $master"
  [[ -z $check_master || $check_master =~ $master_re ]] \
    || die "--check-master must be HOST:PORT: $check_master"
  [[ -n $check_master ]] || check_master=$master
elif [[ -n $check_join ]]; then
  die "--check-join needs --join"
elif [[ $mode == start || -n $master ]]; then
  [[ -n $master ]] || die "--master HOST:PORT is required (or --join FILE)"
  [[ $master =~ $master_re ]] || die "--master must be HOST:PORT: $master"
  [[ -z $check_master || $check_master =~ $master_re ]] \
    || die "--check-master must be HOST:PORT: $check_master"
  [[ -n $check_master ]] || check_master=$master
  [[ -n $token_file ]] || die "--token-file is required (or --join FILE)"
  [[ -r $token_file ]] || die "cannot read token file $token_file"
  [[ $(stat -L -c %a "$token_file") =~ ^[4-7]00$ ]] \
    || die "token file $token_file is readable by others; run: chmod 600 $token_file"
  if [[ -n $tls_ca ]]; then
    [[ -r $tls_ca ]] || die "cannot read --tls-ca file $tls_ca"
    grep -q -- '-----BEGIN CERTIFICATE-----' "$tls_ca" \
      || die "--tls-ca $tls_ca is not a PEM certificate (expected a -----BEGIN CERTIFICATE----- block: the CA that signed the master's certificate)"
  fi
fi
if [[ $mode == start ]]; then
  [[ $count =~ ^[1-9][0-9]*$ && $count -le 1000 ]] || die "--count must be 1..1000: $count"
  [[ -z $concurrency || $concurrency =~ ^[1-9][0-9]*$ ]] || die "bad --concurrency: $concurrency"
  [[ $keep_logs =~ ^[0-9]+$ && $keep_logs -ge 1 && $keep_logs -le 100 ]] \
    || die "--keep-logs must be 1..100: $keep_logs"
  [[ $wait_s =~ ^[0-9]+$ ]] || die "--wait must be a number of seconds: $wait_s"
  [[ ${#queues[@]} -gt 0 ]] || queues=(tasks)
  for q in "${queues[@]}"; do
    [[ $q =~ ^[A-Za-z0-9_:-][A-Za-z0-9_.:-]*$ ]] || die "bad queue name: $q"
  done
  case ${master:-x}:${master%:*} in
    *:127.*|*:localhost|*:\[::1\])
      printf 'launch-workers: warning: --master %s is the loopback address: a worker on another host would look for the master on that host itself\n' "$master" >&2 ;;
  esac
fi

secret=token
[[ -z $join ]] || secret="join"
comment=""
[[ $dry_run -eq 0 ]] || comment="# "
tmp=$(mktemp -d "${TMPDIR:-/tmp}/launch-workers.XXXXXX")
# One ssh connection per host for the whole run (each new one costs a key
# exchange: ~0.35 s of CPU, more round trips over a WAN), closed at exit.
# A socket path must stay under 108 bytes: $TMPDIR if short, else /tmp.
share_base=${TMPDIR:-/tmp}
[[ ${#share_base} -le 50 ]] || share_base=/tmp
share_dir=$(mktemp -d "$share_base/tqlw.XXXXXX" 2>/dev/null) || share_dir=""

# ssh takes the first value given for an option: ours, then the user's
# --ssh-option values, then connection sharing (which those may turn off).
ssh_args=()
[[ -n $ssh_config ]] && ssh_args+=(-F "$ssh_config")
ssh_args+=(-o BatchMode=yes)
[[ $accept_new -eq 1 ]] && ssh_args+=(-o StrictHostKeyChecking=accept-new)
ssh_args+=("${ssh_extra[@]}")
[[ -z $share_dir ]] || ssh_args+=(-o ControlMaster=auto -o "ControlPath=$share_dir/%C" -o ControlPersist=60)

# Prints a command so that it can be pasted into bash.
print_cmd() {
  local a out=""
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then out+=" $a"; else out+=" $(sq "$a")"; fi
  done
  printf '%s' "${out# }"
}

contacted=()
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  local h
  if [[ -n $share_dir ]]; then
    for h in "${contacted[@]}"; do
      if [[ $dry_run -eq 1 ]]; then
        printf '%s\n' "$(print_cmd ssh "${ssh_args[@]}" -O exit "$h")"
      else
        ssh "${ssh_args[@]}" -O exit "$h" >/dev/null 2>&1 || true
      fi
    done
    [[ $dry_run -eq 0 ]] || printf '%s\n' "$(print_cmd rm -rf "$share_dir")"
    rm -rf "$share_dir"
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
if [[ $dry_run -eq 1 && -n $share_dir ]]; then
  printf '%s\n' "$(print_cmd mkdir -p -m 700 "$share_dir")"
fi
trap 'printf "\nlaunch-workers: interrupted; workers already started keep running (see --list, --stop)\n" >&2; exit 130' INT TERM

# ------------------------------------------------------------ running
contact() {
  local h
  for h in "${contacted[@]}"; do [[ $h != "$1" ]] || return 0; done
  contacted+=("$1")
}

# remote HOST SCRIPT: runs the POSIX sh SCRIPT on HOST in its home directory.
# Its stdout goes to $tmp/out, ssh's and the script's stderr to $tmp/err.
# Returns ssh's status (255: ssh itself failed).
remote() {
  local host=$1 script=$2
  contact "$host"
  if [[ $dry_run -eq 1 ]]; then
    printf '%s <<'"'"'TASKQ_EOF'"'"'\n%s\nTASKQ_EOF\n' \
      "$(print_cmd ssh "${ssh_args[@]}" "$host" 'cd && sh -s')" "$script"
    : >"$tmp/out"; : >"$tmp/err"
    return 0
  fi
  ssh "${ssh_args[@]}" "$host" 'cd && sh -s' <<<"$script" >"$tmp/out" 2>"$tmp/err"
}

copy() {  # copy HOST LOCAL REMOTE_PATH
  contact "$1"
  if [[ $dry_run -eq 1 ]]; then
    printf '%s\n' "$(print_cmd scp -q "${ssh_args[@]}" "$2" "$1:$3")"
    return 0
  fi
  scp -q "${ssh_args[@]}" "$2" "$1:$3" 2>"$tmp/err" >/dev/null
}

failures=()
fail() {  # fail HOST SHORT_REASON MESSAGE...
  local host=$1 short=$2; shift 2
  failures+=("$host ($short)")
  printf 'launch-workers: %s: FAILED: %s\n' "$host" "$1" >&2
  shift
  local line
  for line in "$@"; do printf '    %s\n' "$line" >&2; done
}

# Explains a failed ssh or scp (status $2, stderr in $tmp/err) on HOST $1.
ssh_failed() {
  local host=$1 rc=$2 said
  said=$(grep -v '^\*\*\*\|^@\|^$' "$tmp/err" | tail -n 3 | tr '\n' ' ')
  if grep -q 'REMOTE HOST IDENTIFICATION HAS CHANGED' "$tmp/err"; then
    fail "$host" "host key changed" \
      "$host's ssh host key has CHANGED since ssh recorded it: either the host was reinstalled or someone is in between." \
      "If you know the new key is right (compare its fingerprint, on $host: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub)," \
      "remove the old one with: ssh-keygen -R ${host#*@}   (--accept-new-host-keys does not replace a changed key)"
  elif grep -q 'Host key verification failed' "$tmp/err"; then
    fail "$host" "host key unknown" \
      "ssh does not know $host's host key (\"Host key verification failed.\"; it is not in known_hosts), so it cannot tell it talks to the right machine." \
      "Compare the key's fingerprint (on $host: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then either" \
      "accept it once by hand:  ssh ${host} true   (answer yes)" \
      "or run again with --accept-new-host-keys (ssh then records the key of a host it has never seen; a changed key is still refused)."
  elif grep -q 'Permission denied' "$tmp/err"; then
    fail "$host" "ssh login refused" \
      "ssh cannot log in to $host without a password (it runs with BatchMode=yes): $said" \
      "Install your key there (ssh-copy-id $host) or load it into ssh-agent, then check: ssh -o BatchMode=yes $host true"
  elif grep -qi 'Connection refused\|timed out\|No route to host\|Could not resolve\|Network is unreachable\|Connection closed\|Connection reset' "$tmp/err"; then
    fail "$host" "ssh unreachable" "cannot reach $host's ssh server: $said"
  else
    fail "$host" "ssh failed" "ssh to $host failed (status $rc): ${said:-no message}"
  fi
}

# ---------------------------------------------------- remote scripts
# Each is a prelude of variables (quoted with sq) + a literal POSIX sh body.
prelude() { printf 'dir=%s secret=%s\n' "$(sq "$remote_dir")" "$secret"; }

# is_ours PID ID: PID runs and is the worker whose --id is ID (not a pid reused).
remote_funcs=$(cat <<'EOF'
is_ours() {
  [ -n "$1" ] && [ -r "/proc/$1/cmdline" ] && tr '\0' '\n' <"/proc/$1/cmdline" | grep -qxF -- "$2"
}
# The --id worker $1 was started with (recorded: the hostname may change).
id_of() {
  cat "$dir/worker-$1.id" 2>/dev/null || echo "$(uname -n)-$1"
}
# The last line of a worker log that tells whether it is connected.
link_state() {
  grep -E 'connected to|cannot reach|disconnected from|refused the stream|refused this worker|certificate|handshake|Handshake' "$1" 2>/dev/null | tail -n 1
}
EOF
)

# Finds the binary, checks it runs as taskq-worker, prepares the directory.
preflight_body=$(cat <<'EOF'
echo "host $(uname -n)"
case $bin in
  */*) path=$bin ;;
  *) path=$(command -v "$bin" 2>/dev/null) || path= ;;
esac
if [ -z "$path" ]; then echo "bin_missing_path $PATH"; exit 0; fi
if [ ! -e "$path" ]; then echo "bin_missing $path"; exit 0; fi
if [ -d "$path" ] || [ ! -x "$path" ]; then echo "bin_not_exec $path"; exit 0; fi
help=$("$path" --help 2>&1 </dev/null) && rc=0 || rc=$?
case $rc:$help in
  0:*taskq-worker*) ;;
  *) echo "bin_broken $rc $path"; printf '%s\n' "$help" | grep -v '^[[:space:]]*$' | head -n 4 | sed 's/^/says /'; exit 0 ;;
esac
case $path in /*) ;; *) path=$(pwd)/$path ;; esac
umask 077
mkdir -p "$dir" && chmod 700 "$dir" && : >"$dir/$secret.new" && chmod 600 "$dir/$secret.new"
echo "bin_ok $path"
EOF
)

# Installs the token (or bundle) and starts the workers that are not running yet.
start_body=$(cat <<'EOF'
umask 077
case $bin in */*) ;; *) bin=$(command -v "$bin") ;; esac
adir=$(pwd)/$dir
chmod 600 "$dir/$secret.new" && mv -f "$dir/$secret.new" "$dir/$secret"
rotate() {
  [ -e "$1" ] || return 0
  n=$keep
  while [ "$n" -gt 1 ]; do
    p=$((n - 1))
    if [ -e "$1.$p" ]; then mv -f "$1.$p" "$1.$n"; fi
    n=$p
  done
  mv -f "$1" "$1.1"
}
host=$(uname -n)
i=1
while [ "$i" -le "$count" ]; do
  pidf="$dir/worker-$i.pid" log="$dir/worker-$i.log"
  id=$(id_of "$i")
  pid=$(cat "$pidf" 2>/dev/null) || pid=
  if is_ours "$pid" "$id"; then
    if [ "$(cat "$dir/worker-$i.settings" 2>/dev/null)" = "$settings" ]; then
      echo "running $i $pid $id"
    else
      echo "differs $i $pid $id"
    fi
  else
    if [ -n "$pid" ]; then
      echo "exited $i $pid"
      tail -n 3 "$log" 2>/dev/null | sed "s/^/said $i /"
    fi
    rotate "$log"
    id="$host-$i"
    start_worker "$id" "$log"
    pid=$!
    echo "$pid" >"$pidf"
    echo "$settings" >"$dir/worker-$i.settings"
    echo "$id" >"$dir/worker-$i.id"
    echo "started $i $pid $id"
  fi
  i=$((i + 1))
done
EOF
)

# For each "I:PID:ID" in $workers: alive or exited, and the end of its log.
check_body=$(cat <<'EOF'
for w in $workers; do
  i=${w%%:*} rest=${w#*:}; pid=${rest%%:*} id=${rest#*:}
  if is_ours "$pid" "$id"; then echo "alive $i"; else echo "exited $i"; fi
  echo "link $i $(link_state "$dir/worker-$i.log")"
  tail -n "$lines" "$dir/worker-$i.log" 2>/dev/null | sed "s/^/said $i /"
done
EOF
)

# SIGTERM to each worker of the pid files (only those numbered in $only,
# if set), then waits for them to exit.
stop_body=$(cat <<'EOF'
pending=
for pidf in "$dir"/worker-*.pid; do
  [ -f "$pidf" ] || continue
  i=${pidf##*/worker-}; i=${i%.pid}
  case " ${only:-$i} " in *" $i "*) ;; *) continue ;; esac
  pid=$(cat "$pidf" 2>/dev/null) || pid=
  if is_ours "$pid" "$(id_of "$i")"; then
    kill -TERM "$pid" && echo "stopping $i $pid" && pending="$pending $i:$pid"
  else
    echo "gone $i"; rm -f "$pidf"
  fi
done
end=$(( $(date +%s) + timeout ))
while [ -n "$pending" ]; do
  left=
  for w in $pending; do
    i=${w%%:*} pid=${w#*:}
    if is_ours "$pid" "$(id_of "$i")"; then left="$left $w"; else echo "stopped $i $pid"; rm -f "$dir/worker-$i.pid"; fi
  done
  pending=$left
  [ -n "$pending" ] || break
  if [ "$(date +%s)" -ge "$end" ]; then
    for w in $pending; do echo "still ${w%%:*} ${w#*:}"; done
    break
  fi
  sleep 0.2
done
EOF
)

# Every worker of the pid files: pid, running or not, connection per its log.
list_body=$(cat <<'EOF'
for pidf in "$dir"/worker-*.pid; do
  [ -f "$pidf" ] || continue
  i=${pidf##*/worker-}; i=${i%.pid}
  pid=$(cat "$pidf" 2>/dev/null) || pid=
  id=$(id_of "$i")
  if is_ours "$pid" "$id"; then state=running; else state=exited; fi
  echo "worker $i $pid $state $id $(link_state "$dir/worker-$i.log")"
  if [ "$state" = exited ]; then tail -n 1 "$dir/worker-$i.log" 2>/dev/null | sed "s/^/said $i /"; fi
done
EOF
)

# ------------------------------------------------------------ master
if [[ -n $join ]]; then
  cli_args=(--join "${check_join:-$join}")
  [[ -z $check_master ]] || cli_args+=(--master "$check_master")
  # What the messages call the master: the bundle's addresses unless overridden.
  [[ -n $master ]] || master="the bundle's master address"
  [[ -n $check_master ]] || check_master="the bundle's master address"
else
  cli_args=(--master "$check_master" --token-file "$token_file")
fi
[[ $tls -eq 1 ]] && cli_args+=(--tls)
[[ -n $tls_ca ]] && cli_args+=(--tls-ca "$tls_ca")
[[ -n $tls_server_name ]] && cli_args+=(--tls-server-name "$tls_server_name")

# The launcher retries by itself (its --wait loop): a CLI that can retry an
# unreachable master on its own is told not to, so that an error is seen
# at once.
cli_retry=() cli_retry_known=0

# Reads the master's WORKERS count per queue into workers_on[QUEUE]; its
# error into $tmp/cli_err. At most 30 s per call.
declare -A workers_on=()
probe_cli() {
  [[ $cli_retry_known -eq 0 ]] || return 0
  cli_retry_known=1
  # (Not `| grep -q`: under pipefail its early exit fails the pipeline.)
  local help
  help=$("$taskq_bin" --help 2>/dev/null) || true
  [[ $help != *--retry-for* ]] || cli_retry=(--retry-for 0)
}
# counts_skipped=1: the --join bundle's credential may not list queues (a
# worker's) and no --check-join was given: only the workers' logs count.
counts_skipped=0
read_counts() {
  workers_on=()
  [[ $counts_skipped -eq 0 ]] || return 0
  probe_cli
  local rc=0
  timeout -k 2 30 "$taskq_bin" "${cli_args[@]}" "${cli_retry[@]}" queue list \
      >"$tmp/cli_out" 2>"$tmp/cli_err" || rc=$?
  if [[ $rc -eq 5 && -n $join && -z $check_join ]] && grep -q 'may not' "$tmp/cli_err"; then
    counts_skipped=1
    printf "launch-workers: note: the bundle's credential may not list queues (%s), so the master's worker counts are not checked, only the workers' logs; pass --check-join with an admin or reader bundle to check them\n" \
      "$(tr '\n' ' ' <"$tmp/cli_err" | sed 's/^taskq: //; s/ *$//')" >&2
    return 0
  fi
  if [[ $rc -ne 0 ]]; then
    [[ -s $tmp/cli_err ]] || echo "taskq queue list failed or took over 30 s" >"$tmp/cli_err"
    return 1
  fi
  local name rest n
  # Columns: NAME KIND READY LEASED UNFINISHED WORKERS ...
  while read -r name _ _ _ _ n rest; do
    [[ $name == NAME ]] && continue
    workers_on[$name]=$n
  done <"$tmp/cli_out"
}
count_of() { printf '%s' "${workers_on[$1]:-0}"; }

# Why a worker did not connect, from its log ($1: file of its log lines).
# Prints hint lines; returns 0 when the cause cannot go away by waiting.
explain_log() {
  local f=$1
  if grep -qi 'certificate verify failed\|CERTIFICATE_VERIFY_FAILED\|self.signed\|unable to get local issuer' "$f"; then
    if [[ -z $tls_ca ]]; then
      echo "It does not trust the master's TLS certificate, and no --tls-ca was given: pass --tls-ca FILE, the CA certificate that signed the master's (it is copied to each host), or install that CA in the host's system trust store."
    else
      echo "It does not trust the master's TLS certificate: it is not signed by --tls-ca $tls_ca. Pass the CA that signed the master's certificate."
    fi
    return 0
  fi
  if grep -qi 'peer name\|not in peer certificate\|hostname mismatch\|subject alternative' "$f"; then
    echo "The master's certificate does not name the host in --master: pass --tls-server-name NAME, a name the certificate has."
    return 0
  fi
  if grep -q "refused this worker's token" "$f"; then
    echo "The master refused the token: --token-file must be a copy of the master's token file."
    return 0
  fi
  if grep -q "refused this worker's credential" "$f"; then
    echo "The master refused the bundle's credential: is it revoked or expired, or not a worker credential for these queues? Check with taskq credential list --all, and make a new bundle if needed."
    return 0
  fi
  if grep -qi 'wrong version number\|ssl3_get_record\|packet length too long' "$f" && [[ $tls -eq 1 ]]; then
    echo "The TLS handshake failed: the master at $master may not serve TLS (started with --insecure?); drop --tls, or check the port."
    return 0
  fi
  if grep -q 'refused the stream' "$f"; then
    echo "The master refused the worker's stream (see its reason above)."
    return 0
  fi
  if [[ $tls -eq 0 ]] && grep -qi 'cannot reach\|Socket closed\|Connection reset\|handshake' "$f"; then
    echo "It cannot reach the master at $master. If the master serves TLS (it must off loopback, unless started with --insecure), add --tls and --tls-ca FILE; otherwise check that --master is an address this host can reach (routes, firewall)."
    return 1
  fi
  if grep -q 'cannot reach\|disconnected from' "$f"; then
    echo "It cannot reach the master at $master: check that --master is an address this host can reach (routes, firewall) and that the master runs."
    return 1
  fi
  return 1
}

# ------------------------------------------------------------ start
settings_of() {  # what decides whether a running worker can be kept
  printf '%s\n' "$worker_bin" "$@" | sha256sum | cut -c1-16
}

start_host() {
  local host=$1 rc=0 line kind rest path=""
  # 1. Log in, find and try the binary, prepare the directory.
  remote "$host" "$(prelude; printf 'bin=%s\n' "$(sq "$worker_bin")"; printf '%s\n' "$preflight_body")" || rc=$?
  if [[ $rc -ne 0 ]]; then ssh_failed "$host" "$rc"; return; fi
  if [[ $dry_run -eq 1 ]]; then
    path=$worker_bin
  else
    local says=()
    while read -r kind rest; do
      case $kind in
        bin_ok) path=$rest ;;
        bin_missing_path)
          fail "$host" "taskq-worker missing" \
            "$worker_bin is not in $host's PATH ($rest) for a non-interactive ssh login." \
            "Install taskq-worker there (deploy/README.md, \"Build and install\") or pass --worker-bin /full/path/to/taskq-worker."
          return ;;
        bin_missing)
          fail "$host" "taskq-worker missing" \
            "$rest does not exist on $host." \
            "Install taskq-worker there or pass the right --worker-bin PATH."
          return ;;
        bin_not_exec)
          fail "$host" "not executable" \
            "$rest on $host is not an executable file." \
            "Run on $host: chmod 755 $rest   (or pass the right --worker-bin PATH)."
          return ;;
        bin_broken) path=${rest#* }; rc=${rest%% *} ;;
        says) says+=("$rest") ;;
      esac
    done <"$tmp/out"
    if [[ $rc -ne 0 || ${#says[@]} -gt 0 ]]; then
      local hint="It must be taskq-worker (the same build as the master), runnable on $host."
      [[ ${says[*]} != *"shared librar"* ]] \
        || hint="Its libraries are missing on $host: install the runtime packages (deploy/install-deps.sh) or build taskq there."
      fail "$host" "taskq-worker broken" \
        "$path on $host does not run as taskq-worker (\`$path --help\` exited $rc):" "${says[@]}" "$hint"
      return
    fi
    [[ -n $path ]] || { fail "$host" "ssh failed" "no answer from $host's shell: $(tr '\n' ' ' <"$tmp/err")"; return; }
  fi

  # 2. The token (and CA) or the bundle by scp: never on a command line.
  copy "$host" "${join:-$token_file}" "$remote_dir/$secret.new" || { rc=$?; ssh_failed "$host" "$rc"; return; }
  if [[ -n $tls_ca ]]; then
    copy "$host" "$tls_ca" "$remote_dir/ca.crt" || { rc=$?; ssh_failed "$host" "$rc"; return; }
  fi

  # 3. The workers' command line, each word quoted for the remote shell.
  local flags words
  if [[ -n $join ]]; then
    # The bundle's hash: a new bundle means new settings.
    words=(--join "$(sha256sum <"$join")")
    flags="--join \"\$adir/join\""
    if [[ $master != "the bundle's master address" ]]; then
      flags+=" --master $(sq "$master")"; words+=(--master "$master")
    fi
  else
    words=(--master "$master" --token-file "\$dir/token")
    flags="--master $(sq "$master") --token-file \"\$adir/token\""
  fi
  for q in "${queues[@]}"; do flags+=" --queue $(sq "$q")"; words+=(--queue "$q"); done
  [[ -n $concurrency ]] && { flags+=" --concurrency $concurrency"; words+=(--concurrency "$concurrency"); }
  [[ $tls -eq 1 ]] && { flags+=" --tls"; words+=(--tls); }
  [[ -n $tls_ca ]] && { flags+=" --tls-ca \"\$adir/ca.crt\""; words+=(--tls-ca "$(sha256sum <"$tls_ca")"); }
  [[ -n $tls_server_name ]] && { flags+=" --tls-server-name $(sq "$tls_server_name")"; words+=(--tls-server-name "$tls_server_name"); }
  for p in "${allow_exec[@]}"; do flags+=" --allow-exec $(sq "$p")"; words+=(--allow-exec "$p"); done
  for p in "${allow_exec_args[@]}"; do flags+=" --allow-exec-args $(sq "$p")"; words+=(--allow-exec-args "$p"); done
  for p in "${worker_extra[@]}"; do flags+=" $(sq "$p")"; words+=("$p"); done

  # 4. Before starting: how many workers the master lists now.
  local -A before=()
  if [[ $wait_s -gt 0 && $dry_run -eq 0 ]]; then
    if ! read_counts; then
      fail "$host" "master not checkable" "cannot read the master's worker counts from here: $(tr '\n' ' ' <"$tmp/cli_err")"
      return
    fi
    for q in "${queues[@]}"; do before[$q]=$(count_of "$q"); done
  fi

  rc=0
  remote "$host" "$(prelude
    printf 'bin=%s count=%s keep=%s settings=%s\n' \
      "$(sq "$worker_bin")" "$count" "$keep_logs" "$(settings_of "${words[@]}")"
    # shellcheck disable=SC2016  # $bin, $1 and $2 are the remote shell's
    printf 'start_worker() {\n  nohup "$bin" %s --id "$1" >"$2" 2>&1 </dev/null &\n}\n' "$flags"
    printf '%s\n%s\n' "$remote_funcs" "$start_body")" || rc=$?
  if [[ $rc -ne 0 ]]; then ssh_failed "$host" "$rc"; return; fi

  local started=() restarted=0 differs=0 i pid id
  while read -r kind rest; do
    case $kind in
      started) read -r i pid id <<<"$rest"; started+=("$i:$pid:$id")
               note "$host: started worker $i (id $id, pid $pid, log ~/$remote_dir/worker-$i.log)" ;;
      running) read -r i pid id <<<"$rest"; note "$host: worker $i already running (id $id, pid $pid), left alone" ;;
      differs) read -r i pid id <<<"$rest"; differs=1
               note "$host: worker $i (id $id, pid $pid) runs with other settings than these" ;;
      exited) read -r i pid <<<"$rest"; restarted=$((restarted + 1))
              note "$host: worker $i (pid $pid) had exited; its log is kept as ~/$remote_dir/worker-$i.log.1, which ended:" ;;
      said) note "    ${rest#* }" ;;
    esac
  done <"$tmp/out"
  if [[ $differs -eq 1 ]]; then
    fail "$host" "old settings" \
      "workers run there with other settings (master, queues, TLS, binary...) than this command's; they were left running." \
      "To apply these settings: $0 --stop $host, then run this command again."
  fi
  if [[ $dry_run -eq 1 ]]; then
    [[ $wait_s -gt 0 ]] || return 0
    printf '# then, every 0.5 s for up to %s s, until the master lists the new worker(s) on %s:\n' \
      "$wait_s" "${queues[*]}"
    probe_cli
    printf '%s\n' "$(print_cmd "$taskq_bin" "${cli_args[@]}" "${cli_retry[@]}" queue list)"
    return 0
  fi
  [[ ${#started[@]} -gt 0 ]] || return 0
  [[ $wait_s -gt 0 ]] || { note "$host: not checked that the master lists them (--wait 0)"; return 0; }

  # 5. Wait until the master lists them and each says it is connected; fail
  # at once if one exits or logs an error that waiting cannot fix. A worker
  # restarted after a crash may still be counted by the master until it
  # notices the old stream is gone, so those are not required to add to
  # the count (their own log must still say they are connected).
  local deadline=$((SECONDS + wait_s)) counted count_err linked q check_script lines=12
  local -A need=()
  for q in "${queues[@]}"; do need[$q]=$(( ${before[$q]} + ${#started[@]} - restarted )); done
  check_script=$(prelude; printf 'workers=%s lines=%s\n%s\n%s\n' \
    "$(sq "${started[*]}")" "$lines" "$remote_funcs" "$check_body")
  for (( ; ; )); do
    counted=0 count_err=""
    if ! read_counts; then
      count_err=$(tr '\n' ' ' <"$tmp/cli_err")
    else
      counted=1
      if [[ $counts_skipped -eq 0 ]]; then
        for q in "${queues[@]}"; do [[ $(count_of "$q") -ge ${need[$q]} ]] || counted=0; done
      fi
    fi
    rc=0
    remote "$host" "$check_script" || rc=$?
    if [[ $rc -ne 0 ]]; then ssh_failed "$host" "$rc"; stop_started "$host" "${started[@]}"; return; fi
    local dead=() fatal=() unlinked=()
    linked=0
    for w in "${started[@]}"; do
      i=${w%%:*}
      grep "^said $i " "$tmp/out" | cut -d' ' -f3- >"$tmp/log-$i" || true
      if grep -qx "exited $i" "$tmp/out"; then dead+=("$i")
      elif grep -q "^link $i .*connected to" "$tmp/out"; then linked=$((linked + 1))
      else
        unlinked+=("$i")
        if explain_log "$tmp/log-$i" >/dev/null; then fatal+=("$i"); fi
      fi
    done
    if [[ ${#dead[@]} -eq 0 && ${#fatal[@]} -eq 0 && $counted -eq 1 && $linked -eq ${#started[@]} ]]; then
      if [[ $counts_skipped -eq 1 ]]; then
        note "$host: the new worker(s) say they are connected (the master's counts not checked)"
      else
        note "$host: the master lists the new worker(s) (queue ${queues[0]}: $(count_of "${queues[0]}") in all)"
      fi
      return 0
    fi
    if [[ ${#dead[@]} -gt 0 || ${#fatal[@]} -gt 0 || $SECONDS -ge $deadline ]]; then
      report_not_serving "$host"
      stop_started "$host" "${started[@]}"
      return
    fi
    sleep 0.5
  done
}

# report_not_serving HOST: the failure message, with the log of the first
# worker that exited, else of the first that logged an error waiting
# cannot fix, else of the first not connected. Reads start_host's locals
# (dead, fatal, unlinked, started, need; bash scopes them dynamically).
report_not_serving() {
  local host=$1 i short="worker not connected" msg=() hint line q
  if [[ ${#dead[@]} -gt 0 ]]; then
    i=${dead[0]} short="worker exited"
    msg+=("worker $i on $host exited right after start. The end of its log (~/$remote_dir/worker-$i.log):")
  elif [[ ${#fatal[@]} -gt 0 ]]; then
    i=${fatal[0]}
    msg+=("worker $i on $host cannot connect to the master at $master. The end of its log (~/$remote_dir/worker-$i.log):")
  elif [[ ${#unlinked[@]} -gt 0 ]]; then
    i=${unlinked[0]}
    msg+=("worker $i on $host did not connect to the master at $master within $wait_s s (--wait). The end of its log (~/$remote_dir/worker-$i.log):")
  elif [[ -n $count_err ]]; then
    i=${started[0]%%:*}
    msg+=("the worker(s) say they are connected, but the master's counts cannot be read from here: $count_err")
    msg+=("The end of worker $i's log (~/$remote_dir/worker-$i.log):")
  else
    i=${started[0]%%:*} short="not listed by the master"
    q=${queues[0]}
    msg+=("the master at $check_master does not list the new worker(s) of $host after $wait_s s (--wait): it lists $(count_of "$q") on queue $q, expected at least ${need[$q]}.")
    msg+=("Yet they say they are connected to $master: is that the master this host checks (--check-master $check_master)? The end of worker $i's log (~/$remote_dir/worker-$i.log):")
  fi
  while IFS= read -r line; do msg+=("  | $line"); done < <(tail -n 8 "$tmp/log-$i")
  hint=$(explain_log "$tmp/log-$i") || true
  [[ -z $hint ]] || msg+=("$hint")
  msg+=("The workers this run started on $host (those still running) were stopped again, so that a corrected run starts them afresh.")
  fail "$host" "$short" "${msg[@]}"
}

# stop_started HOST I:PID:ID...: SIGTERM to the workers this run started there.
stop_started() {
  local host=$1 only=""
  shift
  for w in "$@"; do only+=" ${w%%:*}"; done
  remote "$host" "$(prelude; printf 'timeout=10 only=%s\n%s\n%s\n' "$(sq "$only")" "$remote_funcs" "$stop_body")" \
    >/dev/null 2>&1 || true
}

# ------------------------------------------------------------ list, stop
list_host() {
  local host=$1 rc=0 kind i pid state id link
  say "Workers on $host"
  remote "$host" "$(prelude; printf '%s\n%s\n' "$remote_funcs" "$list_body")" || rc=$?
  if [[ $rc -ne 0 ]]; then ssh_failed "$host" "$rc"; return; fi
  [[ $dry_run -eq 0 ]] || return 0
  local any=0
  while read -r kind i pid state id link; do
    case $kind in
      worker)
        any=1
        local conn="not connected"
        case $link in *"connected to"*) conn="connected" ;; "") conn="no connection logged" ;; esac
        [[ $state == running ]] || conn="-"
        printf '  worker %-3s pid %-8s %-8s id %-20s %s\n' "$i" "$pid" "$state" "$id" "$conn"
        ;;
      said) printf '      its log ended: %s\n' "$pid $state $id $link" ;;
    esac
  done <"$tmp/out"
  [[ $any -eq 1 ]] || note "no workers started by this script"
}

stop_host() {
  local host=$1 rc=0 kind i pid n=0 still=()
  say "Stopping workers on $host"
  remote "$host" "$(prelude; printf 'timeout=%s\n%s\n%s\n' "$stop_timeout" "$remote_funcs" "$stop_body")" || rc=$?
  if [[ $rc -ne 0 ]]; then ssh_failed "$host" "$rc"; return; fi
  while read -r kind i pid; do
    case $kind in
      stopping) note "$host: stopping worker $i (pid $pid); it finishes its running tasks first" ;;
      stopped) note "$host: worker $i (pid $pid) stopped"; n=$((n + 1)) ;;
      gone) note "$host: worker $i was not running" ;;
      still) still+=("worker $i (pid $pid)") ;;
    esac
  done <"$tmp/out"
  if [[ ${#still[@]} -gt 0 ]]; then
    fail "$host" "still running" \
      "${still[*]} still running after $stop_timeout s (--stop-timeout): it is finishing its tasks (--drain-timeout, 30 s by default)." \
      "Run --stop again to wait longer; a second SIGTERM stops it at once (its tasks go back to the queue): ssh $host kill -TERM PID"
  else
    note "$host: $n worker(s) stopped"
  fi
}

# ------------------------------------------------------------ main
if [[ $mode == start && $wait_s -gt 0 && $dry_run -eq 0 ]]; then
  command -v "$taskq_bin" >/dev/null || die "the taskq CLI ($taskq_bin) is not on this host: it is needed to check through the master that the workers connect. Put it in PATH, pass --taskq-bin PATH, or --wait 0 to skip the check."
  if ! read_counts; then
    cli_msg=$(tr '\n' ' ' <"$tmp/cli_err")
    hint=""
    # A plaintext client first: the CLI's message for it mentions client
    # certificates too.
    case $cli_msg in
      *"Socket closed"*|*"Connection reset"*|*"serves TLS"*)
        if [[ $tls -eq 0 && -z $join ]]; then
          hint=" If the master serves TLS (it must off loopback, unless started with --insecure), add --tls and --tls-ca FILE, or use --join FILE."
        fi ;;
      *certificate*|*CERTIFICATE*|*[Hh]andshake*)
        hint=" Check the TLS settings: --tls-ca FILE (the CA that signed the master's certificate), --tls-server-name NAME." ;;
    esac
    die "cannot reach the master at $check_master from here to check the workers: $cli_msg${hint} (--check-master ADDR if this host reaches it at another address; --wait 0 to skip the check.)"
  fi
fi
for host in "${hosts[@]}"; do
  case $mode in
    start) say "Starting $count worker(s) on $host"; start_host "$host" ;;
    stop) stop_host "$host" ;;
    list) list_host "$host" ;;
  esac
done

if [[ $mode == list && ( -n $master || -n $join ) && $dry_run -eq 0 ]]; then
  if read_counts && [[ $counts_skipped -eq 0 ]]; then
    for q in $(printf '%s\n' "${!workers_on[@]}" | sort); do
      note "master $check_master: queue $q has $(count_of "$q") worker(s) connected"
    done
  else
    failures+=("master ($(tr '\n' ' ' <"$tmp/cli_err"))")
    printf 'launch-workers: cannot read the master'"'"'s counts: %s\n' "$(cat "$tmp/cli_err")" >&2
  fi
fi

if [[ ${#failures[@]} -gt 0 ]]; then
  printf 'launch-workers: FAILED on %d of %d host(s): %s\n' \
    "${#failures[@]}" "${#hosts[@]}" "$(printf '%s\n' "${failures[@]}" | paste -sd';' - | sed 's/;/; /g')" >&2
  exit 1
fi
[[ $mode != start || $dry_run -eq 1 ]] || say "Done: every host's workers are running and listed by the master"
exit 0
