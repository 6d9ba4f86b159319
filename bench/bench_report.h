// What every compare.sh client prints: a monotonic clock, nearest-rank
// percentiles, and the one machine-readable line
//   RESULT tasks=N seconds=S tasks_per_s=R p50_ms=A p99_ms=B ok=0|1
// that bench/compare.sh reads (taskq-square-bench prints the same keys).
//
// Thread-safety: stateless functions; NowNs may be called from any thread.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

namespace taskq::bench {

// Monotonic nanoseconds since the first call.
inline int64_t NowNs() {
  static const auto kStart = std::chrono::steady_clock::now();
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now() - kStart)
      .count();
}

// Nearest-rank percentile of sorted nanoseconds, in milliseconds.
inline double PercentileMs(const std::vector<int64_t>& sorted_ns, double p) {
  if (sorted_ns.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(sorted_ns.size())));
  rank = std::clamp<size_t>(rank, 1, sorted_ns.size());
  return static_cast<double>(sorted_ns[rank - 1]) / 1e6;
}

// Sorts `latencies_ns` and prints the RESULT line for `tasks` done in
// `seconds`.
inline void PrintResult(uint64_t tasks, double seconds, std::vector<int64_t>& latencies_ns,
                        bool ok) {
  std::sort(latencies_ns.begin(), latencies_ns.end());
  double rate = seconds > 0 ? static_cast<double>(tasks) / seconds : 0;
  std::printf("RESULT tasks=%llu seconds=%.3f tasks_per_s=%.0f p50_ms=%.3f p99_ms=%.3f ok=%d\n",
              static_cast<unsigned long long>(tasks), seconds, rate,
              PercentileMs(latencies_ns, 0.50), PercentileMs(latencies_ns, 0.99), ok ? 1 : 0);
  std::fflush(stdout);
}

}  // namespace taskq::bench
