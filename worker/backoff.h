// Backoff: reconnect delays for the worker's session to the master:
// 100 ms doubling to 5 s, each delay jittered to 80-120% so that a fleet of
// workers does not reconnect in lock-step after a master restart.
//
// Thread-safety: not thread-safe; one per reconnect loop.
#pragma once

#include "absl/random/random.h"
#include "absl/time/time.h"

namespace taskq {

class Backoff {
 public:
  explicit Backoff(absl::Duration initial = absl::Milliseconds(100),
                   absl::Duration max = absl::Seconds(5))
      : initial_(initial), max_(max), next_(initial) {}

  // The delay to wait now; the one after it is twice as long (up to max).
  absl::Duration Next() {
    absl::Duration base = next_;
    next_ = next_ * 2 > max_ ? max_ : next_ * 2;
    return base * absl::Uniform(gen_, 0.8, 1.2);
  }

  // After a healthy session: start again from the initial delay.
  void Reset() { next_ = initial_; }

 private:
  absl::Duration initial_;
  absl::Duration max_;
  absl::Duration next_;
  absl::BitGen gen_;
};

}  // namespace taskq
