// EtcdClient against a real etcd (Debian's etcd-server): reads, writes,
// create-if-absent and compare-and-swap as transactions, and leases that
// keep keys alive while their holder lives, go with it, and tell their
// holder when etcd has dropped them.
#include <signal.h>

#include <atomic>
#include <memory>
#include <string>

#include "common/etcd_client.h"
#include "gtest/gtest.h"
#include "tests/harness_etcd.h"

namespace taskq::testing {
namespace {

class EtcdClientTest : public EtcdTest {
 protected:
  bool Exists(const std::string& key) {
    auto got = client_->Get(key);
    return got.ok() && got->has_value();
  }
};

TEST_F(EtcdClientTest, PutGetPrefixAndDelete) {
  ASSERT_TRUE(client_->Put("/taskq/queues/a", "m1").ok());
  ASSERT_TRUE(client_->Put("/taskq/queues/b", "m2").ok());
  ASSERT_TRUE(client_->Put("/taskq/queuesX", "not under the prefix").ok());
  auto a = client_->Get("/taskq/queues/a");
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(a->has_value());
  EXPECT_EQ((*a)->value, "m1");
  EXPECT_GT((*a)->mod_revision, 0);

  auto all = client_->GetPrefix("/taskq/queues/");
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].key, "/taskq/queues/a");
  EXPECT_EQ((*all)[1].value, "m2");

  EXPECT_EQ(client_->Delete("/taskq/queues/a").value_or(false), true);
  EXPECT_EQ(client_->Delete("/taskq/queues/a").value_or(true), false);
  EXPECT_FALSE(Exists("/taskq/queues/a"));
}

TEST_F(EtcdClientTest, CreateIfAbsentWinsOnceAndCompareAndSwapRefusesAStaleRevision) {
  auto first = client_->CreateIfAbsent("/taskq/queues/q", "m1");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(*first);
  EtcdKeyValue existing;
  auto second = client_->CreateIfAbsent("/taskq/queues/q", "m2", 0, &existing);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_FALSE(*second);
  EXPECT_EQ(existing.value, "m1");

  auto swapped = client_->CompareAndSwap("/taskq/queues/q", existing.mod_revision, "m3");
  ASSERT_TRUE(swapped.ok()) << swapped.status();
  EXPECT_TRUE(*swapped);
  // The revision it was read at is stale now.
  auto stale = client_->CompareAndSwap("/taskq/queues/q", existing.mod_revision, "m4");
  ASSERT_TRUE(stale.ok()) << stale.status();
  EXPECT_FALSE(*stale);
  EXPECT_EQ(client_->Get("/taskq/queues/q").value()->value, "m3");
}

TEST_F(EtcdClientTest, ALeasesKeysLiveWhileItIsKeptAndGoWithIt) {
  auto lease = client_->GrantLease(absl::Seconds(2));
  ASSERT_TRUE(lease.ok()) << lease.status();
  ASSERT_TRUE(client_->Put("/taskq/masters/m1", "127.0.0.1:1", (*lease)->id()).ok());
  // Kept alive past twice its TTL.
  const absl::Time until = absl::Now() + absl::Seconds(5);
  bool alive = true;
  while (alive && absl::Now() < until) {
    alive = Exists("/taskq/masters/m1");
    absl::SleepFor(absl::Milliseconds(200));  // polling a duration, not synchronising
  }
  EXPECT_TRUE(alive) << "the key went while its lease was kept";
  EXPECT_FALSE((*lease)->lost());
  lease->reset();  // revokes
  EXPECT_FALSE(Exists("/taskq/masters/m1"));
}

TEST_F(EtcdClientTest, ALeaseThatEtcdDroppedIsReportedLost) {
  std::atomic<bool> lost{false};
  auto lease = client_->GrantLease(absl::Seconds(1), [&] { lost = true; });
  ASSERT_TRUE(lease.ok()) << lease.status();
  etcd_.process()->Kill(SIGKILL);
  EXPECT_TRUE(WaitFor([&] { return lost.load(); }, absl::Seconds(15)));
  EXPECT_TRUE((*lease)->lost());
}

}  // namespace
}  // namespace taskq::testing
