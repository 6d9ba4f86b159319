// Queue placement in etcd (master/cluster/placement.h) against a real etcd:
// the first claim of a queue wins and every later one learns the winner, a
// move is a compare-and-swap that refuses a stale read, and the hashed
// choice is stable, spread, and moves few queues when a master is added.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/etcd_client.h"
#include "gtest/gtest.h"
#include "master/cluster/placement.h"
#include "tests/harness_etcd.h"

namespace taskq::testing {
namespace {

std::vector<MasterInfo> Masters(int n) {
  std::vector<MasterInfo> out;
  for (int i = 1; i <= n; ++i) out.push_back({absl::StrCat("m", i), "", 0});
  return out;
}

TEST(PlacementChoice, StableSpreadAndMovesFewWhenAMasterIsAdded) {
  const auto three = Masters(3);
  const auto four = Masters(4);
  std::map<std::string, int> per_master;
  int moved = 0;
  const int kQueues = 1200;
  for (int i = 0; i < kQueues; ++i) {
    const std::string q = absl::StrCat("queue-", i);
    const std::string owner = Placement::Choose(q, three);
    EXPECT_EQ(owner, Placement::Choose(q, three));  // stable
    ++per_master[owner];
    const std::string after = Placement::Choose(q, four);
    if (after != owner) {
      ++moved;
      EXPECT_EQ(after, "m4") << q << " moved between old masters";
    }
  }
  for (const auto& [m, n] : per_master) {
    EXPECT_GT(n, kQueues / 3 * 8 / 10) << m;  // within 20% of an even share
  }
  EXPECT_GT(moved, kQueues / 4 * 7 / 10);
  EXPECT_LT(moved, kQueues / 4 * 13 / 10);
  EXPECT_EQ(Placement::Choose("q", {}), "");
}

using PlacementTest = EtcdTest;

TEST_F(PlacementTest, TheFirstClaimWinsAndAMoveRefusesAStaleRead) {
  Placement placement(client_.get(), "/taskq/");
  EXPECT_EQ(placement.OwnerOf("jobs").status().code(), absl::StatusCode::kNotFound);
  auto first = placement.Claim("jobs", "m1");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->owner, "m1");
  auto second = placement.Claim("jobs", "m2");
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->owner, "m1");  // learns the winner

  auto read = placement.OwnerOf("jobs");
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_TRUE(placement.MoveAll({*read}, "m2").ok());
  EXPECT_EQ(placement.OwnerOf("jobs")->owner, "m2");
  // Moving again from the old read is refused: someone moved it since.
  absl::Status stale = placement.MoveAll({*read}, "m3");
  EXPECT_EQ(stale.code(), absl::StatusCode::kFailedPrecondition) << stale;
  EXPECT_EQ(placement.OwnerOf("jobs")->owner, "m2");

  ASSERT_TRUE(placement.Claim("other", "m3").ok());
  auto all = placement.All();
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].queue, "jobs");
  EXPECT_EQ((*all)[1].owner, "m3");
  ASSERT_TRUE(placement.Forget("other").ok());
  EXPECT_EQ(placement.OwnerOf("other").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace taskq::testing
