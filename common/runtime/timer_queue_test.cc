#include "common/runtime/timer_queue.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace taskq::rt {
namespace {

TEST(TimerQueueTest, PopsInDeadlineOrderWithTiesInInsertionOrder) {
  TimerQueue q;
  std::vector<TimerNode> nodes(7);
  MonoNanos whens[] = {50, 10, 30, 10, 70, 30, 10};
  for (size_t i = 0; i < nodes.size(); ++i) {
    nodes[i].when = whens[i];
    q.Insert(&nodes[i]);
  }
  std::vector<TimerNode*> expected = {&nodes[1], &nodes[3], &nodes[6], &nodes[2],
                                      &nodes[5], &nodes[0], &nodes[4]};
  for (TimerNode* want : expected) {
    TimerNode* got = q.Pop();
    EXPECT_EQ(got, want);
    EXPECT_FALSE(got->queued());
  }
  EXPECT_TRUE(q.empty());
  EXPECT_EQ(q.Pop(), nullptr);
}

TEST(TimerQueueTest, InsertReportsANewEarliestAndPopExpiredRespectsNow) {
  TimerQueue q;
  TimerNode a, b, c;
  a.when = 100;
  b.when = 200;
  c.when = 50;
  EXPECT_TRUE(q.Insert(&a));
  EXPECT_FALSE(q.Insert(&b));
  EXPECT_TRUE(q.Insert(&c));
  EXPECT_EQ(q.TopWhen(), 50);
  EXPECT_EQ(q.PopExpired(49), nullptr);
  EXPECT_EQ(q.PopExpired(100), &c);
  EXPECT_EQ(q.PopExpired(100), &a);
  EXPECT_EQ(q.PopExpired(100), nullptr);
  EXPECT_EQ(q.size(), 1u);
}

TEST(TimerQueueTest, RemoveAnywhereKeepsTheHeapValid) {
  TimerQueue q;
  TimerNode n;
  EXPECT_FALSE(q.Remove(&n));  // never queued
  std::mt19937 rng(1);
  std::vector<TimerNode> nodes(2000);
  for (auto& node : nodes) {
    node.when = rng() % 500;
    q.Insert(&node);
  }
  std::vector<bool> removed(nodes.size(), false);
  for (size_t i = 0; i < nodes.size(); i += 3) {
    EXPECT_TRUE(q.Remove(&nodes[i]));
    EXPECT_FALSE(q.Remove(&nodes[i]));
    removed[i] = true;
  }
  MonoNanos last = -1;
  size_t popped = 0;
  while (TimerNode* node = q.Pop()) {
    EXPECT_GE(node->when, last);
    last = node->when;
    EXPECT_FALSE(removed[node - nodes.data()]);
    ++popped;
  }
  EXPECT_EQ(popped, nodes.size() - (nodes.size() + 2) / 3);
}

TEST(TimerQueueTest, HundredThousandInsertCancelHalfPopRest) {
  constexpr size_t kTimers = 100'000;
  std::vector<TimerNode> nodes(kTimers);
  std::mt19937_64 rng(3);
  for (auto& node : nodes) node.when = static_cast<MonoNanos>(rng() % 1'000'000'000);
  TimerQueue q;
  auto t0 = std::chrono::steady_clock::now();
  for (auto& node : nodes) q.Insert(&node);
  auto t1 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < kTimers; i += 2) q.Remove(&nodes[i]);
  auto t2 = std::chrono::steady_clock::now();
  MonoNanos last = -1;
  size_t popped = 0;
  while (TimerNode* node = q.PopExpired(1'000'000'000)) {
    ASSERT_GE(node->when, last);
    last = node->when;
    ++popped;
  }
  auto t3 = std::chrono::steady_clock::now();
  EXPECT_EQ(popped, kTimers / 2);
  auto us = [](auto d) {
    return static_cast<double>(std::chrono::duration_cast<std::chrono::microseconds>(d).count());
  };
  std::printf("[ figures  ] TimerQueue 100k: insert %.0f us, cancel 50k %.0f us, pop 50k %.0f us\n",
              us(t1 - t0), us(t2 - t1), us(t3 - t2));
}

TEST(TimerQueueTest, MonotonicConversionsSaturate) {
  EXPECT_EQ(MonotonicAfter(absl::InfiniteDuration(), 5), kMonoNever);
  EXPECT_EQ(MonotonicAfter(-absl::Seconds(1), 5), 5);
  EXPECT_EQ(MonotonicAfter(absl::Nanoseconds(10), 5), 15);
  EXPECT_EQ(MonotonicDeadline(absl::InfiniteFuture()), kMonoNever);
  MonoNanos now = MonotonicNow();
  MonoNanos in_a_second = MonotonicDeadline(absl::Now() + absl::Seconds(1));
  EXPECT_GT(in_a_second, now + 900'000'000);
  EXPECT_LT(in_a_second, now + 1'100'000'000);
  MonoNanos past = MonotonicDeadline(absl::InfinitePast());
  EXPECT_LE(past, MonotonicNow());
}

}  // namespace
}  // namespace taskq::rt
