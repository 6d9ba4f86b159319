#include "worker/thread_pool.h"

#include <pthread.h>

#include <utility>

#include "absl/strings/str_cat.h"

namespace taskq {

ThreadPool::ThreadPool(size_t threads, std::string name) : name_(std::move(name)) {
  if (threads == 0) threads = 1;
  threads_.reserve(threads);
  for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this, i] { Loop(i); });
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

void ThreadPool::Post(std::coroutine_handle<> h) {
  Submit([h] { h.resume(); });
}

size_t ThreadPool::queued() const {
  MutexLock lock(&mu_);
  return jobs_.size();
}

void ThreadPool::Loop(size_t index) {
  std::string thread_name = absl::StrCat(name_, "-", index).substr(0, 15);
  ::pthread_setname_np(::pthread_self(), thread_name.c_str());
  // Coroutines that suspend here (e.g. a handler's hop back home) know
  // where they were.
  rt::internal::SetCurrentExecutor(this);
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
