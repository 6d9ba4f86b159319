#include "common/runtime/frame_pool.h"

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "common/runtime/sanitizers.h"
#include "common/runtime/scheduler.h"
#include "common/runtime/task.h"
#include "common/runtime/when_all.h"
#include "gtest/gtest.h"

namespace taskq::rt::internal {
namespace {

TEST(FramePoolTest, ReusesAFreedFrameOnTheSameThread) {
  void* a = AllocateFrame(100);
  std::memset(a, 1, 100);
  FreeFrame(a, 100);
  void* b = AllocateFrame(120);  // same 128-byte class
  EXPECT_EQ(a, b);
  std::memset(b, 2, 120);  // the whole class size is usable
  FreeFrame(b, 120);
}

#ifdef TASKQ_ASAN
// Recycling must not hide a use after the coroutine ended: cached frames
// are poisoned.
TEST(FramePoolDeathTest, TouchingACachedFrameIsReportedUnderAsan) {
  EXPECT_DEATH(
      {
        auto* f = static_cast<volatile char*>(AllocateFrame(100));
        FreeFrame(const_cast<char*>(f), 100);
        f[50] = 1;
      },
      "use-after-poison");
}
#endif

TEST(FramePoolTest, LargeFramesBypassThePool) {
  size_t before = CachedFramesOnThisThread(64);
  void* big = AllocateFrame(4096);
  std::memset(big, 3, 4096);
  FreeFrame(big, 4096);
  EXPECT_EQ(CachedFramesOnThisThread(64), before);
  EXPECT_EQ(CachedFramesOnThisThread(4096), 0u);
}

// A frame allocated on one thread and freed on another goes to the freeing
// thread's list and is reused there.
TEST(FramePoolTest, FrameFreedOnAnotherThreadIsReusedThere) {
  void* frame = AllocateFrame(200);
  std::memset(frame, 4, 200);
  void* reused = nullptr;
  std::thread other([frame, &reused] {
    std::memset(frame, 5, 200);  // the new owner writes it
    FreeFrame(frame, 200);
    EXPECT_EQ(CachedFramesOnThisThread(200), 1u);
    reused = AllocateFrame(200);
    std::memset(reused, 6, 200);
    FreeFrame(reused, 200);
  });
  other.join();
  EXPECT_EQ(reused, frame);
}

// A consumer thread that frees more than its list holds passes batches to
// the depot, where a producer thread picks them up again.
TEST(FramePoolTest, BatchesFlowFromTheFreeingThreadBackToTheAllocatingOne) {
  constexpr size_t kFrames = 4 * kFrameLocalMax;
  constexpr size_t kBytes = 300;
  std::vector<void*> frames;
  for (size_t i = 0; i < kFrames; ++i) frames.push_back(AllocateFrame(kBytes));
  size_t depot_before = DepotBytes();
  std::thread consumer([&frames] {
    for (void* f : frames) FreeFrame(f, kBytes);
    EXPECT_LE(CachedFramesOnThisThread(kBytes), kFrameLocalMax);
  });
  consumer.join();  // its remaining list also goes to the depot at exit
  EXPECT_GE(DepotBytes(), depot_before + (kFrames - kFrameLocalMax) * 320);
  std::thread producer([] {
    size_t depot_full = DepotBytes();
    std::vector<void*> again;
    for (size_t i = 0; i < kFrames; ++i) again.push_back(AllocateFrame(kBytes));
    EXPECT_LT(DepotBytes(), depot_full);
    for (void* f : again) FreeFrame(f, kBytes);
  });
  producer.join();
}

Task<int> Hop(Scheduler* sched, int v) {
  co_await sched->Yield();
  co_return v;
}

Task<void> Fan(Scheduler* sched, int n, std::atomic<int>* sum) {
  std::vector<Task<int>> tasks;
  for (int i = 0; i < n; ++i) tasks.push_back(Hop(sched, 1));
  std::vector<int> got = co_await WhenAll(std::move(tasks));
  for (int v : got) sum->fetch_add(v);
}

// Coroutine frames created on one pool thread and finished on another:
// ASan (poisoned cached frames) and TSan (hand-off ordering) check this.
TEST(FramePoolTest, CoroutineFramesCrossThreads) {
  Scheduler sched({.threads = 2});
  std::atomic<int> sum{0};
  for (int round = 0; round < 20; ++round) sched.BlockOn(Fan(&sched, 500, &sum));
  for (int i = 0; i < 2000; ++i) sched.Spawn(Fan(&sched, 2, &sum));
  sched.Shutdown();
  EXPECT_EQ(sum.load(), 20 * 500 + 2000 * 2);
}

}  // namespace
}  // namespace taskq::rt::internal
