#include "common/runtime/async_mutex.h"

#include <atomic>
#include <stop_token>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/runtime/async_test_util.h"
#include "common/runtime/scheduler.h"
#include "common/runtime/task.h"
#include "common/runtime/when_all.h"
#include "gtest/gtest.h"

namespace taskq::rt {
namespace {

using testing::Outcome;
using testing::RunInto;
using testing::WaitUntil;

TEST(AsyncMutexTest, TryLockAndUnlock) {
  AsyncMutex mu;
  EXPECT_FALSE(mu.is_locked());
  EXPECT_TRUE(mu.TryLock());
  EXPECT_TRUE(mu.is_locked());
  EXPECT_FALSE(mu.TryLock());
  mu.Unlock();
  EXPECT_FALSE(mu.is_locked());
}

TEST(AsyncMutexTest, ScopedLockUnlocksAtScopeExit) {
  Scheduler sched({.threads = 1});
  AsyncMutex mu;
  bool held_inside = sched.BlockOn([](AsyncMutex& m) -> Task<bool> {
    auto guard = co_await m.ScopedLock();
    co_return guard.owns_lock() && m.is_locked();
  }(mu));
  EXPECT_TRUE(held_inside);
  EXPECT_FALSE(mu.is_locked());
}

// Many coroutines on four threads increment a plain int under the mutex,
// holding it across a suspension point now and then. Any overlap would be
// a lost update (and a ThreadSanitizer report).
Task<void> IncrementMany(AsyncMutex& mu, int* counter, int times, Scheduler& sched) {
  for (int i = 0; i < times; ++i) {
    auto guard = co_await mu.ScopedLock();
    int v = *counter;
    if (i % 64 == 0) co_await sched.Yield();  // still held while suspended
    *counter = v + 1;
  }
}

TEST(AsyncMutexTest, ProtectsANonAtomicCounterUnderContention) {
  Scheduler sched({.threads = 4});
  AsyncMutex mu;
  int counter = 0;
  constexpr int kCoroutines = 8, kTimes = 5000;
  std::vector<Task<void>> tasks;
  for (int i = 0; i < kCoroutines; ++i) tasks.push_back(IncrementMany(mu, &counter, kTimes, sched));
  sched.BlockOn(WhenAll(std::move(tasks)));
  EXPECT_EQ(counter, kCoroutines * kTimes);
  EXPECT_FALSE(mu.is_locked());
}

Task<absl::Status> LockRecordUnlock(AsyncMutex& mu, int id, Mutex* order_mu,
                                    std::vector<int>* order, std::stop_token stop = {}) {
  absl::Status s = co_await mu.Lock(stop);
  if (!s.ok()) co_return s;
  {
    MutexLock lock(order_mu);
    order->push_back(id);
  }
  mu.Unlock();
  co_return s;
}

TEST(AsyncMutexTest, WaitersAcquireInFifoOrder) {
  Scheduler sched({.threads = 4});
  AsyncMutex mu;
  ASSERT_TRUE(mu.TryLock());  // the test thread holds it while they queue
  Mutex order_mu;
  std::vector<int> order;
  constexpr int kWaiters = 8;
  std::vector<Outcome<absl::Status>> done(kWaiters);
  for (int i = 0; i < kWaiters; ++i) {
    sched.Spawn(RunInto(LockRecordUnlock(mu, i, &order_mu, &order), &done[i]));
    ASSERT_TRUE(WaitUntil([&] { return mu.waiters() == static_cast<size_t>(i + 1); }));
  }
  EXPECT_FALSE(mu.TryLock());  // no barging past the queue
  mu.Unlock();                 // handed down the queue one by one
  for (auto& d : done) ASSERT_TRUE(d.Get().has_value());
  MutexLock lock(&order_mu);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_FALSE(mu.is_locked());
}

TEST(AsyncMutexTest, CancelledLockDoesNotTakeTheMutex) {
  Scheduler sched({.threads = 2});
  AsyncMutex mu;
  ASSERT_TRUE(mu.TryLock());
  std::stop_source stop;
  Outcome<absl::StatusCode> got;
  sched.Spawn(RunInto(
      [](AsyncMutex& m, std::stop_token st) -> Task<absl::StatusCode> {
        absl::StatusOr<AsyncMutex::Guard> g = co_await m.ScopedLock(st);
        co_return g.status().code();
      }(mu, stop.get_token()),
      &got));
  ASSERT_TRUE(WaitUntil([&] { return mu.waiters() == 1; }));
  std::thread([&] { stop.request_stop(); }).join();
  EXPECT_EQ(got.Get(), absl::StatusCode::kCancelled);
  EXPECT_EQ(mu.waiters(), 0u);
  EXPECT_TRUE(mu.is_locked());  // still ours
  mu.Unlock();
  EXPECT_FALSE(mu.is_locked());  // not handed to the cancelled waiter
}

TEST(AsyncMutexTest, ScopedLockWithTokenReturnsAGuard) {
  Scheduler sched({.threads = 1});
  AsyncMutex mu;
  std::stop_source stop;
  bool ok = sched.BlockOn([](AsyncMutex& m, std::stop_token st) -> Task<bool> {
    absl::StatusOr<AsyncMutex::Guard> g = co_await m.ScopedLock(st);
    co_return g.ok() && g->owns_lock() && m.is_locked();
  }(mu, stop.get_token()));
  EXPECT_TRUE(ok);
  EXPECT_FALSE(mu.is_locked());
}

// Unlock and a cancellation hitting the first waiter at the same moment:
// the mutex passes to it or to the second waiter, never to nobody.
TEST(AsyncMutexTest, UnlockRacingCancelNeverLosesTheMutex) {
  Scheduler sched({.threads = 2});
  for (int iter = 0; iter < testing::kRaceIterations; ++iter) {
    AsyncMutex mu;
    ASSERT_TRUE(mu.TryLock());
    Mutex order_mu;
    std::vector<int> order;
    std::stop_source stop;
    Outcome<absl::Status> a, b;
    sched.Spawn(RunInto(LockRecordUnlock(mu, 0, &order_mu, &order, stop.get_token()), &a));
    ASSERT_TRUE(WaitUntil([&] { return mu.waiters() == 1; }));
    sched.Spawn(RunInto(LockRecordUnlock(mu, 1, &order_mu, &order), &b));
    ASSERT_TRUE(WaitUntil([&] { return mu.waiters() == 2; }));

    std::atomic<bool> go{false};
    std::thread unlocker([&] {
      testing::SpinUntil(go);
      mu.Unlock();
    });
    std::thread canceller([&] {
      testing::SpinUntil(go);
      stop.request_stop();
    });
    go.store(true, std::memory_order_release);
    unlocker.join();
    canceller.join();

    auto sa = a.Get();
    auto sb = b.Get();
    ASSERT_TRUE(sa.has_value()) << "iteration " << iter;
    ASSERT_TRUE(sb.has_value()) << "iteration " << iter << ": mutex lost";
    EXPECT_TRUE(sa->ok() || sa->code() == absl::StatusCode::kCancelled);
    EXPECT_TRUE(sb->ok());
    EXPECT_FALSE(mu.is_locked());
    EXPECT_EQ(a.sets(), 1);
    MutexLock lock(&order_mu);
    EXPECT_EQ(order, sa->ok() ? std::vector<int>({0, 1}) : std::vector<int>({1}));
  }
}

TEST(AsyncMutexTest, UnlockFromAPlainThreadWakesAPoolCoroutine) {
  Scheduler sched({.threads = 1});
  AsyncMutex mu;
  ASSERT_TRUE(mu.TryLock());
  Outcome<absl::Status> got;
  sched.Spawn(RunInto(
      [](AsyncMutex& m) -> Task<absl::Status> {
        absl::Status s = co_await m.Lock();
        m.Unlock();
        co_return s;
      }(mu),
      &got));
  ASSERT_TRUE(WaitUntil([&] { return mu.waiters() == 1; }));
  std::thread([&] { mu.Unlock(); }).join();
  EXPECT_EQ(got.Get(), absl::OkStatus());
  EXPECT_FALSE(mu.is_locked());
}

}  // namespace
}  // namespace taskq::rt
