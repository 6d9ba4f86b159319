// CancellableWait on a toy event source (a one-shot Gate written exactly as
// cancel.h tells primitive authors to), including the race between the
// source completing and the stop token firing from two other threads.
#include "common/runtime/cancel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <stop_token>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "common/runtime/scheduler.h"
#include "common/runtime/timer_queue.h"
#include "common/sync.h"
#include "gtest/gtest.h"
#include "common/runtime/sanitizers.h"

namespace taskq::rt {
namespace {

constexpr int kRaceRounds = kUnderSanitizer ? 1500 : 5000;

// Opens once; every waiter (present or future) then completes OK.
class Gate {
 public:
  class Wait final : public CancellableWait {
   public:
    Wait(Gate& gate, std::stop_token stop)
        : CancellableWait(std::move(stop), nullptr), gate_(gate) {}

   private:
    friend class Gate;
    void Arm() override {
      MutexLock lock(&gate_.mu_);
      if (gate_.open_) {
        Complete(absl::OkStatus()).Run();  // not suspended yet: continues inline
        return;
      }
      gate_.waiters_.push_back(this);
    }
    void Disarm() override {
      MutexLock lock(&gate_.mu_);
      std::erase(gate_.waiters_, this);  // may already be gone (rule 2)
    }
    Gate& gate_;
  };

  Wait Await(std::stop_token stop = {}) { return Wait(*this, std::move(stop)); }

  void Open() {
    std::vector<Resumption> resume;
    {
      MutexLock lock(&mu_);
      open_ = true;
      for (Wait* w : waiters_) {
        if (Resumption r = w->Complete(absl::OkStatus())) resume.push_back(std::move(r));
      }
      waiters_.clear();
    }
    for (Resumption& r : resume) std::move(r).Run();  // after unlocking (rule 3)
  }

  size_t waiting() {
    MutexLock lock(&mu_);
    return waiters_.size();
  }

 private:
  Mutex mu_;
  bool open_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<Wait*> waiters_ ABSL_GUARDED_BY(mu_);
};

Task<absl::Status> AwaitGate(Gate& gate, std::stop_token stop) {
  co_return co_await gate.Await(std::move(stop));
}

TEST(CancellableWaitTest, StatusWording) {
  EXPECT_EQ(CancelledError(), absl::CancelledError("cancelled"));
  EXPECT_EQ(ShutdownError(), absl::CancelledError("scheduler shutting down"));
  EXPECT_EQ(DeadlineExceededError(), absl::DeadlineExceededError("deadline exceeded"));
}

TEST(CancellableWaitTest, CompletedSourceDoesNotSuspend) {
  Scheduler sched({.threads = 1});
  Gate gate;
  gate.Open();
  EXPECT_TRUE(sched.BlockOn(AwaitGate(gate, {})).ok());
}

TEST(CancellableWaitTest, SourceCompletionResumesOnTheAwaitersExecutor) {
  Scheduler sched({.threads = 1});
  Gate gate;
  std::thread opener([&] {
    while (gate.waiting() == 0) std::this_thread::yield();
    gate.Open();
  });
  auto task = [](Gate& g, Scheduler* s) -> Task<bool> {
    absl::Status st = co_await g.Await();
    co_return st.ok() && Scheduler::Current() == s;  // posted back, not run on the opener
  };
  EXPECT_TRUE(sched.BlockOn(task(gate, &sched)));
  opener.join();
}

TEST(CancellableWaitTest, StopCancelsAndUnregisters) {
  Scheduler sched({.threads = 1});
  Gate gate;
  std::stop_source source;
  std::thread stopper([&] {
    while (gate.waiting() == 0) std::this_thread::yield();
    source.request_stop();
  });
  EXPECT_EQ(sched.BlockOn(AwaitGate(gate, source.get_token())), CancelledError());
  stopper.join();
  EXPECT_EQ(gate.waiting(), 0u);
  // A stop already requested never registers.
  EXPECT_EQ(sched.BlockOn(AwaitGate(gate, source.get_token())), CancelledError());
  EXPECT_EQ(gate.waiting(), 0u);
}

TEST(CancellableWaitTest, WithoutAnyExecutorTheWakerResumesInline) {
  Gate gate;
  Task<absl::Status> t = AwaitGate(gate, {});
  auto h = t.Release();
  h.resume();  // runs on this thread, which no executor owns
  ASSERT_FALSE(h.done());
  gate.Open();  // resumes it right here
  ASSERT_TRUE(h.done());
  EXPECT_TRUE(h.promise().TakeResult().ok());
  h.destroy();
}

// Each round: one coroutine waits on a fresh gate (on its own scheduler)
// while two coroutines on another 2-thread scheduler race to open the gate
// and to request stop, each after spinning a varying few microseconds.
// Exactly one outcome, exactly one resumption, every time; ASan/TSan watch
// the loser's accesses.
void SpinFor(int64_t nanos) {
  MonoNanos until = MonotonicNow() + nanos;
  while (MonotonicNow() < until) {
  }
}

class Countdown {
 public:
  void Add() {
    MutexLock lock(&mu_);
    ++count_;
    cv_.SignalAll();
  }
  bool WaitFor(int n) {
    absl::Time deadline = absl::Now() + absl::Seconds(20);
    MutexLock lock(&mu_);
    while (count_ < n) {
      if (cv_.WaitWithDeadline(&mu_, deadline)) return count_ >= n;
    }
    return true;
  }

 private:
  Mutex mu_;
  CondVar cv_;
  int count_ ABSL_GUARDED_BY(mu_) = 0;
};

TEST(CancellableWaitTest, CompletionRacingStopResumesExactlyOnce) {
  Scheduler waiters({.threads = 1, .name = "waiter"});
  Scheduler racers({.threads = 2, .name = "racer"});
  std::atomic<int> resumed{0}, ok{0}, cancelled{0};
  auto waiter = [](Gate& g, std::stop_token stop, std::atomic<int>* resumed, std::atomic<int>* ok,
                   std::atomic<int>* cancelled, Countdown* done) -> Task<void> {
    absl::Status s = co_await g.Await(std::move(stop));
    (s.ok() ? *ok : *cancelled).fetch_add(1);
    resumed->fetch_add(1);
    done->Add();
  };
  auto opener = [](Gate& g, int64_t spin, Countdown* done) -> Task<void> {
    SpinFor(spin);
    g.Open();
    done->Add();
    co_return;
  };
  auto stopper = [](std::stop_source& source, int64_t spin, Countdown* done) -> Task<void> {
    SpinFor(spin);
    source.request_stop();
    done->Add();
    co_return;
  };
  for (int r = 0; r < kRaceRounds; ++r) {
    Gate gate;
    std::stop_source source;
    Countdown done;
    waiters.Spawn(waiter(gate, source.get_token(), &resumed, &ok, &cancelled, &done));
    racers.Spawn(opener(gate, (r * 7 % 40) * 500, &done));
    racers.Spawn(stopper(source, (r * 13 % 40) * 500, &done));
    // The waiter resumed and both racers returned: gate and source may go.
    ASSERT_TRUE(done.WaitFor(3)) << "round " << r;
    ASSERT_EQ(resumed.load(), r + 1) << "round " << r;
  }
  EXPECT_EQ(ok.load() + cancelled.load(), kRaceRounds);
  std::printf("[ figures  ] gate open-vs-stop race: %d rounds, %d opened, %d cancelled\n",
              kRaceRounds, ok.load(), cancelled.load());
}

}  // namespace
}  // namespace taskq::rt
