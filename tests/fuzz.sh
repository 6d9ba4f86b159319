#!/usr/bin/env bash
# Runs the libFuzzer targets (tests/fuzz/*_fuzz.cc) from their seed corpora
# (tests/fuzz/corpus/<target>/) for a while each, two at a time, and fails
# if any of them finds a crash, a leak, a sanitizer report or a hang.
#
#   tests/fuzz.sh [--seconds N] [--no-build] [TARGET...]
#
# Builds the clang-tsa preset first (ASan+UBSan, coverage instrumentation)
# unless --no-build. New inputs go to a temporary directory, not into the
# repository; a crash's reproducer is kept in build/clang-tsa/fuzz-artifacts/
# and named in the output (rerun: build/clang-tsa/tests/fuzz/TARGET FILE).
set -euo pipefail

usage() { sed -n '2,12s/^# \{0,1\}//p' "$0"; }

seconds=60
build=1
targets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) [[ $# -ge 2 ]] || { usage >&2; exit 2; }; seconds=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "tests/fuzz.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
[[ $build -eq 1 ]] && tests/run.sh --preset clang-tsa --build-only
bin=build/clang-tsa/tests/fuzz
if [[ ${#targets[@]} -eq 0 ]]; then
  for src in tests/fuzz/*_fuzz.cc; do targets+=("$(basename "$src" .cc)"); done
fi
artifacts=build/clang-tsa/fuzz-artifacts
mkdir -p "$artifacts"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

run_one() {
  local t=$1
  mkdir -p "$work/$t"
  echo "==> fuzzing $t for ${seconds} s"
  # First directory: where new inputs go; the seeds are only read.
  if "$bin/$t" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=3072 -print_final_stats=1 \
       -artifact_prefix="$artifacts/$t-" "$work/$t" "tests/fuzz/corpus/$t" \
       >"$work/$t.log" 2>&1; then
    echo "==> $t: $(grep -E '^stat::number_of_executed_units' "$work/$t.log" | awk '{print $2}') runs, no findings"
  else
    echo "==> $t FAILED; its log:"
    tail -60 "$work/$t.log"
    return 1
  fi
}

failed=0
pids=()
for t in "${targets[@]}"; do
  run_one "$t" &
  pids+=($!)
  if [[ ${#pids[@]} -ge 2 ]]; then
    wait "${pids[0]}" || failed=1
    pids=("${pids[@]:1}")
  fi
done
for p in "${pids[@]}"; do wait "$p" || failed=1; done
if [[ $failed -ne 0 ]]; then
  echo "==> fuzzing found problems (reproducers in $artifacts)"
  exit 1
fi
echo "==> fuzzing: no findings"
