// MemoryEngine::Pending: what one locked step of the engine leaves to do
// after unlocking (callbacks that finish RPCs, batched deliveries to worker
// streams, a timer wake-up), plus the queues it touched, which the step
// settles before unlocking. Internal to memory_engine*.cc.
//
// Thread-safety: none; one Pending belongs to one call on one thread.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/any_invocable.h"
#include "master/memory_engine.h"

namespace taskq {

class MemoryEngine::Pending {
 public:
  void Add(absl::AnyInvocable<void()> fn) { calls_.push_back(std::move(fn)); }
  void Deliver(SubscriptionId sub, const DeliverFn& fn, v1::Delivery d) {
    Batch& b = batches_[sub];
    if (!b.fn) b.fn = fn;
    b.items.push_back(std::move(d));
  }
  void WakeTimer() { wake_timer_ = true; }

  // Queues to settle, in the order first touched.
  void Touch(const std::string& queue) {
    if (touched_set_.insert(queue).second) touched_.push_back(queue);
  }
  // Takes the touched list (empty when nothing is left to settle).
  std::vector<std::string> TakeTouched() {
    touched_set_.clear();
    return std::exchange(touched_, {});
  }

  void Run(const std::function<void()>& wake) {
    for (auto& [sub, batch] : batches_) batch.fn(std::move(batch.items));
    for (auto& call : calls_) call();
    if (wake_timer_ && wake) wake();
  }

 private:
  struct Batch {
    DeliverFn fn;
    std::vector<v1::Delivery> items;
  };
  std::vector<absl::AnyInvocable<void()>> calls_;
  absl::flat_hash_map<SubscriptionId, Batch> batches_;
  std::vector<std::string> touched_;
  absl::flat_hash_set<std::string> touched_set_;
  bool wake_timer_ = false;
};

}  // namespace taskq
