#include "master/rpc_metrics.h"

#include <algorithm>
#include <vector>

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
                {"code", std::string(StatusCodeName(static_cast<grpc::StatusCode>(code)))}},
               static_cast<double>(n));
    }
  }
}

absl::string_view StatusCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

}  // namespace taskq
