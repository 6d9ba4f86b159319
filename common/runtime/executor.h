// Executor: something that resumes coroutines on its own threads, and the
// awaitables that move a coroutine onto one.
//
// Async primitives (timers, I/O, Event, Channel, ...) resume a waiting
// coroutine by posting it to the executor it was running on when it
// suspended (CurrentExecutor()), never inline on the waker's thread: the
// waker may hold a lock or be a timer thread, and inline resumption would
// run arbitrary code there.
//
// Thread-safety: Post is safe from any thread. CurrentExecutor reads a
// thread-local.
#pragma once

#include <coroutine>

namespace taskq::rt {

class Executor {
 public:
  virtual ~Executor() = default;
  // Resumes `h` later on one of this executor's threads.
  virtual void Post(std::coroutine_handle<> h) = 0;
};

// The executor whose thread is running the caller, or nullptr on a thread
// no executor owns (main, gRPC's threads, ...).
Executor* CurrentExecutor();

namespace internal {
// Marks the calling thread as owned by `ex` (nullptr: owned by none).
// Executors call this on their threads.
void SetCurrentExecutor(Executor* ex);

// Resumes `h` on `ex`, or inline on this thread if `ex` is null.
inline void ResumeOn(Executor* ex, std::coroutine_handle<> h) {
  if (ex != nullptr) {
    ex->Post(h);
  } else {
    h.resume();
  }
}
}  // namespace internal

// `co_await ScheduleOn(pool)`: continue on one of `pool`'s threads, e.g. to
// move CPU-bound work off an I/O executor (the seeds' run_in_executor).
class ScheduleOn {
 public:
  explicit ScheduleOn(Executor& ex) : ex_(ex) {}
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) const { ex_.Post(h); }
  void await_resume() const noexcept {}

 private:
  Executor& ex_;
};

}  // namespace taskq::rt
