// QueueRouter: in cluster mode (docs/CLUSTER.md), which master answers for
// a queue name or a task id, as seen from this master:
//   - served here (OK),
//   - owned by a live master: its redirect (FAILED_PRECONDITION with a
//     QueueOwner naming it and its address),
//   - owned by a master that is down: UNAVAILABLE "owner NAME is down",
//   - not placed yet: placed now (`on`, else Placement::Choose over the
//     live masters) with Placement::Claim, then served or redirected.
//
// The queues this master owns are kept in memory (from the local store and
// etcd at start, and every placement it makes or finds): the hot path — a
// call on an owned queue — takes one mutex and a hash lookup and never
// calls etcd. Other masters' placements, the live masters and the node
// numbers are cached and re-read from etcd every `refresh`; a queue not in
// the cache is looked up in etcd once. While etcd is unreachable the
// caches stay as they were: owned queues keep serving, nothing changes
// owner, and placing a new queue answers UNAVAILABLE.
//
// Thread-safety: all methods from any thread; the refresher runs on its
// own thread between Start and the destructor.
#pragma once

#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/etcd_client.h"
#include "common/sync.h"
#include "master/cluster/membership.h"
#include "master/cluster/placement.h"
#include "taskq/v1/taskq.pb.h"

namespace taskq {

struct QueueRouterOptions {
  std::string prefix = "/taskq/";
  MasterInfo self;  // name and advertised address
  uint32_t node = 0;
  // How often the caches are re-read from etcd.
  absl::Duration refresh = absl::Seconds(1);
  // Queues are created on first use (no --no-auto-create): Place::kOnUse
  // places them.
  bool place_on_use = true;
};

// A call on `queue` answered for master `to`: the redirect there, or with
// `moving` the UNAVAILABLE "moving to" refusal (common/cluster_redirect.h).
absl::Status RedirectToMaster(const std::string& queue, const MasterInfo& to, bool moving);

class QueueRouter {
 public:
  // Whether a call may place a queue that is not placed yet: CreateQueue
  // does (kYes); Put, a waiting Get and Work do when queues are created on
  // first use (kOnUse; not with --no-auto-create); reads never do (kNo).
  enum class Place { kNo, kOnUse, kYes };

  QueueRouter(EtcdClient* etcd, QueueRouterOptions options);
  ~QueueRouter();

  // Takes `local_queues` (the store's) as owned, reads etcd once (claiming
  // any local queue not placed yet) and starts the refresher. etcd being
  // unreachable is logged, not an error: the master serves its queues.
  void Start(const std::vector<std::string>& local_queues);

  // OK: serve `queue` here; else the status to answer with (redirect,
  // owner down, UNAVAILABLE cannot place, INVALID_ARGUMENT for an `on`
  // naming no live master).
  absl::Status ForQueue(const std::string& queue, Place place, const std::string& on = "");
  // OK: the task was made here (or before cluster mode, or its node is
  // unknown: the engine answers); else the redirect to its node's master.
  absl::Status ForTask(uint64_t task_id);
  // A queue a queue served here sends to — `what` is "reply_to" (results)
  // or "dead_letter" — must be on this master too (the master stores the
  // task and what it sends in one local step): OK if `other` is owned here
  // or was not placed (it is claimed for this master now);
  // FAILED_PRECONDITION naming both masters if it is elsewhere (no
  // QueueOwner: following would not help); UNAVAILABLE if it cannot be
  // placed.
  absl::Status ForSameMaster(const std::string& queue, const std::string& other,
                             const char* what = "reply_to");
  // The queue was deleted here: its placement goes (etcd errors logged).
  void Forget(const std::string& queue);

  // --- moving queues (master/cluster/queue_mover.h) ---------------------------
  // The placements of the queues in `group` owned here, read from etcd
  // (names not placed are left out); FAILED_PRECONDITION if one is placed
  // on another master. From now until EndMove, every call on them answers
  // UNAVAILABLE `queue "q" is moving to master "m2"` with a QueueOwner
  // {moving = true} (nothing was done: safe to send again).
  absl::StatusOr<std::vector<QueuePlacement>> BeginMove(const std::vector<std::string>& group,
                                                        const MasterInfo& to);
  // etcd names `to` the owner of them all, in one transaction.
  absl::Status SwitchOwner(const std::vector<QueuePlacement>& placements, const std::string& to);
  // The move ended: `moved` = they are `to`'s now (calls are redirected
  // there, and so are calls by id on `task_ids`); else served here again.
  void EndMove(const std::vector<std::string>& group, const std::string& to, bool moved,
               const std::vector<uint64_t>& task_ids = {});
  // Target side: serve `queues` from now on, once etcd names this master
  // their owner (FAILED_PRECONDITION naming the first that it does not).
  absl::Status Adopt(const std::vector<std::string>& queues);
  // The queue's owner as etcd has it now (NOT_FOUND: not placed).
  absl::StatusOr<std::string> OwnerInEtcd(const std::string& queue) const;
  // Whether this master serves `queue` (a move of it may be under way).
  bool Owns(const std::string& queue) const;
  // The live master of that name; NOT_FOUND if none is up.
  absl::StatusOr<MasterInfo> LiveMaster(const std::string& name) const;

  // The cluster as this master sees it (placements unfiltered).
  v1::GetClusterResponse Describe() const;

  const std::string& self() const { return options_.self.name; }
  uint32_t node() const { return options_.node; }

 private:
  // Re-reads placements, masters and nodes; false if etcd did not answer.
  bool Refresh();
  void RefreshLoop();
  // The answer for `queue` placed on `owner`.
  absl::Status RouteTo(const std::string& queue, const std::string& owner);
  v1::QueueOwner OwnerEntry(const std::string& owner) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The queue's owner from etcd, placing it on `target()` if it has none
  // and `place`; "" if it has none and is not to be placed.
  absl::StatusOr<std::string> Resolve(const std::string& queue, bool place,
                                      const std::string& target);
  void Record(const std::string& queue, const std::string& owner);
  std::vector<MasterInfo> LiveMasters() const;

  EtcdClient* const etcd_;
  const QueueRouterOptions options_;
  Placement placement_;

  mutable Mutex mu_;
  CondVar cv_;  // signalled on stop_
  absl::flat_hash_set<std::string> owned_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::string> others_ ABSL_GUARDED_BY(mu_);  // queue -> owner
  absl::flat_hash_map<std::string, MasterInfo> live_ ABSL_GUARDED_BY(mu_);      // by name
  absl::flat_hash_map<uint32_t, std::string> nodes_ ABSL_GUARDED_BY(mu_);       // node -> name
  // Queues being moved away, to the master named.
  absl::flat_hash_map<std::string, MasterInfo> moving_ ABSL_GUARDED_BY(mu_);
  // Tasks made here that moved away with their queue: id -> the move (an
  // index into moves_, which holds one queue of each group moved), so a
  // call by id goes to where that queue is now. In memory only (a restart
  // forgets them; docs/CLUSTER.md).
  absl::flat_hash_map<uint64_t, uint32_t> moved_tasks_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> moves_ ABSL_GUARDED_BY(mu_);
  // Counts Forget calls: a refresh that read etcd before one does not
  // take the forgotten queue back as owned.
  uint64_t forgets_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread refresher_;
};

}  // namespace taskq
