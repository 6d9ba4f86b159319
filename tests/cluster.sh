#!/usr/bin/env bash
# Runs the multi-host cluster tests (ctest label `cluster`, tests/cluster/):
# taskq across hosts made of Linux network namespaces, with faults from
# nftables and a delay proxy for distance. Needs root (namespaces,
# nftables); installs what it needs (iproute2, nftables, util-linux's
# setpriv, openssl, openssh, etcd) and builds the preset first.
#
#   tests/cluster.sh [--preset release|asan|debug] [-- CTEST_ARGS...]
#                                            e.g.  tests/cluster.sh -- -R ClientCut
#
# Tests run 4 at a time: most of their time is spent waiting out network
# cuts, not on the CPU. Exits non-zero if anything fails.
set -euo pipefail

usage() { sed -n '2,12s/^# \{0,1\}//p' "$0"; }

preset=release
ctest_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --preset) [[ $# -ge 2 ]] || { usage >&2; exit 2; }; preset=$2; shift 2 ;;
    --preset=*) preset=${1#--preset=}; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; ctest_args=("$@"); break ;;
    *) echo "tests/cluster.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done

if [[ $(id -u) -ne 0 ]]; then
  echo "tests/cluster.sh: needs root (network namespaces, nftables); run it with sudo" >&2
  exit 1
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

deploy/install-deps.sh
missing=()
# openssh-server/-client: launcher_test runs its own sshd (on a machine with
# systemd, installing openssh-server also enables the system's sshd:
# `systemctl disable --now ssh` if you do not want it).
# etcd-server/-client: multi_master_test runs etcd on a host of its own.
for p in iproute2 nftables util-linux openssl openssh-server openssh-client etcd-server \
  etcd-client; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "==> Installing missing packages: ${missing[*]}" >&2
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

jobs=${TASKQ_JOBS:-$(nproc)}
echo "==> Configuring preset $preset"
cmake --preset "$preset"
echo "==> Building preset $preset ($jobs jobs)"
cmake --build --preset "$preset" -j "$jobs"

echo "==> Cluster tests, preset $preset"
ctest --preset "$preset" --output-on-failure -L cluster -j "${TASKQ_CLUSTER_TEST_JOBS:-4}" \
  "${ctest_args[@]}"
echo "==> Preset $preset: cluster tests passed"
