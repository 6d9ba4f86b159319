// Unit tests: ThreadPool (also as an rt::Executor) and Backoff.
#include "worker/thread_pool.h"

#include <atomic>

#include "common/runtime/scheduler.h"
#include "common/runtime/task.h"
#include "gtest/gtest.h"
#include "worker/backoff.h"

namespace taskq {
namespace {

TEST(ThreadPool, RunsEveryJobBeforeDestruction) {
  std::atomic<int> ran{0};
  {
    ThreadPool pool(3);
    EXPECT_EQ(pool.size(), 3u);
    for (int i = 0; i < 1000; ++i) pool.Submit([&ran] { ++ran; });
  }
  EXPECT_EQ(ran.load(), 1000);
}

TEST(ThreadPool, RunsJobsConcurrently) {
  // Two jobs that each wait for the other can only finish on two threads.
  Mutex mu;
  CondVar cv;
  int arrived = 0;
  {
    ThreadPool pool(2);
    for (int i = 0; i < 2; ++i) {
      pool.Submit([&] {
        MutexLock lock(&mu);
        ++arrived;
        cv.SignalAll();
        absl::Time deadline = absl::Now() + absl::Seconds(30);
        while (arrived < 2 && absl::Now() < deadline) cv.WaitWithDeadline(&mu, deadline);
      });
    }
  }
  MutexLock lock(&mu);
  EXPECT_EQ(arrived, 2);
}

TEST(ThreadPool, AcceptsMoveOnlyJobs) {
  std::atomic<int> value{0};
  {
    ThreadPool pool(1);
    auto p = std::make_unique<int>(42);
    pool.Submit([&value, p = std::move(p)] { value = *p; });
  }
  EXPECT_EQ(value.load(), 42);
}

// Hops onto `pool` and reports where it runs.
rt::Task<rt::Executor*> WhereAfterHop(ThreadPool* pool) {
  co_await rt::ScheduleOn(*pool);
  co_return rt::CurrentExecutor();
}

TEST(ThreadPool, IsAnExecutorCoroutinesCanHopOnto) {
  ThreadPool pool(2, "hop-test");
  rt::Scheduler sched({.threads = 1});
  EXPECT_EQ(sched.BlockOn(WhereAfterHop(&pool)), &pool);
}

TEST(Backoff, DoublesToTheCapWithJitter) {
  Backoff backoff;
  absl::Duration expected = absl::Milliseconds(100);
  for (int i = 0; i < 12; ++i) {
    absl::Duration d = backoff.Next();
    EXPECT_GE(d, expected * 0.8) << i;
    EXPECT_LE(d, expected * 1.2) << i;
    expected = std::min(expected * 2, absl::Seconds(5));
  }
  backoff.Reset();
  EXPECT_LE(backoff.Next(), absl::Milliseconds(120));
}

}  // namespace
}  // namespace taskq
