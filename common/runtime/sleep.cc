#include "common/runtime/sleep.h"

#include <utility>

namespace taskq::rt {

IoDriver* CurrentIoDriver() {
  Scheduler* sched = Scheduler::Current();
  return sched != nullptr ? &sched->io() : nullptr;
}

SleepAwaiter SleepFor(absl::Duration d, std::stop_token stop) {
  return SleepAwaiter(CurrentIoDriver(), MonotonicAfter(d), std::move(stop));
}
SleepAwaiter SleepFor(IoDriver& io, absl::Duration d, std::stop_token stop) {
  return SleepAwaiter(&io, MonotonicAfter(d), std::move(stop));
}
SleepAwaiter SleepFor(Scheduler& sched, absl::Duration d, std::stop_token stop) {
  return SleepAwaiter(&sched.io(), MonotonicAfter(d), std::move(stop));
}

SleepAwaiter SleepUntil(absl::Time deadline, std::stop_token stop) {
  return SleepAwaiter(CurrentIoDriver(), MonotonicDeadline(deadline), std::move(stop));
}
SleepAwaiter SleepUntil(IoDriver& io, absl::Time deadline, std::stop_token stop) {
  return SleepAwaiter(&io, MonotonicDeadline(deadline), std::move(stop));
}
SleepAwaiter SleepUntil(Scheduler& sched, absl::Time deadline, std::stop_token stop) {
  return SleepAwaiter(&sched.io(), MonotonicDeadline(deadline), std::move(stop));
}

}  // namespace taskq::rt
