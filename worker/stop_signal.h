// StopSignal: a one-way "stop now" flag that threads can poll or wait on
// with a deadline. The worker raises it for a hard stop (the drain timeout
// passed, or a second SIGTERM): handlers that sleep or wait for a child
// process wake at once instead of running to the end.
//
// Thread-safety: every method is safe from any thread.
#pragma once

#include <atomic>

#include "absl/time/time.h"
#include "absl/time/clock.h"  // common/sync.h uses absl::Now without including it
#include "common/sync.h"

namespace taskq {

class StopSignal {
 public:
  StopSignal() = default;
  StopSignal(const StopSignal&) = delete;
  StopSignal& operator=(const StopSignal&) = delete;

  // Raises the flag and wakes every waiter. Idempotent.
  void Stop() {
    MutexLock lock(&mu_);
    stopped_.store(true, std::memory_order_release);
    cv_.SignalAll();
  }

  bool stopped() const { return stopped_.load(std::memory_order_acquire); }

  // Blocks until Stop() or `deadline`, whichever comes first. Returns true if
  // the flag is raised.
  bool WaitUntil(absl::Time deadline) const {
    MutexLock lock(&mu_);
    while (!stopped() && absl::Now() < deadline) {
      cv_.WaitWithDeadline(&mu_, deadline);
    }
    return stopped();
  }

 private:
  mutable Mutex mu_;
  mutable CondVar cv_;
  // Atomic so that polling needs no lock; written under mu_ so that a waiter
  // cannot miss the wake-up between its check and its wait.
  std::atomic<bool> stopped_{false};
};

}  // namespace taskq
