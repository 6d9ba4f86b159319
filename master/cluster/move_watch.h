// MoveWatch: ends the Work streams that take from a queue once the queue
// has moved to another master (master/cluster/queue_mover.h), so their
// workers follow it. A stream watches its queues with Watch(); Moved()
// stores the redirect in every ticket naming one of the queues and fires
// its stop source; the stream then ends with ticket->status() (the
// redirect to the new owner, which the worker follows as it follows a
// refused start).
//
// Lifetime: a ticket unregisters itself when destroyed; tickets must not
// outlive the registry. Moved fires copies of the stop sources outside the
// lock, as Revocations does.
//
// Thread-safety: every method is safe from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <stop_token>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "common/sync.h"

namespace taskq {

class MoveWatch {
 public:
  class Ticket {
   public:
    ~Ticket();
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;
    // The redirect once one of its queues moved; OK before.
    absl::Status status() const;

   private:
    friend class MoveWatch;
    Ticket(MoveWatch* owner, uint64_t id) : owner_(owner), id_(id) {}
    MoveWatch* const owner_;
    const uint64_t id_;
    mutable Mutex mu_;
    absl::Status status_ ABSL_GUARDED_BY(mu_);
  };

  // `on_move` is stopped (request_stop) when one of `queues` moves.
  std::unique_ptr<Ticket> Watch(std::vector<std::string> queues, std::stop_source on_move);
  // `queues` moved: every ticket naming one gets why(the first of its
  // queues that moved) and is stopped.
  void Moved(const std::vector<std::string>& queues,
             const std::function<absl::Status(const std::string& queue)>& why);

 private:
  struct Entry {
    Ticket* ticket;
    std::vector<std::string> queues;
    std::stop_source stop;
  };
  void Remove(uint64_t id);

  Mutex mu_;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<uint64_t, Entry> open_ ABSL_GUARDED_BY(mu_);
};

}  // namespace taskq
