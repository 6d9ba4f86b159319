#include "master/timer_driver.h"

#include <algorithm>

namespace taskq {

void TimerDriver::Start(QueueEngine* engine) {
  thread_ = std::thread([this, engine] { Loop(engine); });
}

void TimerDriver::Wake() {
  MutexLock lock(&mu_);
  woken_ = true;
  cv_.Signal();
}

void TimerDriver::Stop() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
    cv_.Signal();
  }
  if (thread_.joinable()) thread_.join();
}

void TimerDriver::Loop(QueueEngine* engine) {
  for (;;) {
    absl::Time next = engine->NextDeadline();
    {
      MutexLock lock(&mu_);
      // Re-check at least every second: cheap insurance against a missed wake.
      absl::Time until = std::min(next, clock_->Now() + absl::Seconds(1));
      while (!stop_ && !woken_ && clock_->Now() < until) cv_.WaitWithDeadline(&mu_, until);
      if (stop_) return;
      woken_ = false;
    }
    engine->AdvanceTo(clock_->Now());
  }
}

}  // namespace taskq
