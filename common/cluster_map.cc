#include "common/cluster_map.h"

namespace taskq {

std::optional<std::string> ClusterMap::QueueAddress(const std::string& queue) const {
  MutexLock lock(&mu_);
  auto it = queues_.find(queue);
  if (it == queues_.end()) return std::nullopt;
  return it->second;
}

void ClusterMap::SetQueueAddress(const std::string& queue, const std::string& address) {
  MutexLock lock(&mu_);
  if (queues_.size() >= kMaxQueues && !queues_.contains(queue)) queues_.clear();
  queues_[queue] = address;
}

void ClusterMap::ForgetQueue(const std::string& queue) {
  MutexLock lock(&mu_);
  queues_.erase(queue);
}

std::optional<std::string> ClusterMap::NodeAddress(uint32_t node) const {
  MutexLock lock(&mu_);
  auto it = nodes_.find(node);
  if (it == nodes_.end()) return std::nullopt;
  return it->second;
}

void ClusterMap::SetNodeAddress(uint32_t node, const std::string& address) {
  if (node == 0) return;
  MutexLock lock(&mu_);
  nodes_[node] = address;
}

void ClusterMap::ForgetNode(uint32_t node) {
  MutexLock lock(&mu_);
  nodes_.erase(node);
}

void ClusterMap::Load(const v1::GetClusterResponse& cluster) {
  MutexLock lock(&mu_);
  loaded_ = true;
  if (!cluster.clustered()) return;
  for (const v1::ClusterMaster& master : cluster.masters()) {
    if (master.node() == 0 || master.address().empty()) continue;
    if (master.up()) {
      nodes_[master.node()] = master.address();
    } else {
      nodes_.erase(master.node());
    }
  }
}

bool ClusterMap::loaded() const {
  MutexLock lock(&mu_);
  return loaded_;
}

void ClusterMap::MarkStale() {
  MutexLock lock(&mu_);
  loaded_ = false;
}

}  // namespace taskq
