// WaitingReactor: a unary-call reactor for calls that may wait inside the
// QueueEngine (Put on a full queue, Get on an empty one, Join). If the client
// cancels or its deadline passes, the engine waiter is cancelled, so a
// vanished client never receives (and loses) a task.
//
// Lifetime: deleted when both gRPC is done with it (OnDone) and the handler
// has recorded the engine's wait id (Started), whichever is last: the engine
// may finish the call on another thread before Started runs.
//
// Thread-safety: OnCancel, Started and the engine's callback may race; the
// fields they share are guarded by mu_.
#pragma once

#include <atomic>

#include <grpcpp/support/server_callback.h>

#include "common/sync.h"
#include "master/queue_engine.h"

namespace taskq {

class WaitingReactor final : public grpc::ServerUnaryReactor {
 public:
  explicit WaitingReactor(QueueEngine* engine) : engine_(engine) {}

  // Records the id Put/Get/Join returned (0 = finished already).
  void Started(WaitId id) {
    bool cancel;
    {
      MutexLock lock(&mu_);
      id_ = id;
      cancel = cancelled_;
    }
    if (cancel && id != 0) engine_->CancelWait(id);
    Unref();
  }

  void OnCancel() override {
    WaitId id;
    {
      MutexLock lock(&mu_);
      cancelled_ = true;
      id = id_;
    }
    if (id != 0) engine_->CancelWait(id);
  }

  void OnDone() override { Unref(); }

 private:
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  QueueEngine* const engine_;
  std::atomic<int> refs_{2};  // OnDone + Started
  Mutex mu_;
  WaitId id_ ABSL_GUARDED_BY(mu_) = 0;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace taskq
