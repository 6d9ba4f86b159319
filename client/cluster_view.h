// What `taskq cluster status` and `taskq queue list` show of a cluster of
// masters (docs/CLUSTER.md): each master from GetCluster, and the queues
// it serves (ListQueues asked of that master). A single master (or one
// from before clusters) is a view of one unnamed master.
//
// Thread-safety: a plain value; LoadClusterView uses the client from the
// calling thread (the client itself is thread-safe).
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/client.h"
#include "taskq/v1/taskq.pb.h"

namespace taskq::cli {

struct MasterView {
  v1::ClusterMaster master;
  // Its queues, sorted by name; the error when it is down ("owner ... is
  // down" style UNAVAILABLE) or could not be asked.
  absl::StatusOr<std::vector<v1::QueueStats>> queues;
};

struct ClusterView {
  bool clustered = false;
  std::string self;  // the master that answered GetCluster
  std::vector<MasterView> masters;  // by name
};

// Asks the master `client` is connected to for the cluster, then each
// master up for its queues (`page_size` as ListQueues). Fails only if the
// first master cannot answer.
absl::StatusOr<ClusterView> LoadClusterView(Client& client, uint32_t page_size = 0);

}  // namespace taskq::cli
