// Limits on every size a client controls, and queue-name validation.
// Shared by the master (which enforces them) and clients (which check early
// to give a better message). Thread-safety: constants and pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"

namespace taskq {

inline constexpr size_t kMaxQueueNameBytes = 128;
inline constexpr size_t kMaxHandlerNameBytes = 128;
inline constexpr size_t kDefaultMaxPayloadBytes = 1 << 20;  // --max-payload-bytes
inline constexpr size_t kMaxHeaders = 64;
inline constexpr size_t kMaxHeaderKeyBytes = 128;
inline constexpr size_t kMaxHeaderValueBytes = 4096;
inline constexpr size_t kMaxArgs = 256;
inline constexpr size_t kMaxArgBytes = 4096;
inline constexpr size_t kMaxErrorBytes = 4096;
inline constexpr size_t kMaxTasksPerPut = 10000;
inline constexpr uint32_t kMaxTasksPerGet = 1000;
inline constexpr size_t kMaxQueuesPerWorker = 64;
inline constexpr size_t kMaxWorkerIdBytes = 256;
inline constexpr uint32_t kMaxCredits = 100000;  // outstanding per Work stream
// Queue settings (QueueConfig): lease, attempts, retry backoff.
inline constexpr uint32_t kMinLeaseMs = 100;
inline constexpr uint32_t kMaxLeaseMs = 86'400'000;        // 24 h
inline constexpr uint32_t kMaxMaxAttempts = 1000;
inline constexpr uint32_t kMaxBackoffMs = 3'600'000;       // 1 h (first retry)
inline constexpr uint32_t kMaxBackoffMaxMs = 86'400'000;   // 24 h (cap)
inline constexpr uint64_t kMaxIdleTtlMs = uint64_t{365} * 24 * 3600 * 1000;  // 365 days
// Delayed tasks (TaskSpec.delay_ms / not_before_unix_ms, Release.delay_ms).
inline constexpr int64_t kMaxDelayMs = int64_t{365} * 24 * 3600 * 1000;  // 365 days
inline constexpr size_t kMaxDedupKeyBytes = 128;
// `taskq queue move`: how long leases may run before they are taken back
// when MoveQueueRequest.drain_timeout_ms is 0, and the most it may be.
inline constexpr uint32_t kDefaultMoveDrainMs = 30 * 1000;
inline constexpr uint32_t kMaxMoveDrainMs = 3600 * 1000;
// Attempts kept in a task's history (oldest dropped first), and the part of
// each attempt's error kept there (last_error keeps up to kMaxErrorBytes).
inline constexpr size_t kTaskHistoryLength = 16;
inline constexpr size_t kMaxHistoryErrorBytes = 1024;
// ListQueues pages (ListQueuesRequest.page_size).
inline constexpr uint32_t kDefaultQueuePage = 1000;
inline constexpr uint32_t kMaxQueuePage = 10000;
// Queues a master holds (--max-queues).
inline constexpr size_t kDefaultMaxQueues = 10000;
// ListDead page size; a page also stops early at kMaxListDeadBytes of tasks.
inline constexpr uint32_t kDefaultListDead = 100;
inline constexpr uint32_t kMaxListDead = 1000;
inline constexpr size_t kMaxListDeadBytes = 16 << 20;
// Completions + failures + releases + heartbeats in one WorkRequest.
inline constexpr size_t kMaxReportsPerWorkMessage = 10000;
// gRPC message size cap on both ends; large enough for a full batch.
inline constexpr int kMaxGrpcMessageBytes = 64 << 20;
// Messages on a stream (deliveries to a worker, a worker's reports) and Get
// replies are split to stay under this many bytes (a single task larger
// than that goes alone).
inline constexpr size_t kMaxStreamMessageBytes = 4 << 20;
// The master accepts requests of up to max(this, 2 x --max-payload-bytes +
// 1 MiB): a message announced as larger is refused before it is read.
inline constexpr size_t kMinMaxRequestBytes = 8 << 20;

// OK if `name` is 1-128 chars of [A-Za-z0-9_.:-] and does not start with '.';
// otherwise INVALID_ARGUMENT naming the problem. `what` is e.g. "queue".
absl::Status ValidateName(absl::string_view what, absl::string_view name);

}  // namespace taskq
