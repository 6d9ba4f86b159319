// Timers on the IoDriver: SleepFor / SleepUntil, cancellation races,
// shutdown, scale (100k timers, 1000 sleepers on 2 threads), DeadlineStop
// and callback Timers.
#include "common/runtime/sleep.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <random>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "common/runtime/deadline_stop.h"
#include "common/runtime/scheduler.h"
#include "common/sync.h"
#include "common/runtime/async_test_util.h"
#include "gtest/gtest.h"
#include "common/runtime/sanitizers.h"

namespace taskq::rt {
namespace {

constexpr bool kSanitized = kUnderSanitizer;

absl::Duration Since(MonoNanos start) { return absl::Nanoseconds(MonotonicNow() - start); }

// Waits for state the runtime exposes only as counters (pending timers,
// fd waits): polls until it holds or the test timeout passes.
using testing::WaitUntil;

// Counts finished coroutines; the test thread waits for a total.
class Done {
 public:
  void Add(int n = 1) {
    MutexLock lock(&mu_);
    count_ += n;
    cv_.SignalAll();
  }
  bool WaitFor(int n, absl::Duration timeout = absl::Seconds(30)) {
    absl::Time deadline = absl::Now() + timeout;
    MutexLock lock(&mu_);
    while (count_ < n) {
      if (cv_.WaitWithDeadline(&mu_, deadline)) return count_ >= n;
    }
    return true;
  }
  int count() {
    MutexLock lock(&mu_);
    return count_;
  }

 private:
  Mutex mu_;
  CondVar cv_;
  int count_ ABSL_GUARDED_BY(mu_) = 0;
};

int ThreadsInProcess() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Threads:", 0) == 0) return std::stoi(line.substr(8));
  }
  return -1;
}

Task<absl::Status> Sleep(absl::Duration d, std::stop_token stop = {}) {
  co_return co_await rt::SleepFor(d, std::move(stop));
}

TEST(SleepTest, SleepsAtLeastTheDurationAndNotMuchLonger) {
  Scheduler sched({.threads = 2});
  for (absl::Duration d : {absl::ZeroDuration(), absl::Microseconds(50), absl::Milliseconds(1),
                           absl::Milliseconds(20), absl::Milliseconds(60)}) {
    MonoNanos start = MonotonicNow();
    absl::Status s = sched.BlockOn(Sleep(d));
    absl::Duration took = Since(start);
    EXPECT_TRUE(s.ok()) << s;
    EXPECT_GE(took, d);
    EXPECT_LT(took, d + absl::Seconds(1));
  }
}

Task<absl::Status> SleepUntilTask(absl::Time deadline) { co_return co_await SleepUntil(deadline); }

TEST(SleepTest, SleepUntilWakesAtTheDeadline) {
  Scheduler sched({.threads = 1});
  absl::Time deadline = absl::Now() + absl::Milliseconds(30);
  EXPECT_TRUE(sched.BlockOn(SleepUntilTask(deadline)).ok());
  EXPECT_GE(absl::Now(), deadline - absl::Milliseconds(1));  // wall vs monotonic jitter
  // A deadline in the past completes at once.
  EXPECT_TRUE(sched.BlockOn(SleepUntilTask(absl::Now() - absl::Seconds(1))).ok());
}

TEST(SleepTest, ExplicitDriverOverloadsWorkFromAnotherExecutor) {
  Scheduler timers({.threads = 1, .name = "timers"});
  Scheduler work({.threads = 1, .name = "work"});
  // A coroutine on `work` sleeping on `timers`' driver resumes on `work`.
  auto task = [](Scheduler& timers, Scheduler& work) -> Task<bool> {
    absl::Status s = co_await rt::SleepFor(timers, absl::Milliseconds(5));
    co_return s.ok() && Scheduler::Current() == &work;
  };
  EXPECT_TRUE(work.BlockOn(task(timers, work)));
}

TEST(SleepTest, OffPoolWithoutDriverFailsWithPrecondition) {
  // Drive a coroutine by hand on this (non-pool) thread.
  Task<absl::Status> t = Sleep(absl::Milliseconds(1));
  auto h = t.Release();
  h.resume();
  ASSERT_TRUE(h.done());
  absl::Status s = h.promise().TakeResult();
  h.destroy();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
}

TEST(SleepTest, ManyTimersFireInDeadlineOrderTiesInInsertionOrder) {
  // One pool thread: completions run in the order the driver posts them.
  Scheduler sched({.threads = 1});
  constexpr int kTimers = 500;
  const MonoNanos base = MonotonicAfter(absl::Milliseconds(250));
  std::vector<MonoNanos> when(kTimers);
  std::mt19937 rng(42);
  for (int i = 0; i < kTimers; ++i) {
    when[i] = base + static_cast<MonoNanos>(rng() % (kTimers / 2)) * 100'000;  // ties happen
  }
  Mutex mu;
  std::vector<int> order;  // guarded by mu (a local: no annotation possible)
  std::atomic<MonoNanos> last_armed{0};
  Done done;
  auto sleeper = [](Scheduler& s, MonoNanos w, int i, Mutex* mu, std::vector<int>* order,
                    std::atomic<MonoNanos>* last_armed, Done* done) -> Task<void> {
    SleepAwaiter wait(&s.io(), w, {});
    last_armed->store(MonotonicNow());
    absl::Status st = co_await wait;
    EXPECT_TRUE(st.ok()) << st;
    {
      MutexLock lock(mu);
      order->push_back(i);
    }
    done->Add();
  };
  for (int i = 0; i < kTimers; ++i) {
    sched.Spawn(sleeper(sched, when[i], i, &mu, &order, &last_armed, &done));
  }
  ASSERT_TRUE(done.WaitFor(kTimers));
  ASSERT_LT(last_armed.load(), base) << "machine too slow: timers armed after the first was due";
  MutexLock lock(&mu);
  ASSERT_EQ(order.size(), static_cast<size_t>(kTimers));
  for (int k = 1; k < kTimers; ++k) {
    int a = order[k - 1], b = order[k];
    ASSERT_TRUE(when[a] < when[b] || (when[a] == when[b] && a < b))
        << "position " << k << ": timer " << a << " (+" << (when[a] - base) << "ns) before " << b
        << " (+" << (when[b] - base) << "ns)";
  }
}

TEST(SleepTest, StopDuringSleepWakesPromptlyWithCancelled) {
  Scheduler sched({.threads = 2});
  std::stop_source source;
  std::thread stopper([&] {
    ASSERT_TRUE(WaitUntil([&] { return sched.io().pending_timers() == 1; }));
    source.request_stop();
  });
  MonoNanos start = MonotonicNow();
  absl::Status s = sched.BlockOn(Sleep(absl::Hours(1), source.get_token()));
  stopper.join();
  EXPECT_EQ(s, CancelledError());
  EXPECT_LT(Since(start), absl::Seconds(5));
  EXPECT_EQ(sched.io().pending_timers(), 0u);
}

TEST(SleepTest, AlreadyStoppedTokenCancelsWithoutWaiting) {
  Scheduler sched({.threads = 1});
  std::stop_source source;
  source.request_stop();
  EXPECT_EQ(sched.BlockOn(Sleep(absl::Hours(1), source.get_token())), CancelledError());
  EXPECT_EQ(sched.io().pending_timers(), 0u);
}

// The timer and the stop fire at (nearly) the same instant, from two
// threads: the coroutine must resume exactly once, with either outcome.
// A double resume crashes or is reported by ASan/TSan.
TEST(SleepTest, StopRacingTheTimerResumesExactlyOnce) {
  Scheduler sched({.threads = 2});
  const int kRounds = kSanitized ? 1500 : 4000;
  std::atomic<int> ok{0}, cancelled{0}, other{0};
  Done done;
  auto racer = [](absl::Duration d, std::stop_token stop, std::atomic<int>* ok,
                  std::atomic<int>* cancelled, std::atomic<int>* other, Done* done) -> Task<void> {
    absl::Status s = co_await rt::SleepFor(d, std::move(stop));
    if (s.ok()) {
      ok->fetch_add(1);
    } else if (s == CancelledError()) {
      cancelled->fetch_add(1);
    } else {
      other->fetch_add(1);
    }
    done->Add();
  };
  for (int i = 0; i < kRounds; ++i) {
    std::stop_source source;
    sched.Spawn(racer(absl::Microseconds(i % 40), source.get_token(), &ok, &cancelled, &other,
                      &done));
    // Spin (not sleep) a varying few microseconds, then stop.
    MonoNanos until = MonotonicNow() + (i * 7919 % 60) * 1000;
    while (MonotonicNow() < until) {
    }
    source.request_stop();
    ASSERT_TRUE(done.WaitFor(i + 1)) << "round " << i << " never resumed";
  }
  EXPECT_EQ(done.count(), kRounds);  // no round resumed twice
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(ok.load() + cancelled.load(), kRounds);
  EXPECT_EQ(sched.io().pending_timers(), 0u);
  std::printf("[ figures  ] stop-vs-timer race: %d rounds, %d fired, %d cancelled\n", kRounds,
              ok.load(), cancelled.load());
}

TEST(SleepTest, HundredThousandTimersInsertedThenFiredOrCancelled) {
  constexpr int kTimers = 100'000;
  Scheduler sched({.threads = 2});
  std::stop_source cancel_half;
  std::atomic<int> ok{0}, cancelled{0}, other{0};
  Done done;
  auto sleeper = [](absl::Duration d, std::stop_token stop, std::atomic<int>* ok,
                    std::atomic<int>* cancelled, std::atomic<int>* other,
                    Done* done) -> Task<void> {
    absl::Status s = co_await rt::SleepFor(d, std::move(stop));
    (s.ok() ? *ok : s == CancelledError() ? *cancelled : *other).fetch_add(1);
    done->Add();
  };
  std::mt19937 rng(7);
  // Far enough out that (almost) none fires while they are being inserted.
  const absl::Duration base = kSanitized ? absl::Milliseconds(1500) : absl::Milliseconds(400);
  MonoNanos start = MonotonicNow();
  for (int i = 0; i < kTimers; ++i) {
    absl::Duration d = base + absl::Microseconds(rng() % 200'000);
    sched.Spawn(sleeper(d, i % 2 == 0 ? cancel_half.get_token() : std::stop_token(), &ok,
                        &cancelled, &other, &done));
  }
  ASSERT_TRUE(WaitUntil([&] {
    return sched.io().pending_timers() + static_cast<size_t>(done.count()) == kTimers;
  }));
  absl::Duration insert_time = Since(start);
  MonoNanos cancel_start = MonotonicNow();
  cancel_half.request_stop();  // 50k stop callbacks, each removing its timer
  absl::Duration cancel_time = Since(cancel_start);
  ASSERT_TRUE(done.WaitFor(kTimers, absl::Seconds(60)));
  absl::Duration total = Since(start);
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(ok.load() + cancelled.load(), kTimers);
  EXPECT_GE(ok.load(), kTimers / 2);  // the uncancellable half all fired
  EXPECT_EQ(sched.io().pending_timers(), 0u);
  std::printf(
      "[ figures  ] 100k timers: spawn+insert %.0f ms, cancel 50k %.0f ms, all done after %.0f ms "
      "(%d fired, %d cancelled)\n",
      absl::ToDoubleMilliseconds(insert_time), absl::ToDoubleMilliseconds(cancel_time),
      absl::ToDoubleMilliseconds(total), ok.load(), cancelled.load());
}

TEST(SleepTest, ThousandSleepersOnTwoThreadsDoNotHoldThreads) {
  // ThreadSanitizer starts a background thread of its own at the first
  // pthread_create; when ctest runs this test alone that would be ours.
  std::thread([] {}).join();
  int before = ThreadsInProcess();
  Scheduler sched({.threads = 2});
  EXPECT_EQ(ThreadsInProcess(), before + 3);  // two pool threads + the driver
  constexpr int kSleepers = 1000;
  Done done;
  std::atomic<int> ok{0};
  auto sleeper = [](std::atomic<int>* ok, Done* done) -> Task<void> {
    if ((co_await rt::SleepFor(absl::Milliseconds(100))).ok()) ok->fetch_add(1);
    done->Add();
  };
  MonoNanos start = MonotonicNow();
  for (int i = 0; i < kSleepers; ++i) sched.Spawn(sleeper(&ok, &done));
  ASSERT_TRUE(done.WaitFor(kSleepers));
  absl::Duration took = Since(start);
  EXPECT_EQ(ok.load(), kSleepers);
  EXPECT_LT(took, absl::Seconds(5));  // serially it would be 100 s / 2 threads
  EXPECT_EQ(ThreadsInProcess(), before + 3);
  std::printf("[ figures  ] 1000 x rt::SleepFor(100ms) on 2 threads: %.0f ms\n",
              absl::ToDoubleMilliseconds(took));
}

TEST(SleepTest, ShutdownWakesPendingSleepersWithCancelled) {
  constexpr int kSleepers = 50;
  auto sched = std::make_unique<Scheduler>(SchedulerOptions{.threads = 2});
  Mutex mu;
  std::vector<absl::Status> results;
  auto sleeper = [](Mutex* mu, std::vector<absl::Status>* results) -> Task<void> {
    absl::Status s = co_await rt::SleepFor(absl::Hours(1));
    MutexLock lock(mu);
    results->push_back(s);
  };
  for (int i = 0; i < kSleepers; ++i) sched->Spawn(sleeper(&mu, &results));
  ASSERT_TRUE(WaitUntil([&] { return sched->io().pending_timers() == kSleepers; }));
  MonoNanos start = MonotonicNow();
  sched->Shutdown();
  EXPECT_LT(Since(start), absl::Seconds(5));
  EXPECT_EQ(sched->live_spawned(), 0u);
  {
    MutexLock lock(&mu);
    ASSERT_EQ(results.size(), static_cast<size_t>(kSleepers));
    for (const absl::Status& s : results) EXPECT_EQ(s, ShutdownError());
  }
  // After shutdown, a new wait ends at once with the same status.
  absl::Status late = absl::OkStatus();
  auto late_task = [](Scheduler& s, absl::Status* out) -> Task<void> {
    *out = co_await rt::SleepFor(s, absl::Hours(1));
  };
  Task<void> t = late_task(*sched, &late);
  auto h = t.Release();
  h.resume();
  ASSERT_TRUE(h.done());
  h.destroy();
  EXPECT_EQ(late, ShutdownError());
}

// --- DeadlineStop ---------------------------------------------------------------

Task<absl::Status> SleepWithDeadline(absl::Duration timeout, std::stop_token parent) {
  DeadlineStop ds(absl::Now() + timeout, std::move(parent));
  absl::Status s = co_await rt::SleepFor(absl::Hours(1), ds.token());
  co_return ds.Translate(std::move(s));
}

TEST(DeadlineStopTest, DeadlineStopsTheToken) {
  Scheduler sched({.threads = 2});
  MonoNanos start = MonotonicNow();
  absl::Status s = sched.BlockOn(SleepWithDeadline(absl::Milliseconds(30), {}));
  EXPECT_EQ(s, DeadlineExceededError());
  EXPECT_GE(Since(start), absl::Milliseconds(29));
  EXPECT_LT(Since(start), absl::Seconds(5));
  EXPECT_EQ(sched.io().pending_timers(), 0u);
}

TEST(DeadlineStopTest, ParentStopPropagates) {
  Scheduler sched({.threads = 2});
  std::stop_source parent;
  std::thread stopper([&] {
    // The DeadlineStop's timer and the sleep's timer.
    ASSERT_TRUE(WaitUntil([&] { return sched.io().pending_timers() == 2; }));
    parent.request_stop();
  });
  absl::Status s = sched.BlockOn(SleepWithDeadline(absl::Hours(2), parent.get_token()));
  stopper.join();
  EXPECT_EQ(s, CancelledError());
  EXPECT_EQ(sched.io().pending_timers(), 0u);
}

TEST(DeadlineStopTest, PassedDeadlineAndStoppedParentStopAtOnce) {
  Scheduler sched({.threads = 1});
  DeadlineStop past(sched, absl::Now() - absl::Seconds(1));
  EXPECT_TRUE(past.stop_requested());
  EXPECT_EQ(past.cause(), DeadlineStop::Cause::kDeadline);
  std::stop_source parent;
  parent.request_stop();
  DeadlineStop child(sched, absl::Now() + absl::Hours(1), parent.get_token());
  EXPECT_TRUE(child.stop_requested());
  EXPECT_EQ(child.cause(), DeadlineStop::Cause::kParent);
  EXPECT_EQ(child.Translate(CancelledError()), CancelledError());
  DeadlineStop never(sched, absl::InfiniteFuture());
  EXPECT_FALSE(never.stop_requested());
  EXPECT_EQ(sched.io().pending_timers(), 0u);  // none needed a timer
}

TEST(DeadlineStopTest, DestroyedBeforeTheDeadlineCancelsItsTimer) {
  Scheduler sched({.threads = 1});
  {
    DeadlineStop ds(sched, absl::Now() + absl::Hours(1));
    EXPECT_EQ(sched.io().pending_timers(), 1u);
  }
  EXPECT_EQ(sched.io().pending_timers(), 0u);
}

TEST(DeadlineStopTest, ShutdownStopsTheToken) {
  auto sched = std::make_unique<Scheduler>(SchedulerOptions{.threads = 1});
  DeadlineStop ds(*sched, absl::Now() + absl::Hours(1));
  sched->Shutdown();
  EXPECT_TRUE(ds.stop_requested());
  EXPECT_EQ(ds.Translate(CancelledError()), ShutdownError());
}

// Destroying a DeadlineStop while its timer fires: the destructor waits for
// the callback, so nothing dangles (ASan/TSan check).
TEST(DeadlineStopTest, DestructionRacingTheDeadline) {
  Scheduler sched({.threads = 1});
  const int kRounds = kSanitized ? 500 : 3000;
  int stopped = 0;
  for (int i = 0; i < kRounds; ++i) {
    DeadlineStop ds(sched, absl::Now() + absl::Microseconds(i % 30));
    std::stop_callback note(ds.token(), [] {});
    MonoNanos until = MonotonicNow() + (i * 31 % 40) * 1000;
    while (MonotonicNow() < until) {
    }
    stopped += ds.stop_requested() ? 1 : 0;
  }
  EXPECT_EQ(sched.io().pending_timers(), 0u);
  std::printf("[ figures  ] DeadlineStop destroy-vs-fire: %d/%d had fired\n", stopped, kRounds);
}

// --- callback timers ------------------------------------------------------------

TEST(IoDriverTimerTest, RunsOnTheDriverThreadAndCancelPreventsIt) {
  Scheduler sched({.threads = 1});
  Done done;
  std::thread::id ran_on;
  std::atomic<bool> cancelled_ran{false};
  {
    IoDriver::Timer cancelled(sched.io(), absl::Milliseconds(20),
                              [&](absl::Status) { cancelled_ran = true; });
    IoDriver::Timer fires(sched.io(), absl::Milliseconds(5), [&](absl::Status s) {
      EXPECT_TRUE(s.ok());
      ran_on = std::this_thread::get_id();
      done.Add();
    });
    EXPECT_TRUE(cancelled.Cancel());
    ASSERT_TRUE(done.WaitFor(1));
    EXPECT_FALSE(fires.Cancel());  // already ran
  }
  EXPECT_NE(ran_on, std::this_thread::get_id());
  EXPECT_FALSE(cancelled_ran.load());
  EXPECT_EQ(sched.io().pending_timers(), 0u);
}

TEST(IoDriverTimerTest, ACallbackMayCancelItself) {
  Scheduler sched({.threads = 1});
  Done done;
  std::unique_ptr<IoDriver::Timer> timer;
  Mutex mu;
  {
    MutexLock lock(&mu);  // the callback waits until `timer` is assigned
    timer = std::make_unique<IoDriver::Timer>(sched.io(), absl::Milliseconds(1),
                                              [&](absl::Status) {
                                                MutexLock l(&mu);
                                                EXPECT_FALSE(timer->Cancel());  // no self-wait
                                                done.Add();
                                              });
  }
  ASSERT_TRUE(done.WaitFor(1));
  timer.reset();
}

}  // namespace
}  // namespace taskq::rt
