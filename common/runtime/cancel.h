// Cancellation for the coroutine runtime: the statuses every wait returns,
// and CancellableWait, the helper that makes "the thing happened" and "stop
// was requested" race safely so the waiting coroutine resumes exactly once.
//
// Cancellation is C++20's std::stop_source / std::stop_token: a parent owns a
// stop_source and passes `source.get_token()` down; every runtime wait takes
// an optional `std::stop_token stop = {}` and returns CANCELLED ("cancelled")
// once the token is stopped. A deadline is a stop_source that a timer stops
// (DeadlineStop, deadline_stop.h).
//
// Writing a cancellable awaitable (timers, fds, Event, Channel, ...):
//
//   class GateWait final : public rt::CancellableWait {
//    public:
//     GateWait(Gate& g, std::stop_token stop)
//         : CancellableWait(std::move(stop), /*fallback=*/nullptr), g_(g) {}
//    private:
//     friend class Gate;                  // Gate::Open calls Complete
//     void Arm() override {               // register with the source
//       MutexLock l(&g_.mu_);
//       if (g_.open_) Complete(absl::OkStatus()).Run();  // not suspended yet: no-op Run
//       else g_.waiters_.push_back(this);
//     }
//     void Disarm() override {            // the stop won: unregister, same lock
//       MutexLock l(&g_.mu_);
//       std::erase(g_.waiters_, this);
//     }
//     Gate& g_;
//   };
//   // Gate::Open(): lock; for each waiter w: if (auto r = w->Complete(OK)) out.push_back(r);
//   //               clear the list; unlock; for (auto& r : out) std::move(r).Run();
//
// (cancel_test.cc has this Gate in full.)
//
// The contract that makes it safe (read before implementing Arm/Disarm):
//  1. The source calls Complete()/TryClaim() only while holding the lock that
//     Disarm() takes, and only on a waiter it still has registered. After
//     Disarm() returns the source must never touch the waiter again.
//  2. Disarm() must tolerate the registration being gone already (the source
//     may have dequeued the waiter and then lost the race to the stop).
//  3. Exactly one of {source, stop} wins TryClaim(); only the winner writes
//     the result (Finish) and gets the Resumption to run. Run it after
//     releasing your locks: it posts the coroutine to the executor it was on
//     when it suspended (CurrentExecutor(), else the fallback given to the
//     constructor; inline only when both are null), never resumes it on the
//     waker's thread.
//  4. A source that wakes "one" waiter (Semaphore, Channel) must keep
//     popping until a TryClaim() succeeds: a waiter that lost to its stop
//     token must not swallow the wake-up.
//  5. Never call request_stop() on a token's source while holding a lock that
//     some Disarm() takes: the stop callbacks run inline and take it too.
//
// Thread-safety: a CancellableWait is used by one coroutine (the one that
// awaits it); Complete/TryClaim/Finish may be called from any thread under
// the contract above; the stop callback may run on any thread.
#pragma once

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <optional>
#include <stop_token>
#include <utility>

#include "absl/status/status.h"
#include "common/runtime/executor.h"

namespace taskq::rt {

// CANCELLED "cancelled": what a wait returns when its stop token fires.
absl::Status CancelledError();
// CANCELLED "scheduler shutting down": what waits still pending when their
// Scheduler shuts down return.
absl::Status ShutdownError();
// DEADLINE_EXCEEDED "deadline exceeded": a wait's own deadline passed.
absl::Status DeadlineExceededError();

// A suspended coroutine to resume, and the executor to resume it on. Move-only;
// produced by the winner of a CancellableWait race, run after unlocking.
class [[nodiscard]] Resumption {
 public:
  Resumption() = default;
  Resumption(Executor* executor, std::coroutine_handle<> handle)
      : executor_(executor), handle_(handle) {}
  Resumption(Resumption&& other) noexcept
      : executor_(other.executor_), handle_(std::exchange(other.handle_, nullptr)) {}
  Resumption& operator=(Resumption&& other) noexcept {
    executor_ = other.executor_;
    handle_ = std::exchange(other.handle_, nullptr);
    return *this;
  }
  Resumption(const Resumption&) = delete;
  Resumption& operator=(const Resumption&) = delete;

  explicit operator bool() const { return handle_ != nullptr; }
  // Posts the coroutine to its executor (inline if it has none). Once.
  void Run() && {
    if (handle_) internal::ResumeOn(executor_, std::exchange(handle_, nullptr));
  }

 private:
  Executor* executor_ = nullptr;
  std::coroutine_handle<> handle_;
};

// Base of a cancellable awaitable whose result is an absl::Status. Derived
// classes implement Arm/Disarm (see the contract above) and may hide
// await_resume to return something richer (call TakeStatus()).
//
// Cost: two or three atomic RMWs per wait, plus a std::stop_callback
// registration (a lock-free list push/pop on the token's state) when the
// token can be stopped.
class CancellableWait {
 public:
  // `fallback`: where to resume if the coroutine suspends on a thread no
  // executor owns (nullptr: resume inline on the waker's thread).
  CancellableWait(std::stop_token stop, Executor* fallback)
      : stop_(std::move(stop)), fallback_(fallback) {}
  virtual ~CancellableWait() = default;
  CancellableWait(const CancellableWait&) = delete;
  CancellableWait& operator=(const CancellableWait&) = delete;

  bool await_ready() const noexcept { return false; }
  // Returns false (continue without suspending) if the wait finished while
  // it was being armed.
  bool await_suspend(std::coroutine_handle<> h);
  absl::Status await_resume() { return TakeStatus(); }

 protected:
  // Registers with the event source. Called once, from await_suspend on the
  // awaiting thread, before the stop callback is installed. The source may
  // Complete() this wait at once (even inside Arm, then the coroutine just
  // continues without suspending) or later from any thread.
  virtual void Arm() = 0;
  // Called at most once, by the stop path after it won TryClaim() (possibly
  // inside await_suspend, possibly on the thread that requested stop):
  // remove the registration, synchronising with the source through its lock.
  virtual void Disarm() = 0;
  // The status the stop path records. Default: CancelledError().
  virtual absl::Status StopStatus() const { return CancelledError(); }

  // Claims the wait: true for exactly one caller over the wait's life.
  bool TryClaim();
  // After a successful TryClaim: records `status` and returns what to run
  // to resume the coroutine (empty if it has not suspended yet; then
  // await_suspend continues it inline).
  Resumption Finish(absl::Status status);
  // TryClaim() + Finish(status); empty if the claim was lost.
  Resumption Complete(absl::Status status);
  bool claimed() const { return state_.load(std::memory_order_acquire) & kClaimed; }

  // The recorded outcome; for derived await_resume. Also drops the stop
  // callback (waiting for it if it is running on another thread).
  absl::Status TakeStatus();

 private:
  static constexpr uint8_t kClaimed = 1;    // someone won the race
  static constexpr uint8_t kPublished = 2;  // the winner wrote status_
  static constexpr uint8_t kSuspended = 4;  // await_suspend decided to suspend

  void OnStop();
  struct StopFn {
    CancellableWait* self;
    void operator()() const noexcept { self->OnStop(); }
  };

  std::stop_token stop_;
  Executor* const fallback_;
  std::coroutine_handle<> handle_;  // written before Arm, read by the winner
  Executor* executor_ = nullptr;    // idem
  absl::Status status_;             // written by the winner only
  std::atomic<uint8_t> state_{0};
  // Last member: destroyed first, so a concurrently running OnStop (which
  // the destructor waits for) never sees a dead object.
  std::optional<std::stop_callback<StopFn>> stop_callback_;
};

}  // namespace taskq::rt
