#!/usr/bin/env bash
# The coroutine runtime's micro-benchmarks side by side, from one run:
# taskq::rt and the same workloads hand-rolled with std::thread / std::mutex /
# std::condition_variable (taskq-runtime-bench, Google Benchmark), and Python
# asyncio and gevent (bench/python/runtime_micro.py). Prints one markdown
# table of ns/op and ratios (bench/README.md explains the workloads).
#
# Builds only the taskq-runtime-bench target in $BUILD_DIR (default
# build/release; configured as a Release build if it does not exist yet; an
# existing directory must be a Release build). Installs python3-gevent with
# apt-get if Debian's /usr/bin/python3 lacks it. The benchmarks take about a
# minute on a quiet 2-core machine; each step is killed after a time limit
# (C++ 60 s, Python 100 s) and the table shows what finished.
#
# usage: bench/runtime.sh [--no-build] [--repetitions N] [--json-dir DIR]
#                         [-- BENCH_FLAGS...]
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${BUILD_DIR:-$repo/build/release}
python=/usr/bin/python3  # Debian's: python3-gevent is installed for it
build=1
repetitions=3
json_dir=
bench_extra=()

usage() {
  cat >&2 <<'EOF2'
usage: bench/runtime.sh [--no-build] [--repetitions N] [--json-dir DIR] [-- BENCH_FLAGS...]
  --no-build        use $BUILD_DIR/bench/taskq-runtime-bench as it is
  --repetitions N   runs of each benchmark; the table shows the median (default 3)
  --json-dir DIR    keep the raw results there (runtime_bench.json, runtime_micro.jsonl)
  BENCH_FLAGS       passed to taskq-runtime-bench (e.g. --benchmark_filter=pingpong)
  env BUILD_DIR     build directory (default build/release)
EOF2
  exit 2
}

while [[ $# -gt 0 ]]; do
  case $1 in
    --no-build) build=0; shift ;;
    --repetitions) repetitions=${2:?}; shift 2 ;;
    --json-dir) json_dir=${2:?}; shift 2 ;;
    --) shift; bench_extra=("$@"); break ;;
    -h|--help) usage ;;
    *) echo "runtime.sh: unknown argument $1" >&2; usage ;;
  esac
done
if ! [[ $repetitions =~ ^[1-9][0-9]*$ ]]; then
  echo "runtime.sh: --repetitions takes a positive integer, not '$repetitions'" >&2
  exit 2
fi
if [[ ! -x $python ]]; then
  echo "runtime.sh: $python not found (Debian's python3 package)" >&2
  exit 2
fi

bench_bin=$build_dir/bench/taskq-runtime-bench
if ((build)); then
  if [[ ! -f $build_dir/CMakeCache.txt ]]; then
    echo "runtime.sh: configuring $build_dir (Release)" >&2
    cmake -S "$repo" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DTASKQ_WERROR=ON >/dev/null
  fi
  build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$build_dir/CMakeCache.txt")
  if [[ $build_type != Release ]]; then
    echo "runtime.sh: $build_dir is a '$build_type' build; benchmark a Release one" >&2
    echo "  (BUILD_DIR=build/release, or cmake --preset release)" >&2
    exit 2
  fi
  echo "runtime.sh: building taskq-runtime-bench in $build_dir" >&2
  cmake --build "$build_dir" --target taskq-runtime-bench -j2 >&2
fi
if [[ ! -x $bench_bin ]]; then
  echo "runtime.sh: $bench_bin not found (is libbenchmark-dev installed?)" >&2
  exit 2
fi

if ! "$python" -c 'import gevent' 2>/dev/null; then
  echo "runtime.sh: installing python3-gevent for $python" >&2
  apt=(apt-get)
  if ((EUID != 0)); then apt=(sudo -n apt-get); fi
  export DEBIAN_FRONTEND=noninteractive
  if ! "${apt[@]}" install -y --no-install-recommends python3-gevent >&2; then
    "${apt[@]}" update >&2 && "${apt[@]}" install -y --no-install-recommends python3-gevent >&2 ||
      echo "runtime.sh: could not install python3-gevent; the gevent column stays empty" >&2
  fi
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/taskq-runtime-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
cores=$(nproc)
started=$SECONDS

echo "runtime.sh: C++ benchmarks ($repetitions repetitions)..." >&2
cpp_status=0
timeout 60 "$bench_bin" --benchmark_format=json \
  --benchmark_repetitions="$repetitions" --benchmark_report_aggregates_only=true \
  "${bench_extra[@]}" >"$tmp/runtime_bench.json" 2>"$tmp/runtime_bench.err" || cpp_status=$?
if ((cpp_status != 0)); then
  echo "runtime.sh: taskq-runtime-bench failed (exit $cpp_status; 124 = timed out):" >&2
  tail -n 20 "$tmp/runtime_bench.err" >&2
fi

echo "runtime.sh: Python asyncio and gevent ($repetitions runs each)..." >&2
py_status=0
timeout 100 "$python" "$repo/bench/python/runtime_micro.py" --repeat "$repetitions" \
  >"$tmp/runtime_micro.jsonl" || py_status=$?
if ((py_status != 0)); then
  echo "runtime.sh: runtime_micro.py failed (exit $py_status; 124 = timed out)" >&2
fi

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
if [[ -n $json_dir ]]; then
  mkdir -p "$json_dir"
  cp "$tmp/runtime_bench.json" "$tmp/runtime_micro.jsonl" "$json_dir/"
fi

commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$repo" status --porcelain 2>/dev/null) ]]; then commit+=+dirty; fi

"$python" - "$tmp/runtime_bench.json" "$tmp/runtime_micro.jsonl" "$repetitions" "$commit" \
  "$cores" "$load_before" "$load_after" "$((SECONDS - started))" <<'EOF_PY'
import json, re, sys

cpp_file, py_file, repetitions, commit, cores, load_before, load_after, seconds = sys.argv[1:]

# (workload, rt benchmark, std benchmark, Python workload); None: no such column.
ROWS = [
    ("spawn_resume, 1 thread (std: 1-thread pool)",
     "spawn_resume/rt/threads:1", "spawn_resume/std_pool/threads:1", "spawn_resume"),
    ("spawn_resume, 2 threads (std: 2-thread pool)",
     "spawn_resume/rt/threads:2", "spawn_resume/std_pool/threads:2", "spawn_resume"),
    ("spawn_resume via WhenAll, 1 thread",
     "spawn_resume/rt_whenall/threads:1", "spawn_resume/std_pool/threads:1", "spawn_resume"),
    ("spawn_resume via WhenAll, 2 threads",
     "spawn_resume/rt_whenall/threads:2", "spawn_resume/std_pool/threads:2", "spawn_resume"),
    ("spawn_resume, 2 threads (std: std::thread create+join)",
     "spawn_resume/rt/threads:2", "spawn_resume/std_thread", None),
    ("channel_pingpong, 1 thread (std: 2 threads)",
     "channel_pingpong/rt/threads:1", "channel_pingpong/std", "channel_pingpong"),
    ("channel_pingpong, 2 threads",
     "channel_pingpong/rt/threads:2", "channel_pingpong/std", "channel_pingpong"),
    ("mutex_contended, 2 threads, yield (std: 4 threads)",
     "mutex_contended/rt/threads:2/yield:1", "mutex_contended/std", "mutex_contended"),
    ("mutex_contended, 2 threads, no yield",
     "mutex_contended/rt/threads:2/yield:0", "mutex_contended/std", None),
    ("mutex_contended, 1 thread, yield (uncontended, as in Python)",
     "mutex_contended/rt/threads:1/yield:1", None, "mutex_contended"),
    ("timer_fire, 100k coroutines, 2 threads",
     "timer_fire/rt", "timer_fire/std", "timer_fire"),
    ("timer_fire, 100k callbacks (rt: IoDriver::Timer)",
     "timer_fire/rt_callback", "timer_fire/std", None),
    ("timer_insert_cancel, 100k",
     "timer_insert_cancel/rt", "timer_insert_cancel/std", "timer_insert_cancel"),
]
UNIT_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}

cpp = {}
with open(cpp_file) as f:
    text = f.read()
try:
    report = json.loads(text)
except ValueError:  # stopped by the timeout: keep the benchmarks that finished
    try:
        report = json.loads(text.rstrip().rstrip(",") + "]}")
    except ValueError:
        report = {"benchmarks": []}
for b in report["benchmarks"]:
    if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
        continue
    name = re.sub(r"/(iterations:\d+|real_time)", "", b["run_name"])
    cpp[name] = b["real_time"] * UNIT_NS[b["time_unit"]] / b["ops"]

py = {}
cpu_share = []
with open(py_file) as f:
    for line in f:
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if "error" in r:
            print(f"note: {r['impl']}: {r['error']}", file=sys.stderr)
        else:
            py[(r["impl"], r["bench"])] = r["ns_per_op"]
            if r["bench"] != "timer_fire":  # that one idles 10 ms on purpose
                cpu_share.append(r.get("cpu_share", 1.0))


def ns(v):
    if v is None:
        return "—"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def ratio(rt, other):
    if rt is None or other is None:
        return "—"
    r = other / rt
    return f"{r:.1f}× faster" if r >= 1 else f"{1 / r:.1f}× slower"


print(f"Runtime micro-benchmarks, ns per operation (median of {repetitions}), lower is better;")
print('"rt vs X": how much faster taskq::rt is than X (X\'s time / rt\'s time).')
print(f"commit {commit}, {cores} cores, load average before {load_before}, after {load_after};")
print(f"C++ + Python took {seconds} s.")
if float(load_before.split()[0]) > float(cores) or float(load_after.split()[0]) > float(cores):
    print("WARNING: the machine was busy (load average above its core count): the")
    print("numbers are noisy and pessimistic, threaded ones most of all. Re-run when quiet.")
if cpu_share:
    cpu_share.sort()
    print(f"Python got {cpu_share[len(cpu_share) // 2]:.0%} of a CPU (median over its workloads, "
          f"lowest {cpu_share[0]:.0%}); below ~90% its numbers are inflated by other load.")
print()
print("| workload | taskq::rt | std | asyncio | gevent | rt vs std | rt vs asyncio | rt vs gevent |")
print("|---|---:|---:|---:|---:|---|---|---|")
for label, rt_key, std_key, py_key in ROWS:
    rt = cpp.get(rt_key)
    std = cpp.get(std_key) if std_key else None
    aio = py.get(("asyncio", py_key)) if py_key else None
    gev = py.get(("gevent", py_key)) if py_key else None
    print(f"| {label} | {ns(rt)} | {ns(std)} | {ns(aio)} | {ns(gev)} | "
          f"{ratio(rt, std)} | {ratio(rt, aio)} | {ratio(rt, gev)} |")
EOF_PY
if ((cpp_status != 0 || py_status != 0)); then exit 1; fi
