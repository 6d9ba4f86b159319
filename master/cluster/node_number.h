// NodeNumber: a master's node number in a cluster (issue 18,
// docs/CLUSTER.md), 1..65535, for life. It goes into the top 16 bits of
// every task id the master assigns, so a call by task id at any master
// finds the one that made the task.
//
// Claimed once in etcd as <prefix>nodes/<n> = <name> (CreateIfAbsent: two
// masters never get the same number) and remembered in <data-dir>/
// cluster-node, so a restart on the same data dir keeps it even while etcd
// is away. A name that already holds a number in etcd (its data dir was
// lost) gets that number back.
//
// Thread-safety: stateless functions.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "common/cluster_map.h"
#include "common/etcd_client.h"

namespace taskq {

inline constexpr int kNodeShift = 48;
inline constexpr uint32_t kMaxNode = 65535;

// NodeOfTask (the node of a task id; 0: assigned outside cluster mode) is
// the clients' too: common/cluster_map.h.
// The first task id a master of `node` assigns.
inline uint64_t TaskIdBase(uint32_t node) { return uint64_t{node} << kNodeShift; }

// The node number remembered in `data_dir`; NOT_FOUND if none is.
absl::StatusOr<uint32_t> RememberedNode(const std::string& data_dir);

// The master's node number: the remembered one (re-registered in etcd if
// its entry is missing; FAILED_PRECONDITION if another name holds it), else
// claimed in etcd and remembered. `etcd` may be null (unreachable): then
// only a remembered number will do (FAILED_PRECONDITION otherwise, saying
// so).
absl::StatusOr<uint32_t> ObtainNode(EtcdClient* etcd, const std::string& prefix,
                                    const std::string& name, const std::string& data_dir);

}  // namespace taskq
