// ReadySet: one queue's ready tasks in hand-out order. A task's place is a
// ReadyKey fixed when it becomes ready (KeyFor); a lease given back at once
// keeps its old key and so returns to its old place.
//
// Order, smallest first: FIFO (0, seq), LIFO (0, -seq), PRIORITY
// (priority, seq), then the task id, where seq counts the moments tasks
// become ready (engine-wide, increasing). Cold ready tasks (the durable
// engine's, beyond its memory budget) keep their place here while their
// record is on disk only: the set holds keys, not records.
//
// Thread-safety: none. Each queue owns one; the engine's mutex guards it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <tuple>

#include "absl/container/btree_set.h"
#include "taskq/v1/taskq.pb.h"

namespace taskq {

struct ReadyKey {
  int64_t major = 0;
  int64_t minor = 0;
  uint64_t id = 0;
  bool operator<(const ReadyKey& o) const {
    return std::tie(major, minor, id) < std::tie(o.major, o.minor, o.id);
  }
  bool operator==(const ReadyKey& o) const {
    return std::tie(major, minor, id) == std::tie(o.major, o.minor, o.id);
  }
};

class ReadySet {
 public:
  using const_iterator = absl::btree_set<ReadyKey>::const_iterator;

  // The place of task `id` becoming ready at moment `seq` in a queue of `kind`.
  static ReadyKey KeyFor(v1::QueueKind kind, int32_t priority, int64_t seq, uint64_t id) {
    switch (kind) {
      case v1::QUEUE_KIND_LIFO: return ReadyKey{0, -seq, id};
      case v1::QUEUE_KIND_PRIORITY: return ReadyKey{priority, seq, id};
      default: return ReadyKey{0, seq, id};
    }
  }

  void Insert(const ReadyKey& key) { keys_.insert(key); }
  void Erase(const ReadyKey& key) { keys_.erase(key); }
  bool Contains(const ReadyKey& key) const { return keys_.contains(key); }
  // The next to hand out; the set must not be empty.
  const ReadyKey& Front() const { return *keys_.begin(); }
  void PopFront() { keys_.erase(keys_.begin()); }

  // The first key at or after `key` in hand-out order.
  const_iterator LowerBound(const ReadyKey& key) const { return keys_.lower_bound(key); }

  bool empty() const { return keys_.empty(); }
  size_t size() const { return keys_.size(); }
  const_iterator begin() const { return keys_.begin(); }
  const_iterator end() const { return keys_.end(); }

 private:
  absl::btree_set<ReadyKey> keys_;
};

}  // namespace taskq
