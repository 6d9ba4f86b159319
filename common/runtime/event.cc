#include "common/runtime/event.h"

#include "common/log.h"
#include "common/runtime/cancel.h"

namespace taskq::rt {

using internal::WaitState;

Event::~Event() {
  MutexLock lock(&mu_);
  if (!waiters_.empty()) {
    LogError("Event destroyed with %d coroutine(s) still waiting on it",
             static_cast<int>(waiters_.size()));
  }
}

void Event::Set() {
  internal::WokenList woken;
  {
    MutexLock lock(&mu_);
    set_ = true;
    woken.TakeAll(waiters_);
  }
  woken.ResumeAll();
}

void Event::Clear() {
  MutexLock lock(&mu_);
  set_ = false;
}

bool Event::is_set() const {
  MutexLock lock(&mu_);
  return set_;
}

Event::WaitOp Event::Wait(std::stop_token stop) { return WaitOp(this, std::move(stop)); }

size_t Event::waiters() const {
  MutexLock lock(&mu_);
  return waiters_.size();
}

bool Event::WaitOp::await_ready() {
  if (stop_.stop_requested()) {
    waiter_.state = WaitState::kCancelled;
    return true;
  }
  return event_->is_set();
}

bool Event::WaitOp::await_suspend(std::coroutine_handle<> h) {
  waiter_.Prepare(h, &event_->mu_);
  hook_.Arm(stop_, &waiter_);
  MutexLock lock(&event_->mu_);
  if (waiter_.state == WaitState::kCancelled) return false;
  if (event_->set_) return false;  // set since await_ready
  event_->waiters_.PushBack(&waiter_);
  return true;
}

absl::Status Event::WaitOp::await_resume() {
  hook_.Disarm();
  if (waiter_.state == WaitState::kCancelled) return CancelledError();
  return absl::OkStatus();
}

}  // namespace taskq::rt
