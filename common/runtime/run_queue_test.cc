#include "common/runtime/run_queue.h"

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace taskq::rt::internal {
namespace {

// Stand-ins for coroutine handles: distinct addresses, never resumed.
std::vector<char> slots(100000);
std::coroutine_handle<> Fake(size_t i) {
  return std::coroutine_handle<>::from_address(&slots[i]);
}
size_t IndexOf(std::coroutine_handle<> h) {
  return static_cast<size_t>(static_cast<char*>(h.address()) - slots.data());
}

TEST(RunQueueTest, PopsInPushOrder) {
  RunQueue q;
  EXPECT_FALSE(q.Pop());
  for (size_t i = 0; i < 10; ++i) ASSERT_NE(q.Push(Fake(i)), RunQueue::kFull);
  EXPECT_EQ(q.SizeHint(), 10u);
  for (size_t i = 0; i < 10; ++i) EXPECT_EQ(IndexOf(q.Pop()), i);
  EXPECT_FALSE(q.Pop());
  EXPECT_EQ(q.SizeHint(), 0u);
}

TEST(RunQueueTest, FullQueueRefusesAndGivesUpItsOlderHalf) {
  RunQueue q;
  for (size_t i = 0; i < RunQueue::kCapacity; ++i) ASSERT_NE(q.Push(Fake(i)), RunQueue::kFull);
  EXPECT_EQ(q.Push(Fake(RunQueue::kCapacity)), RunQueue::kFull);
  std::coroutine_handle<> half[RunQueue::kCapacity / 2];
  ASSERT_EQ(q.TakeHalf(half), RunQueue::kCapacity / 2);
  for (size_t i = 0; i < RunQueue::kCapacity / 2; ++i) EXPECT_EQ(IndexOf(half[i]), i);
  EXPECT_EQ(q.Push(Fake(RunQueue::kCapacity)), RunQueue::kCapacity / 2);  // room again
  for (size_t i = RunQueue::kCapacity / 2; i <= RunQueue::kCapacity; ++i) {
    EXPECT_EQ(IndexOf(q.Pop()), i);
  }
}

TEST(RunQueueTest, ThiefTakesTheOlderHalf) {
  RunQueue victim;
  RunQueue thief;
  for (size_t i = 0; i < 10; ++i) ASSERT_NE(victim.Push(Fake(i)), RunQueue::kFull);
  std::coroutine_handle<> run = thief.StealHalfInto(victim);
  ASSERT_TRUE(run);
  EXPECT_EQ(IndexOf(run), 4u);  // the newest of the stolen half runs now
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(IndexOf(thief.Pop()), i);
  EXPECT_FALSE(thief.Pop());
  for (size_t i = 5; i < 10; ++i) EXPECT_EQ(IndexOf(victim.Pop()), i);
  EXPECT_FALSE(thief.StealHalfInto(victim));  // empty: nothing to steal
}

TEST(RunQueueTest, StealsOneFromAQueueOfOne) {
  RunQueue victim;
  RunQueue thief;
  ASSERT_EQ(victim.Push(Fake(7)), 0u);
  EXPECT_EQ(IndexOf(thief.StealHalfInto(victim)), 7u);
  EXPECT_FALSE(victim.Pop());
  EXPECT_FALSE(thief.Pop());
}

// The owner pushes and pops while two threads steal: every handle comes
// out exactly once. (Under ThreadSanitizer this also checks the ordering.)
TEST(RunQueueTest, ConcurrentPopAndStealSeeEachHandleOnce) {
  constexpr size_t kItems = 50000;
  RunQueue owner;
  std::vector<std::atomic<int>> seen(kItems);
  std::atomic<bool> done{false};
  std::atomic<size_t> taken{0};
  auto thief = [&] {
    RunQueue mine;
    while (!done.load(std::memory_order_acquire)) {
      if (std::coroutine_handle<> h = mine.StealHalfInto(owner)) {
        seen[IndexOf(h)].fetch_add(1);
        taken.fetch_add(1);
        while (std::coroutine_handle<> more = mine.Pop()) {
          seen[IndexOf(more)].fetch_add(1);
          taken.fetch_add(1);
        }
      }
    }
  };
  std::thread t1(thief);
  std::thread t2(thief);
  size_t next = 0;
  while (next < kItems) {
    if (owner.Push(Fake(next)) != RunQueue::kFull) {
      ++next;
    } else if (std::coroutine_handle<> h = owner.Pop()) {
      seen[IndexOf(h)].fetch_add(1);
      taken.fetch_add(1);
    }
    if (next % 3 == 0) {
      if (std::coroutine_handle<> h = owner.Pop()) {
        seen[IndexOf(h)].fetch_add(1);
        taken.fetch_add(1);
      }
    }
  }
  while (std::coroutine_handle<> h = owner.Pop()) {
    seen[IndexOf(h)].fetch_add(1);
    taken.fetch_add(1);
  }
  // Thieves may still hold a batch they stole last: let them drain it.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (taken.load() < kItems && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  done.store(true, std::memory_order_release);
  t1.join();
  t2.join();
  for (size_t i = 0; i < kItems; ++i) ASSERT_EQ(seen[i].load(), 1) << "handle " << i;
}

}  // namespace
}  // namespace taskq::rt::internal
