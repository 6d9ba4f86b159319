// Membership in etcd (master/cluster/membership.h) against a real etcd:
// a master's entry lives while it does and goes when it leaves; a second
// master cannot take a live master's name; after etcd was away longer than
// the lease, the master registers again by itself.
#include <signal.h>

#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "common/etcd_client.h"
#include "gtest/gtest.h"
#include "master/cluster/membership.h"
#include "tests/harness_etcd.h"

namespace taskq::testing {
namespace {

class MembershipTest : public EtcdTest {
 protected:
  size_t Live() {
    auto masters = client_->GetPrefix("/taskq/masters/");
    return masters.ok() ? masters->size() : 0;
  }
};

TEST_F(MembershipTest, MastersAreListedWhileTheyRunAndNamesAreUnique) {
  auto a = Membership::Join(client_.get(), "/taskq/", {"m1", "10.0.0.1:7070", 1000});
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = Membership::Join(client_.get(), "/taskq/", {"m2", "10.0.0.2:7070", 2000});
  ASSERT_TRUE(b.ok()) << b.status();
  auto masters = (*a)->Masters();
  ASSERT_TRUE(masters.ok()) << masters.status();
  ASSERT_EQ(masters->size(), 2u);
  EXPECT_EQ((*masters)[0].name, "m1");
  EXPECT_EQ((*masters)[0].address, "10.0.0.1:7070");
  EXPECT_EQ((*masters)[1].started_unix_ms, 2000);

  auto twin = Membership::Join(client_.get(), "/taskq/", {"m1", "10.0.0.9:7070", 3000});
  ASSERT_FALSE(twin.ok());
  EXPECT_EQ(twin.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(twin.status().message(), "10.0.0.1:7070")) << twin.status();

  b->reset();  // leaves: gone at once, not after the TTL
  EXPECT_EQ(Live(), 1u);
}

TEST_F(MembershipTest, AMasterRegistersAgainAfterEtcdWasAwayLongerThanItsLease) {
  auto a = Membership::Join(client_.get(), "/taskq/", {"m1", "10.0.0.1:7070", 1000},
                            absl::Seconds(1));
  ASSERT_TRUE(a.ok()) << a.status();
  etcd_.process()->Kill(SIGSTOP);
  EXPECT_TRUE(WaitFor([&] { return !(*a)->registered(); }, absl::Seconds(20)));
  etcd_.process()->Kill(SIGCONT);
  EXPECT_TRUE(WaitFor([&] { return (*a)->registered() && Live() == 1; }, absl::Seconds(30)));
}

}  // namespace
}  // namespace taskq::testing
