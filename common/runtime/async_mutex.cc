#include "common/runtime/async_mutex.h"

#include <cstdlib>

#include "common/log.h"
#include "common/runtime/cancel.h"

namespace taskq::rt {

using internal::WaitState;

AsyncMutex::~AsyncMutex() {
  MutexLock lock(&mu_);
  if (!waiters_.empty()) {
    LogError("AsyncMutex destroyed with %d coroutine(s) still waiting on it",
             static_cast<int>(waiters_.size()));
  }
}

AsyncMutex::LockOp AsyncMutex::Lock(std::stop_token stop) {
  return LockOp(this, std::move(stop));
}

AsyncMutex::ScopedLockOp AsyncMutex::ScopedLock() { return ScopedLockOp(this); }

AsyncMutex::CancellableScopedLockOp AsyncMutex::ScopedLock(std::stop_token stop) {
  return CancellableScopedLockOp(this, std::move(stop));
}

bool AsyncMutex::TryLock() {
  MutexLock lock(&mu_);
  if (locked_) return false;
  locked_ = true;
  return true;
}

void AsyncMutex::Unlock() {
  internal::Waiter* next = nullptr;
  {
    MutexLock lock(&mu_);
    if (!locked_) {
      LogError("AsyncMutex::Unlock on a mutex that is not locked");
      std::abort();
    }
    if (waiters_.empty()) {
      locked_ = false;
      return;
    }
    next = waiters_.PopFront();  // ownership passes to it; locked_ stays true
  }
  next->Resume();
}

bool AsyncMutex::is_locked() const {
  MutexLock lock(&mu_);
  return locked_;
}

size_t AsyncMutex::waiters() const {
  MutexLock lock(&mu_);
  return waiters_.size();
}

bool AsyncMutex::LockOp::await_ready() {
  if (stop_.stop_requested()) {
    waiter_.state = WaitState::kCancelled;
    return true;
  }
  return mutex_->TryLock();
}

bool AsyncMutex::LockOp::await_suspend(std::coroutine_handle<> h) {
  waiter_.Prepare(h, &mutex_->mu_);
  hook_.Arm(stop_, &waiter_);
  MutexLock lock(&mutex_->mu_);
  if (waiter_.state == WaitState::kCancelled) return false;
  if (!mutex_->locked_) {  // unlocked since await_ready
    mutex_->locked_ = true;
    return false;
  }
  mutex_->waiters_.PushBack(&waiter_);
  return true;
}

absl::Status AsyncMutex::LockOp::await_resume() {
  hook_.Disarm();
  if (waiter_.state == WaitState::kCancelled) return CancelledError();
  return absl::OkStatus();
}

}  // namespace taskq::rt
