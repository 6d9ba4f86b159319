#!/usr/bin/env bash
# The storage spike: builds taskq-store-spike in $BUILD_DIR (default
# build-spike, configured as a Release build if it does not exist) and runs
# it with the given flags, after a line saying when, on which commit and how
# busy the machine was. See bench/README.md, "store spike".
#
# usage: bench/store_spike.sh [--no-build] [TASKQ_STORE_SPIKE_FLAGS...]
#   e.g. bench/store_spike.sh --tasks 200000
#        BUILD_DIR=build-mine bench/store_spike.sh --only sqlite,log
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${BUILD_DIR:-$repo/build-spike}
[[ $build_dir = /* ]] || build_dir=$repo/$build_dir

build=1
if [[ ${1:-} == --no-build ]]; then
  build=0
  shift
fi

if [[ $build == 1 ]]; then
  if [[ ! -f $build_dir/build.ninja ]]; then
    cmake -S "$repo" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTASKQ_WERROR=ON >/dev/null
  fi
  ninja -C "$build_dir" -j2 taskq-store-spike >/dev/null
fi

commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$repo" status --porcelain -- bench/store_spike.cc 2>/dev/null | head -1)
echo "date $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $commit${dirty:+ (+ uncommitted bench/store_spike.cc)}, load $(cut -d' ' -f1-3 /proc/loadavg)"
exec "$build_dir/bench/taskq-store-spike" "$@"
