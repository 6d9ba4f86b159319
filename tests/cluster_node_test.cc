// The master's cluster parts without running masters (docs/CLUSTER.md):
// node numbers (claimed once, remembered in the data dir, one per name),
// the QueueRouter against a real etcd (own queues served without etcd,
// redirects, placing, reply_to), and the --cluster flags' parsing.
#include <signal.h>

#include "absl/strings/match.h"
#include "common/cluster_redirect.h"
#include "gtest/gtest.h"
#include "master/cluster/cluster_member.h"
#include "master/cluster/node_number.h"
#include "master/cluster/router.h"
#include "tests/harness.h"
#include "tests/harness_etcd.h"

namespace taskq::testing {
namespace {

TEST(ClusterFlagsTest, EtcdUrlsAndTtls) {
  EXPECT_EQ(*EtcdTarget("etcd://127.0.0.1:2379"), "127.0.0.1:2379");
  EXPECT_EQ(*EtcdTarget("etcd://10.0.0.1:2379,10.0.0.2:2379"), "ipv4:10.0.0.1:2379,10.0.0.2:2379");
  EXPECT_EQ(*EtcdTarget("etcd://etcd.local:2379"), "etcd.local:2379");
  EXPECT_FALSE(EtcdTarget("http://127.0.0.1:2379").ok());
  EXPECT_FALSE(EtcdTarget("etcd://").ok());
  EXPECT_FALSE(EtcdTarget("etcd://hostonly").ok());
  absl::Duration ttl;
  ASSERT_TRUE(ParseClusterTtl("10s", &ttl));
  EXPECT_EQ(ttl, absl::Seconds(10));
  ASSERT_TRUE(ParseClusterTtl("2.5", &ttl));
  EXPECT_EQ(ttl, absl::Milliseconds(2500));
  EXPECT_FALSE(ParseClusterTtl("soon", &ttl));

  ClusterOptions o;
  o.etcd = "etcd://127.0.0.1:2379";
  absl::Status no_advertise = ValidateClusterOptions(o);
  EXPECT_TRUE(absl::StrContains(no_advertise.message(), "--advertise")) << no_advertise;
  o.advertise = "127.0.0.1:5000";
  EXPECT_TRUE(ValidateClusterOptions(o).ok());
  EXPECT_FALSE(o.name.empty()) << "defaults to the hostname";
}

TEST(TaskIdTest, TheNodeIsInTheTop16Bits) {
  EXPECT_EQ(NodeOfTask(TaskIdBase(7) + 123), 7u);
  EXPECT_EQ(NodeOfTask(42), 0u);
  EXPECT_EQ(NodeOfTask(TaskIdBase(kMaxNode)), kMaxNode);
}

class NodeNumberTest : public EtcdTest {
 protected:
  TempDir a_, b_, c_;
};

TEST_F(NodeNumberTest, ClaimedOnceRememberedAndOnePerName) {
  auto m1 = ObtainNode(client_.get(), "/t/", "m1", a_.path());
  auto m2 = ObtainNode(client_.get(), "/t/", "m2", b_.path());
  ASSERT_TRUE(m1.ok()) << m1.status();
  ASSERT_TRUE(m2.ok()) << m2.status();
  EXPECT_NE(*m1, *m2);
  EXPECT_GE(*m1, 1u);
  // Remembered: the same number again, even without etcd.
  EXPECT_EQ(*RememberedNode(a_.path()), *m1);
  EXPECT_EQ(*ObtainNode(nullptr, "/t/", "m1", a_.path()), *m1);
  // A master without one cannot get one without etcd.
  auto none = ObtainNode(nullptr, "/t/", "m3", c_.path());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kFailedPrecondition);
  // A name that lost its data dir gets its number back.
  EXPECT_EQ(*ObtainNode(client_.get(), "/t/", "m1", c_.path()), *m1);
  // A data dir started under another name is refused.
  auto wrong = ObtainNode(client_.get(), "/t/", "m2", a_.path());
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kFailedPrecondition) << wrong.status();
}

class RouterTest : public EtcdTest {
 protected:
  std::unique_ptr<QueueRouter> Router(const std::string& name) {
    QueueRouterOptions o;
    o.prefix = "/r/";
    o.self = {name, name + ":1", 0};
    o.node = name == "a" ? 1 : 2;
    o.refresh = absl::Milliseconds(100);
    return std::make_unique<QueueRouter>(client_.get(), o);
  }
  void Register(const std::string& name) {
    ASSERT_TRUE(client_->Put("/r/masters/" + name, Membership::Encode({name, name + ":1", 0})).ok());
    ASSERT_TRUE(client_->Put("/r/nodes/" + std::to_string(name == "a" ? 1 : 2), name).ok());
  }
};

TEST_F(RouterTest, OwnQueuesServeRedirectsNameTheOwnerAndReplyQueuesStayLocal) {
  Register("a");
  Register("b");
  auto a = Router("a");
  auto b = Router("b");
  a->Start({"local"});
  b->Start({});
  EXPECT_TRUE(a->ForQueue("local", QueueRouter::Place::kNo).ok());
  // A local queue is claimed in etcd at start: b is sent to a.
  absl::Status at_b = b->ForQueue("local", QueueRouter::Place::kNo);
  auto owner = QueueOwnerOf(at_b);
  ASSERT_TRUE(owner.has_value()) << at_b;
  EXPECT_EQ(owner->master(), "a");
  EXPECT_EQ(owner->address(), "a:1");
  // Reads place nothing; first use with `on` does.
  EXPECT_TRUE(b->ForQueue("unplaced", QueueRouter::Place::kNo).ok());
  EXPECT_TRUE(b->ForQueue("for-b", QueueRouter::Place::kYes, "b").ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(a->ForQueue("for-b", QueueRouter::Place::kNo)));
  EXPECT_TRUE(absl::IsInvalidArgument(a->ForQueue("x", QueueRouter::Place::kYes, "nobody")));
  // Task ids: a's own, b's redirected, pre-cluster ids (node 0) local.
  EXPECT_TRUE(a->ForTask(TaskIdBase(1) + 5).ok());
  EXPECT_TRUE(a->ForTask(5).ok());
  ASSERT_TRUE(WaitFor([&] { return !a->ForTask(TaskIdBase(2) + 5).ok(); }, absl::Seconds(5)));
  EXPECT_EQ(QueueOwnerOf(a->ForTask(TaskIdBase(2) + 5))->master(), "b");
  // reply_to: unplaced is claimed here, elsewhere refused.
  EXPECT_TRUE(a->ForSameMaster("local", "answers").ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(b->ForQueue("answers", QueueRouter::Place::kNo)));
  absl::Status far = a->ForSameMaster("local", "for-b");
  EXPECT_TRUE(absl::IsFailedPrecondition(far)) << far;
  EXPECT_FALSE(QueueOwnerOf(far).has_value());
  // The owner down: its entry gone.
  ASSERT_TRUE(client_->Delete("/r/masters/b").ok());
  ASSERT_TRUE(WaitFor([&] { return absl::IsUnavailable(a->ForQueue("for-b", QueueRouter::Place::kNo)); },
                      absl::Seconds(5)));
  EXPECT_TRUE(QueueOwnerOf(a->ForQueue("for-b", QueueRouter::Place::kNo))->down());
}

TEST_F(RouterTest, WithEtcdStoppedOwnedQueuesAnswerAtOnceAndNewOnesAreNotPlaced) {
  Register("a");
  client_ = etcd_.Client(absl::Milliseconds(500));
  auto a = Router("a");
  a->Start({"mine"});
  etcd_.process()->Kill(SIGSTOP);
  const absl::Time start = absl::Now();
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(a->ForQueue("mine", QueueRouter::Place::kYes).ok());
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(400)) << "the hot path waited on etcd";
  absl::Status s = a->ForQueue("new", QueueRouter::Place::kYes);
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "cannot place queue \"new\"")) << s;
  etcd_.process()->Kill(SIGCONT);
}

}  // namespace
}  // namespace taskq::testing
