// Test helpers for the async primitives' unit tests: observe a coroutine's
// result from the test thread, and wait for a condition with a deadline
// (never a sleep as synchronisation).
//
// Thread-safety: Outcome is safe from any thread.
#pragma once

#include <atomic>
#include <functional>
#include <optional>
#include <thread>
#include <utility>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/runtime/task.h"
#include "common/sync.h"
#include "common/runtime/sanitizers.h"

namespace taskq::rt::testing {

// Generous: only reached when something is broken.
inline constexpr absl::Duration kTestTimeout = absl::Seconds(20);

// Iterations of each wake-versus-cancel race test. ThreadSanitizer makes
// thread start-up ~50x dearer and finds races in fewer rounds.
inline constexpr int kRaceIterations = kUnderTsan ? 100 : 300;

// Polls `cond` until it holds or `timeout` passes; returns whether it held.
inline bool WaitUntil(const std::function<bool()>& cond, absl::Duration timeout = kTestTimeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!cond()) {
    if (absl::Now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

// The result of a coroutine run with RunInto, readable from the test thread.
// Counts how often it was set: a primitive that resumed a waiter twice
// shows up as sets() == 2 (if it did not crash first).
template <typename T>
class Outcome {
 public:
  void Set(T value) {
    MutexLock lock(&mu_);
    value_.emplace(std::move(value));
    ++sets_;
    cv_.SignalAll();
  }
  bool done() const {
    MutexLock lock(&mu_);
    return value_.has_value();
  }
  int sets() const {
    MutexLock lock(&mu_);
    return sets_;
  }
  // Waits up to `timeout`; nullopt if the coroutine has not finished by then.
  std::optional<T> Get(absl::Duration timeout = kTestTimeout) {
    const absl::Time deadline = absl::Now() + timeout;
    MutexLock lock(&mu_);
    while (!value_.has_value()) {
      if (cv_.WaitWithDeadline(&mu_, deadline)) break;
    }
    return value_;
  }

 private:
  mutable Mutex mu_;
  CondVar cv_;
  std::optional<T> value_ ABSL_GUARDED_BY(mu_);
  int sets_ ABSL_GUARDED_BY(mu_) = 0;
};

// `sched.Spawn(RunInto(SomeTask(), &outcome))`.
template <typename T>
Task<void> RunInto(Task<T> task, Outcome<T>* out) {
  out->Set(co_await std::move(task));
}

// Spins until `go` is set, so two threads start a race together.
inline void SpinUntil(const std::atomic<bool>& go) {
  while (!go.load(std::memory_order_acquire)) {
  }
}

}  // namespace taskq::rt::testing
