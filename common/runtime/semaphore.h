// Semaphore: a counting semaphore for coroutines — the seeds'
// threading.Semaphore (asyncio.Semaphore), e.g. to bound how many handlers
// hit a resource at once.
//
//   rt::Semaphore slots(8);
//   absl::Status s = co_await slots.Acquire(stop);   // suspends while 0
//   if (!s.ok()) co_return s;                        // CANCELLED
//   ... use one of the 8 slots ...
//   slots.Release();
//
// - Waiting suspends the coroutine, never the thread. Release hands a
//   permit straight to the oldest waiter and posts it to the executor it
//   was waiting on (inline if it had none).
// - FIFO: permits go to waiters in the order they started waiting; a new
//   Acquire/TryAcquire never overtakes a parked one (a permit is only
//   available when nobody waits).
// - Cancellation: Acquire(stop) completes with CANCELLED "cancelled" if
//   `stop` fires first (or had fired already). A permit released at the
//   same moment goes to the next waiter or back to the count, never lost.
//
// Thread-safety: every method is safe from any thread, pool or plain
// (e.g. Release from a std::thread). The semaphore must outlive every
// Acquire waiting on it.
#pragma once

#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <stop_token>

#include "absl/status/status.h"
#include "common/runtime/wait_queue.h"
#include "common/sync.h"

namespace taskq::rt {

class Semaphore {
 public:
  class AcquireOp;

  // `initial` must be >= 0.
  explicit Semaphore(int64_t initial);
  ~Semaphore();
  Semaphore(const Semaphore&) = delete;
  Semaphore& operator=(const Semaphore&) = delete;

  // `co_await Acquire(stop)`: takes one permit, waiting while there is none.
  // OK, or CANCELLED if `stop` fired first.
  AcquireOp Acquire(std::stop_token stop = {});
  // Takes a permit if one is available now (and nobody is waiting).
  bool TryAcquire();
  // Returns `n` (>= 0) permits: to waiters first (oldest first), the rest to
  // the count.
  void Release(int64_t n = 1);

  int64_t available() const;
  size_t waiters() const;

 private:
  mutable Mutex mu_;
  int64_t count_ ABSL_GUARDED_BY(mu_);  // > 0 only while nobody waits
  internal::WaiterQueue waiters_ ABSL_GUARDED_BY(mu_);
};

class [[nodiscard]] Semaphore::AcquireOp {
 public:
  AcquireOp(Semaphore* sem, std::stop_token stop) : sem_(sem), stop_(std::move(stop)) {}
  AcquireOp(const AcquireOp&) = delete;
  AcquireOp& operator=(const AcquireOp&) = delete;

  bool await_ready();
  bool await_suspend(std::coroutine_handle<> h);
  absl::Status await_resume();

 private:
  Semaphore* const sem_;
  const std::stop_token stop_;
  internal::Waiter waiter_;
  internal::CancelHook hook_;
};

}  // namespace taskq::rt
