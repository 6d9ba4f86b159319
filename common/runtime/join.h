// Internal: the machinery behind WhenAll / WhenAny / AsCompleted — child
// coroutines that run the caller's tasks concurrently and report to a
// JoinState living in the parent's frame.
//
// Each child is a JoinChild coroutine that awaits one Task, stores its value
// or exception, and as its last step tells the JoinState. The parent starts
// the children (posted to its executor, so they run concurrently on the
// pool; inline if it has none), then suspends until enough of them have
// finished. The parent owns the children's frames and destroys them only
// after every child finished, so no child outlives the call (structured
// concurrency).
//
// Thread-safety: JoinState is shared by the parent and every child, which
// may run on different threads; its state is under its own taskq::Mutex.
#pragma once

#include <coroutine>
#include <cstddef>
#include <exception>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "common/runtime/executor.h"
#include "common/runtime/task.h"
#include "common/sync.h"

namespace taskq::rt::internal {

class JoinState;

// What a child's task produced: its value (std::monostate for void).
template <typename T>
using JoinValue = std::conditional_t<std::is_void_v<T>, std::monostate, T>;

// A child coroutine: starts suspended, reports to its JoinState when done
// and stays suspended at its end until its owner destroys it.
class JoinChild {
 public:
  struct promise_type;
  using Handle = std::coroutine_handle<promise_type>;

  struct FinalAwaiter {
    bool await_ready() const noexcept { return false; }
    std::coroutine_handle<> await_suspend(Handle h) noexcept;
    void await_resume() const noexcept {}
  };

  struct promise_type : PooledFrame {
    JoinState* state = nullptr;
    size_t index = 0;

    JoinChild get_return_object() noexcept { return JoinChild(Handle::from_promise(*this)); }
    std::suspend_always initial_suspend() const noexcept { return {}; }
    FinalAwaiter final_suspend() const noexcept { return {}; }
    void return_void() const noexcept {}
    void unhandled_exception() const noexcept { std::terminate(); }  // bodies catch all
  };

  explicit JoinChild(Handle h) noexcept : handle_(h) {}
  JoinChild(JoinChild&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  JoinChild& operator=(JoinChild&&) = delete;
  JoinChild(const JoinChild&) = delete;
  ~JoinChild() {
    if (handle_) handle_.destroy();
  }

  Handle handle() const { return handle_; }

 private:
  Handle handle_;
};

class JoinState {
 public:
  static constexpr size_t kNone = static_cast<size_t>(-1);

  explicit JoinState(size_t children) : errors_(children) {}
  JoinState(const JoinState&) = delete;
  JoinState& operator=(const JoinState&) = delete;

  // Binds `children` to this state, starts them, and returns an awaitable
  // that resumes the caller once `count` of them have finished.
  class Waiting;
  Waiting StartAndWaitFor(std::vector<JoinChild>* children, size_t count);
  // Resumes the caller once `count` children have finished.
  Waiting WaitFor(size_t count);

  // A child's exception (the body stores it before finishing).
  void SetError(size_t index, std::exception_ptr e) { errors_[index] = std::move(e); }
  // After all finished (no lock needed then).
  const std::exception_ptr& error(size_t index) const { return errors_[index]; }
  // The first child that finished, or kNone.
  size_t first_finished() const;
  // Rethrows the exception of the child that failed first (in finishing
  // order); logs the others as `what` (nothing is lost silently). Call after
  // every child finished.
  void RethrowFirstError(const char* what) const;
  // Logs child `index`'s exception, if any, as `what`.
  void LogChildError(size_t index, const char* what) const;

  // Called by a child's final awaiter: returns what to run next (the parent
  // if this was the awaited finish and it may continue on this thread).
  std::coroutine_handle<> ChildFinished(size_t index);

 private:
  // Written by exactly one child each before ChildFinished; read by the
  // parent after every child finished (ordered by mu_).
  std::vector<std::exception_ptr> errors_;

  mutable Mutex mu_;
  size_t finished_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<size_t> order_ ABSL_GUARDED_BY(mu_);  // finishing order
  std::coroutine_handle<> parent_ ABSL_GUARDED_BY(mu_);  // set while it waits
  Executor* parent_executor_ ABSL_GUARDED_BY(mu_) = nullptr;
  size_t wanted_ ABSL_GUARDED_BY(mu_) = 0;  // the parent resumes at this many
};

class [[nodiscard]] JoinState::Waiting {
 public:
  Waiting(JoinState* state, std::vector<JoinChild>* to_start, size_t count)
      : state_(state), to_start_(to_start), count_(count) {}
  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> parent);
  void await_resume() const noexcept {}

 private:
  JoinState* const state_;
  std::vector<JoinChild>* const to_start_;  // null: only wait
  const size_t count_;
};

// The body of a child: runs `task`, keeps its value in `*slot` or its
// exception in the JoinState.
template <typename T>
JoinChild RunJoinChild(Task<T> task, std::optional<JoinValue<T>>* slot, JoinState* state,
                       size_t index) {
  try {
    if constexpr (std::is_void_v<T>) {
      co_await std::move(task);
      slot->emplace();
    } else {
      slot->emplace(co_await std::move(task));
    }
  } catch (...) {
    state->SetError(index, std::current_exception());
  }
}

// "what()" of an exception, for logs.
std::string DescribeException(const std::exception_ptr& e);

}  // namespace taskq::rt::internal
