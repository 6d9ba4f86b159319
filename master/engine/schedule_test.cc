// Schedule: the earliest deadline of any kind, and what is due at a time.
#include "master/engine/schedule.h"

#include <gtest/gtest.h>

namespace taskq {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1000);

TEST(ScheduleTest, NextIsTheEarliestOfEveryKind) {
  Schedule s;
  EXPECT_EQ(s.Next(), absl::InfiniteFuture());
  s.AddWait(kT0 + absl::Seconds(4), 1);
  EXPECT_EQ(s.Next(), kT0 + absl::Seconds(4));
  s.AddLease(kT0 + absl::Seconds(3), 2);
  EXPECT_EQ(s.Next(), kT0 + absl::Seconds(3));
  DelayKey d = s.AddDelayed(kT0 + absl::Seconds(2), 3);
  EXPECT_EQ(s.Next(), kT0 + absl::Seconds(2));
  s.AddIdleCheck(kT0 + absl::Seconds(1), "q");
  EXPECT_EQ(s.Next(), kT0 + absl::Seconds(1));
  s.RemoveIdleCheck(kT0 + absl::Seconds(1), "q");
  s.RemoveDelayed(d);
  EXPECT_EQ(s.Next(), kT0 + absl::Seconds(3));
  s.RemoveLease(kT0 + absl::Seconds(3), 2);
  s.RemoveWait(kT0 + absl::Seconds(4), 1);
  EXPECT_EQ(s.Next(), absl::InfiniteFuture());
}

TEST(ScheduleTest, OnlyWhatIsDueAtOrBeforeNowIsDue) {
  Schedule s;
  s.AddLease(kT0, 7);
  s.AddWait(kT0 + absl::Milliseconds(1), 8);
  s.AddIdleCheck(kT0, "q");
  EXPECT_FALSE(s.LeaseDue(kT0 - absl::Milliseconds(1)).has_value());
  ASSERT_TRUE(s.LeaseDue(kT0).has_value());
  EXPECT_EQ(s.LeaseDue(kT0)->second, 7u);
  EXPECT_FALSE(s.WaitDue(kT0).has_value());
  EXPECT_EQ(s.WaitDue(kT0 + absl::Milliseconds(1))->second, 8u);
  EXPECT_EQ(s.IdleCheckDue(kT0)->second, "q");
}

TEST(ScheduleTest, DelayedTasksDueTogetherComeInTheOrderTheyWereDelayed) {
  Schedule s;
  s.AddDelayed(kT0, 30);
  s.AddDelayed(kT0, 10);
  s.AddDelayed(kT0 - absl::Seconds(1), 20);
  std::vector<uint64_t> order;
  while (std::optional<DelayKey> due = s.DelayedDue(kT0)) {
    order.push_back(due->id);
    s.RemoveDelayed(*due);
  }
  EXPECT_EQ(order, (std::vector<uint64_t>{20, 30, 10}));
}

}  // namespace
}  // namespace taskq
