// AsyncMutex: mutual exclusion between coroutines — the seeds'
// threading.Lock (asyncio.Lock). Waiting for it suspends the coroutine,
// never the thread, so it may be held across co_await (unlike taskq::Mutex,
// which must never be held across a suspension point).
//
//   rt::AsyncMutex mu;
//   {
//     auto guard = co_await mu.ScopedLock();         // unlocks at scope exit
//     counter += 1;
//     co_await SomethingSlow();                      // still held
//   }
//   absl::StatusOr<rt::AsyncMutex::Guard> g = co_await mu.ScopedLock(stop);
//   if (!g.ok()) co_return g.status();               // CANCELLED
//   absl::Status s = co_await mu.Lock(stop);         // manual form ...
//   mu.Unlock();                                     // ... and its release
//
// - FIFO: Unlock hands the mutex directly to the oldest waiter (no barging:
//   a TryLock or a new Lock cannot overtake a parked waiter), then posts
//   that waiter to the executor it was waiting on (inline if none).
// - Not reentrant and not owned by a thread: a coroutine may lock on one
//   thread and unlock on another (coroutines hop threads). Unlocking a mutex
//   that is not locked is a bug and aborts.
// - Cancellation: Lock(stop) completes with CANCELLED "cancelled" if `stop`
//   fires first (or had fired); the caller then does not hold the mutex. An
//   Unlock racing with the cancellation hands the mutex to the next waiter
//   (or leaves it unlocked); it is never lost.
//
// Thread-safety: every method is safe from any thread. The mutex must
// outlive every Lock waiting on it and every Guard.
#pragma once

#include <coroutine>
#include <cstddef>
#include <stop_token>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/runtime/wait_queue.h"
#include "common/sync.h"

namespace taskq::rt {

class AsyncMutex {
 public:
  class Guard;
  class LockOp;
  class ScopedLockOp;
  class CancellableScopedLockOp;

  AsyncMutex() = default;
  ~AsyncMutex();
  AsyncMutex(const AsyncMutex&) = delete;
  AsyncMutex& operator=(const AsyncMutex&) = delete;

  // `co_await Lock(stop)`: OK once the caller holds the mutex, or CANCELLED
  // (not held) if `stop` fired first.
  LockOp Lock(std::stop_token stop = {});
  // `co_await ScopedLock()` → Guard (held until the guard goes away).
  ScopedLockOp ScopedLock();
  // `co_await ScopedLock(stop)` → StatusOr<Guard>: CANCELLED if `stop` fired.
  CancellableScopedLockOp ScopedLock(std::stop_token stop);
  // Takes the mutex if it is free now (and nobody is waiting).
  bool TryLock();
  void Unlock();

  bool is_locked() const;
  size_t waiters() const;

 private:
  mutable Mutex mu_;
  bool locked_ ABSL_GUARDED_BY(mu_) = false;
  internal::WaiterQueue waiters_ ABSL_GUARDED_BY(mu_);  // non-empty only while locked_
};

// Owns a locked AsyncMutex and unlocks it when destroyed (or on Unlock()).
class AsyncMutex::Guard {
 public:
  Guard() = default;
  explicit Guard(AsyncMutex* mutex) : mutex_(mutex) {}
  Guard(Guard&& other) noexcept : mutex_(std::exchange(other.mutex_, nullptr)) {}
  Guard& operator=(Guard&& other) noexcept {
    if (this != &other) {
      Unlock();
      mutex_ = std::exchange(other.mutex_, nullptr);
    }
    return *this;
  }
  Guard(const Guard&) = delete;
  Guard& operator=(const Guard&) = delete;
  ~Guard() { Unlock(); }

  bool owns_lock() const { return mutex_ != nullptr; }
  // Releases early; the destructor then does nothing.
  void Unlock() {
    if (mutex_ != nullptr) std::exchange(mutex_, nullptr)->Unlock();
  }

 private:
  AsyncMutex* mutex_ = nullptr;
};

class [[nodiscard]] AsyncMutex::LockOp {
 public:
  LockOp(AsyncMutex* mutex, std::stop_token stop) : mutex_(mutex), stop_(std::move(stop)) {}
  LockOp(const LockOp&) = delete;
  LockOp& operator=(const LockOp&) = delete;

  bool await_ready();
  bool await_suspend(std::coroutine_handle<> h);
  absl::Status await_resume();

 protected:
  AsyncMutex* const mutex_;

 private:
  const std::stop_token stop_;
  internal::Waiter waiter_;
  internal::CancelHook hook_;
};

class [[nodiscard]] AsyncMutex::ScopedLockOp : private LockOp {
 public:
  explicit ScopedLockOp(AsyncMutex* mutex) : LockOp(mutex, {}) {}
  using LockOp::await_ready;
  using LockOp::await_suspend;
  Guard await_resume() {
    (void)LockOp::await_resume();  // no stop token: always OK
    return Guard(mutex_);
  }
};

class [[nodiscard]] AsyncMutex::CancellableScopedLockOp : private LockOp {
 public:
  CancellableScopedLockOp(AsyncMutex* mutex, std::stop_token stop)
      : LockOp(mutex, std::move(stop)) {}
  using LockOp::await_ready;
  using LockOp::await_suspend;
  absl::StatusOr<Guard> await_resume() {
    absl::Status status = LockOp::await_resume();
    if (!status.ok()) return status;
    return Guard(mutex_);
  }
};

}  // namespace taskq::rt
