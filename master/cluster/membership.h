// Membership: this master's entry in etcd while it runs (issue 18,
// docs/CLUSTER.md), and the list of the masters that are up.
//
// The entry /<prefix>/masters/<name> holds the master's advertised address
// and start time and is attached to an etcd lease that a thread keeps
// alive: when the master dies, etcd drops the entry within the TTL. Names
// are unique among live masters: joining under a name another live master
// holds is refused. When etcd is unreachable for longer than the TTL the
// lease is lost; the master keeps serving (membership is for finding
// masters, not for owning queues) and re-registers once etcd answers.
//
// Thread-safety: Masters() from any thread; the keeper runs on its own.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/etcd_client.h"
#include "common/sync.h"

namespace taskq {

struct MasterInfo {
  std::string name;
  std::string address;  // HOST:PORT clients and workers connect to
  int64_t started_unix_ms = 0;
};

class Membership {
 public:
  // Registers `self` under `prefix` (e.g. "/taskq/"). FAILED_PRECONDITION if
  // a live master holds the name; UNAVAILABLE if etcd cannot be reached.
  static absl::StatusOr<std::unique_ptr<Membership>> Join(EtcdClient* etcd, std::string prefix,
                                                          MasterInfo self,
                                                          absl::Duration ttl = absl::Seconds(10));
  // Leaves: the entry goes at once (its lease is revoked).
  ~Membership();

  // The masters registered now, by name.
  absl::StatusOr<std::vector<MasterInfo>> Masters() const;
  // Whether this master's entry is in etcd as far as it knows.
  bool registered() const;

  static std::string Encode(const MasterInfo& m);
  static MasterInfo Decode(const std::string& name, const std::string& value);

 private:
  Membership(EtcdClient* etcd, std::string prefix, MasterInfo self, absl::Duration ttl);
  std::string Key() const { return prefix_ + "masters/" + self_.name; }
  // Takes a lease and writes the entry; FAILED_PRECONDITION if the name is
  // someone else's.
  absl::Status Register();
  // Re-registers after the lease was lost, until it works or Leave.
  void Rejoin();

  EtcdClient* const etcd_;
  const std::string prefix_;
  const MasterInfo self_;
  const absl::Duration ttl_;
  mutable Mutex mu_;
  CondVar cv_;  // signalled on leaving_ and lost_
  std::unique_ptr<EtcdClient::Lease> lease_ ABSL_GUARDED_BY(mu_);
  bool lost_ ABSL_GUARDED_BY(mu_) = false;
  bool leaving_ ABSL_GUARDED_BY(mu_) = false;
  std::thread rejoiner_;
};

}  // namespace taskq
