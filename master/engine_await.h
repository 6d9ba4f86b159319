// Awaitable forms of the QueueEngine's waiting calls, so a master RPC
// handler written as a coroutine (common/grpc_coro.h) can write
//
//   auto tasks = co_await AwaitGet(engine, std::move(args), stop, &scheduler);
//
// and be a suspended coroutine — no thread — while the queue is empty.
//
// The engine finishes a wait exactly once, from whichever thread makes its
// condition true (or its timer). The awaiting coroutine is resumed on
// `resume_on` (the master's scheduler) rather than on that thread, so a put
// that wakes a thousand getters does not run their handlers itself; a wait
// that completes inside the call resumes at once without a hop. A stop
// request (the client cancelled) cancels the engine wait, which then
// completes with CANCELLED: a cancelled long-poll never takes a task.
//
// Thread-safety: one awaiter per wait; the engine callback, the stop
// callback and the coroutine hand over through atomics.
#pragma once

#include <atomic>
#include <coroutine>
#include <optional>
#include <stop_token>
#include <utility>

#include "absl/functional/any_invocable.h"
#include "common/runtime/executor.h"
#include "master/queue_engine.h"

namespace taskq {

template <typename Result>
class EngineWait {
 public:
  // Starts the engine call with the given completion callback; returns its
  // WaitId (0 = finished already).
  using StartFn = absl::AnyInvocable<WaitId(absl::AnyInvocable<void(Result)>)>;

  EngineWait(QueueEngine& engine, StartFn start, std::stop_token stop, rt::Executor* resume_on)
      : engine_(engine), start_(std::move(start)), stop_(std::move(stop)),
        resume_on_(resume_on) {}

  bool await_ready() const noexcept { return false; }

  bool await_suspend(std::coroutine_handle<> h) {
    handle_ = h;
    if (stop_.stop_possible()) on_stop_.emplace(stop_, StopCallback{this});
    WaitId id = start_([this](Result result) {
      result_.emplace(std::move(result));
      if (phase_.exchange(kDone, std::memory_order_acq_rel) == kSuspended) {
        rt::internal::ResumeOn(resume_on_, handle_);
      }
    });
    wait_id_.store(id, std::memory_order_seq_cst);
    // A stop that raced with start saw no id yet; cancel on its behalf.
    if (id != 0 && cancel_requested_.load(std::memory_order_seq_cst)) engine_.CancelWait(id);
    return phase_.exchange(kSuspended, std::memory_order_acq_rel) != kDone;
  }

  Result await_resume() {
    on_stop_.reset();  // waits out a stop callback running on another thread
    return std::move(*result_);
  }

 private:
  struct StopCallback {
    EngineWait* self;
    void operator()() const {
      self->cancel_requested_.store(true, std::memory_order_seq_cst);
      WaitId id = self->wait_id_.load(std::memory_order_seq_cst);
      if (id != 0) self->engine_.CancelWait(id);
    }
  };
  enum Phase { kStarting, kSuspended, kDone };

  QueueEngine& engine_;
  StartFn start_;
  std::stop_token stop_;
  rt::Executor* const resume_on_;
  std::coroutine_handle<> handle_;
  std::optional<Result> result_;
  std::atomic<int> phase_{kStarting};
  std::atomic<WaitId> wait_id_{0};
  std::atomic<bool> cancel_requested_{false};
  std::optional<std::stop_callback<StopCallback>> on_stop_;
};

namespace internal {
template <typename Callback>
struct CallbackArg;
template <typename A>
struct CallbackArg<absl::AnyInvocable<void(A)>> {
  using type = A;
};
}  // namespace internal

// What the engine's Put and Get callbacks receive.
using PutOutcome = internal::CallbackArg<PutCallback>::type;
using GetOutcome = internal::CallbackArg<GetCallback>::type;

inline EngineWait<PutOutcome> AwaitPut(QueueEngine& engine, PutArgs args, std::stop_token stop,
                                      rt::Executor* resume_on) {
  return EngineWait<PutOutcome>(
      engine,
      [&engine, args = std::move(args)](absl::AnyInvocable<void(PutOutcome)> done) mutable {
        return engine.Put(std::move(args), std::move(done));
      },
      std::move(stop), resume_on);
}

inline EngineWait<GetOutcome> AwaitGet(QueueEngine& engine, GetArgs args, std::stop_token stop,
                                      rt::Executor* resume_on) {
  return EngineWait<GetOutcome>(
      engine,
      [&engine, args = std::move(args)](absl::AnyInvocable<void(GetOutcome)> done) mutable {
        return engine.Get(std::move(args), std::move(done));
      },
      std::move(stop), resume_on);
}

inline EngineWait<absl::Status> AwaitJoin(QueueEngine& engine, std::string queue,
                                          absl::Time deadline, std::stop_token stop,
                                          rt::Executor* resume_on) {
  return EngineWait<absl::Status>(
      engine,
      [&engine, queue = std::move(queue), deadline](
          absl::AnyInvocable<void(absl::Status)> done) mutable {
        return engine.Join(queue, deadline, std::move(done));
      },
      std::move(stop), resume_on);
}

}  // namespace taskq
