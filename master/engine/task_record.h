// TaskRecord: one live task as the engine holds it (its v1::Task as
// deliveries carry it, plus its state and what that state needs), and its
// stored form, the record the durable engine writes for it
// (proto/taskq/v1/stored.proto; the payload is stored beside the record).
//
// A live task is in exactly one state: delayed (in its queue's and the
// Schedule's delayed sets), ready (in its queue's ReadySet), leased (in the
// LeaseTable, its deadline in the Schedule) or dead (in some queue's
// dead-letter set). Finished tasks have no record (FinishedTasks remembers
// them).
//
// Thread-safety: a plain value; the engine's mutex guards the records it
// holds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "master/engine/ready_set.h"
#include "master/engine/schedule.h"
#include "taskq/v1/taskq.pb.h"

namespace taskq {

struct TaskRecord {
  enum class State { kDelayed, kReady, kLeased, kDead };

  // What deliveries carry. The status fields of v1::Task (state, history,
  // ...) live below and are filled in only when the task is described.
  v1::Task task;
  State state = State::kReady;
  ReadyKey key{};    // its place while ready; kept while leased
  DelayKey delay{};  // while delayed
  uint64_t lease_id = 0;  // while leased
  absl::Time lease_deadline = absl::InfiniteFuture();
  absl::Time leased_at = absl::InfinitePast();  // while leased: when (metrics)
  uint64_t holder = 0;      // Work stream (SubscriptionId) holding the lease (0 = unary)
  std::string holder_name;  // its worker id, or "consumer"
  std::string dedup_key;
  std::string last_error;
  // The last kTaskHistoryLength attempts, oldest first. A vector: empty
  // costs nothing (a std::deque allocates even when empty).
  std::vector<v1::Attempt> history;
  std::string dead_in;  // while dead: the queue whose dead-letter set holds it
  uint64_t written_seq = 0;  // the store batch that last wrote it
  // What the memory budget counts for it, and of that what it counts as
  // pinned (in memory for good while delayed, leased or dead).
  size_t counted_bytes = 0;
  size_t pinned_bytes = 0;
};

v1::TaskState ProtoState(TaskRecord::State state);

// What a record costs in memory besides its strings, near enough
// (measured: ~950 B for a 100-byte task with its map node, its place in
// its queue's set and allocator overhead).
inline constexpr size_t kRecordOverhead = sizeof(TaskRecord) + 288;
// What the memory budget counts for a record.
size_t Footprint(const TaskRecord& rec);

// The stored record of `rec`: everything but its payload. Borrows rec.task
// (a swap, not a copy) and gives it back unchanged.
std::string SerializeTaskRecord(TaskRecord& rec);
// Fills `rec` from a stored record and its payload; returns the state it
// was stored in (DATA_LOSS if the record does not parse). A delayed task's
// DelayKey has seq 0: the engine gives it its place in the Schedule.
absl::StatusOr<v1::TaskState> DecodeTaskRecord(uint64_t id, absl::string_view record,
                                               absl::string_view payload, TaskRecord& rec);

}  // namespace taskq
