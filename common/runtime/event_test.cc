#include "common/runtime/event.h"

#include <atomic>
#include <stop_token>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "common/runtime/async_test_util.h"
#include "common/runtime/scheduler.h"
#include "common/runtime/task.h"
#include "gtest/gtest.h"

namespace taskq::rt {
namespace {

using testing::Outcome;
using testing::RunInto;
using testing::WaitUntil;

Task<absl::Status> Wait(Event& ev, std::stop_token stop = {}) { co_return co_await ev.Wait(stop); }

Task<absl::Status> WaitAndRecord(Event& ev, int id, Mutex* mu, std::vector<int>* order) {
  absl::Status s = co_await ev.Wait();
  MutexLock lock(mu);
  order->push_back(id);
  co_return s;
}

TEST(EventTest, WaitOnASetEventReturnsAtOnce) {
  Scheduler sched({.threads = 1});
  Event ev;
  EXPECT_FALSE(ev.is_set());
  ev.Set();
  ev.Set();  // idempotent
  EXPECT_TRUE(ev.is_set());
  EXPECT_TRUE(sched.BlockOn(Wait(ev)).ok());
  ev.Clear();
  EXPECT_FALSE(ev.is_set());
}

TEST(EventTest, SetWakesEveryWaiter) {
  Scheduler sched({.threads = 2});
  Event ev;
  std::vector<Outcome<absl::Status>> got(5);
  for (auto& g : got) sched.Spawn(RunInto(Wait(ev), &g));
  ASSERT_TRUE(WaitUntil([&] { return ev.waiters() == 5; }));
  ev.Set();
  for (auto& g : got) EXPECT_EQ(g.Get(), absl::OkStatus());
  EXPECT_EQ(ev.waiters(), 0u);
}

TEST(EventTest, WaitersAreWokenOldestFirst) {
  Scheduler sched({.threads = 1});  // one thread: they run in posting order
  Event ev;
  Mutex mu;
  std::vector<int> order;
  std::vector<Outcome<absl::Status>> got(4);
  for (int i = 0; i < 4; ++i) {
    sched.Spawn(RunInto(WaitAndRecord(ev, i, &mu, &order), &got[i]));
    ASSERT_TRUE(WaitUntil([&] { return ev.waiters() == static_cast<size_t>(i + 1); }));
  }
  ev.Set();
  for (auto& g : got) ASSERT_TRUE(g.Get().has_value());
  MutexLock lock(&mu);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3}));
}

TEST(EventTest, ClearMakesLaterWaitsSuspendAgain) {
  Scheduler sched({.threads = 2});
  Event ev;
  ev.Set();
  ev.Clear();
  Outcome<absl::Status> got;
  sched.Spawn(RunInto(Wait(ev), &got));
  ASSERT_TRUE(WaitUntil([&] { return ev.waiters() == 1; }));
  EXPECT_FALSE(got.done());
  ev.Set();
  EXPECT_EQ(got.Get(), absl::OkStatus());
}

TEST(EventTest, SetFromAPlainThread) {
  Scheduler sched({.threads = 2});
  Event ev;
  Outcome<absl::Status> got;
  sched.Spawn(RunInto(Wait(ev), &got));
  ASSERT_TRUE(WaitUntil([&] { return ev.waiters() == 1; }));
  std::thread([&] { ev.Set(); }).join();
  EXPECT_EQ(got.Get(), absl::OkStatus());
}

TEST(EventTest, StopCancelsTheWait) {
  Scheduler sched({.threads = 2});
  Event ev;
  std::stop_source stop;
  Outcome<absl::Status> got, other;
  sched.Spawn(RunInto(Wait(ev, stop.get_token()), &got));
  sched.Spawn(RunInto(Wait(ev), &other));
  ASSERT_TRUE(WaitUntil([&] { return ev.waiters() == 2; }));
  std::thread([&] { stop.request_stop(); }).join();
  auto s = got.Get();
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(ev.waiters(), 1u);  // the other waiter is untouched
  ev.Set();
  EXPECT_EQ(other.Get(), absl::OkStatus());
  // Already stopped: CANCELLED at once, even on a set event.
  EXPECT_EQ(sched.BlockOn(Wait(ev, stop.get_token())).code(), absl::StatusCode::kCancelled);
}

TEST(EventTest, SetRacingCancelResumesExactlyOnce) {
  Scheduler sched({.threads = 2});
  for (int iter = 0; iter < testing::kRaceIterations; ++iter) {
    Event ev;
    std::stop_source stop;
    Outcome<absl::Status> got;
    sched.Spawn(RunInto(Wait(ev, stop.get_token()), &got));
    ASSERT_TRUE(WaitUntil([&] { return ev.waiters() == 1; }));
    std::atomic<bool> go{false};
    std::thread setter([&] {
      testing::SpinUntil(go);
      ev.Set();
    });
    std::thread canceller([&] {
      testing::SpinUntil(go);
      stop.request_stop();
    });
    go.store(true, std::memory_order_release);
    setter.join();
    canceller.join();
    auto s = got.Get();
    ASSERT_TRUE(s.has_value()) << "iteration " << iter;
    EXPECT_TRUE(s->ok() || s->code() == absl::StatusCode::kCancelled) << *s;
    EXPECT_EQ(got.sets(), 1);
    EXPECT_EQ(ev.waiters(), 0u);
  }
}

}  // namespace
}  // namespace taskq::rt
