// Task<T>: a lazily started, awaitable C++20 coroutine that produces a T.
//
// The C++ form of the seeds' generators-with-send and asyncio coroutines:
//
//   rt::Task<int> Square(int n) { co_return n * n; }
//   rt::Task<absl::Status> Job() {
//     int x = co_await Square(7);          // runs Square to completion
//     co_return absl::OkStatus();
//   }
//
// - Lazy: nothing runs until the Task is awaited (or handed to
//   Scheduler::Spawn / BlockOn). A Task dropped unawaited never ran, so no
//   work and no error is lost silently.
// - Errors: return absl::Status / absl::StatusOr<T> for expected failures.
//   An exception thrown inside the coroutine is captured and rethrown to the
//   awaiter at `co_await`, so it reaches whoever waits (Spawn logs it).
// - Symmetric transfer: awaiting a Task and finishing one are tail calls
//   between coroutine frames, so a chain of a million nested awaits does not
//   grow the thread's stack.
// - A Task runs on whatever thread resumes it; it hops threads only through
//   explicit awaits (Scheduler::Yield, ScheduleOn, timers, I/O, primitives).
// - Frames come from the runtime's frame pool (frame_pool.h): a per-thread
//   free list per size class, not malloc, on the hot path.
// - Detached (Scheduler::Spawn): the task's own frame reports its outcome
//   and frees itself at its end (PromiseBase::detached_end); no wrapper
//   coroutine.
//
// Thread-safety: a Task object is owned by one place at a time (move-only);
// awaiting it from two coroutines is a bug. The frame itself is touched by
// one thread at a time by construction.
#pragma once

#include <coroutine>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

#include "common/runtime/frame_pool.h"

namespace taskq::rt {

template <typename T = void>
class Task;

namespace internal {

struct PromiseBase;

// When a Task's coroutine finishes, resume whoever awaited it; a detached
// task instead reports its outcome and frees its frame.
struct FinalAwaiter {
  bool await_ready() const noexcept { return false; }
  template <typename Promise>
  std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> done) noexcept;
  void await_resume() const noexcept {}
};

struct PromiseBase : PooledFrame {
  std::coroutine_handle<> continuation = std::noop_coroutine();
  std::exception_ptr exception;
  // Set by Scheduler::Spawn, which owns nothing afterwards: called when the
  // detached task finishes, with its promise; it reports the outcome (the
  // value's status or the exception), destroys the frame and tells the
  // scheduler. detached_owner / detached_what are its context.
  void (*detached_end)(PromiseBase& promise) noexcept = nullptr;
  void* detached_owner = nullptr;
  const char* detached_what = nullptr;

  std::suspend_always initial_suspend() const noexcept { return {}; }
  FinalAwaiter final_suspend() const noexcept { return {}; }
  void unhandled_exception() noexcept { exception = std::current_exception(); }
  void RethrowIfFailed() const {
    if (exception) std::rethrow_exception(exception);
  }
};

template <typename T>
struct Promise : PromiseBase {
  std::optional<T> value;

  Task<T> get_return_object() noexcept;
  template <typename U>
    requires std::is_convertible_v<U&&, T>
  void return_value(U&& v) {
    value.emplace(std::forward<U>(v));
  }
  T TakeResult() {
    RethrowIfFailed();
    return std::move(*value);
  }
};

template <>
struct Promise<void> : PromiseBase {
  Task<void> get_return_object() noexcept;
  void return_void() const noexcept {}
  void TakeResult() const { RethrowIfFailed(); }
};

}  // namespace internal

template <typename T>
class [[nodiscard]] Task {
 public:
  using promise_type = internal::Promise<T>;
  using Handle = std::coroutine_handle<promise_type>;
  using value_type = T;

  Task() = default;
  explicit Task(Handle h) noexcept : handle_(h) {}
  Task(Task&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  Task& operator=(Task&& other) noexcept {
    if (this != &other) {
      Reset();
      handle_ = std::exchange(other.handle_, nullptr);
    }
    return *this;
  }
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;
  ~Task() { Reset(); }

  bool valid() const { return handle_ != nullptr; }

  // `co_await std::move(task)` (or `co_await Make()`): starts the task and
  // suspends the awaiter until it finishes; yields its value or rethrows.
  auto operator co_await() && noexcept {
    struct Awaiter {
      Handle handle;
      bool await_ready() const noexcept { return !handle || handle.done(); }
      std::coroutine_handle<> await_suspend(std::coroutine_handle<> awaiter) noexcept {
        handle.promise().continuation = awaiter;
        return handle;  // symmetric transfer into the task
      }
      T await_resume() { return handle.promise().TakeResult(); }
    };
    return Awaiter{handle_};
  }

  // For runtime internals (Spawn, BlockOn, WhenAll): gives up ownership.
  Handle Release() noexcept { return std::exchange(handle_, nullptr); }

 private:
  void Reset() {
    if (handle_) handle_.destroy();
    handle_ = nullptr;
  }
  Handle handle_ = nullptr;
};

namespace internal {
template <typename Promise>
std::coroutine_handle<> FinalAwaiter::await_suspend(std::coroutine_handle<Promise> done) noexcept {
  PromiseBase& p = done.promise();
  if (p.detached_end != nullptr) {
    p.detached_end(p);  // destroys the frame: touch nothing of it afterwards
    return std::noop_coroutine();
  }
  return p.continuation;
}

template <typename T>
Task<T> Promise<T>::get_return_object() noexcept {
  return Task<T>(std::coroutine_handle<Promise<T>>::from_promise(*this));
}
inline Task<void> Promise<void>::get_return_object() noexcept {
  return Task<void>(std::coroutine_handle<Promise<void>>::from_promise(*this));
}
}  // namespace internal

}  // namespace taskq::rt
