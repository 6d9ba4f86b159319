// taskq::ChannelPool: one gRPC channel (and TaskQueue stub) per master
// address, made on first use by a ChannelFactory (common/channel.h) so
// that every master is reached with the same token, TLS and keepalive
// settings. Cluster mode: a client follows redirects to other masters
// (docs/CLUSTER.md) without opening a connection per call.
//
// Thread-safety: thread-safe; channels and stubs live as long as the pool.
#pragma once

#include <memory>
#include <string>

#include <grpcpp/channel.h>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "common/channel.h"
#include "common/sync.h"
#include "taskq/v1/taskq.grpc.pb.h"

namespace taskq {

class ChannelPool {
 public:
  struct Entry {
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<v1::TaskQueue::Stub> stub;
  };

  // `home` is the channel already made to `home_address` (the master the
  // client was given); `dial` makes the others (nullptr: a plaintext
  // channel with gRPC's defaults, for in-process tests).
  ChannelPool(std::string home_address, std::shared_ptr<grpc::Channel> home, ChannelFactory dial);

  const std::string& home_address() const { return home_address_; }
  // The entry for `address` ("" = home), made on first use.
  const Entry& At(const std::string& address);

 private:
  const std::string home_address_;
  const ChannelFactory dial_;
  Mutex mu_;
  // Entries are never removed: references handed out stay valid.
  absl::flat_hash_map<std::string, std::unique_ptr<Entry>> entries_ ABSL_GUARDED_BY(mu_);
};

}  // namespace taskq
