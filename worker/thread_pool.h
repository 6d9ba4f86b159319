// ThreadPool: a fixed number of threads running submitted jobs in FIFO
// order. The worker runs one handler per thread, so `threads` is its
// --concurrency; jobs submitted while all threads are busy wait in the queue
// (the prefetched deliveries).
//
// Thread-safety: Submit and queued() are safe from any thread, including
// from inside a job. The destructor runs the jobs still queued, then joins
// the threads; it must not be called from a pool thread.
#pragma once

#include <cstddef>
#include <deque>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/time/clock.h"  // common/sync.h uses absl::Now without including it
#include "common/sync.h"

namespace taskq {

class ThreadPool {
 public:
  explicit ThreadPool(size_t threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void Submit(absl::AnyInvocable<void() &&> job);

  size_t size() const { return threads_.size(); }
  // Jobs waiting for a free thread (not counting running ones).
  size_t queued() const;

 private:
  void Loop();

  mutable Mutex mu_;
  CondVar cv_;
  std::deque<absl::AnyInvocable<void() &&>> jobs_ ABSL_GUARDED_BY(mu_);
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;  // written only by the constructor
};

}  // namespace taskq
