// Journal: what the engine's current locked step changed, written to the
// Store as one batch at the end of the step (so a step is atomic on disk
// too: a completion and its result, a put of many tasks), plus the store's
// own keys: queue records, the boot epoch, and task ids reserved on disk a
// block at a time (a restarted master never reuses an id).
//
// A memory-only engine never enables it: marks then cost nothing.
//
// Thread-safety: none. The engine owns one and guards it with its mutex.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/functional/function_ref.h"
#include "absl/strings/string_view.h"
#include "master/engine/task_record.h"
#include "master/store.h"

namespace taskq {

class Journal {
 public:
  // Record keys: "q" + queue name, and store-wide counters.
  static constexpr char kQueuePrefix[] = "q";
  static constexpr char kEpochKey[] = "sepoch";
  static constexpr char kNextIdKey[] = "snext_id";
  // Task ids are reserved on disk this many at a time.
  static constexpr uint64_t kIdBlock = 1 << 20;
  static std::string QueueKey(absl::string_view name);
  // Counters as stored: 8 big-endian bytes.
  static std::string EncodeU64(uint64_t v);
  static uint64_t DecodeU64(absl::string_view s);

  // From now on marks are kept (the engine has a store).
  void Enable() { enabled_ = true; }
  bool enabled() const { return enabled_; }

  // A task changed in this step (or is gone: its stored copy is deleted).
  void MarkTask(uint64_t id) {
    if (enabled_) tasks_.insert(id);
  }
  // A task created in this step: its payload is written too.
  void MarkNewTask(uint64_t id) {
    if (enabled_) {
      tasks_.insert(id);
      new_tasks_.insert(id);
    }
  }
  void MarkQueue(const std::string& name) {
    if (enabled_) queues_.insert(name);
  }
  bool IsMarked(uint64_t id) const { return tasks_.contains(id); }
  bool empty() const { return tasks_.empty() && queues_.empty(); }
  std::vector<uint64_t> MarkedTasks() const { return {tasks_.begin(), tasks_.end()}; }
  // Forgets every mark (recovery: what was just read needs no writing).
  void Clear();

  // Task ids below `reserved` are reserved on disk (recovery).
  void SetReserved(uint64_t reserved) { ids_reserved_ = reserved; }

  // Writes the step's marks into `batch`, then forgets them. `task(id)` is a
  // marked task's record, or nullptr if it is gone (its stored copy is
  // deleted, unless it was created in this same step: nothing was written).
  // `queue(name)` is a marked queue's stored record, or nullopt if it was
  // deleted. Reserves another block of ids once `next_task_id` reaches the
  // reserved ones. The records written are appended to `written`.
  void Flush(StoreBatch& batch, uint64_t next_task_id,
             absl::FunctionRef<TaskRecord*(uint64_t)> task,
             absl::FunctionRef<std::optional<std::string>(const std::string&)> queue,
             std::vector<TaskRecord*>& written);

 private:
  bool enabled_ = false;
  absl::flat_hash_set<uint64_t> tasks_;
  absl::flat_hash_set<uint64_t> new_tasks_;
  absl::flat_hash_set<std::string> queues_;
  uint64_t ids_reserved_ = 0;
};

}  // namespace taskq
