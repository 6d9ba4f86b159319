// taskq::ClusterMap: what a client has learnt about where things live in a
// cluster of masters (docs/CLUSTER.md): queue -> the address of the master
// that owns it (from redirects and answers), and node number -> address
// (from GetCluster and redirects), for calls by task id. A task id carries
// its master's node number in its top 16 bits; 0 = a single master's id.
//
// Everything here is a hint: a wrong entry costs one redirect (or one
// unreachable attempt, after which it is dropped), never a wrong answer,
// since every master answers for every name.
//
// Thread-safety: thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "common/sync.h"
#include "taskq/v1/taskq.pb.h"

namespace taskq {

// The node number in a task id's top 16 bits (0 for a single master's ids;
// master/cluster/node_number.h assigns them).
inline uint32_t NodeOfTask(uint64_t task_id) { return static_cast<uint32_t>(task_id >> 48); }

class ClusterMap {
 public:
  // Most queues remembered; beyond it the map starts again (a client that
  // touches millions of queue names must not grow without bound).
  static constexpr size_t kMaxQueues = 100'000;

  std::optional<std::string> QueueAddress(const std::string& queue) const;
  void SetQueueAddress(const std::string& queue, const std::string& address);
  void ForgetQueue(const std::string& queue);

  std::optional<std::string> NodeAddress(uint32_t node) const;
  void SetNodeAddress(uint32_t node, const std::string& address);
  void ForgetNode(uint32_t node);

  // Takes the masters (node -> address, for the masters up) of a
  // GetCluster answer; marks the map loaded.
  void Load(const v1::GetClusterResponse& cluster);
  // Whether Load ran since the last MarkStale (a node not in a loaded map
  // is not worth asking GetCluster about again).
  bool loaded() const;
  void MarkStale();

 private:
  mutable Mutex mu_;
  absl::flat_hash_map<std::string, std::string> queues_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint32_t, std::string> nodes_ ABSL_GUARDED_BY(mu_);
  bool loaded_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace taskq
