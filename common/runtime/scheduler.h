// Scheduler: runs coroutines (Task<T>) on a fixed pool of threads — the
// "thread pool plus coroutine scheduler" every taskq node is built on.
//
//   rt::Scheduler sched({.threads = 4});
//   sched.Spawn(Serve(), "serve");            // detached; errors are logged
//   int v = sched.BlockOn(Compute());         // from ordinary code: run, wait
//   co_await sched.Yield();                   // let others run (gevent.sleep(0))
//   co_await rt::ScheduleOn(other_pool);      // hop to another executor
//
// The seeds' counterparts: gevent.spawn / joinall → Spawn / WhenAll,
// asyncio run_until_complete → BlockOn, greenlet.switch → symmetric transfer
// inside Task, ThreadPoolExecutor → the pool itself.
//
// Time and I/O: each Scheduler owns an IoDriver (io(); one extra thread
// running epoll), which SleepFor / WaitReadable / WaitChildExit / DeadlineStop
// use when awaited on this scheduler's threads (sleep.h, io.h,
// deadline_stop.h).
//
// Shutdown (destructor or Shutdown()): first stops the IoDriver, which wakes
// every pending sleep, fd or child wait (and every DeadlineStop's token)
// with CANCELLED "scheduler shutting down"; then stops taking new work, runs
// what is queued (including those cancelled coroutines) and joins the
// threads. A coroutine suspended on something else that never happens is
// not resumed; its owner must cancel it first (stop tokens) — Shutdown logs
// how many spawned tasks it left.
//
// Thread-safety: every method is safe from any thread, except that BlockOn
// must not be called from one of this scheduler's own threads (it would
// wait for itself) and the destructor must not run on one either.
#pragma once

#include <atomic>
#include <coroutine>
#include <cstddef>
#include <deque>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/runtime/executor.h"
#include "common/runtime/io_driver.h"
#include "common/runtime/task.h"
#include "common/sync.h"

namespace taskq::rt {

struct SchedulerOptions {
  // Pool threads; 0 = one per core (std::thread::hardware_concurrency).
  int threads = 0;
  // Thread name prefix (shown by top -H, gdb): "<name>-<i>".
  std::string name = "rt";
};

namespace internal {

// A fire-and-forget coroutine: starts suspended (so it can be posted to a
// pool) and frees its own frame when it finishes. Its body must not throw.
struct Detached {
  struct promise_type {
    Detached get_return_object() noexcept {
      return Detached{std::coroutine_handle<promise_type>::from_promise(*this)};
    }
    std::suspend_always initial_suspend() const noexcept { return {}; }
    std::suspend_never final_suspend() const noexcept { return {}; }
    void return_void() const noexcept {}
    void unhandled_exception() const noexcept { std::terminate(); }
  };
  std::coroutine_handle<promise_type> handle;
};

// Logs what a spawned task ended with, if it was an error or an exception.
void ReportSpawnedError(const std::string& what, const absl::Status& status);
void ReportSpawnedException(const std::string& what, std::exception_ptr e);

template <typename T>
absl::Status StatusOf(const T& value) {
  if constexpr (std::is_same_v<T, absl::Status>) {
    return value;
  } else if constexpr (requires { value.status(); }) {
    return value.status();
  } else {
    return absl::OkStatus();
  }
}

// Where BlockOn's caller waits for the result.
template <typename T>
struct BlockOnState {
  Mutex mu;
  CondVar cv;
  bool done ABSL_GUARDED_BY(mu) = false;
  std::optional<std::conditional_t<std::is_void_v<T>, bool, T>> value;
  std::exception_ptr exception;
};

}  // namespace internal

class Scheduler final : public Executor {
 public:
  explicit Scheduler(SchedulerOptions options = {});
  ~Scheduler() override;
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Resumes `h` on a pool thread (FIFO). After Shutdown the handle is
  // dropped (logged): nothing may be posted to a stopped scheduler.
  void Post(std::coroutine_handle<> h) override;

  // Runs `task` detached on the pool. A non-OK Status/StatusOr result or an
  // exception is logged with `what`; nothing is lost silently.
  template <typename T>
  void Spawn(Task<T> task, std::string what = "spawned task") {
    spawned_.fetch_add(1, std::memory_order_relaxed);
    internal::Detached d = RunSpawned<T>(std::move(task), this, std::move(what));
    Post(d.handle);
  }

  // Runs `task` on the pool and blocks the calling (non-pool) thread until
  // it finishes; returns its value or rethrows its exception.
  template <typename T>
  T BlockOn(Task<T> task) {
    CheckNotOnPool();
    internal::BlockOnState<T> state;
    internal::Detached d = RunBlocking<T>(std::move(task), &state);
    Post(d.handle);
    {
      MutexLock lock(&state.mu);
      while (!state.done) state.cv.Wait(&state.mu);
    }
    if (state.exception) std::rethrow_exception(state.exception);
    if constexpr (!std::is_void_v<T>) return std::move(*state.value);
  }

  // `co_await sched.Yield()`: requeue the caller behind everything already
  // waiting to run, on this scheduler.
  ScheduleOn Yield() { return ScheduleOn(*this); }

  // Stops the IoDriver (pending waits end with CANCELLED "scheduler shutting
  // down"), then the pool: runs what is queued, joins the threads. Idempotent.
  void Shutdown();

  // The reactor: timers, fd readiness, child exits. Valid until destruction.
  IoDriver& io() { return *io_; }

  // Pool threads (the IoDriver runs one more).
  size_t threads() const { return threads_.size(); }
  // Spawned tasks that have not finished yet.
  size_t live_spawned() const { return spawned_.load(std::memory_order_relaxed); }
  // The scheduler owning the calling thread, or nullptr.
  static Scheduler* Current();

 private:
  template <typename T>
  static internal::Detached RunSpawned(Task<T> task, Scheduler* self, std::string what) {
    try {
      if constexpr (std::is_void_v<T>) {
        co_await std::move(task);
      } else {
        auto result = co_await std::move(task);
        absl::Status status = internal::StatusOf(result);
        if (!status.ok()) internal::ReportSpawnedError(what, status);
      }
    } catch (...) {
      internal::ReportSpawnedException(what, std::current_exception());
    }
    self->spawned_.fetch_sub(1, std::memory_order_relaxed);
  }

  template <typename T>
  static internal::Detached RunBlocking(Task<T> task, internal::BlockOnState<T>* state) {
    try {
      if constexpr (std::is_void_v<T>) {
        co_await std::move(task);
      } else {
        state->value.emplace(co_await std::move(task));
      }
    } catch (...) {
      state->exception = std::current_exception();
    }
    MutexLock lock(&state->mu);
    state->done = true;
    state->cv.SignalAll();
  }

  void Loop(size_t index);
  void CheckNotOnPool() const;

  const std::string name_;
  std::unique_ptr<IoDriver> io_;  // set by the constructor, never reset
  Mutex mu_;
  CondVar cv_;
  std::deque<std::coroutine_handle<>> ready_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;  // Shutdown began: drain, then exit
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;   // threads joined: drop new posts
  std::atomic<size_t> spawned_{0};
  std::vector<std::thread> threads_;  // written only by the constructor
  Mutex join_mu_;                     // serialises Shutdown's join
  bool joined_ ABSL_GUARDED_BY(join_mu_) = false;
};

}  // namespace taskq::rt
