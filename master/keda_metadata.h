// What a KEDA ScaledObject asks the master's external scaler
// (master/keda_service.h): its trigger's `metadata` map, checked and
// parsed into a KedaQuery, and the queue depth the scaler reports for it.
//
// Keys (docs/KUBERNETES.md): `queue` (one name, or several separated by
// commas, summed), `targetPerWorker` (the depth one worker replica should
// handle; the HPA runs ceil(depth / targetPerWorker) replicas) and the
// optional `activationDepth` (active when depth > it; default 0). Each may
// also come as `<key>FromEnv`, whose value KEDA resolves from the scaled
// workload's environment. KEDA passes its own keys too (scalerAddress, TLS
// settings): those are ignored; any other key is refused, so a typo is an
// error rather than a silent default.
//
// Depth = ready + leased tasks. Delayed tasks (a not-before time or a
// retry backoff) are not counted: no worker can run them yet, and counting
// them would keep replicas up with nothing to do. A queue that does not
// exist yet counts 0 (queues are created by their first put).
//
// Thread-safety: pure functions; QueueDepth calls the thread-safe engine.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "externalscaler/externalscaler.pb.h"
#include "master/queue_engine.h"

namespace taskq {

// The one metric the scaler reports.
inline constexpr char kKedaMetricName[] = "taskq-queue-depth";

// Limits on what a ScaledObject sends (INVALID_ARGUMENT beyond them).
inline constexpr size_t kMaxKedaMetadataEntries = 32;
inline constexpr size_t kMaxKedaMetadataKeyBytes = 128;
// KEDA's own keys may carry a PEM certificate.
inline constexpr size_t kMaxKedaMetadataValueBytes = 16 << 10;
inline constexpr size_t kMaxKedaQueues = 16;
inline constexpr int64_t kMaxKedaTargetPerWorker = 1'000'000'000;
inline constexpr int64_t kMaxKedaActivationDepth = int64_t{1} << 50;

struct KedaQuery {
  std::vector<std::string> queues;  // distinct, valid queue names
  int64_t target_per_worker = 0;    // >= 1
  int64_t activation_depth = 0;     // >= 0
};

// INVALID_ARGUMENT, saying which key is wrong and what it wants, for a
// missing or malformed key, an unknown key, or a size beyond the limits.
absl::StatusOr<KedaQuery> ParseKedaMetadata(
    const google::protobuf::Map<std::string, std::string>& metadata);

// The depth of the query's queues (see the top of this file).
absl::StatusOr<uint64_t> QueueDepth(QueueEngine& engine, const KedaQuery& query);

}  // namespace taskq
