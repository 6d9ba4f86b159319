#include "common/runtime/cancel.h"

namespace taskq::rt {

absl::Status CancelledError() { return absl::CancelledError("cancelled"); }
absl::Status ShutdownError() { return absl::CancelledError("scheduler shutting down"); }
absl::Status DeadlineExceededError() { return absl::DeadlineExceededError("deadline exceeded"); }

bool CancellableWait::await_suspend(std::coroutine_handle<> h) {
  if (stop_.stop_requested()) {
    // Cheap path: nothing to arm or disarm.
    (void)TryClaim();
    status_ = StopStatus();
    state_.fetch_or(kPublished, std::memory_order_acq_rel);
    return false;
  }
  handle_ = h;
  Executor* ex = CurrentExecutor();
  executor_ = ex != nullptr ? ex : fallback_;
  Arm();
  // Installed after Arm so that a stop requested meanwhile (the callback
  // then runs right here, inside emplace) finds the registration to remove.
  if (stop_.stop_possible() && !claimed()) stop_callback_.emplace(stop_, StopFn{this});
  // Whoever of {winner's Finish, this} comes second resumes the coroutine:
  // if Finish came first it saw no kSuspended and did not post, so we
  // continue inline; otherwise it posts and we must not touch *this again.
  uint8_t prev = state_.fetch_or(kSuspended, std::memory_order_acq_rel);
  return (prev & kPublished) == 0;
}

bool CancellableWait::TryClaim() {
  return (state_.fetch_or(kClaimed, std::memory_order_acq_rel) & kClaimed) == 0;
}

Resumption CancellableWait::Finish(absl::Status status) {
  status_ = std::move(status);
  // Read handle_/executor_ before publishing: once kPublished is set the
  // coroutine may resume (inline in await_suspend) and destroy *this.
  std::coroutine_handle<> h = handle_;
  Executor* ex = executor_;
  uint8_t prev = state_.fetch_or(kPublished, std::memory_order_acq_rel);
  if ((prev & kSuspended) == 0) return {};
  return Resumption(ex, h);
}

Resumption CancellableWait::Complete(absl::Status status) {
  if (!TryClaim()) return {};
  return Finish(std::move(status));
}

void CancellableWait::OnStop() {
  if (!TryClaim()) return;  // the source won; it resumes the coroutine
  Disarm();
  Finish(StopStatus()).Run();
}

absl::Status CancellableWait::TakeStatus() {
  stop_callback_.reset();
  return std::move(status_);
}

}  // namespace taskq::rt
