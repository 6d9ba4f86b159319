#include "common/runtime/semaphore.h"

#include <cstdlib>

#include "common/log.h"
#include "common/runtime/cancel.h"

namespace taskq::rt {

using internal::WaitState;

Semaphore::Semaphore(int64_t initial) : count_(initial) {
  if (initial < 0) {
    LogError("Semaphore: initial count %d is negative", initial);
    std::abort();
  }
}

Semaphore::~Semaphore() {
  MutexLock lock(&mu_);
  if (!waiters_.empty()) {
    LogError("Semaphore destroyed with %d coroutine(s) still waiting on it",
             static_cast<int>(waiters_.size()));
  }
}

Semaphore::AcquireOp Semaphore::Acquire(std::stop_token stop) {
  return AcquireOp(this, std::move(stop));
}

bool Semaphore::TryAcquire() {
  MutexLock lock(&mu_);
  if (count_ == 0) return false;
  --count_;
  return true;
}

void Semaphore::Release(int64_t n) {
  if (n < 0) {
    LogError("Semaphore::Release(%d): negative count", n);
    std::abort();
  }
  internal::WokenList woken;
  {
    MutexLock lock(&mu_);
    // Hand permits to waiters directly (oldest first) so nobody can barge in
    // between the release and the waiter running.
    for (; n > 0 && !waiters_.empty(); --n) woken.Add(waiters_.PopFront());
    count_ += n;
  }
  woken.ResumeAll();
}

int64_t Semaphore::available() const {
  MutexLock lock(&mu_);
  return count_;
}

size_t Semaphore::waiters() const {
  MutexLock lock(&mu_);
  return waiters_.size();
}

bool Semaphore::AcquireOp::await_ready() {
  if (stop_.stop_requested()) {
    waiter_.state = WaitState::kCancelled;
    return true;
  }
  return sem_->TryAcquire();
}

bool Semaphore::AcquireOp::await_suspend(std::coroutine_handle<> h) {
  waiter_.Prepare(h, &sem_->mu_);
  hook_.Arm(stop_, &waiter_);
  MutexLock lock(&sem_->mu_);
  if (waiter_.state == WaitState::kCancelled) return false;
  if (sem_->count_ > 0) {  // released since await_ready
    --sem_->count_;
    return false;
  }
  sem_->waiters_.PushBack(&waiter_);
  return true;  // from here on only the waker or the canceller touches us
}

absl::Status Semaphore::AcquireOp::await_resume() {
  hook_.Disarm();
  if (waiter_.state == WaitState::kCancelled) return CancelledError();
  return absl::OkStatus();
}

}  // namespace taskq::rt
