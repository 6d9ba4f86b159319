#!/usr/bin/env bash
# The cluster scaling figure (docs/CLUSTER.md#scaling): the square workload
# over 12 queues, first with one master owning them all, then with three
# masters owning 4 each, every master under the same CPU quota (a cgroup:
# 25 % of a core by default) so that the master is the bottleneck, as on a
# small machine. Hosts are Linux network namespaces: an etcd host, the
# master hosts, 6 worker hosts and a client host, all removed at the end
# (on Ctrl-C too). Prints tasks/s of both phases side by side and the ratio.
#
# Needs root, etcd (Debian etcd-server, etcd-client), iproute2, nftables,
# util-linux (setpriv), openssl, and a cgroup cpu controller (v1 or v2).
# Builds nothing: it runs the binaries in $BUILD_DIR (default build/release).
#
# usage: bench/cluster_scaling.sh [FLAGS...]     (see --help)
#   bench/cluster_scaling.sh                              # the documented figure
#   bench/cluster_scaling.sh --tasks 60000 --master-cpu 0.1
#   bench/cluster_scaling.sh --standalone                 # one master, no etcd
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${BUILD_DIR:-$repo/build/release}
bin=$build_dir/bench/taskq-cluster-scaling

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,17s/^# \{0,1\}//p' "$0"
  [[ -x $bin ]] && "$bin" --help
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "cluster_scaling.sh: needs root (network namespaces, cgroups); run it with sudo" >&2
  exit 1
fi
for b in "$bin" "$build_dir/bench/taskq-cluster-square-bench" "$build_dir/taskq-master" \
  "$build_dir/taskq-worker"; do
  if [[ ! -x $b ]]; then
    echo "cluster_scaling.sh: $b not found. Build first:" >&2
    echo "  cmake --preset release && cmake --build --preset release" >&2
    exit 2
  fi
done
exec "$bin" "$@"
