// WaitLine: oldest first, ended calls counted out, compaction bounded.
#include "master/engine/wait_line.h"

#include <gtest/gtest.h>

#include "absl/container/flat_hash_set.h"

namespace taskq {
namespace {

TEST(WaitLineTest, ServesOldestFirstAndCountsTheLive) {
  WaitLine line;
  line.Push(1);
  line.Push(2);
  line.Push(3);
  EXPECT_EQ(line.live(), 3u);
  EXPECT_EQ(line.Front(), 1u);
  line.PopFront();
  line.Ended();  // 1 served
  line.Ended();  // 3 timed out: its id stays in line
  EXPECT_EQ(line.live(), 1u);
  EXPECT_EQ(line.Ids(), (std::vector<uint64_t>{2, 3}));
  line.Clear();
  EXPECT_TRUE(line.empty());
  EXPECT_EQ(line.live(), 0u);
}

TEST(WaitLineTest, CompactDropsEndedIdsOnceTheyOutnumberTheLive) {
  WaitLine line;
  absl::flat_hash_set<uint64_t> live;
  for (uint64_t id = 1; id <= 100; ++id) line.Push(id);
  live.insert(100);
  for (uint64_t id = 1; id < 100; ++id) line.Ended();
  auto is_live = [&](uint64_t id) { return live.contains(id); };
  line.Compact(is_live);  // 100 ids > 2 * 1 + 64: compacted
  EXPECT_EQ(line.Ids(), (std::vector<uint64_t>{100}));
  for (uint64_t id = 101; id <= 110; ++id) line.Push(id);
  line.Compact(is_live);  // 11 ids: below the slack, left alone
  EXPECT_EQ(line.size(), 11u);
}

}  // namespace
}  // namespace taskq
