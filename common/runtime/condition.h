// Condition: a condition variable for coroutines holding an AsyncMutex —
// the seeds' threading.Condition (asyncio.Condition), e.g. the
// producer/consumer list of seed 004:
//
//   rt::AsyncMutex mu;  rt::Condition nonempty;  std::deque<int> items;
//   // consumer                                  // producer
//   co_await mu.Lock();                          co_await mu.Lock();
//   while (items.empty())                        items.push_back(x);
//     co_await nonempty.Wait(mu);                nonempty.NotifyOne();
//   int x = items.front(); items.pop_front();    mu.Unlock();
//   mu.Unlock();
//   // or: co_await nonempty.Wait(mu, [&] { return !items.empty(); }, stop);
//
// - Wait(mu) must be called holding `mu`. It queues the caller, releases
//   `mu`, suspends, and re-acquires `mu` before returning — always, even
//   when it returns CANCELLED (like asyncio.Condition.wait), so the caller
//   holds `mu` whatever the status. Re-acquiring is not cancellable.
// - As with every condition variable, re-check the predicate after waking
//   (another coroutine may have run first); the predicate overload does so.
// - Notify may be called with or without `mu` held. A notify with nobody
//   waiting is a no-op (not remembered). NotifyOne wakes the oldest waiter
//   (FIFO); NotifyAll wakes all, oldest first. Woken waiters are posted to
//   the executor they were waiting on (inline if they had none).
// - Cancellation: Wait(mu, stop) returns CANCELLED "cancelled" if `stop`
//   fires before a notify reaches it. A NotifyOne racing with the
//   cancellation is never lost: if the cancellation won, it wakes the next
//   waiter instead.
//
// Thread-safety: every method is safe from any thread. The condition and
// the mutex must outlive every Wait on them.
#pragma once

#include <coroutine>
#include <cstddef>
#include <stop_token>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "common/runtime/async_mutex.h"
#include "common/runtime/task.h"
#include "common/runtime/wait_queue.h"
#include "common/sync.h"

namespace taskq::rt {

class Condition {
 public:
  Condition() = default;
  ~Condition();
  Condition(const Condition&) = delete;
  Condition& operator=(const Condition&) = delete;

  // Releases `mutex` (held by the caller), waits for a notify, re-acquires
  // `mutex`. OK when notified, CANCELLED if `stop` fired first.
  Task<absl::Status> Wait(AsyncMutex& mutex, std::stop_token stop = {});

  // Waits until `pred()` (evaluated holding `mutex`) is true. OK, or
  // CANCELLED; `mutex` is held on return either way.
  template <typename Predicate>
    requires std::is_invocable_r_v<bool, Predicate&>
  Task<absl::Status> Wait(AsyncMutex& mutex, Predicate pred, std::stop_token stop = {}) {
    while (!pred()) {
      absl::Status status = co_await Wait(mutex, stop);
      if (!status.ok()) co_return status;
    }
    co_return absl::OkStatus();
  }

  void NotifyOne();
  void NotifyAll();

  size_t waiters() const;

 private:
  class WaitOp;

  mutable Mutex mu_;
  internal::WaiterQueue waiters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace taskq::rt
