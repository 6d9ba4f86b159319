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
// Run queues (the hot path, Go's and tokio's design): each pool thread has
// its own lock-free FIFO ring (run_queue.h). A Post from one of this
// scheduler's threads appends to that thread's ring; a Post from any other
// thread (the IoDriver, gRPC, BlockOn's caller, another scheduler) goes to
// one shared mutex-protected queue, as does the older half of a full ring.
// A thread runs its own ring in order, takes a batch from the shared queue
// when the ring is empty (and one handle from it every 61 resumes once that
// batch is done, so the shared queue is never starved), and otherwise
// steals the older half of another thread's ring. With nothing anywhere it
// spins briefly, then parks. Order is therefore FIFO per thread, not
// global: Yield() goes behind everything on the caller's thread's ring;
// handles posted from one outside thread run in post order on a one-thread
// scheduler.
//
// Waking parked threads: a post wakes one parked thread only if no thread
// is already searching for work, and a post from a pool thread whose ring
// was empty wakes nobody — that thread runs the handle as soon as its
// current coroutine suspends (no futex round trip for a ping-pong). So a
// coroutine that posts work and then computes for a long time without
// suspending delays that one handle; post it to another executor (or Yield)
// if it must run in parallel.
//
// Spawn: the task's own frame is detached (no wrapper coroutine); at its end
// it logs a non-OK Status/StatusOr or an exception with `what` and frees
// itself. Frames come from the per-thread frame pool (frame_pool.h).
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
#include <concepts>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstring>
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
#include "common/log.h"
#include "common/runtime/executor.h"
#include "common/runtime/frame_pool.h"
#include "common/runtime/io_driver.h"
#include "common/runtime/run_queue.h"
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
// (BlockOn's helper; Spawn needs none.)
struct Detached {
  struct promise_type : PooledFrame {
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
void ReportSpawnedError(const char* what, const absl::Status& status);
void ReportSpawnedException(const char* what, std::exception_ptr e);

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

// Spawn's description of a task, for its error log line: a string literal
// (kept as a pointer: no copy), checked at compile time. Pass a std::string
// for a computed one (copied once).
class SpawnName {
 public:
  template <size_t N>
  consteval SpawnName(const char (&literal)[N]) : text_(literal) {}  // NOLINT: implicit
  const char* text() const { return text_; }

 private:
  const char* text_;
};

class Scheduler final : public Executor {
 public:
  explicit Scheduler(SchedulerOptions options = {});
  ~Scheduler() override;
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Resumes `h` on a pool thread: FIFO behind what the posting pool thread
  // already queued, or through the shared queue from any other thread (see
  // the file comment). After Shutdown the handle is dropped (logged):
  // nothing may be posted to a stopped scheduler.
  void Post(std::coroutine_handle<> h) override;

  // Runs `task` detached on the pool. A non-OK Status/StatusOr result or an
  // exception is logged with `what`; nothing is lost silently.
  template <typename T>
  void Spawn(Task<T> task, SpawnName what = "spawned task") {
    Detach(std::move(task), what.text(), &EndSpawned<T, false>);
  }
  template <typename T, typename S>
    requires std::same_as<std::remove_cvref_t<S>, std::string>
  void Spawn(Task<T> task, S&& what) {
    char* copy = new char[what.size() + 1];
    std::memcpy(copy, what.c_str(), what.size() + 1);
    Detach(std::move(task), copy, &EndSpawned<T, true>);
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
  struct Worker;

  template <typename T>
  void Detach(Task<T> task, const char* what, void (*end)(internal::PromiseBase&) noexcept) {
    spawned_.fetch_add(1, std::memory_order_relaxed);
    typename Task<T>::Handle h = task.Release();
    if (!h) {
      LogError("Spawn(%s): empty task", what);
      spawned_.fetch_sub(1, std::memory_order_relaxed);
      return;
    }
    internal::PromiseBase& p = h.promise();
    p.detached_end = end;
    p.detached_owner = this;
    p.detached_what = what;
    Post(h);
  }

  // A spawned task's end (PromiseBase::detached_end): report, free, count.
  template <typename T, bool kOwnsWhat>
  static void EndSpawned(internal::PromiseBase& base) noexcept {
    auto& p = static_cast<internal::Promise<T>&>(base);
    const char* what = p.detached_what;
    auto* self = static_cast<Scheduler*>(p.detached_owner);
    if (p.exception) {
      internal::ReportSpawnedException(what, p.exception);
    } else if constexpr (!std::is_void_v<T>) {
      absl::Status status = internal::StatusOf(*p.value);
      if (!status.ok()) internal::ReportSpawnedError(what, status);
    }
    std::coroutine_handle<internal::Promise<T>>::from_promise(p).destroy();
    if constexpr (kOwnsWhat) delete[] what;
    self->spawned_.fetch_sub(1, std::memory_order_release);
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

  void Loop(Worker* w);
  // Appends to the calling pool thread's ring (overflow: half of it to the
  // shared queue).
  void PostLocal(Worker* w, std::coroutine_handle<> h);
  // Appends handles to the shared queue.
  void PostShared(std::coroutine_handle<> h);
  void PostSharedBatch(const std::coroutine_handle<>* hs, size_t n);
  // Up to `max` handles from the shared queue: returns the first, puts the
  // rest on w's ring (which has room for them).
  std::coroutine_handle<> TakeShared(Worker* w, size_t max);
  // The next handle for w: its ring, the shared queue, other rings.
  std::coroutine_handle<> FindWork(Worker* w);
  std::coroutine_handle<> StealOrTakeShared(Worker* w);
  bool AnyWorkVisible() const;
  // Wakes a parked thread if some are parked and none is searching.
  void Notify();
  // Parks w until woken; false once the scheduler is stopping and no work
  // is left (the thread exits).
  bool Park(Worker* w);
  void StopSearching(Worker* w);
  void CheckNotOnPool() const;

  const std::string name_;
  std::unique_ptr<IoDriver> io_;  // set by the constructor, never reset
  std::vector<std::unique_ptr<Worker>> workers_;  // written only by the constructor

  // The shared queue: posts from outside the pool and ring overflow.
  Mutex mu_;
  std::deque<std::coroutine_handle<>> shared_ ABSL_GUARDED_BY(mu_);
  std::atomic<size_t> shared_size_{0};        // shared_.size(), readable without mu_
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;  // threads joined: drop new posts

  // Parking. searching_: threads looking for work (spinning, or woken and
  // not yet running anything); a post wakes nobody while one searches.
  Mutex park_mu_;
  CondVar park_cv_;
  int parked_ ABSL_GUARDED_BY(park_mu_) = 0;
  int wake_tokens_ ABSL_GUARDED_BY(park_mu_) = 0;  // wake-ups not yet consumed
  std::atomic<int> sleepers_{0};                   // parked_, readable without park_mu_
  std::atomic<int> searching_{0};
  std::atomic<bool> stopping_{false};  // Shutdown began: drain, then exit

  std::atomic<size_t> spawned_{0};
  std::vector<std::thread> threads_;  // written only by the constructor
  Mutex join_mu_;                     // serialises Shutdown's join
  bool joined_ ABSL_GUARDED_BY(join_mu_) = false;
};

}  // namespace taskq::rt
