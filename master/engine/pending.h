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

#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
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
  std::vector<std::string> touched_;
  absl::flat_hash_set<std::string> touched_set_;
  bool wake_timer_ = false;
};

}  // namespace taskq
