// Cluster mode, master side (issue 18, docs/CLUSTER.md): three masters and
// a real etcd on 127.0.0.1, called through raw stubs with one shared token.
// Redirects name the owner and its address, `on` places a queue, two
// masters racing to place one queue end with one owner, a killed master's
// queues answer "owner NAME is down" while the others keep working and come
// back whole with it, an etcd outage changes no owner, task ids carry their
// master's node, reply_to stays on the task's master, and GetCluster shows
// placements by the caller's scope.
#include <signal.h>

#include <set>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/channel.h"
#include "common/cluster_redirect.h"
#include "gtest/gtest.h"
#include "taskq/v1/taskq.grpc.pb.h"
#include "tests/harness.h"
#include "tests/harness_etcd.h"

namespace taskq::testing {
namespace {

constexpr int kMasters = 3;
const char* const kNames[kMasters] = {"m1", "m2", "m3"};
constexpr absl::Duration kTtl = absl::Seconds(2);
// A dead master is called down within its TTL plus a refresh or two.
constexpr absl::Duration kDownWithin = absl::Seconds(20);

class ClusterModeTest : public EtcdTest {
 protected:
  void SetUp() override {
    EtcdTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    // Every master sees the three up before the test starts placing.
    absl::Status s = StartClusterMasters(absl::MakeSpan(m_), etcd_, {kNames, kNames + kMasters},
                                         {"--cluster-ttl", absl::FormatDuration(kTtl)});
    ASSERT_TRUE(s.ok()) << s;
    for (int i = 0; i < kMasters; ++i) Reconnect(i);
    token_ = conn_[0].token;
  }

  void TearDown() override {
    // An etcd left stopped would hold the masters' leave for its timeout.
    if (etcd_.process() != nullptr) etcd_.process()->Kill(SIGCONT);
  }

  void Reconnect(int i) {
    auto conn = m_[i].Connect();
    ASSERT_TRUE(conn.ok()) << conn.status();
    conn_[i] = *std::move(conn);
    stub_[i] = v1::TaskQueue::NewStub(conn_[i].channel);
  }

  void Prepare(grpc::ClientContext* ctx, const std::string& token = "") {
    PrepareContext(ctx, token.empty() ? token_ : token, absl::Seconds(15));
  }

  grpc::Status CreateQueue(int i, const std::string& name, const std::string& on = "") {
    v1::CreateQueueRequest req;
    req.mutable_config()->set_name(name);
    req.set_exist_ok(true);
    req.set_on(on);
    v1::CreateQueueResponse resp;
    grpc::ClientContext ctx;
    Prepare(&ctx);
    return stub_[i]->CreateQueue(&ctx, req, &resp);
  }

  grpc::Status Put(int i, const std::string& queue, int n, std::vector<uint64_t>* ids = nullptr,
                   const std::string& reply_to = "") {
    v1::PutRequest req;
    req.set_queue(queue);
    for (int k = 0; k < n; ++k) {
      v1::TaskSpec* t = req.add_tasks();
      t->set_payload(absl::StrCat(k));
      t->set_reply_to(reply_to);
    }
    v1::PutResponse resp;
    grpc::ClientContext ctx;
    Prepare(&ctx);
    grpc::Status s = stub_[i]->Put(&ctx, req, &resp);
    if (ids != nullptr) ids->assign(resp.ids().begin(), resp.ids().end());
    return s;
  }

  grpc::Status Take(int i, const std::string& queue, int n, std::vector<uint64_t>* ids) {
    v1::GetRequest req;
    req.set_queue(queue);
    req.set_max_tasks(n);
    req.set_nowait(true);
    v1::GetResponse resp;
    grpc::ClientContext ctx;
    Prepare(&ctx);
    grpc::Status s = stub_[i]->Get(&ctx, req, &resp);
    for (const auto& d : resp.deliveries()) ids->push_back(d.task().id());
    return s;
  }

  grpc::Status Stats(int i, const std::string& queue, v1::QueueStats* stats) {
    v1::GetQueueStatsRequest req;
    req.set_queue(queue);
    grpc::ClientContext ctx;
    Prepare(&ctx);
    return stub_[i]->GetQueueStats(&ctx, req, stats);
  }

  grpc::Status GetTask(int i, uint64_t id, v1::Task* task) {
    v1::GetTaskRequest req;
    req.set_task_id(id);
    grpc::ClientContext ctx;
    Prepare(&ctx);
    return stub_[i]->GetTask(&ctx, req, task);
  }

  v1::GetClusterResponse Cluster(int i, const std::string& token = "") {
    v1::GetClusterResponse resp;
    grpc::ClientContext ctx;
    Prepare(&ctx, token);
    grpc::Status s = stub_[i]->GetCluster(&ctx, v1::GetClusterRequest(), &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp;
  }

  // The master index a redirect names, by address; -1 if none.
  int Target(const grpc::Status& s) {
    auto owner = QueueOwnerOf(s);
    if (!owner) return -1;
    for (int i = 0; i < kMasters; ++i) {
      if (owner->address() == m_[i].address()) return i;
    }
    return -1;
  }

  taskq::testing::Cluster m_[kMasters];
  Connection conn_[kMasters];
  std::unique_ptr<v1::TaskQueue::Stub> stub_[kMasters];
  std::string token_;
};

TEST_F(ClusterModeTest, ACallOnAnotherMastersQueueIsRedirectedToItsOwner) {
  // Placed on m2 from m1: m1 answers with the way to m2.
  grpc::Status at_m1 = CreateQueue(0, "orders", "m2");
  ASSERT_EQ(at_m1.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << at_m1.error_message();
  auto owner = QueueOwnerOf(at_m1);
  ASSERT_TRUE(owner.has_value()) << at_m1.error_message();
  EXPECT_EQ(owner->queue(), "orders");
  EXPECT_EQ(owner->master(), "m2");
  EXPECT_EQ(owner->address(), m_[1].address());
  EXPECT_FALSE(owner->down());
  EXPECT_TRUE(absl::StrContains(at_m1.error_message(), "m2")) << at_m1.error_message();

  grpc::Status at_m2 = CreateQueue(1, "orders", "m2");
  ASSERT_TRUE(at_m2.ok()) << at_m2.error_message();
  std::vector<uint64_t> ids;
  grpc::Status put_m3 = Put(2, "orders", 1);
  EXPECT_EQ(put_m3.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Target(put_m3), 1) << put_m3.error_message();
  ASSERT_TRUE(Put(1, "orders", 3, &ids).ok());
  v1::QueueStats stats;
  ASSERT_TRUE(Stats(1, "orders", &stats).ok());
  EXPECT_EQ(stats.ready(), 3u);
  // Reads are redirected too.
  EXPECT_EQ(Target(Stats(0, "orders", &stats)), 1);

  // Deleted at its owner, the name is free again: placed anew on first use.
  v1::DeleteQueueRequest del;
  del.set_queue("orders");
  v1::DeleteQueueResponse deleted;
  grpc::ClientContext del_ctx;
  Prepare(&del_ctx);
  ASSERT_TRUE(stub_[1]->DeleteQueue(&del_ctx, del, &deleted).ok());
  ASSERT_TRUE(WaitFor([&] { return CreateQueue(2, "orders", "m3").ok(); }, absl::Seconds(10),
                      absl::Milliseconds(100)));
  // Other masters' caches follow within a refresh (a stale one sends the
  // caller to m2, which knows better and sends it on).
  EXPECT_TRUE(WaitFor([&] { return Target(Put(0, "orders", 1)) == 2; }, absl::Seconds(10),
                      absl::Milliseconds(100)));
  EXPECT_EQ(Target(Put(1, "orders", 1)), 2);

  // An unknown `on` is refused, and places nothing.
  grpc::Status nowhere = CreateQueue(0, "lost", "m9");
  EXPECT_EQ(nowhere.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << nowhere.error_message();
  EXPECT_TRUE(absl::StrContains(nowhere.error_message(), "m9")) << nowhere.error_message();
}

TEST_F(ClusterModeTest, FirstUseWithoutOnPlacesTheQueueOnceForEveryone) {
  // Some names hash to each master; whichever master is asked, every master
  // then agrees on the owner and only the owner serves it.
  std::set<int> owners;
  for (int q = 0; q < 12; ++q) {
    const std::string name = absl::StrCat("auto-", q);
    grpc::Status s = Put(q % kMasters, name, 1);
    int owner = s.ok() ? q % kMasters : Target(s);
    ASSERT_GE(owner, 0) << name << ": " << s.error_message();
    if (!s.ok()) {
      ASSERT_TRUE(Put(owner, name, 1).ok()) << name;
    }
    owners.insert(owner);
    for (int i = 0; i < kMasters; ++i) {
      grpc::Status again = Put(i, name, 1);
      if (i == owner) {
        EXPECT_TRUE(again.ok()) << name << " at " << kNames[i] << ": " << again.error_message();
      } else {
        EXPECT_EQ(Target(again), owner) << name << " at " << kNames[i] << ": "
                                        << again.error_message();
      }
    }
  }
  EXPECT_GE(owners.size(), 2u) << "12 names all hashed to one master";
}

TEST_F(ClusterModeTest, TheSameNewQueueCreatedAtTwoMastersAtOnceEndsWithOneOwner) {
  for (int q = 0; q < 8; ++q) {
    const std::string name = absl::StrCat("race-", q);
    grpc::Status at[2];
    std::thread a([&] { at[0] = CreateQueue(0, name, "m1"); });
    std::thread b([&] { at[1] = CreateQueue(1, name, "m2"); });
    a.join();
    b.join();
    // One master won the claim and created it; the other was sent to it.
    const int winners = at[0].ok() + at[1].ok();
    ASSERT_EQ(winners, 1) << name << ": " << at[0].error_message() << " / "
                          << at[1].error_message();
    const int winner = at[0].ok() ? 0 : 1;
    EXPECT_EQ(Target(at[1 - winner]), winner) << at[1 - winner].error_message();
    // The third master names the same owner.
    EXPECT_EQ(Target(Put(2, name, 1)), winner);
  }
}

TEST_F(ClusterModeTest, TaskIdsCarryTheNodeAndCallsByIdAreRedirected) {
  ASSERT_TRUE(CreateQueue(2, "jobs", "m3").ok());
  std::vector<uint64_t> ids;
  ASSERT_TRUE(Put(2, "jobs", 2, &ids).ok());
  ASSERT_EQ(ids.size(), 2u);
  uint32_t node_of_m3 = 0;
  std::set<uint32_t> nodes;
  const v1::GetClusterResponse cluster = Cluster(0);
  for (const auto& m : cluster.masters()) {
    nodes.insert(m.node());
    if (m.name() == "m3") node_of_m3 = m.node();
  }
  EXPECT_EQ(nodes.size(), 3u) << "each master has its own node number";
  EXPECT_FALSE(nodes.count(0));
  EXPECT_EQ(ids[0] >> 48, node_of_m3);

  v1::Task task;
  ASSERT_TRUE(GetTask(2, ids[0], &task).ok());
  EXPECT_EQ(task.queue(), "jobs");
  grpc::Status elsewhere = GetTask(0, ids[0], &task);
  EXPECT_EQ(elsewhere.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  auto owner = QueueOwnerOf(elsewhere);
  ASSERT_TRUE(owner.has_value()) << elsewhere.error_message();
  EXPECT_EQ(owner->task_id(), ids[0]);
  EXPECT_EQ(owner->master(), "m3");
  EXPECT_EQ(owner->address(), m_[2].address());

  // Cancel by id at another master is redirected the same way.
  v1::CancelTaskRequest cancel;
  cancel.set_task_id(ids[1]);
  v1::CancelTaskResponse cancelled;
  grpc::ClientContext ctx;
  Prepare(&ctx);
  EXPECT_EQ(Target(stub_[1]->CancelTask(&ctx, cancel, &cancelled)), 2);
}

TEST_F(ClusterModeTest, AReplyQueueMustBeOnTheTasksMaster) {
  ASSERT_TRUE(CreateQueue(0, "work", "m1").ok());
  ASSERT_TRUE(CreateQueue(1, "answers", "m2").ok());
  grpc::Status refused = Put(0, "work", 1, nullptr, "answers");
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_FALSE(QueueOwnerOf(refused).has_value()) << "following would not help";
  for (const char* word : {"answers", "m1", "m2", "CLUSTER.md"}) {
    EXPECT_TRUE(absl::StrContains(refused.error_message(), word)) << refused.error_message();
  }
  // The same for a dead-letter queue.
  v1::CreateQueueRequest dlq;
  dlq.mutable_config()->set_name("work2");
  dlq.mutable_config()->set_dead_letter("answers");
  dlq.set_on("m1");
  v1::CreateQueueResponse created;
  grpc::ClientContext ctx;
  Prepare(&ctx);
  grpc::Status dl = stub_[0]->CreateQueue(&ctx, dlq, &created);
  EXPECT_EQ(dl.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << dl.error_message();
  EXPECT_TRUE(absl::StrContains(dl.error_message(), "dead_letter")) << dl.error_message();
  // Nor can an update point an existing queue's dead letters there.
  v1::UpdateQueueRequest update;
  update.set_queue("work");
  update.mutable_update()->set_dead_letter("answers");
  v1::QueueConfig updated;
  grpc::ClientContext update_ctx;
  Prepare(&update_ctx);
  grpc::Status up = stub_[0]->UpdateQueue(&update_ctx, update, &updated);
  EXPECT_EQ(up.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << up.error_message();
  EXPECT_TRUE(absl::StrContains(up.error_message(), "dead_letter")) << up.error_message();
  // A reply queue not used yet is placed with the task's queue.
  ASSERT_TRUE(Put(0, "work", 1, nullptr, "my-answers").ok());
  EXPECT_EQ(Target(Put(2, "my-answers", 1)), 0);
}

TEST_F(ClusterModeTest, AWorkStreamNamingAnotherMastersQueueIsRefusedWithItsRedirect) {
  ASSERT_TRUE(CreateQueue(1, "tiles", "m2").ok());
  grpc::ClientContext ctx;
  Prepare(&ctx);
  auto stream = stub_[0]->Work(&ctx);
  v1::WorkRequest start;
  start.mutable_start()->add_queues("tiles");
  start.mutable_start()->set_worker_id("w");
  stream->Write(start);
  stream->WritesDone();
  v1::WorkResponse ignored;
  while (stream->Read(&ignored)) {
  }
  grpc::Status s = stream->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_EQ(Target(s), 1) << s.error_message();
}

TEST_F(ClusterModeTest, GetClusterShowsMastersAndThePlacementsTheCallerMaySee) {
  ASSERT_TRUE(CreateQueue(0, "team-a.jobs", "m1").ok());
  ASSERT_TRUE(CreateQueue(1, "other", "m2").ok());
  ASSERT_TRUE(WaitFor([&] { return Cluster(0).placements_size() == 2; }, absl::Seconds(10)));
  v1::GetClusterResponse admin = Cluster(0);
  EXPECT_TRUE(admin.clustered());
  EXPECT_EQ(admin.self(), "m1");
  ASSERT_EQ(admin.masters_size(), 3);
  for (int i = 0; i < kMasters; ++i) {
    const v1::ClusterMaster& m = admin.masters(i);
    EXPECT_EQ(m.name(), kNames[i]);
    EXPECT_TRUE(m.up());
    EXPECT_EQ(m.address(), m_[i].address());
    EXPECT_EQ(m.queues(), i < 2 ? 1u : 0u) << m.name();
  }

  // A producer scoped to team-a.* sees only its placement (the masters and
  // their counts are for everyone).
  v1::CreateCredentialRequest cred;
  cred.set_name("team-a");
  cred.set_role(v1::ROLE_PRODUCER);
  cred.add_queues("team-a.*");
  v1::CreateCredentialResponse made;
  grpc::ClientContext ctx;
  Prepare(&ctx);
  ASSERT_TRUE(stub_[0]->CreateCredential(&ctx, cred, &made).ok());
  v1::GetClusterResponse scoped = Cluster(0, made.token());
  EXPECT_EQ(scoped.masters_size(), 3);
  ASSERT_EQ(scoped.placements_size(), 1);
  EXPECT_EQ(scoped.placements(0).queue(), "team-a.jobs");
  EXPECT_EQ(scoped.placements(0).master(), "m1");
}

TEST_F(ClusterModeTest, AKilledMastersQueuesAreDownElsewhereAndWholeAfterItsRestart) {
  ASSERT_TRUE(CreateQueue(2, "on-m3", "m3").ok());
  ASSERT_TRUE(CreateQueue(0, "on-m1", "m1").ok());
  std::vector<uint64_t> put;
  ASSERT_TRUE(Put(2, "on-m3", 5, &put).ok());

  bool saw_down = false;
  absl::Status restarted = m_[2].RestartMaster(SIGKILL, absl::Seconds(30), [&] {
    grpc::Status last;
    saw_down = WaitFor(
        [&] {
          last = Put(0, "on-m3", 1);
          return last.error_code() == grpc::StatusCode::UNAVAILABLE;
        },
        kDownWithin, absl::Milliseconds(100));
    EXPECT_TRUE(saw_down) << last.error_message();
    EXPECT_TRUE(absl::StrContains(last.error_message(), "owner m3 is down")) << last.error_message();
    auto owner = QueueOwnerOf(last);
    ASSERT_TRUE(owner.has_value());
    EXPECT_TRUE(owner->down());
    EXPECT_EQ(owner->master(), "m3");
    // Never re-created elsewhere (m2 too calls it down, on its own
    // refresh), and the other queues keep working.
    EXPECT_TRUE(WaitFor([&] { return Put(1, "on-m3", 1).error_code() == grpc::StatusCode::UNAVAILABLE; },
                        absl::Seconds(5), absl::Milliseconds(100)));
    EXPECT_TRUE(Put(0, "on-m1", 2).ok());
    std::vector<uint64_t> got;
    EXPECT_TRUE(Take(0, "on-m1", 2, &got).ok());
    EXPECT_EQ(got.size(), 2u);
    const v1::GetClusterResponse cluster = Cluster(0);
    for (const auto& m : cluster.masters()) {
      if (m.name() == "m3") {
        EXPECT_FALSE(m.up());
      }
    }
  });
  ASSERT_TRUE(restarted.ok()) << restarted;
  ASSERT_TRUE(saw_down);
  Reconnect(2);

  // Everything queued before the crash is there.
  std::vector<uint64_t> got;
  ASSERT_TRUE(Take(2, "on-m3", 10, &got).ok());
  EXPECT_EQ(std::set<uint64_t>(got.begin(), got.end()), std::set<uint64_t>(put.begin(), put.end()));
  // And the others send callers to it again.
  ASSERT_TRUE(WaitFor([&] { return Target(Put(0, "on-m3", 1)) == 2; }, absl::Seconds(20)));
}

TEST_F(ClusterModeTest, WhileEtcdIsAwayOwnedQueuesServeAndNothingChangesOwner) {
  ASSERT_TRUE(CreateQueue(0, "steady", "m1").ok());
  ASSERT_TRUE(CreateQueue(1, "elsewhere", "m2").ok());
  ASSERT_TRUE(WaitFor([&] { return Target(Put(0, "elsewhere", 1)) == 1; }, absl::Seconds(10)));

  etcd_.process()->Kill(SIGSTOP);
  // Each master notices on its next refresh.
  ASSERT_TRUE(WaitFor([&] { return absl::StrContains(m_[0].master()->Stderr(), "etcd unreachable"); },
                      absl::Seconds(20), absl::Milliseconds(100)));
  std::vector<uint64_t> ids;
  EXPECT_TRUE(Put(0, "steady", 3, &ids).ok());
  std::vector<uint64_t> got;
  EXPECT_TRUE(Take(0, "steady", 3, &got).ok());
  EXPECT_EQ(got.size(), 3u);
  EXPECT_EQ(Target(Put(0, "elsewhere", 1)), 1) << "the cached owner still answers";
  grpc::Status place = Put(2, "brand-new", 1);
  EXPECT_EQ(place.error_code(), grpc::StatusCode::UNAVAILABLE) << place.error_message();
  EXPECT_TRUE(absl::StrContains(place.error_message(), "cannot place queue \"brand-new\""))
      << place.error_message();
  etcd_.process()->Kill(SIGCONT);

  // Back: the same owners (each master re-registers if its lease lapsed
  // meanwhile), and new queues are placed again.
  ASSERT_TRUE(WaitFor([&] { return Target(Put(2, "steady", 1)) == 0; }, absl::Seconds(30),
                      absl::Milliseconds(100)));
  ASSERT_TRUE(WaitFor([&] { return Target(Put(0, "elsewhere", 1)) == 1; }, absl::Seconds(30),
                      absl::Milliseconds(100)));
  EXPECT_TRUE(Put(0, "steady", 1).ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        grpc::Status s = Put(2, "brand-new", 1);
        return s.ok() || Target(s) >= 0;
      },
      absl::Seconds(20), absl::Milliseconds(100)));
}

TEST_F(ClusterModeTest, AMasterWithItsNodeNumberStartsWithoutEtcdANewOneDoesNot) {
  ASSERT_TRUE(CreateQueue(0, "kept", "m1").ok());
  ASSERT_TRUE(Put(0, "kept", 2).ok());
  etcd_.process()->Kill(SIGSTOP);
  // m1 restarts on its data dir while etcd does not answer, and serves.
  ASSERT_TRUE(m_[0].RestartMaster(SIGKILL, absl::Seconds(60)).ok());
  Reconnect(0);
  std::vector<uint64_t> got;
  EXPECT_TRUE(Take(0, "kept", 2, &got).ok());
  EXPECT_EQ(got.size(), 2u);
  // A master that never had a node number cannot start.
  taskq::testing::Cluster fresh;
  absl::Status s = StartClusterMaster(fresh, etcd_, "m4", {}, &m_[0]);
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.message(), "node number")) << s;
  etcd_.process()->Kill(SIGCONT);
  // Once etcd answers, m1 registers and the others see it up.
  ASSERT_TRUE(WaitFor([&] { return MastersUpAsSeenBy(m_[1]) == kMasters; }, absl::Seconds(30),
                      absl::Milliseconds(100)));
}

}  // namespace
}  // namespace taskq::testing
