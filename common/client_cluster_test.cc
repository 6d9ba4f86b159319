// Unit tests of taskq::Client's cluster routing (common/client.h, "Cluster
// mode") against small in-process fakes of two masters on 127.0.0.1: a
// redirect is followed and remembered, an owner-down answer comes back at
// once, calls by task id go to the node's master, redirect loops end, and
// a master that does not know GetCluster counts as a single master.
#include <atomic>
#include <memory>
#include <string>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/client.h"
#include "common/cluster_map.h"
#include "common/cluster_redirect.h"
#include "common/grpc_status.h"
#include "gtest/gtest.h"

namespace taskq {
namespace {

constexpr uint64_t kNode2Task = (uint64_t{2} << 48) | 7;

// A master that serves the queues named in `owns` (Put returns one id per
// task) and redirects every other queue to `redirect_to` (or says its
// owner is down).
class FakeMaster final : public v1::TaskQueue::Service {
 public:
  std::string name;
  std::string owns;           // the one queue it serves
  std::string redirect_to;    // address of the owner of every other queue
  bool owner_down = false;
  bool knows_cluster = true;  // false: GetCluster is UNIMPLEMENTED (an old master)
  uint32_t node = 0;
  v1::GetClusterResponse cluster;

  std::atomic<int> puts{0}, get_tasks{0}, get_clusters{0};

  grpc::Status Put(grpc::ServerContext*, const v1::PutRequest* request,
                   v1::PutResponse* response) override {
    ++puts;
    if (request->queue() != owns) return Refuse(request->queue(), 0);
    for (int i = 0; i < request->tasks_size(); ++i) response->add_ids((uint64_t{node} << 48) + 1 + i);
    return grpc::Status::OK;
  }
  grpc::Status GetTask(grpc::ServerContext*, const v1::GetTaskRequest* request,
                       v1::Task* response) override {
    ++get_tasks;
    if (NodeOfTask(request->task_id()) != node) return Refuse("", request->task_id());
    response->set_id(request->task_id());
    response->set_queue(owns);
    return grpc::Status::OK;
  }
  grpc::Status GetCluster(grpc::ServerContext*, const v1::GetClusterRequest*,
                          v1::GetClusterResponse* response) override {
    ++get_clusters;
    if (!knows_cluster) return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "");
    *response = cluster;
    return grpc::Status::OK;
  }

 private:
  grpc::Status Refuse(const std::string& queue, uint64_t task_id) {
    v1::QueueOwner owner;
    owner.set_queue(queue);
    owner.set_task_id(task_id);
    owner.set_master("other");
    owner.set_down(owner_down);
    if (!owner_down) owner.set_address(redirect_to);
    return ToGrpcStatus(RedirectStatus(owner));
  }
};

struct Running {
  std::unique_ptr<grpc::Server> server;
  std::string address;
};

Running Serve(FakeMaster* master) {
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(master);
  Running r;
  r.server = builder.BuildAndStart();
  r.address = absl::StrCat("127.0.0.1:", port);
  return r;
}

class ClientClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    m1_.name = "m1";
    m1_.owns = "q1";
    m1_.node = 1;
    m2_.name = "m2";
    m2_.owns = "q2";
    m2_.node = 2;
    r1_ = Serve(&m1_);
    r2_ = Serve(&m2_);
    m1_.redirect_to = r2_.address;
    m2_.redirect_to = r1_.address;
    v1::GetClusterResponse cluster;
    cluster.set_clustered(true);
    int n = 1;
    for (const std::string& address : {r1_.address, r2_.address}) {
      v1::ClusterMaster* m = cluster.add_masters();
      m->set_name(absl::StrCat("m", n));
      m->set_address(address);
      m->set_up(true);
      m->set_node(n++);
    }
    m1_.cluster = m2_.cluster = cluster;
  }
  void TearDown() override {
    r1_.server->Shutdown();
    r2_.server->Shutdown();
  }

  // A client given m1's address.
  std::unique_ptr<Client> ClientOfM1(ClientOptions options = {}) {
    return std::make_unique<Client>(
        grpc::CreateChannel(r1_.address, grpc::InsecureChannelCredentials()), "token", options,
        nullptr, r1_.address);
  }

  FakeMaster m1_, m2_;
  Running r1_, r2_;
};

std::vector<v1::TaskSpec> OneTask() {
  v1::TaskSpec spec;
  spec.set_payload("x");
  return {spec};
}

TEST_F(ClientClusterTest, FollowsARedirectOnceThenGoesStraightToTheOwner) {
  auto client = ClientOfM1();
  auto first = client->Put("q2", OneTask());
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(NodeOfTask(first->front()), 2u);
  EXPECT_EQ(m1_.puts, 1);
  EXPECT_EQ(m2_.puts, 1);
  ASSERT_TRUE(client->Put("q2", OneTask()).ok());
  EXPECT_EQ(m1_.puts, 1) << "the second put should have gone straight to the owner";
  EXPECT_EQ(m2_.puts, 2);
  // A client made from it for other options shares what it learnt.
  ASSERT_TRUE(client->WithOptions({})->Put("q2", OneTask()).ok());
  EXPECT_EQ(m1_.puts, 1);
}

TEST_F(ClientClusterTest, OwnerDownIsReturnedAtOnceNamingTheOwner) {
  m1_.owner_down = true;
  auto client = ClientOfM1({.call_timeout = absl::Seconds(20)});
  const absl::Time start = absl::Now();
  auto put = client->Put("q2", OneTask());
  EXPECT_EQ(put.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(put.status().message().find("owner other is down"), std::string::npos)
      << put.status();
  EXPECT_EQ(m1_.puts, 1) << "an owner-down answer must not be retried";
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

TEST_F(ClientClusterTest, ARememberedOwnerThatDiedSendsTheCallBackToTheGivenMaster) {
  auto client = ClientOfM1({.call_timeout = absl::Seconds(20)});
  ASSERT_TRUE(client->Put("q2", OneTask()).ok());
  r2_.server->Shutdown();  // killed; m1 now says so
  m1_.owner_down = true;
  const absl::Time start = absl::Now();
  auto put = client->Put("q2", OneTask());
  EXPECT_EQ(put.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(put.status().message().find("is down"), std::string::npos) << put.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5)) << "not retried until the call's deadline";
}

TEST_F(ClientClusterTest, ACallByTaskIdGoesToTheNodesMaster) {
  auto client = ClientOfM1();
  auto task = client->GetTask(kNode2Task);
  ASSERT_TRUE(task.ok()) << task.status();
  EXPECT_EQ(task->queue(), "q2");
  EXPECT_EQ(m1_.get_clusters, 1) << "the node map is fetched once";
  EXPECT_EQ(m1_.get_tasks, 0) << "node 2's id went straight to node 2";
  EXPECT_EQ(m2_.get_tasks, 1);
  ASSERT_TRUE(client->GetTask(kNode2Task + 1).ok());
  EXPECT_EQ(m1_.get_clusters, 1);
}

TEST_F(ClientClusterTest, ARedirectLoopEndsAfterThreeHops) {
  // Each says the other owns "q3".
  auto client = ClientOfM1({.call_timeout = absl::Seconds(5)});
  auto put = client->Put("q3", OneTask());
  EXPECT_EQ(put.status().code(), absl::StatusCode::kFailedPrecondition) << put.status();
  EXPECT_EQ(m1_.puts + m2_.puts, 1 + kMaxRedirects);
}

TEST_F(ClientClusterTest, AMasterWithoutGetClusterIsASingleMaster) {
  m1_.knows_cluster = false;
  auto client = ClientOfM1();
  auto cluster = client->GetCluster();
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  EXPECT_FALSE(cluster->clustered());
  // Single-master ids (node 0) never ask for the cluster.
  m1_.knows_cluster = true;
  auto fresh = ClientOfM1();
  auto task = fresh->GetTask(1);
  EXPECT_EQ(m1_.get_clusters, 1);
}

TEST_F(ClientClusterTest, AtSendsAdminCallsToThatMaster) {
  auto client = ClientOfM1();
  auto at2 = client->At(r2_.address);
  EXPECT_EQ(at2->address(), r2_.address);
  auto cluster = at2->GetCluster();
  ASSERT_TRUE(cluster.ok());
  EXPECT_EQ(m2_.get_clusters, 1);
  EXPECT_EQ(m1_.get_clusters, 0);
}

TEST(ClusterMapTest, RemembersForgetsAndLoadsNodes) {
  ClusterMap map;
  EXPECT_FALSE(map.QueueAddress("q").has_value());
  map.SetQueueAddress("q", "a:1");
  EXPECT_EQ(map.QueueAddress("q"), "a:1");
  map.ForgetQueue("q");
  EXPECT_FALSE(map.QueueAddress("q").has_value());
  v1::GetClusterResponse cluster;
  cluster.set_clustered(true);
  auto* up = cluster.add_masters();
  up->set_node(3);
  up->set_address("b:2");
  up->set_up(true);
  auto* down = cluster.add_masters();
  down->set_node(4);
  down->set_address("c:3");
  map.SetNodeAddress(4, "c:3");
  EXPECT_FALSE(map.loaded());
  map.Load(cluster);
  EXPECT_TRUE(map.loaded());
  EXPECT_EQ(map.NodeAddress(3), "b:2");
  EXPECT_FALSE(map.NodeAddress(4).has_value()) << "a down master's node goes to the given master";
  map.MarkStale();
  EXPECT_FALSE(map.loaded());
  EXPECT_EQ(NodeOfTask(kNode2Task), 2u);
  EXPECT_EQ(NodeOfTask(12345), 0u);
}

}  // namespace
}  // namespace taskq
