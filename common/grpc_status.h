// Conversions between absl::Status and grpc::Status (same codes, same
// message, and the status details — grpc-status-details-bin — carried as
// the absl payload kGrpcStatusDetailsUrl, so a cluster redirect
// (common/cluster_redirect.h) survives the trip through absl::Status).
// Thread-safety: pure functions.
#pragma once

#include <optional>
#include <string>

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "absl/strings/cord.h"

namespace taskq {

inline constexpr char kGrpcStatusDetailsUrl[] = "taskq/grpc-status-details-bin";

inline grpc::Status ToGrpcStatus(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  auto details = s.GetPayload(kGrpcStatusDetailsUrl);  // absl::optional
  if (details.has_value()) {
    return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()),
                        std::string(*details));
  }
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

inline absl::Status ToAbslStatus(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  absl::Status out(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
  if (!s.error_details().empty()) {
    out.SetPayload(kGrpcStatusDetailsUrl, absl::Cord(s.error_details()));
  }
  return out;
}

}  // namespace taskq
