// Sleeping coroutines: SleepFor / SleepUntil suspend the caller on its
// scheduler's IoDriver timer queue without holding a thread.
//
//   absl::Status s = co_await rt::SleepFor(absl::Milliseconds(100));
//   if (!s.ok()) co_return s;                       // CANCELLED: stopped / shutdown
//   co_await rt::SleepUntil(deadline, stop_token);  // OK at the deadline
//
// Result: OK when the time has come; CANCELLED "cancelled" if `stop` fired
// first; CANCELLED "scheduler shutting down" if the scheduler shut down
// first; FAILED_PRECONDITION if the overload without a Scheduler/IoDriver is
// awaited on a thread no Scheduler owns. A duration <= 0 (or a deadline
// already passed) completes at once without suspending: use
// Scheduler::Yield() to let others run.
//
// Clock: timers follow the monotonic clock (steady_clock). SleepUntil
// converts its wall-clock deadline once, when it is awaited, as
// "remaining = deadline - absl::Now()"; a later wall-clock step does not move
// it. SleepUntil(absl::InfiniteFuture()) waits for `stop` or shutdown only.
//
// The coroutine resumes on the executor it suspended on (posted by the
// driver thread), so a sleep may hop between the pool's threads.
//
// Spell it rt::SleepFor: an unqualified SleepFor(absl::Duration) also finds
// absl::SleepFor (the blocking one) by argument-dependent lookup and is
// ambiguous.
//
// Thread-safety: the functions are safe from any thread; each returned
// awaiter is awaited once, by the coroutine that created it.
// Costs: one TimerQueue insert (O(log n) under the driver mutex) and one
// Executor::Post when it fires; no thread is held while sleeping.
#pragma once

#include <stop_token>

#include "absl/time/time.h"
#include "common/runtime/io_driver.h"
#include "common/runtime/scheduler.h"

namespace taskq::rt {

// The driver of the calling pool thread's Scheduler, or nullptr.
IoDriver* CurrentIoDriver();

SleepAwaiter SleepFor(absl::Duration d, std::stop_token stop = {});
SleepAwaiter SleepFor(IoDriver& io, absl::Duration d, std::stop_token stop = {});
SleepAwaiter SleepFor(Scheduler& sched, absl::Duration d, std::stop_token stop = {});

SleepAwaiter SleepUntil(absl::Time deadline, std::stop_token stop = {});
SleepAwaiter SleepUntil(IoDriver& io, absl::Time deadline, std::stop_token stop = {});
SleepAwaiter SleepUntil(Scheduler& sched, absl::Time deadline, std::stop_token stop = {});

}  // namespace taskq::rt
