// LeaseTable: current leases, ids that only grow, revoked leases remembered.
#include "master/engine/lease_table.h"

#include <gtest/gtest.h>

namespace taskq {
namespace {

TEST(LeaseTableTest, AGrantedLeaseNamesItsTaskUntilItEnds) {
  LeaseTable leases(10);
  const uint64_t a = leases.Grant(5);
  const uint64_t b = leases.Grant(5);  // the same task leased again later
  EXPECT_LT(a, b);
  EXPECT_EQ(leases.TaskOf(a), 5u);
  leases.End(a);
  EXPECT_FALSE(leases.TaskOf(a).has_value());
  EXPECT_EQ(leases.TaskOf(b), 5u);
  EXPECT_EQ(leases.size(), 1u);
}

TEST(LeaseTableTest, StartAtMovesIdsPastAnEarlierBoot) {
  LeaseTable leases(10);
  leases.StartAt((uint64_t{2} << 40) + 1);
  EXPECT_EQ(leases.Grant(1), (uint64_t{2} << 40) + 1);
  EXPECT_FALSE(leases.TaskOf(1).has_value());
}

TEST(LeaseTableTest, RevokedLeasesAreRememberedUpToTheBound) {
  LeaseTable leases(2);
  leases.RememberRevoked(1, 100);
  leases.RememberRevoked(2, 200);
  leases.RememberRevoked(3, 300);
  EXPECT_FALSE(leases.RevokedTask(1).has_value());
  EXPECT_EQ(leases.RevokedTask(2), 200u);
  EXPECT_EQ(leases.RevokedTask(3), 300u);
  LeaseTable none(0);
  none.RememberRevoked(1, 100);
  EXPECT_FALSE(none.RevokedTask(1).has_value());
}

}  // namespace
}  // namespace taskq
