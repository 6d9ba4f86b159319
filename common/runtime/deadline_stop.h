// DeadlineStop: a std::stop_source that a timer stops at a deadline (and
// that also stops when a parent token does) — how a deadline is passed to
// any cancellable wait in the runtime:
//
//   rt::DeadlineStop ds(absl::Now() + absl::Seconds(5), parent_stop);
//   absl::Status s = co_await channel.Receive(ds.token());   // any wait
//   s = ds.Translate(std::move(s));   // CANCELLED by the deadline -> DEADLINE_EXCEEDED
//
// The deadline follows the monotonic clock like every runtime timer (see
// sleep.h). A deadline already passed stops the token in the constructor.
// When the scheduler shuts down first, the token is stopped too (and
// Translate gives ShutdownError()), so waits on it do not strand the
// shutdown.
//
// Thread-safety: token(), cause() and Translate() are safe from any thread.
// Construct and destroy it on one thread (usually inside the coroutine that
// awaits with it); the destructor waits for a deadline callback that is
// running on the driver thread at that moment, so captures never dangle.
// Costs: one callback Timer (O(log n) insert/cancel) plus one stop_callback
// on the parent; firing runs the token's stop callbacks on the driver thread.
#pragma once

#include <atomic>
#include <optional>
#include <stop_token>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/runtime/io_driver.h"
#include "common/runtime/scheduler.h"

namespace taskq::rt {

class DeadlineStop {
 public:
  enum class Cause { kNone, kDeadline, kParent, kShutdown };

  // Uses the calling pool thread's scheduler (Scheduler::Current()); called
  // on a thread no Scheduler owns it logs an error and aborts: pass one.
  explicit DeadlineStop(absl::Time deadline, std::stop_token parent = {});
  DeadlineStop(Scheduler& sched, absl::Time deadline, std::stop_token parent = {});
  DeadlineStop(IoDriver& io, absl::Time deadline, std::stop_token parent = {});
  ~DeadlineStop() = default;  // members cancel the timer and the parent link first
  DeadlineStop(const DeadlineStop&) = delete;
  DeadlineStop& operator=(const DeadlineStop&) = delete;

  std::stop_token token() const { return source_.get_token(); }
  bool stop_requested() const { return source_.stop_requested(); }
  // What stopped the token first (kNone while it is not stopped).
  Cause cause() const { return cause_.load(std::memory_order_acquire); }
  // `status` unchanged, except CANCELLED caused by this object's deadline
  // becomes DeadlineExceededError() (by shutdown: ShutdownError()).
  absl::Status Translate(absl::Status status) const;

 private:
  struct ParentFn {
    DeadlineStop* self;
    void operator()() const noexcept { self->StopFor(Cause::kParent); }
  };
  void StopFor(Cause cause);

  std::stop_source source_;  // first: outlives the timer and the parent link
  std::atomic<Cause> cause_{Cause::kNone};
  std::optional<std::stop_callback<ParentFn>> parent_link_;
  std::optional<IoDriver::Timer> timer_;
};

}  // namespace taskq::rt
