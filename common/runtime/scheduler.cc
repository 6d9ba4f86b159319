#include "common/runtime/scheduler.h"

#include <pthread.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace taskq::rt {
namespace {
thread_local Scheduler* current_scheduler = nullptr;
}  // namespace

namespace internal {

void ReportSpawnedError(const std::string& what, const absl::Status& status) {
  LogError("%s failed: %s", what, status.ToString());
}

void ReportSpawnedException(const std::string& what, std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    LogError("%s threw: %s", what, ex.what());
  } catch (...) {
    LogError("%s threw a non-standard exception", what);
  }
}

}  // namespace internal

Scheduler::Scheduler(SchedulerOptions options)
    : name_(std::move(options.name)),
      io_(std::make_unique<IoDriver>(IoDriverOptions{.name = name_ + "-io", .fallback = this})) {
  size_t n = options.threads > 0 ? static_cast<size_t>(options.threads)
                                 : std::max(1u, std::thread::hardware_concurrency());
  threads_.reserve(n);
  for (size_t i = 0; i < n; ++i) threads_.emplace_back([this, i] { Loop(i); });
}

Scheduler::~Scheduler() { Shutdown(); }

Scheduler* Scheduler::Current() { return current_scheduler; }

void Scheduler::Post(std::coroutine_handle<> h) {
  {
    MutexLock lock(&mu_);
    if (stopped_) {
      LogError("scheduler %s: resume posted after shutdown; dropped", name_);
      return;
    }
    ready_.push_back(h);
    // Signalled under the lock: once unlocked, the posted coroutine may run,
    // finish and let its owner destroy this scheduler before we signal.
    cv_.Signal();
  }
}

void Scheduler::Loop(size_t index) {
  std::string thread_name = absl::StrCat(name_, "-", index).substr(0, 15);
  pthread_setname_np(pthread_self(), thread_name.c_str());
  current_scheduler = this;
  internal::SetCurrentExecutor(this);
  while (true) {
    std::coroutine_handle<> h;
    {
      MutexLock lock(&mu_);
      while (ready_.empty() && !stopping_) cv_.Wait(&mu_);
      if (ready_.empty()) break;  // stopping and drained
      h = ready_.front();
      ready_.pop_front();
    }
    h.resume();
  }
  internal::SetCurrentExecutor(nullptr);
  current_scheduler = nullptr;
}

void Scheduler::Shutdown() {
  MutexLock join_lock(&join_mu_);
  if (joined_) return;
  CheckNotOnPool();
  // First the reactor: its waiters resume (cancelled) on the pool, which is
  // still running and drains them below.
  io_->Stop();
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  cv_.SignalAll();
  for (std::thread& t : threads_) t.join();
  joined_ = true;
  size_t stranded;
  {
    MutexLock lock(&mu_);
    stopped_ = true;
    stranded = ready_.size();
    ready_.clear();
  }
  if (stranded > 0) {
    LogWarning("scheduler %s: %d resume(s) posted while its last thread exited; dropped",
               name_, static_cast<int>(stranded));
  }
  if (size_t left = live_spawned(); left > 0) {
    LogWarning("scheduler %s stopped with %d spawned task(s) still suspended", name_,
               static_cast<int>(left));
  }
}

void Scheduler::CheckNotOnPool() const {
  if (current_scheduler == this) {
    LogError("scheduler %s: BlockOn/Shutdown called from its own thread (would deadlock)",
             name_);
    std::abort();
  }
}

}  // namespace taskq::rt
