#include "common/runtime/scheduler.h"

#include <atomic>
#include <stdexcept>
#include <thread>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "common/runtime/sanitizers.h"

namespace taskq::rt {
namespace {

Task<int> Square(int n) { co_return n * n; }

Task<int> SumOfSquares(int n) {
  int sum = 0;
  for (int i = 1; i <= n; ++i) sum += co_await Square(i);
  co_return sum;
}

TEST(TaskTest, AwaitsNestedTasksAndReturnsValue) {
  Scheduler sched({.threads = 2});
  EXPECT_EQ(sched.BlockOn(SumOfSquares(10)), 385);
}

TEST(TaskTest, IsLazyUntilAwaited) {
  bool ran = false;
  auto make = [&ran]() -> Task<void> {
    ran = true;
    co_return;
  };
  {
    Task<void> t = make();
    EXPECT_FALSE(ran);
  }  // destroyed unstarted: never runs
  EXPECT_FALSE(ran);
}

Task<int> Throws() {
  throw std::runtime_error("boom");
  co_return 0;
}

Task<std::string> CatchesChildException() {
  try {
    co_await Throws();
  } catch (const std::runtime_error& e) {
    co_return std::string("caught ") + e.what();
  }
  co_return "not caught";
}

TEST(TaskTest, ExceptionReachesTheAwaiter) {
  Scheduler sched({.threads = 1});
  EXPECT_EQ(sched.BlockOn(CatchesChildException()), "caught boom");
  EXPECT_THROW(sched.BlockOn(Throws()), std::runtime_error);
}

Task<absl::StatusOr<int>> ParsePositive(int v) {
  if (v <= 0) co_return absl::InvalidArgumentError("not positive");
  co_return v;
}

TEST(TaskTest, StatusOrResults) {
  Scheduler sched({.threads = 1});
  EXPECT_EQ(*sched.BlockOn(ParsePositive(3)), 3);
  EXPECT_EQ(sched.BlockOn(ParsePositive(-1)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

Task<int> Chain(int depth) {
  if (depth == 0) co_return 0;
  co_return 1 + co_await Chain(depth - 1);
}

// Symmetric transfer is a tail call, which GCC emits only with sibling-call
// optimisation (-O2 and up) and never under ASan/TSan instrumentation. So the
// deep version runs in optimised, uninstrumented builds (release, the one
// shipped); the others check the same code at a depth any stack holds.
#if defined(NDEBUG) && !defined(TASKQ_ASAN) && !defined(TASKQ_TSAN)
constexpr int kChainDepth = 200000;
#else
constexpr int kChainDepth = 1000;
#endif

TEST(TaskTest, DeepAwaitChainsDoNotGrowTheStack) {
  // Every level suspends into the next by symmetric transfer; without it a
  // 200k-deep chain would overflow the pool thread's 8 MiB stack.
  Scheduler sched({.threads = 1});
  EXPECT_EQ(sched.BlockOn(Chain(kChainDepth)), kChainDepth);
}

Task<void> Increment(std::atomic<int>* counter) {
  counter->fetch_add(1);
  co_return;
}

TEST(SchedulerTest, SpawnRunsDetachedTasks) {
  std::atomic<int> counter{0};
  {
    Scheduler sched({.threads = 2});
    for (int i = 0; i < 1000; ++i) sched.Spawn(Increment(&counter));
  }  // Shutdown drains the queue
  EXPECT_EQ(counter.load(), 1000);
}

Task<absl::Status> FailsWithStatus() { co_return absl::InternalError("spawned failure"); }

TEST(SchedulerTest, SpawnedErrorsAndExceptionsAreReportedNotLost) {
  Scheduler sched({.threads = 1});
  testing::internal::CaptureStderr();
  sched.Spawn(FailsWithStatus(), "status job");
  sched.Spawn(Throws(), "throwing job");
  sched.Shutdown();
  std::string log = testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find("status job failed: INTERNAL: spawned failure"), std::string::npos) << log;
  EXPECT_NE(log.find("throwing job threw: boom"), std::string::npos) << log;
  EXPECT_EQ(sched.live_spawned(), 0u);
}

Task<std::thread::id> ThreadAfterHop(Executor& to) {
  co_await ScheduleOn(to);
  co_return std::this_thread::get_id();
}

TEST(SchedulerTest, ScheduleOnHopsToAnotherExecutor) {
  Scheduler a({.threads = 1, .name = "a"});
  Scheduler b({.threads = 1, .name = "b"});
  std::thread::id b_thread = b.BlockOn([]() -> Task<std::thread::id> {
    co_return std::this_thread::get_id();
  }());
  EXPECT_EQ(a.BlockOn(ThreadAfterHop(b)), b_thread);
}

Task<int> YieldMany(Scheduler& sched, int n) {
  for (int i = 0; i < n; ++i) co_await sched.Yield();
  co_return n;
}

TEST(SchedulerTest, YieldInterleavesCoroutinesOnOneThread) {
  // Two coroutines on one thread, each yielding: both make progress, which
  // is what gevent.sleep(0) gives the seeds' greenlets.
  Scheduler sched({.threads = 1});
  std::atomic<int> done{0};
  auto worker = [](Scheduler& s, std::atomic<int>* d) -> Task<void> {
    co_await YieldMany(s, 1000);
    d->fetch_add(1);
  };
  sched.Spawn(worker(sched, &done));
  sched.Spawn(worker(sched, &done));
  sched.Shutdown();
  EXPECT_EQ(done.load(), 2);
}

TEST(SchedulerTest, CurrentIsSetOnPoolThreadsOnly) {
  Scheduler sched({.threads = 1});
  EXPECT_EQ(Scheduler::Current(), nullptr);
  EXPECT_EQ(CurrentExecutor(), nullptr);
  Scheduler* seen = sched.BlockOn([]() -> Task<Scheduler*> { co_return Scheduler::Current(); }());
  EXPECT_EQ(seen, &sched);
}

TEST(SchedulerTest, SpawnWithAComputedNameLogsThatName) {
  Scheduler sched({.threads = 2});
  testing::internal::CaptureStderr();
  std::string name = "job ";
  name += "42";
  sched.Spawn(FailsWithStatus(), name);
  sched.Spawn(Throws(), std::string("thrower 7"));
  sched.Shutdown();
  std::string log = testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find("job 42 failed: INTERNAL: spawned failure"), std::string::npos) << log;
  EXPECT_NE(log.find("thrower 7 threw: boom"), std::string::npos) << log;
  EXPECT_EQ(sched.live_spawned(), 0u);
}

// Waits (spinning, bounded) until `n` coroutines have arrived: only passes
// if they run on different threads at the same time.
Task<bool> ArriveAndWait(std::atomic<int>* arrived, int n) {
  arrived->fetch_add(1);
  absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (arrived->load() < n) {
    if (absl::Now() > deadline) co_return false;
    std::this_thread::yield();
  }
  co_return true;
}

Task<void> SpawnPair(Scheduler* sched, std::atomic<int>* arrived, std::atomic<int>* ok) {
  auto run = [](std::atomic<int>* arrived, std::atomic<int>* ok) -> Task<void> {
    if (co_await ArriveAndWait(arrived, 2)) ok->fetch_add(1);
  };
  // Both land on this thread's ring; the second post wakes the idle thread,
  // which steals one.
  sched->Spawn(run(arrived, ok));
  sched->Spawn(run(arrived, ok));
  co_return;
}

TEST(SchedulerTest, AnIdleThreadStealsFromABusyOne) {
  Scheduler sched({.threads = 2});
  for (int round = 0; round < 20; ++round) {
    std::atomic<int> arrived{0};
    std::atomic<int> ok{0};
    sched.BlockOn(SpawnPair(&sched, &arrived, &ok));
    absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (ok.load() < 2 && sched.live_spawned() > 0 && absl::Now() < deadline) {
      std::this_thread::yield();
    }
    while (sched.live_spawned() > 0 && absl::Now() < deadline) std::this_thread::yield();
    ASSERT_EQ(ok.load(), 2) << "round " << round;
  }
}

// A coroutine that keeps yielding stays on its thread's ring; a handle
// posted from outside the pool (the shared queue) must still get its turn.
TEST(SchedulerTest, PostsFromOutsideArentStarvedByAYieldLoop) {
  Scheduler sched({.threads = 1});
  std::atomic<bool> flag{false};
  auto set = [](std::atomic<bool>* f) -> Task<void> {
    f->store(true);
    co_return;
  };
  auto spin = [](Scheduler* s, std::atomic<bool>* f, std::atomic<bool>* started) -> Task<bool> {
    started->store(true);
    for (int i = 0; i < 10'000'000; ++i) {
      if (f->load()) co_return true;
      co_await s->Yield();
    }
    co_return false;
  };
  std::atomic<bool> started{false};
  std::thread poster([&] {
    while (!started.load()) std::this_thread::yield();
    sched.Spawn(set(&flag));
  });
  EXPECT_TRUE(sched.BlockOn(spin(&sched, &flag, &started)));
  poster.join();
}

Task<void> CountDown(std::atomic<int>* left) {
  left->fetch_sub(1);
  co_return;
}

// Posts from a plain thread, in bursts with pauses so pool threads park in
// between: none may be lost (a lost wake-up would leave work queued while
// every thread sleeps).
TEST(SchedulerTest, PostsFromOutsideAlwaysWakeAThread) {
  Scheduler sched({.threads = 3});
  for (int round = 0; round < 200; ++round) {
    std::atomic<int> left{round % 7 + 1};
    for (int i = 0; i < round % 7 + 1; ++i) sched.Spawn(CountDown(&left));
    absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (left.load() > 0 && absl::Now() < deadline) std::this_thread::yield();
    ASSERT_EQ(left.load(), 0) << "round " << round;
    if (round % 10 == 0) absl::SleepFor(absl::Milliseconds(1));  // let them park
  }
}

TEST(SchedulerTest, ManySpawnsOverflowTheRingAndAllRun) {
  std::atomic<int> left{100000};
  Scheduler sched({.threads = 2});
  sched.BlockOn([](Scheduler* s, std::atomic<int>* left) -> Task<void> {
    for (int i = 0; i < 100000; ++i) s->Spawn(CountDown(left));
    co_return;
  }(&sched, &left));
  sched.Shutdown();
  EXPECT_EQ(left.load(), 0);
  EXPECT_EQ(sched.live_spawned(), 0u);
}

TEST(SchedulerTest, DefaultThreadCountIsCores) {
  Scheduler sched;
  EXPECT_EQ(sched.threads(), std::max(1u, std::thread::hardware_concurrency()));
}

}  // namespace
}  // namespace taskq::rt
