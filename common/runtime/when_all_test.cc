#include "common/runtime/when_all.h"

#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "common/runtime/async_test_util.h"
#include "common/runtime/event.h"
#include "common/runtime/scheduler.h"
#include "common/runtime/task.h"
#include "gtest/gtest.h"

namespace taskq::rt {
namespace {

using testing::Outcome;
using testing::RunInto;
using testing::WaitUntil;

Task<int> Square(int n) { co_return n * n; }

TEST(WhenAllTest, ValuesComeBackInInputOrder) {
  Scheduler sched({.threads = 4});
  std::vector<Task<int>> tasks;
  for (int i = 1; i <= 10; ++i) tasks.push_back(Square(i));
  std::vector<int> squares = sched.BlockOn(WhenAll(std::move(tasks)));
  EXPECT_EQ(squares, (std::vector<int>{1, 4, 9, 16, 25, 36, 49, 64, 81, 100}));
}

TEST(WhenAllTest, EmptyInputFinishesAtOnce) {
  Scheduler sched({.threads = 1});
  EXPECT_TRUE(sched.BlockOn(WhenAll(std::vector<Task<int>>{})).empty());
  sched.BlockOn(WhenAll(std::vector<Task<void>>{}));
}

// Each task waits until all of them have started: only possible if WhenAll
// runs them concurrently. One thread, so the overlap is by suspension.
Task<void> Rendezvous(std::atomic<int>* arrived, int n, Event* all_here) {
  if (arrived->fetch_add(1) + 1 == n) all_here->Set();
  (void)co_await all_here->Wait();
}

TEST(WhenAllTest, RunsTasksConcurrently) {
  Scheduler sched({.threads = 1});
  std::atomic<int> arrived{0};
  Event all_here;
  std::vector<Task<void>> tasks;
  for (int i = 0; i < 5; ++i) tasks.push_back(Rendezvous(&arrived, 5, &all_here));
  Outcome<bool> done;
  sched.Spawn(RunInto(
      [](std::vector<Task<void>> t) -> Task<bool> {
        co_await WhenAll(std::move(t));
        co_return true;
      }(std::move(tasks)),
      &done));
  EXPECT_EQ(done.Get(), true);  // a sequential WhenAll would never finish
  EXPECT_EQ(arrived.load(), 5);
}

// Each task holds its thread until the other one has started: this only
// finishes if WhenAll posted them to different pool threads.
Task<bool> HoldThreadUntilBothStarted(std::atomic<int>* started) {
  started->fetch_add(1);
  co_return WaitUntil([&] { return started->load() == 2; });
}

TEST(WhenAllTest, TasksRunInParallelOnThePool) {
  Scheduler sched({.threads = 2});
  std::atomic<int> started{0};
  auto [a, b] = sched.BlockOn(
      WhenAll(HoldThreadUntilBothStarted(&started), HoldThreadUntilBothStarted(&started)));
  EXPECT_TRUE(a);
  EXPECT_TRUE(b);
}

Task<void> Touch(std::atomic<int>* n) {
  n->fetch_add(1);
  co_return;
}

TEST(WhenAllTest, VoidTasks) {
  Scheduler sched({.threads = 2});
  std::atomic<int> n{0};
  std::vector<Task<void>> tasks;
  for (int i = 0; i < 100; ++i) tasks.push_back(Touch(&n));
  sched.BlockOn(WhenAll(std::move(tasks)));
  EXPECT_EQ(n.load(), 100);
}

Task<std::string> Name() { co_return "taskq"; }

TEST(WhenAllTest, VariadicGivesATuple) {
  Scheduler sched({.threads = 2});
  std::atomic<int> n{0};
  auto [square, name, nothing] = sched.BlockOn(WhenAll(Square(12), Name(), Touch(&n)));
  EXPECT_EQ(square, 144);
  EXPECT_EQ(name, "taskq");
  EXPECT_EQ(nothing, std::monostate{});
  EXPECT_EQ(n.load(), 1);
}

Task<int> ThrowsAfter(Event* go, std::atomic<int>* finished, const char* what) {
  if (go != nullptr) (void)co_await go->Wait();
  finished->fetch_add(1);
  throw std::runtime_error(what);
}

Task<int> ValueAfter(Event* go, std::atomic<int>* finished) {
  (void)co_await go->Wait();
  finished->fetch_add(1);
  co_return 1;
}

TEST(WhenAllTest, FirstExceptionIsRethrownAfterAllFinishedOthersLogged) {
  Scheduler sched({.threads = 2});
  Event second, last;
  std::atomic<int> finished{0};
  std::vector<Task<int>> tasks;
  tasks.push_back(ValueAfter(&last, &finished));
  tasks.push_back(ThrowsAfter(&second, &finished, "second failure"));
  tasks.push_back(ThrowsAfter(nullptr, &finished, "first failure"));
  Outcome<std::string> caught;
  ::testing::internal::CaptureStderr();
  sched.Spawn(RunInto(
      [](std::vector<Task<int>> t, std::atomic<int>* fin) -> Task<std::string> {
        try {
          co_await WhenAll(std::move(t));
        } catch (const std::runtime_error& e) {
          // Every task has finished by the time the exception arrives.
          co_return std::string(e.what()) + " after " + std::to_string(fin->load());
        }
        co_return "no exception";
      }(std::move(tasks), &finished),
      &caught));
  ASSERT_TRUE(WaitUntil([&] { return finished.load() == 1; }));  // "first failure"
  second.Set();
  ASSERT_TRUE(WaitUntil([&] { return finished.load() == 2; }));
  EXPECT_FALSE(caught.done());  // still waiting for the last task
  last.Set();
  // Which failure is recorded first is up to the two pool threads: the
  // "first failure" task may still be between its counter bump and its
  // throw when the second one throws. Either way one is rethrown, only
  // after all three finished, and the other is logged, not lost.
  std::string got = caught.Get().value_or("(not finished)");
  sched.Shutdown();
  std::string log = ::testing::internal::GetCapturedStderr();
  if (got == "first failure after 3") {
    EXPECT_NE(log.find("WhenAll: task 1 threw: second failure"), std::string::npos) << log;
  } else {
    EXPECT_EQ(got, "second failure after 3");
    EXPECT_NE(log.find("WhenAll: task 2 threw: first failure"), std::string::npos) << log;
  }
}

TEST(WhenAllTest, StartsInlineWithoutAnExecutor) {
  // Driven by hand on this (executor-less) thread: the children run inline
  // and the whole thing completes inside resume().
  std::vector<Task<int>> tasks;
  tasks.push_back(Square(2));
  tasks.push_back(Square(3));
  Task<std::vector<int>> all = WhenAll(std::move(tasks));
  auto handle = all.Release();
  handle.resume();
  ASSERT_TRUE(handle.done());
  EXPECT_EQ(handle.promise().TakeResult(), (std::vector<int>{4, 9}));
  handle.destroy();
}

TEST(WhenAllTest, NestedWhenAll) {
  Scheduler sched({.threads = 3});
  auto inner = [](int base) -> Task<int> {
    std::vector<Task<int>> t;
    for (int i = 0; i < 10; ++i) t.push_back(Square(base + i));
    std::vector<int> v = co_await WhenAll(std::move(t));
    int sum = 0;
    for (int x : v) sum += x;
    co_return sum;
  };
  std::vector<Task<int>> outer;
  for (int b = 0; b < 100; b += 10) outer.push_back(inner(b));
  std::vector<int> sums = sched.BlockOn(WhenAll(std::move(outer)));
  int total = 0;
  for (int s : sums) total += s;
  EXPECT_EQ(total, 328350);  // sum of squares 0..99
}

}  // namespace
}  // namespace taskq::rt
