// ClusterMember: what makes a master part of a cluster (taskq-master
// --cluster, docs/CLUSTER.md): its etcd client, its node number
// (master/cluster/node_number.h), its membership entry
// (master/cluster/membership.h) and its QueueRouter.
//
// Start needs etcd only for a master that has no node number yet. One with
// a remembered node number starts while etcd is away (or while its own
// entry from before a crash has not expired) and joins from a background
// thread once it can; meanwhile it serves the queues it owns.
//
// Thread-safety: router() from any thread after Start; the joiner runs on
// its own thread until the destructor.
#pragma once

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/etcd_client.h"
#include "common/sync.h"
#include "master/cluster/membership.h"
#include "master/cluster/router.h"

namespace taskq {

struct ClusterOptions {
  // etcd://HOST:PORT[,HOST:PORT...]; empty = not in a cluster.
  std::string etcd;
  std::string advertise;  // HOST:PORT clients and workers reach this master at
  std::string name;       // unique among the masters; empty = the hostname
  std::string prefix = "/taskq/";
  absl::Duration ttl = absl::Seconds(10);
  // From the engine: queues are created on first use (QueueRouter).
  bool place_on_use = true;
  // PEM CA the other masters' TLS certificates are verified against when
  // this master calls them (queue moves); empty = <data-dir>/tls/ca.pem if
  // it exists, else the system's roots.
  std::string peer_ca_file;
};

// The gRPC target for etcd://... (several literal IPs become one
// "ipv4:"/"ipv6:" target gRPC fails over between); INVALID_ARGUMENT with
// the expected form otherwise.
absl::StatusOr<std::string> EtcdTarget(const std::string& url);

// --cluster-ttl: a duration ("10s", "1500ms") or plain seconds ("10").
bool ParseClusterTtl(const std::string& text, absl::Duration* ttl);

// Checks the flags before anything starts (clear errors for the CLI).
absl::Status ValidateClusterOptions(ClusterOptions& options);

class ClusterMember {
 public:
  // Connects, obtains the node number (remembered in `data_dir`), joins
  // (or starts joining in the background) and makes the router (not
  // started: call router()->Start with the local queues).
  static absl::StatusOr<std::unique_ptr<ClusterMember>> Start(ClusterOptions options,
                                                              const std::string& data_dir);
  // Leaves the cluster: the membership entry goes at once, so the other
  // masters call this one down; the router keeps answering until the
  // destructor (calls still finishing may ask it).
  void Leave();
  ~ClusterMember();

  uint32_t node() const { return node_; }
  QueueRouter* router() { return router_.get(); }
  bool joined() const;

 private:
  ClusterMember(ClusterOptions options, std::unique_ptr<EtcdClient> etcd, uint32_t node);
  // Joins until it works or the member goes.
  void JoinLoop(MasterInfo self);

  const ClusterOptions options_;
  std::unique_ptr<EtcdClient> etcd_;
  const uint32_t node_;
  std::unique_ptr<QueueRouter> router_;
  mutable Mutex mu_;
  CondVar cv_;  // signalled on stop_
  std::unique_ptr<Membership> membership_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread joiner_;
};

}  // namespace taskq
