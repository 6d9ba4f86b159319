// EtcdClient: the few etcd v3 calls taskq's masters coordinate with
// (issue 18, docs/CLUSTER.md): read a key or a prefix, write, create a key
// only if it does not exist and swap it only if it did not change (both
// transactions on its mod revision), delete, and leases that keep a
// master's keys alive only while it is (Lease below).
//
// Talks gRPC to etcd's v3 API (Debian's etcd-server 3.4; stubs generated
// from its own .proto files, cmake/etcd_proto.cmake). Plaintext only for
// now: etcd listens on a trusted network or loopback.
//
// Every call has a deadline (options.call_timeout); an etcd that cannot be
// reached answers UNAVAILABLE, which the caller decides about (a master
// keeps serving the queues it owns when etcd is away).
//
// Thread-safety: all methods are safe from any thread (gRPC stubs are).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/sync.h"
#include "etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h"

namespace taskq {

struct EtcdOptions {
  // HOST:PORT of etcd's client URL (e.g. 127.0.0.1:2379).
  std::string endpoint;
  absl::Duration call_timeout = absl::Seconds(5);
};

struct EtcdKeyValue {
  std::string key;
  std::string value;
  int64_t mod_revision = 0;  // the store's revision when it last changed
  int64_t lease = 0;         // 0: none
};

class EtcdClient {
 public:
  static absl::StatusOr<std::unique_ptr<EtcdClient>> Connect(EtcdOptions options);
  ~EtcdClient();

  // The key's value, or nullopt if there is none.
  absl::StatusOr<std::optional<EtcdKeyValue>> Get(const std::string& key);
  // Every key that starts with `prefix`, in key order (at most `limit`; 0 = all).
  absl::StatusOr<std::vector<EtcdKeyValue>> GetPrefix(const std::string& prefix,
                                                      int64_t limit = 0);
  // Writes the key (attached to `lease` unless 0); returns the new revision.
  absl::StatusOr<int64_t> Put(const std::string& key, const std::string& value, int64_t lease = 0);
  // Writes the key only if it does not exist. False (and the existing
  // entry in `existing`, if given) if it does.
  absl::StatusOr<bool> CreateIfAbsent(const std::string& key, const std::string& value,
                                      int64_t lease = 0, EtcdKeyValue* existing = nullptr);
  // Writes the key only if its mod revision is still `mod_revision`.
  absl::StatusOr<bool> CompareAndSwap(const std::string& key, int64_t mod_revision,
                                      const std::string& value, int64_t lease = 0);
  // Writes every key in one transaction, only if each one's mod revision is
  // still the one given: all or none. False if any changed.
  struct Swap {
    std::string key;
    int64_t mod_revision = 0;
    std::string value;
    int64_t lease = 0;  // attach to this lease (0: none)
  };
  absl::StatusOr<bool> CompareAndSwapAll(const std::vector<Swap>& swaps);
  // Deletes the key; returns whether it existed.
  absl::StatusOr<bool> Delete(const std::string& key);

  // A lease of `ttl` (at least 1 s) that the returned object keeps alive
  // from a thread of its own until it is destroyed, which revokes it (its
  // keys go at once). When a renewal fails for longer than the TTL the
  // lease is gone on etcd's side: `on_lost` is called once (from the
  // keeper's thread) and the object stops renewing.
  class Lease {
   public:
    ~Lease();
    int64_t id() const { return id_; }
    bool lost() const;

   private:
    friend class EtcdClient;
    Lease(EtcdClient* client, int64_t id, absl::Duration ttl, std::function<void()> on_lost);
    void KeepAlive();

    EtcdClient* const client_;
    const int64_t id_;
    const absl::Duration ttl_;
    std::function<void()> on_lost_;
    mutable Mutex mu_;
    CondVar cv_;  // signalled on stop_
    bool stop_ ABSL_GUARDED_BY(mu_) = false;
    bool lost_ ABSL_GUARDED_BY(mu_) = false;
    std::thread thread_;
  };
  absl::StatusOr<std::unique_ptr<Lease>> GrantLease(absl::Duration ttl,
                                                    std::function<void()> on_lost = nullptr);

 private:
  explicit EtcdClient(EtcdOptions options);
  // One LeaseKeepAlive round trip; the TTL etcd granted (0: the lease is gone).
  absl::StatusOr<int64_t> RenewOnce(int64_t lease);
  absl::Status Revoke(int64_t lease);
  void Prepare(grpc::ClientContext* context) const;

  const EtcdOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<etcdserverpb::KV::Stub> kv_;
  std::unique_ptr<etcdserverpb::Lease::Stub> lease_;
};

}  // namespace taskq
