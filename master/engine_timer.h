// EngineTimer: fires the QueueEngine's deadlines — long-poll and put
// timeouts, lease expiries, delayed tasks, retry backoff — from one
// coroutine on the master's scheduler that sleeps on the runtime's timers.
//
// The engine keeps its own deadline index and reports the earliest one
// (NextDeadline); this loop sleeps until then, or until the engine says an
// earlier deadline appeared (Wake, from the engine's on_earlier_deadline
// hook), then calls AdvanceTo(now). So 100k waiting calls or leases cost
// the runtime one timer, not 100k, and no thread sleeps for them.
//
// Thread-safety: Wake and Stop are safe from any thread; Start once.
// Stop must not be called from one of the scheduler's threads.
#pragma once

#include <stop_token>

#include "common/clock.h"
#include "common/runtime/event.h"
#include "common/runtime/scheduler.h"
#include "common/runtime/task.h"
#include "common/sync.h"
#include "master/queue_engine.h"

namespace taskq {

class EngineTimer {
 public:
  EngineTimer(rt::Scheduler& scheduler, Clock* clock) : scheduler_(scheduler), clock_(clock) {}
  ~EngineTimer() { Stop(); }
  EngineTimer(const EngineTimer&) = delete;
  EngineTimer& operator=(const EngineTimer&) = delete;

  // Starts the loop for `engine`, which must outlive Stop().
  void Start(QueueEngine* engine);
  // An earlier deadline appeared: re-read NextDeadline now.
  void Wake() { wake_.Set(); }
  // Ends the loop and waits until it has returned. Idempotent.
  void Stop();

 private:
  static rt::Task<void> Loop(EngineTimer* self, QueueEngine* engine, std::stop_token stop);

  rt::Scheduler& scheduler_;
  Clock* const clock_;
  rt::Event wake_;
  std::stop_source stop_;
  Mutex mu_;
  CondVar cv_;
  bool running_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace taskq
