#include "common/runtime/condition.h"

#include <atomic>
#include <deque>
#include <stop_token>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "common/runtime/async_mutex.h"
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

// Seed 004's producer/consumer on a list, with coroutines.
struct Shelf {
  AsyncMutex mu;
  Condition nonempty;
  std::deque<int> items;  // guarded by mu (an AsyncMutex: not annotatable)
  int producers_left = 0;
};

Task<void> Produce(Shelf& shelf, int from, int count) {
  for (int i = from; i < from + count; ++i) {
    (void)co_await shelf.mu.Lock();
    shelf.items.push_back(i);
    shelf.nonempty.NotifyOne();
    shelf.mu.Unlock();
  }
  (void)co_await shelf.mu.Lock();
  if (--shelf.producers_left == 0) shelf.nonempty.NotifyAll();  // wake consumers to finish
  shelf.mu.Unlock();
}

Task<int64_t> Consume(Shelf& shelf, int* taken) {
  int64_t sum = 0;
  while (true) {
    (void)co_await shelf.mu.Lock();
    absl::Status s = co_await shelf.nonempty.Wait(
        shelf.mu, [&] { return !shelf.items.empty() || shelf.producers_left == 0; });
    EXPECT_TRUE(s.ok());
    if (shelf.items.empty()) {  // producers done and drained
      shelf.mu.Unlock();
      co_return sum;
    }
    sum += shelf.items.front();
    shelf.items.pop_front();
    ++*taken;
    shelf.mu.Unlock();
  }
}

TEST(ConditionTest, ProducersAndConsumers) {
  Scheduler sched({.threads = 4});
  Shelf shelf;
  constexpr int kProducers = 3, kConsumers = 3, kEach = 2000;
  shelf.producers_left = kProducers;
  std::vector<int> taken(kConsumers, 0);
  std::vector<Task<int64_t>> consumers;
  for (int c = 0; c < kConsumers; ++c) consumers.push_back(Consume(shelf, &taken[c]));
  std::vector<Task<void>> producers;
  for (int p = 0; p < kProducers; ++p) producers.push_back(Produce(shelf, p * kEach, kEach));
  auto [sums, unused] = sched.BlockOn(WhenAll(WhenAll(std::move(consumers)),
                                              WhenAll(std::move(producers))));
  int64_t total = 0;
  for (int64_t s : sums) total += s;
  const int64_t n = kProducers * kEach;
  EXPECT_EQ(total, n * (n - 1) / 2);
  int count = 0;
  for (int t : taken) count += t;
  EXPECT_EQ(count, n);
  EXPECT_FALSE(shelf.mu.is_locked());
}

Task<absl::Status> WaitOnce(AsyncMutex& mu, Condition& cond, int id, Mutex* order_mu,
                            std::vector<int>* order, std::stop_token stop = {}) {
  (void)co_await mu.Lock();
  absl::Status s = co_await cond.Wait(mu, stop);
  bool held = mu.is_locked();  // Wait returns holding the mutex, whatever the status
  if (s.ok()) {
    MutexLock lock(order_mu);
    order->push_back(id);
  }
  mu.Unlock();
  if (!held) co_return absl::InternalError("Wait returned without the mutex");
  co_return s;
}

TEST(ConditionTest, NotifyOneWakesTheOldestWaiter) {
  Scheduler sched({.threads = 4});
  AsyncMutex mu;
  Condition cond;
  Mutex order_mu;
  std::vector<int> order;
  std::vector<Outcome<absl::Status>> got(4);
  for (int i = 0; i < 4; ++i) {
    sched.Spawn(RunInto(WaitOnce(mu, cond, i, &order_mu, &order), &got[i]));
    ASSERT_TRUE(WaitUntil([&] { return cond.waiters() == static_cast<size_t>(i + 1); }));
  }
  for (int i = 0; i < 4; ++i) {
    cond.NotifyOne();
    ASSERT_EQ(got[i].Get(), absl::OkStatus());
  }
  MutexLock lock(&order_mu);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3}));
}

TEST(ConditionTest, NotifyWithNobodyWaitingIsNotRemembered) {
  Scheduler sched({.threads = 2});
  AsyncMutex mu;
  Condition cond;
  Mutex order_mu;
  std::vector<int> order;
  cond.NotifyOne();
  cond.NotifyAll();
  Outcome<absl::Status> got;
  sched.Spawn(RunInto(WaitOnce(mu, cond, 0, &order_mu, &order), &got));
  ASSERT_TRUE(WaitUntil([&] { return cond.waiters() == 1; }));
  EXPECT_FALSE(got.done());
  cond.NotifyAll();
  EXPECT_EQ(got.Get(), absl::OkStatus());
}

TEST(ConditionTest, CancelledWaitReturnsHoldingTheMutex) {
  Scheduler sched({.threads = 2});
  AsyncMutex mu;
  Condition cond;
  Mutex order_mu;
  std::vector<int> order;
  std::stop_source stop;
  Outcome<absl::Status> got;
  sched.Spawn(RunInto(WaitOnce(mu, cond, 0, &order_mu, &order, stop.get_token()), &got));
  ASSERT_TRUE(WaitUntil([&] { return cond.waiters() == 1; }));
  EXPECT_FALSE(mu.is_locked());  // released while waiting
  std::thread([&] { stop.request_stop(); }).join();
  auto s = got.Get();
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->code(), absl::StatusCode::kCancelled) << *s;
  EXPECT_EQ(cond.waiters(), 0u);
  EXPECT_FALSE(mu.is_locked());
  // Already stopped: CANCELLED without releasing the mutex.
  EXPECT_EQ(sched.BlockOn(WaitOnce(mu, cond, 1, &order_mu, &order, stop.get_token())).code(),
            absl::StatusCode::kCancelled);
}

// NotifyOne and a cancellation of the oldest waiter at the same moment: the
// notification wakes it or, if the cancellation won, the next waiter.
TEST(ConditionTest, NotifyRacingCancelIsNeverLost) {
  Scheduler sched({.threads = 2});
  for (int iter = 0; iter < testing::kRaceIterations; ++iter) {
    AsyncMutex mu;
    Condition cond;
    Mutex order_mu;
    std::vector<int> order;
    std::stop_source stop;
    Outcome<absl::Status> a, b;
    sched.Spawn(RunInto(WaitOnce(mu, cond, 0, &order_mu, &order, stop.get_token()), &a));
    ASSERT_TRUE(WaitUntil([&] { return cond.waiters() == 1; }));
    sched.Spawn(RunInto(WaitOnce(mu, cond, 1, &order_mu, &order), &b));
    ASSERT_TRUE(WaitUntil([&] { return cond.waiters() == 2; }));

    std::atomic<bool> go{false};
    std::thread notifier([&] {
      testing::SpinUntil(go);
      cond.NotifyOne();
    });
    std::thread canceller([&] {
      testing::SpinUntil(go);
      stop.request_stop();
    });
    go.store(true, std::memory_order_release);
    notifier.join();
    canceller.join();

    auto sa = a.Get();
    ASSERT_TRUE(sa.has_value()) << "iteration " << iter;
    if (sa->ok()) {
      // A consumed the notification: B still waits.
      EXPECT_EQ(cond.waiters(), 1u) << "iteration " << iter;
      EXPECT_FALSE(b.done());
      cond.NotifyOne();
    } else {
      EXPECT_EQ(sa->code(), absl::StatusCode::kCancelled);
    }
    auto sb = b.Get();  // woken by the raced notification or the extra one
    ASSERT_TRUE(sb.has_value()) << "iteration " << iter << ": notification lost";
    EXPECT_TRUE(sb->ok());
    EXPECT_EQ(a.sets(), 1);
    EXPECT_FALSE(mu.is_locked());
  }
}

}  // namespace
}  // namespace taskq::rt
