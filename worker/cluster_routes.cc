#include "worker/cluster_routes.h"

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "common/cluster_redirect.h"

namespace taskq {

std::string WorkRoute::Key() const {
  return parked_for.empty() ? address : absl::StrCat(address, "#", parked_for);
}

std::map<WorkRoute, std::vector<std::string>> GroupQueuesByOwner(
    const v1::GetClusterResponse& cluster, const std::vector<std::string>& queues,
    const std::string& seed) {
  std::map<WorkRoute, std::vector<std::string>> groups;
  if (!cluster.clustered()) {
    if (!queues.empty()) groups[WorkRoute{seed, ""}] = queues;
    return groups;
  }
  absl::flat_hash_map<std::string, const v1::ClusterMaster*> masters;
  for (const auto& m : cluster.masters()) masters[m.name()] = &m;
  absl::flat_hash_map<std::string, std::string> owner_of;
  for (const auto& p : cluster.placements()) owner_of[p.queue()] = p.master();
  for (const std::string& q : queues) {
    WorkRoute route{seed, ""};
    if (auto placed = owner_of.find(q); placed != owner_of.end()) {
      auto m = masters.find(placed->second);
      if (placed->second == cluster.self()) {
        // The master given, by the address we reach it at (which may not be
        // the one it advertises): one stream to it, not two.
      } else if (m != masters.end() && m->second->up() && !m->second->address().empty()) {
        route.address = m->second->address();
      } else {
        route.parked_for = placed->second;
      }
    }
    groups[route].push_back(q);
  }
  return groups;
}

std::string RefusedQueue(const absl::Status& status) {
  auto owner = QueueOwnerOf(status);
  return owner.has_value() ? owner->queue() : std::string();
}

std::optional<WorkRoute> RouteAfterRefusal(const absl::Status& status, const std::string& queue,
                                           const WorkRoute& current) {
  auto owner = QueueOwnerOf(status);
  if (!owner.has_value() || owner->queue() != queue) return std::nullopt;
  WorkRoute next;
  if (absl::IsFailedPrecondition(status) && !owner->down() && !owner->address().empty()) {
    next = WorkRoute{owner->address(), ""};
  } else if (absl::IsUnavailable(status) && owner->down()) {
    next = WorkRoute{current.address, owner->master()};
  } else {
    return std::nullopt;
  }
  if (next == current) return std::nullopt;
  return next;
}

}  // namespace taskq
