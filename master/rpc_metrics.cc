#include "master/rpc_metrics.h"

#include <algorithm>
#include <vector>

#include "absl/status/status.h"

namespace taskq {

RpcMetrics& RpcMetrics::Get() {
  static auto* metrics = new RpcMetrics();  // never destroyed: used until exit
  return *metrics;
}

RpcMetrics::MethodCounts* RpcMetrics::ForMethod(absl::string_view name) {
  MutexLock lock(&mu_);
  for (MethodCounts& m : methods_) {
    if (m.name == name) return &m;
  }
  MethodCounts& m = methods_.emplace_back();
  m.name = std::string(name);
  return &m;
}

void RpcMetrics::Collect(metrics::TextWriter& w) const {
  w.Family("taskq_rpcs_total",
           "RPCs the master answered, by method and gRPC status code (calls refused at the "
           "headers are in taskq_refusals_total).",
           metrics::Type::kCounter);
  std::vector<const MethodCounts*> sorted;
  MutexLock lock(&mu_);
  for (const MethodCounts& m : methods_) sorted.push_back(&m);
  std::sort(sorted.begin(), sorted.end(),
            [](const MethodCounts* a, const MethodCounts* b) { return a->name < b->name; });
  for (const MethodCounts* m : sorted) {
    for (size_t code = 0; code < kCodes; ++code) {
      const uint64_t n = m->by_code[code].load(std::memory_order_relaxed);
      if (n == 0) continue;
      w.Sample("taskq_rpcs_total",
               {{"method", m->name},
                // gRPC's codes are absl's (0..16), and so are the names:
                // "OK", "NOT_FOUND", ...
                {"code", absl::StatusCodeToString(static_cast<absl::StatusCode>(code))}},
               static_cast<double>(n));
    }
  }
}

}  // namespace taskq
