// Cluster redirects (docs/CLUSTER.md): the refusal a master gives for a
// queue (or task id) another master owns, and reading it back on the
// client side. The owner travels in the status details as the gRPC
// ecosystem does it (an RpcStatus — wire-compatible with google.rpc.Status
// — holding an Any of taskq.v1.QueueOwner), so any gRPC client can read it.
//
//   owner up:   FAILED_PRECONDITION  queue "q" is served by master "m2" at 10.0.0.2:5000
//   owner down: UNAVAILABLE          queue "q": owner m2 is down
//   moving:     UNAVAILABLE          queue "q" is moving to master "m2"; send the call again
//               (refused before anything was done; once the move ends the
//               owner answers the first kind)
//
// Thread-safety: pure functions.
#pragma once

#include <optional>

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "taskq/v1/taskq.pb.h"

namespace taskq {

// The refusal naming `owner` (its moving and down flags pick the code), as an
// absl::Status whose details payload ToGrpcStatus sends on.
absl::Status RedirectStatus(const v1::QueueOwner& owner);

// The owner named in a refusal; nullopt if it names none.
std::optional<v1::QueueOwner> QueueOwnerOf(const absl::Status& status);
std::optional<v1::QueueOwner> QueueOwnerOf(const grpc::Status& status);

}  // namespace taskq
