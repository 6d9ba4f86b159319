// TimerDriver: one thread that sleeps until the engine's earliest deadline
// (a waiting call's timeout or a lease expiry) and then fires it with
// QueueEngine::AdvanceTo. The engine calls Wake() when a new, earlier
// deadline appears. Tests drive the engine's clock directly instead.
//
// Thread-safety: Wake and Stop are safe from any thread.
#pragma once

#include <thread>

#include "common/clock.h"
#include "common/sync.h"
#include "master/queue_engine.h"

namespace taskq {

class TimerDriver {
 public:
  explicit TimerDriver(Clock* clock) : clock_(clock) {}
  ~TimerDriver() { Stop(); }

  void Start(QueueEngine* engine);
  void Wake();
  void Stop();

 private:
  void Loop(QueueEngine* engine);

  Clock* const clock_;
  Mutex mu_;
  CondVar cv_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool woken_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace taskq
