#include "common/runtime/as_completed.h"

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/runtime/async_test_util.h"
#include "common/runtime/channel.h"
#include "common/runtime/event.h"
#include "common/runtime/scheduler.h"
#include "common/runtime/task.h"
#include "common/runtime/when_all.h"
#include "gtest/gtest.h"

namespace taskq::rt {
namespace {

using testing::Outcome;
using testing::RunInto;
using testing::WaitUntil;

Task<int> ValueWhenSet(Event* go, int v) {
  (void)co_await go->Wait();
  co_return v;
}

Task<std::vector<size_t>> CollectIndexes(Channel<Completed<int>>& ch, std::vector<int>* values,
                                         std::atomic<int>* delivered = nullptr) {
  std::vector<size_t> order;
  while (true) {
    auto next = co_await ch.Recv();
    if (!next.ok()) break;
    order.push_back(next->index);
    values->push_back(next->value);
    if (delivered != nullptr) delivered->fetch_add(1);
  }
  co_return order;
}

TEST(AsCompletedTest, DeliversResultsInCompletionOrder) {
  Scheduler sched({.threads = 2});
  std::vector<Event> go(3);
  std::vector<Task<int>> tasks;
  for (int i = 0; i < 3; ++i) tasks.push_back(ValueWhenSet(&go[i], 10 * i));
  Channel<Completed<int>> done(3);
  std::vector<int> values;
  std::atomic<int> delivered{0};
  Outcome<std::vector<size_t>> order;
  sched.Spawn(RunInto(
      [](std::vector<Task<int>> t, Channel<Completed<int>>& ch, std::vector<int>* v,
         std::atomic<int>* d) -> Task<std::vector<size_t>> {
        auto [unused, indexes] = co_await WhenAll(AsCompleted(std::move(t), ch),
                                                  CollectIndexes(ch, v, d));
        co_return indexes;
      }(std::move(tasks), done, &values, &delivered),
      &order));
  // Finish them in the order 2, 0, 1, each after the previous was delivered.
  int k = 0;
  for (int i : {2, 0, 1}) {
    ASSERT_TRUE(WaitUntil([&] { return go[i].waiters() == 1; }));
    go[i].Set();
    ASSERT_TRUE(WaitUntil([&] { return delivered.load() == k + 1; }));
    ++k;
  }
  EXPECT_EQ(order.Get(), (std::vector<size_t>{2, 0, 1}));
  EXPECT_EQ(values, (std::vector<int>{20, 0, 10}));
  EXPECT_TRUE(done.closed());
}

Task<int> Throws() {
  throw std::runtime_error("task failed");
  co_return 0;
}

Task<int> Immediate(int v) { co_return v; }

TEST(AsCompletedTest, ExceptionIsRethrownAfterTheOthersAreDelivered) {
  Scheduler sched({.threads = 2});
  std::vector<Task<int>> tasks;
  tasks.push_back(Immediate(1));
  tasks.push_back(Throws());
  tasks.push_back(Immediate(3));
  Channel<Completed<int>> done(3);
  std::vector<int> values;
  std::string caught = sched.BlockOn(
      [](std::vector<Task<int>> t, Channel<Completed<int>>& ch,
         std::vector<int>* v) -> Task<std::string> {
        try {
          co_await WhenAll(AsCompleted(std::move(t), ch), CollectIndexes(ch, v));
        } catch (const std::runtime_error& e) {
          co_return e.what();
        }
        co_return "no exception";
      }(std::move(tasks), done, &values));
  EXPECT_EQ(caught, "task failed");
  std::sort(values.begin(), values.end());
  EXPECT_EQ(values, (std::vector<int>{1, 3}));
}

TEST(AsCompletedTest, ConsumerMayCloseEarly) {
  Scheduler sched({.threads = 2});
  std::vector<Task<int>> tasks;
  for (int i = 0; i < 20; ++i) tasks.push_back(Immediate(i));
  Channel<Completed<int>> done(1);  // small: senders wait, then see the close
  int first = sched.BlockOn(
      [](std::vector<Task<int>> t, Channel<Completed<int>>& ch) -> Task<int> {
        auto [unused, v] = co_await WhenAll(
            AsCompleted(std::move(t), ch),
            [](Channel<Completed<int>>& c) -> Task<int> {
              auto next = co_await c.Recv();
              c.Close();  // enough: the rest is dropped
              co_return next.ok() ? next->value : -1;
            }(ch));
        co_return v;
      }(std::move(tasks), done));
  EXPECT_GE(first, 0);
  EXPECT_LT(first, 20);
}

}  // namespace
}  // namespace taskq::rt
