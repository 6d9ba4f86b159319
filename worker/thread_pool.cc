#include "worker/thread_pool.h"

#include <utility>

namespace taskq {

ThreadPool::ThreadPool(size_t threads) {
  if (threads == 0) threads = 1;
  threads_.reserve(threads);
  for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { Loop(); });
}

ThreadPool::~ThreadPool() {
  {
    MutexLock lock(&mu_);
    shutting_down_ = true;
    cv_.SignalAll();
  }
  for (auto& t : threads_) t.join();
}

void ThreadPool::Submit(absl::AnyInvocable<void() &&> job) {
  MutexLock lock(&mu_);
  jobs_.push_back(std::move(job));
  cv_.Signal();
}

size_t ThreadPool::queued() const {
  MutexLock lock(&mu_);
  return jobs_.size();
}

void ThreadPool::Loop() {
  for (;;) {
    absl::AnyInvocable<void() &&> job;
    {
      MutexLock lock(&mu_);
      while (jobs_.empty() && !shutting_down_) cv_.Wait(&mu_);
      if (jobs_.empty()) return;  // shutting down and nothing left to run
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    std::move(job)();
  }
}

}  // namespace taskq
