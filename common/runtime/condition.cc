#include "common/runtime/condition.h"

#include "common/log.h"
#include "common/runtime/cancel.h"

namespace taskq::rt {

using internal::WaitState;

// Queues the caller on the condition and only then releases the mutex, so a
// notify issued by whoever takes the mutex next cannot be missed.
class [[nodiscard]] Condition::WaitOp {
 public:
  struct Result {
    absl::Status status;
    bool released;  // the mutex was released and must be re-acquired
  };

  WaitOp(Condition* cond, AsyncMutex* mutex, std::stop_token stop)
      : cond_(cond), mutex_(mutex), stop_(std::move(stop)) {}
  WaitOp(const WaitOp&) = delete;
  WaitOp& operator=(const WaitOp&) = delete;

  bool await_ready() {
    if (!stop_.stop_requested()) return false;
    waiter_.state = WaitState::kCancelled;  // cancelled before releasing
    return true;
  }

  bool await_suspend(std::coroutine_handle<> h) {
    waiter_.Prepare(h, &cond_->mu_);
    hook_.Arm(stop_, &waiter_);
    AsyncMutex* mutex = mutex_;  // `this` may be gone once we are queued
    {
      MutexLock lock(&cond_->mu_);
      if (waiter_.state == WaitState::kCancelled) return false;  // still holding
      released_ = true;
      cond_->waiters_.PushBack(&waiter_);
    }
    // We may already have been notified and resumed elsewhere; that
    // coroutine then queues on `mutex` behind us and this Unlock hands it
    // over.
    mutex->Unlock();
    return true;
  }

  Result await_resume() {
    hook_.Disarm();
    if (waiter_.state == WaitState::kCancelled) {
      return {CancelledError(), released_};
    }
    return {absl::OkStatus(), released_};
  }

 private:
  Condition* const cond_;
  AsyncMutex* const mutex_;
  const std::stop_token stop_;
  internal::Waiter waiter_;
  internal::CancelHook hook_;
  bool released_ = false;
};

Condition::~Condition() {
  MutexLock lock(&mu_);
  if (!waiters_.empty()) {
    LogError("Condition destroyed with %d coroutine(s) still waiting on it",
             static_cast<int>(waiters_.size()));
  }
}

Task<absl::Status> Condition::Wait(AsyncMutex& mutex, std::stop_token stop) {
  WaitOp::Result result = co_await WaitOp(this, &mutex, std::move(stop));
  if (result.released) {
    // Not cancellable: the caller must hold the mutex when Wait returns.
    (void)co_await mutex.Lock();
  }
  co_return result.status;
}

void Condition::NotifyOne() {
  internal::Waiter* woken = nullptr;
  {
    MutexLock lock(&mu_);
    if (waiters_.empty()) return;
    woken = waiters_.PopFront();
  }
  woken->Resume();
}

void Condition::NotifyAll() {
  internal::WokenList woken;
  {
    MutexLock lock(&mu_);
    woken.TakeAll(waiters_);
  }
  woken.ResumeAll();
}

size_t Condition::waiters() const {
  MutexLock lock(&mu_);
  return waiters_.size();
}

}  // namespace taskq::rt
