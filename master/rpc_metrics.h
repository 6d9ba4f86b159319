// RpcMetrics: RPCs the master answered, by method and status code
// (taskq_rpcs_total{method,code}), counted where a call is finished:
// UnaryCall::Reply for unary calls, the Work stream's Finish for streams.
// Calls refused before they reach the service (a wrong token at the
// headers, a connection over a cap) are not RPCs here: they are counted by
// reason in Refusals() (taskq_refusals_total).
//
// Process-wide (RpcMetrics::Get()), like Refusals(). Each method's counters
// are found once (ForMethod, under a mutex) and kept by the caller; counting
// is one relaxed atomic add.
//
// Thread-safety: every method is safe from any thread.
#pragma once

#include <array>
#include <atomic>
#include <deque>
#include <string>

#include <grpcpp/support/status.h>

#include "absl/strings/string_view.h"
#include "common/metrics.h"
#include "common/sync.h"

namespace taskq {

class RpcMetrics {
 public:
  // gRPC's status codes are 0..16.
  static constexpr size_t kCodes = 17;
  struct MethodCounts {
    std::string name;
    std::array<std::atomic<uint64_t>, kCodes> by_code{};
    void Count(grpc::StatusCode code) {
      const auto i = static_cast<size_t>(code);
      by_code[i < kCodes ? i : static_cast<size_t>(grpc::StatusCode::UNKNOWN)].fetch_add(
          1, std::memory_order_relaxed);
    }
  };

  static RpcMetrics& Get();
  // The counters of `name`, made on first use; the pointer stays valid.
  MethodCounts* ForMethod(absl::string_view name);
  // Writes taskq_rpcs_total (only codes that occurred).
  void Collect(metrics::TextWriter& w) const;

 private:
  mutable Mutex mu_;
  std::deque<MethodCounts> methods_ ABSL_GUARDED_BY(mu_);  // deque: stable addresses
};

}  // namespace taskq
