#include "common/runtime/deadline_stop.h"

#include <cstdlib>
#include <utility>

#include "absl/time/clock.h"
#include "common/log.h"

namespace taskq::rt {
namespace {

IoDriver& CurrentIoOrDie() {
  Scheduler* sched = Scheduler::Current();
  if (sched == nullptr) {
    LogError("DeadlineStop constructed off a scheduler thread: pass the Scheduler or IoDriver");
    std::abort();
  }
  return sched->io();
}

}  // namespace

DeadlineStop::DeadlineStop(absl::Time deadline, std::stop_token parent)
    : DeadlineStop(CurrentIoOrDie(), deadline, std::move(parent)) {}

DeadlineStop::DeadlineStop(Scheduler& sched, absl::Time deadline, std::stop_token parent)
    : DeadlineStop(sched.io(), deadline, std::move(parent)) {}

DeadlineStop::DeadlineStop(IoDriver& io, absl::Time deadline, std::stop_token parent) {
  if (parent.stop_possible()) parent_link_.emplace(std::move(parent), ParentFn{this});
  if (source_.stop_requested()) return;  // the parent was already stopped
  if (deadline <= absl::Now()) {
    StopFor(Cause::kDeadline);
    return;
  }
  if (deadline == absl::InfiniteFuture()) return;
  timer_.emplace(io, deadline, [this](absl::Status status) {
    StopFor(status.ok() ? Cause::kDeadline : Cause::kShutdown);
  });
}

void DeadlineStop::StopFor(Cause cause) {
  Cause none = Cause::kNone;
  // The first cause wins and is recorded before the stop callbacks run, so
  // a coroutine they resume sees it in Translate().
  if (cause_.compare_exchange_strong(none, cause, std::memory_order_acq_rel)) {
    source_.request_stop();
  }
}

absl::Status DeadlineStop::Translate(absl::Status status) const {
  if (!absl::IsCancelled(status)) return status;
  switch (cause()) {
    case Cause::kDeadline:
      return DeadlineExceededError();
    case Cause::kShutdown:
      return ShutdownError();
    default:
      return status;
  }
}

}  // namespace taskq::rt
