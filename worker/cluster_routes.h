// Cluster routes: which master a worker opens each queue's Work stream to
// (docs/CLUSTER.md, "Workers"). In cluster mode a worker holds one Work
// stream per master, each naming only that master's queues; these pure
// functions decide the grouping from GetCluster's map and move a queue
// when a stream is refused with a redirect (common/cluster_redirect.h).
//
// A route is an address, plus an owner name when the route is "parked": the
// queue's owner is down, so the queue waits on a stream of its own to a
// live master (the one that said so) that is refused with UNAVAILABLE until
// the owner is back, then redirected to it. Parking keeps that refusal from
// blocking the live master's own queues, which share no stream with it.
//
// Thread-safety: pure functions on values.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "taskq/v1/taskq.pb.h"

namespace taskq {

struct WorkRoute {
  std::string address;  // HOST:PORT the stream goes to
  std::string parked_for;  // the owner that is down, or "" for a normal route

  // Identifies the stream: the address, then "#owner" when parked.
  std::string Key() const;
  bool operator==(const WorkRoute&) const = default;
  bool operator<(const WorkRoute& o) const { return Key() < o.Key(); }
};

// The worker's queues grouped by route, from GetCluster's answer at `seed`:
// a placed queue goes to its owner's address when the owner is up (`seed`
// when the owner is the master that answered), is
// parked at `seed` when the owner is down; a queue not placed yet goes to
// `seed` (its first Work stream places it, and a redirect moves it). Not
// clustered: every queue at `seed`. Order of queues is kept.
std::map<WorkRoute, std::vector<std::string>> GroupQueuesByOwner(
    const v1::GetClusterResponse& cluster, const std::vector<std::string>& queues,
    const std::string& seed);

// Where `queue` goes after its stream on `current` ended with `status`:
// a FAILED_PRECONDITION redirect names the owner's address; an owner-down
// UNAVAILABLE parks it at the master that answered. nullopt when the
// status names no owner for `queue`, or names the route it is on already
// (retry there with backoff).
std::optional<WorkRoute> RouteAfterRefusal(const absl::Status& status, const std::string& queue,
                                           const WorkRoute& current);

// The queue a refusal names (its QueueOwner's queue), or "".
std::string RefusedQueue(const absl::Status& status);

}  // namespace taskq
