// Placement: which master owns each queue (issue 18, docs/CLUSTER.md).
//
// /<prefix>/queues/<queue> holds the owner's master name. It is written
// once, when the queue is first placed (CreateIfAbsent: of two masters
// placing the same new queue at once, exactly one wins and both learn the
// winner), changed only by a move (compare-and-swap on the revision it was
// read at), and not attached to any lease: a queue whose master is down
// stays that master's (never re-created elsewhere, which would split its
// tasks between two stores).
//
// Choose() picks a master for a new queue by rendezvous hashing over the
// live masters: the same name goes to the same master while the set of
// masters is the same, and adding a master moves only the names it wins.
//
// Thread-safety: safe from any thread (no state beyond the etcd client).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/etcd_client.h"
#include "master/cluster/membership.h"

namespace taskq {

struct QueuePlacement {
  std::string queue;
  std::string owner;
  int64_t revision = 0;  // the mod revision it was read at (for MoveAll)
};

class Placement {
 public:
  Placement(EtcdClient* etcd, std::string prefix);

  // The queue's owner; NOT_FOUND if it has none yet.
  absl::StatusOr<QueuePlacement> OwnerOf(const std::string& queue) const;
  // Places the queue on `owner` unless it has an owner already; returns
  // the owner it has now (possibly another master's claim that won).
  absl::StatusOr<QueuePlacement> Claim(const std::string& queue, const std::string& owner);
  // Moves every queue to `to` in one etcd transaction, if each is still
  // placed as `from` read it: all or none (FAILED_PRECONDITION if one
  // changed meanwhile; none moved then).
  absl::Status MoveAll(const std::vector<QueuePlacement>& from, const std::string& to);
  // Drops the placement (the queue was deleted by its owner).
  absl::Status Forget(const std::string& queue);
  // Every placement, by queue name.
  absl::StatusOr<std::vector<QueuePlacement>> All() const;

  // The master a new queue goes to: rendezvous hashing over `masters`
  // (by name). "" if there are none.
  static std::string Choose(const std::string& queue, const std::vector<MasterInfo>& masters);

 private:
  std::string Key(const std::string& queue) const { return prefix_ + "queues/" + queue; }

  EtcdClient* const etcd_;
  const std::string prefix_;
};

}  // namespace taskq
