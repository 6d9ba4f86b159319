// Revocations: ends a credential's open calls when it is revoked. A waiting
// call (Put on a full queue, Get on an empty one, Join) and a Work stream
// watch their credential with Watch(); Revoke(name) marks every ticket of
// that credential revoked and fires its stop source, so the call stops
// waiting and answers UNAUTHENTICATED `credential "w1" was revoked`.
//
// Lifetime: a ticket unregisters itself when destroyed. Revoke fires copies
// of the stop sources (they share state with the call's own), outside the
// lock, so a call that ends meanwhile is never touched after it is gone.
//
// Thread-safety: every method is safe from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <stop_token>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/container/flat_hash_map.h"
#include "common/sync.h"

namespace taskq {

class Revocations {
 public:
  class Ticket {
   public:
    ~Ticket();
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;
    bool revoked() const { return revoked_.load(std::memory_order_acquire); }
    // UNAUTHENTICATED `credential "<name>" was revoked`.
    grpc::Status status() const;

   private:
    friend class Revocations;
    Ticket(Revocations* owner, std::string credential, uint64_t id)
        : owner_(owner), credential_(std::move(credential)), id_(id) {}
    Revocations* const owner_;
    const std::string credential_;
    const uint64_t id_;
    std::atomic<bool> revoked_{false};
  };

  // Tickets must not outlive the registry.

  // `on_revoke` is stopped (request_stop) when `credential` is revoked.
  std::unique_ptr<Ticket> Watch(const std::string& credential, std::stop_source on_revoke);
  void Revoke(const std::string& credential);

 private:
  struct Entry {
    Ticket* ticket;
    std::stop_source stop;
  };
  void Remove(const std::string& credential, uint64_t id);

  Mutex mu_;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<std::string, absl::flat_hash_map<uint64_t, Entry>> open_ ABSL_GUARDED_BY(mu_);
};

}  // namespace taskq
