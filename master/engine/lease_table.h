// LeaseTable: the engine's current leases (lease id -> task id), the lease
// ids it gives out, and a bounded memory of leases revoked by CancelTask so
// that their holder's next heartbeat is told "cancelled: stop" rather than
// "lease lost".
//
// Lease ids only grow. A durable engine starts them at its boot epoch
// shifted into the top bits (StartAt), so a lease granted before a restart
// never names a lease of this boot. Deadlines are not kept here: they sit
// in the engine's Schedule with every other deadline.
//
// Thread-safety: none. The engine owns one and guards it with its mutex.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>

#include "absl/container/flat_hash_map.h"

namespace taskq {

class LeaseTable {
 public:
  // Remembers at most `revoked_memory` revoked leases (0: none).
  explicit LeaseTable(size_t revoked_memory) : revoked_memory_(revoked_memory) {}

  // Lease ids from now on start at `first`.
  void StartAt(uint64_t first) { next_id_ = first; }

  // A new lease on task `task_id`; returns its id.
  uint64_t Grant(uint64_t task_id) {
    const uint64_t id = next_id_++;
    tasks_[id] = task_id;
    return id;
  }
  // The task a current lease holds; nullopt if it is not current.
  std::optional<uint64_t> TaskOf(uint64_t lease_id) const {
    auto it = tasks_.find(lease_id);
    if (it == tasks_.end()) return std::nullopt;
    return it->second;
  }
  // Ends a lease (completed, failed, given back, expired, revoked).
  void End(uint64_t lease_id) { tasks_.erase(lease_id); }
  size_t size() const { return tasks_.size(); }

  // Remembers that `lease_id` on task `task_id` was revoked (its task was
  // cancelled); the oldest are forgotten beyond the bound.
  void RememberRevoked(uint64_t lease_id, uint64_t task_id) {
    if (revoked_memory_ == 0) return;
    revoked_[lease_id] = task_id;
    revoked_order_.push_back(lease_id);
    while (revoked_order_.size() > revoked_memory_) {
      revoked_.erase(revoked_order_.front());
      revoked_order_.pop_front();
    }
  }
  // The task of a revoked lease still remembered; nullopt otherwise.
  std::optional<uint64_t> RevokedTask(uint64_t lease_id) const {
    auto it = revoked_.find(lease_id);
    if (it == revoked_.end()) return std::nullopt;
    return it->second;
  }

 private:
  const size_t revoked_memory_;
  uint64_t next_id_ = 1;
  absl::flat_hash_map<uint64_t, uint64_t> tasks_;
  absl::flat_hash_map<uint64_t, uint64_t> revoked_;
  std::deque<uint64_t> revoked_order_;  // oldest first
};

}  // namespace taskq
