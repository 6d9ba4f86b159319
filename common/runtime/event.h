// Event: a flag coroutines can wait for — the seeds' threading.Event
// (asyncio.Event). Set() wakes every waiter; Wait() on a set event returns
// at once; Clear() makes later waits suspend again.
//
//   rt::Event ready;
//   // coroutine A                           // any thread, e.g. a std::thread
//   absl::Status s = co_await ready.Wait(stop);   ready.Set();
//
// - Waiting suspends the coroutine, never the thread. Set posts every
//   waiter to the executor it was waiting on (inline if it had none), in
//   the order they started waiting (FIFO).
// - A waiter woken by Set returns OK even if Clear() runs before it gets to
//   execute (it was woken while the event was set).
// - Cancellation: Wait(stop) completes with CANCELLED "cancelled" if `stop`
//   fires first (or had fired). A Set racing with the cancellation resumes
//   the waiter exactly once, with one of the two results.
//
// Thread-safety: every method is safe from any thread, pool or plain. The
// event must outlive every Wait on it.
#pragma once

#include <coroutine>
#include <cstddef>
#include <stop_token>

#include "absl/status/status.h"
#include "common/runtime/wait_queue.h"
#include "common/sync.h"

namespace taskq::rt {

class Event {
 public:
  class WaitOp;

  Event() = default;
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  // Sets the flag and wakes all waiters. Idempotent.
  void Set();
  // Resets the flag; later Waits suspend until the next Set.
  void Clear();
  bool is_set() const;
  // `co_await Wait(stop)`: OK once the event is set, or CANCELLED.
  WaitOp Wait(std::stop_token stop = {});

  size_t waiters() const;

 private:
  mutable Mutex mu_;
  bool set_ ABSL_GUARDED_BY(mu_) = false;
  internal::WaiterQueue waiters_ ABSL_GUARDED_BY(mu_);  // non-empty only while !set_
};

class [[nodiscard]] Event::WaitOp {
 public:
  WaitOp(Event* event, std::stop_token stop) : event_(event), stop_(std::move(stop)) {}
  WaitOp(const WaitOp&) = delete;
  WaitOp& operator=(const WaitOp&) = delete;

  bool await_ready();
  bool await_suspend(std::coroutine_handle<> h);
  absl::Status await_resume();

 private:
  Event* const event_;
  const std::stop_token stop_;
  internal::Waiter waiter_;
  internal::CancelHook hook_;
};

}  // namespace taskq::rt
