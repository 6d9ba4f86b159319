// ReadySet: hand-out order per queue kind, and a returned lease's old place.
#include "master/engine/ready_set.h"

#include <gtest/gtest.h>

#include <vector>

namespace taskq {
namespace {

std::vector<uint64_t> Drain(ReadySet& set) {
  std::vector<uint64_t> ids;
  while (!set.empty()) {
    ids.push_back(set.Front().id);
    set.PopFront();
  }
  return ids;
}

TEST(ReadySetTest, FifoHandsOutInTheOrderTasksBecameReady) {
  ReadySet set;
  for (uint64_t id : {7, 3, 9}) set.Insert(ReadySet::KeyFor(v1::QUEUE_KIND_FIFO, 0, id * 10, id));
  EXPECT_EQ(Drain(set), (std::vector<uint64_t>{3, 7, 9}));
}

TEST(ReadySetTest, LifoHandsOutTheNewestFirst) {
  ReadySet set;
  int64_t seq = 1;
  for (uint64_t id : {1, 2, 3}) set.Insert(ReadySet::KeyFor(v1::QUEUE_KIND_LIFO, 0, seq++, id));
  EXPECT_EQ(Drain(set), (std::vector<uint64_t>{3, 2, 1}));
}

TEST(ReadySetTest, PriorityHandsOutTheSmallestPriorityFirstThenFifo) {
  ReadySet set;
  set.Insert(ReadySet::KeyFor(v1::QUEUE_KIND_PRIORITY, 5, 1, 1));
  set.Insert(ReadySet::KeyFor(v1::QUEUE_KIND_PRIORITY, -1, 2, 2));
  set.Insert(ReadySet::KeyFor(v1::QUEUE_KIND_PRIORITY, 5, 3, 3));
  set.Insert(ReadySet::KeyFor(v1::QUEUE_KIND_PRIORITY, 0, 4, 4));
  EXPECT_EQ(Drain(set), (std::vector<uint64_t>{2, 4, 1, 3}));
}

TEST(ReadySetTest, AKeyPutBackTakesItsOldPlace) {
  ReadySet set;
  std::vector<ReadyKey> keys;
  for (uint64_t id = 1; id <= 3; ++id) {
    keys.push_back(ReadySet::KeyFor(v1::QUEUE_KIND_FIFO, 0, static_cast<int64_t>(id), id));
    set.Insert(keys.back());
  }
  set.PopFront();  // task 1 handed out...
  EXPECT_FALSE(set.Contains(keys[0]));
  set.Insert(keys[0]);  // ...and given back at once
  EXPECT_TRUE(set.Contains(keys[0]));
  set.Erase(keys[1]);
  EXPECT_EQ(set.size(), 2u);
  EXPECT_EQ(Drain(set), (std::vector<uint64_t>{1, 3}));
}

}  // namespace
}  // namespace taskq
