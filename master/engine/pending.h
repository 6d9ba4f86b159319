// TaskEngine::Pending: what one locked step of the engine leaves to do
// after unlocking (callbacks that finish RPCs, batched deliveries to worker
// streams, a timer wake-up), plus the queues it touched, which the step
// settles before unlocking. Internal to task_engine*.cc.
//
// With a store, the step's changes were written as one batch before
// unlocking, and the replies wait until that batch (and so everything the
// replies depend on) is durable: a reply gets the store's error instead of
// its result if it is not. Deliveries to worker streams go out at once: a
// lease is not an acknowledgement, and the completion that settles it
// waits for durability itself.
//
// Thread-safety: none; one Pending belongs to one call on one thread.
#pragma once

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"
#include "absl/functional/any_invocable.h"
#include "master/engine/task_engine.h"
#include "master/store.h"

namespace taskq {

class TaskEngine::Pending {
 public:
  // Replies `result` to `done` once the step is durable; the store's error
  // instead if it is not — unless `result` is a refusal: that changed
  // nothing, and stays what it is (a refused put was not stored).
  template <typename Done, typename Result>
  void Reply(Done done, Result result) {
    calls_.push_back([done = std::move(done), result = std::move(result)](
                         const absl::Status& durable) mutable {
      if (durable.ok() || Refused(result)) {
        done(std::move(result));
      } else {
        done(durable);
      }
    });
  }
  // The step's replies wait for batch `seq` of `store`.
  void WaitFor(Store* store, uint64_t seq) {
    store_ = store;
    seq_ = seq;
  }
  void Deliver(SubscriptionId sub, const DeliverFn& fn, v1::Delivery d) {
    Batch& b = batches_[sub];
    if (!b.fn) b.fn = fn;
    b.items.push_back(std::move(d));
  }
  void WakeTimer() { wake_timer_ = true; }

  // Queues to settle, in the order first touched. By pointer, not by
  // name: a step touches its queue once per task, and copying the name
  // each time cost allocations on the hot path. A queue deleted during the
  // step is Untouched first.
  using Touched = absl::InlinedVector<Queue*, 4>;
  void Touch(Queue* q) {
    if (touched_.size() < kLinearTouched) {
      if (std::find(touched_.begin(), touched_.end(), q) != touched_.end()) return;
    } else {
      if (touched_set_.empty()) touched_set_.insert(touched_.begin(), touched_.end());
      if (!touched_set_.insert(q).second) return;
    }
    touched_.push_back(q);
  }
  void Untouch(Queue* q) {
    touched_.erase(std::remove(touched_.begin(), touched_.end(), q), touched_.end());
    touched_set_.erase(q);
  }
  // Takes the touched list (empty when nothing is left to settle).
  Touched TakeTouched() {
    touched_set_.clear();
    Touched out = std::move(touched_);
    touched_.clear();
    return out;
  }

  void Run(const std::function<void()>& wake) {
    for (auto& [sub, batch] : batches_) batch.fn(std::move(batch.items));
    if (!calls_.empty()) {
      if (store_ != nullptr) {
        store_->WhenDurable(seq_, [calls = std::move(calls_)](absl::Status durable) mutable {
          for (auto& call : calls) call(durable);
        });
      } else {
        for (auto& call : calls_) call(absl::OkStatus());
      }
    }
    if (wake_timer_ && wake) wake();
  }

 private:
  static bool Refused(const absl::Status& s) { return !s.ok(); }
  template <typename T>
  static bool Refused(const absl::StatusOr<T>& s) {
    return !s.ok();
  }
  template <typename T>
  static bool Refused(const T&) {
    return false;
  }

  struct Batch {
    DeliverFn fn;
    std::vector<v1::Delivery> items;
  };
  std::vector<absl::AnyInvocable<void(const absl::Status&)>> calls_;
  Store* store_ = nullptr;
  uint64_t seq_ = 0;
  absl::flat_hash_map<SubscriptionId, Batch> batches_;
  // Up to this many touched queues are told apart by a linear search;
  // beyond it (OnStoreHealthy touches every queue) by touched_set_.
  static constexpr size_t kLinearTouched = 8;
  Touched touched_;
  absl::flat_hash_set<Queue*> touched_set_;
  bool wake_timer_ = false;
};

}  // namespace taskq
