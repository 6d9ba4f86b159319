// Schedule: every deadline the engine keeps, in time order, so that one
// timer serves them all — leases running out, delayed tasks coming due,
// waiting calls (put, get, join) timing out, and queues' idle checks.
// Next() is when the master's timer must fire next; AdvanceTo asks each
// kind for what is due, in the order its rules need (leases, then delayed
// tasks, then waits, then idle checks).
//
// Entries are (time, key) pairs; removing one needs the time it was added
// with. Delayed tasks due at the same time come due in the order they were
// delayed (DelayKey.seq, given out here).
//
// Thread-safety: none. The engine owns one and guards it with its mutex.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <utility>

#include "absl/container/btree_set.h"
#include "absl/time/time.h"

namespace taskq {

// A delayed task's place: due time, then the order it was delayed in.
struct DelayKey {
  absl::Time due;
  uint64_t seq = 0;
  uint64_t id = 0;
  bool operator<(const DelayKey& o) const {
    return std::tie(due, seq, id) < std::tie(o.due, o.seq, o.id);
  }
};

class Schedule {
 public:
  // --- delayed tasks ---
  // Schedules task `id` for `due`; the key to remove it by.
  DelayKey AddDelayed(absl::Time due, uint64_t id) {
    DelayKey key{due, next_delay_seq_++, id};
    delayed_.insert(key);
    return key;
  }
  void RemoveDelayed(const DelayKey& key) { delayed_.erase(key); }
  // The first delayed task due at or before `now`, if any.
  std::optional<DelayKey> DelayedDue(absl::Time now) const {
    if (delayed_.empty() || delayed_.begin()->due > now) return std::nullopt;
    return *delayed_.begin();
  }

  // --- leases (by lease id) ---
  void AddLease(absl::Time deadline, uint64_t lease_id) { leases_.insert({deadline, lease_id}); }
  void RemoveLease(absl::Time deadline, uint64_t lease_id) { leases_.erase({deadline, lease_id}); }
  std::optional<std::pair<absl::Time, uint64_t>> LeaseDue(absl::Time now) const {
    return FirstDue(leases_, now);
  }

  // --- waiting calls (by wait id) ---
  void AddWait(absl::Time deadline, uint64_t wait_id) { waits_.insert({deadline, wait_id}); }
  void RemoveWait(absl::Time deadline, uint64_t wait_id) { waits_.erase({deadline, wait_id}); }
  std::optional<std::pair<absl::Time, uint64_t>> WaitDue(absl::Time now) const {
    return FirstDue(waits_, now);
  }

  // --- idle checks (by queue name) ---
  void AddIdleCheck(absl::Time at, const std::string& queue) { idle_checks_.insert({at, queue}); }
  void RemoveIdleCheck(absl::Time at, const std::string& queue) {
    idle_checks_.erase({at, queue});
  }
  std::optional<std::pair<absl::Time, std::string>> IdleCheckDue(absl::Time now) const {
    return FirstDue(idle_checks_, now);
  }

  // The earliest entry of any kind; InfiniteFuture if there is none.
  absl::Time Next() const {
    absl::Time t = absl::InfiniteFuture();
    if (!waits_.empty()) t = waits_.begin()->first;
    if (!leases_.empty()) t = std::min(t, leases_.begin()->first);
    if (!delayed_.empty()) t = std::min(t, delayed_.begin()->due);
    if (!idle_checks_.empty()) t = std::min(t, idle_checks_.begin()->first);
    return t;
  }

 private:
  template <typename Key>
  static std::optional<std::pair<absl::Time, Key>> FirstDue(
      const absl::btree_set<std::pair<absl::Time, Key>>& set, absl::Time now) {
    if (set.empty() || set.begin()->first > now) return std::nullopt;
    return *set.begin();
  }

  absl::btree_set<DelayKey> delayed_;
  uint64_t next_delay_seq_ = 1;
  absl::btree_set<std::pair<absl::Time, uint64_t>> leases_;
  absl::btree_set<std::pair<absl::Time, uint64_t>> waits_;
  absl::btree_set<std::pair<absl::Time, std::string>> idle_checks_;
};

}  // namespace taskq
