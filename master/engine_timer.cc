#include "master/engine_timer.h"

#include <algorithm>

#include "common/runtime/deadline_stop.h"

namespace taskq {

void EngineTimer::Start(QueueEngine* engine) {
  {
    MutexLock lock(&mu_);
    running_ = true;
  }
  scheduler_.Spawn(Loop(this, engine, stop_.get_token()), "engine timer");
}

rt::Task<void> EngineTimer::Loop(EngineTimer* self, QueueEngine* engine, std::stop_token stop) {
  while (!stop.stop_requested()) {
    // Cleared before reading the deadline: a Wake from here on is seen.
    self->wake_.Clear();
    engine->AdvanceTo(self->clock_->Now());
    // Re-check at least every second: cheap insurance against a missed
    // wake-up (e.g. a wall-clock step).
    absl::Time next =
        std::min(engine->NextDeadline(), self->clock_->Now() + absl::Seconds(1));
    rt::DeadlineStop until(self->scheduler_, next, stop);
    (void)co_await self->wake_.Wait(until.token());  // woken, due, or stopped
  }
  MutexLock lock(&self->mu_);
  self->running_ = false;
  self->cv_.SignalAll();
}

void EngineTimer::Stop() {
  stop_.request_stop();
  MutexLock lock(&mu_);
  while (running_) cv_.Wait(&mu_);
}

}  // namespace taskq
