// ThreadPool: a fixed number of threads running submitted jobs in FIFO
// order, and an rt::Executor, so a coroutine can hop onto it with
// `co_await rt::ScheduleOn(pool)`. The worker runs its synchronous
// (CPU-bound) handlers here: `threads` is its --threads.
//
// Thread-safety: Submit, Post and queued() are safe from any thread,
// including from inside a job. The destructor runs the jobs still queued,
// then joins the threads; it must not be called from a pool thread.
#pragma once

#include <coroutine>
#include <cstddef>
#include <deque>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/time/clock.h"  // common/sync.h uses absl::Now without including it
#include "common/runtime/executor.h"
#include "common/sync.h"

namespace taskq {

class ThreadPool final : public rt::Executor {
 public:
  // `name`: thread name prefix shown by top -H ("<name>-<i>", 15 chars max).
  explicit ThreadPool(size_t threads, std::string name = "pool");
  ~ThreadPool() override;
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void Submit(absl::AnyInvocable<void() &&> job);
  // rt::Executor: resumes `h` on a pool thread.
  void Post(std::coroutine_handle<> h) override;

  size_t size() const { return threads_.size(); }
  // Jobs waiting for a free thread (not counting running ones).
  size_t queued() const;

 private:
  void Loop(size_t index);

  const std::string name_;
  mutable Mutex mu_;
  CondVar cv_;
  std::deque<absl::AnyInvocable<void() &&>> jobs_ ABSL_GUARDED_BY(mu_);
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;  // written only by the constructor
};

}  // namespace taskq
