// FinishedTasks: the engine's bounded memory of recently finished tasks
// (done, cancelled, failed), so that GetTask / `taskq task show` can still
// answer for them and a late report on a finished task's lease gets a clear
// "already done" / "was cancelled" refusal.
//
// It keeps what those answers need and nothing else: no payload, headers or
// args (v1::Task's comment says so to users). A record is a compact struct,
// not a v1::Task: queue, handler and reply_to names are interned (a job's
// thousands of tasks share one copy of each), and the rarely set parts
// (dedup key, last error, attempt history) sit behind a pointer that is null
// for a task that succeeded at its first attempt. Remembering such a task
// allocates nothing once the memory is full (the oldest record makes room),
// and a v1::Task is built only when someone asks.
//
// Bounded by both a count and bytes (EngineOptions::finished_task_memory,
// finished_task_memory_bytes); the oldest finished are forgotten first.
//
// Thread-safety: none. The engine owns one and guards it with its mutex.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "taskq/v1/taskq.pb.h"

namespace taskq {

class FinishedTasks {
 public:
  // What a task ended with besides its v1::Task fields (moved in: the
  // task's live record is dropped right after).
  struct Extra {
    std::string dedup_key;
    std::string last_error;
    std::vector<v1::Attempt> history;
    bool empty() const { return dedup_key.empty() && last_error.empty() && history.empty(); }
  };

  // max_tasks 0 = remember nothing.
  FinishedTasks(size_t max_tasks, size_t max_bytes);

  // Remembers `task` (its payload, headers, args and error are not kept)
  // as finished in `state`, then forgets the oldest beyond the bounds.
  void Add(const v1::Task& task, v1::TaskState state, Extra extra);

  // Whether task `id` is remembered, and what as.
  bool Contains(uint64_t id) const { return index_.contains(id); }
  std::optional<v1::TaskState> StateOf(uint64_t id) const;
  // The queue it belonged to; nullptr if not remembered. Valid until the
  // next Add.
  const std::string* QueueOf(uint64_t id) const;
  // GetTask's answer for it: everything kept, state set; nullopt if not
  // remembered.
  std::optional<v1::Task> Describe(uint64_t id) const;

  size_t size() const { return records_.size(); }
  // What the bound in bytes counts: the records, their extras and the
  // interned names they use.
  size_t bytes() const { return bytes_; }

 private:
  // Index into names_; 0 is the empty string.
  using NameRef = uint32_t;
  struct Record {
    uint64_t id;
    uint64_t result_of;
    int64_t enqueued_unix_ms;
    int32_t priority;
    uint32_t attempt;
    NameRef queue;
    NameRef handler;
    NameRef reply_to;
    uint8_t state;    // v1::TaskState
    uint8_t outcome;  // v1::Outcome
    std::unique_ptr<Extra> extra;  // null: none
  };
  // What a record costs besides its extra: itself plus its index entry.
  static constexpr size_t kRecordBytes = sizeof(Record) + 2 * sizeof(uint64_t);

  const Record* Find(uint64_t id) const;
  static size_t ExtraBytes(const Extra& extra);
  void ForgetOldest();

  // Interned names with reference counts.
  NameRef Intern(absl::string_view name);
  void Release(NameRef ref);
  void Remember(NameRef ref);
  struct Name {
    std::string text;
    uint32_t refs = 0;
  };
  std::vector<Name> names_;
  absl::flat_hash_map<std::string, NameRef> name_index_;
  std::vector<NameRef> free_names_;
  // The names interned last: a job's tasks repeat the same few (its queue,
  // its reply queue), and a compare is cheaper than a hash lookup.
  NameRef recent_[4] = {0, 0, 0, 0};

  const size_t max_tasks_;
  const size_t max_bytes_;
  // Oldest first; record i has sequence number first_seq_ + i.
  std::deque<Record> records_;
  uint64_t first_seq_ = 0;
  // Task id -> sequence number of its record.
  absl::flat_hash_map<uint64_t, uint64_t> index_;
  size_t bytes_ = 0;
};

}  // namespace taskq
