// The role table (master/roles.cc) enforced by the real master, exhaustively:
// for each role and each RPC of the table, a minimal valid request through a
// raw gRPC stub is either allowed (answered with anything but
// PERMISSION_DENIED / UNAUTHENTICATED) or refused PERMISSION_DENIED naming
// the credential — as the table says.
#include <functional>
#include <map>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "master/roles.h"
#include "taskq/v1/taskq.grpc.pb.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

using Stub = v1::TaskQueue::Stub;

struct Caller {
  std::string role;   // "admin", "producer", ...
  std::string name;   // credential name
  std::string token;
};

class RolesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cluster_.Start().ok());
    auto conn = cluster_.Connect();
    ASSERT_TRUE(conn.ok()) << conn.status();
    channel_ = conn->channel;
    master_token_ = conn->token;
    stub_ = v1::TaskQueue::NewStub(channel_);
    // Every role works on queue "q"; the producer owns "_results.prod".
    for (auto [role, r] : std::vector<std::pair<std::string, v1::Role>>{
             {"admin", v1::ROLE_ADMIN}, {"producer", v1::ROLE_PRODUCER},
             {"worker", v1::ROLE_WORKER}, {"reader", v1::ROLE_READER}}) {
      callers_.push_back({role, "c-" + role, MakeCredential("c-" + role, r, {"q"})});
    }
    v1::CreateQueueRequest create;
    create.mutable_config()->set_name("_results.prod");
    v1::CreateQueueResponse created;
    ASSERT_TRUE(Call(callers_[1].token, [&](grpc::ClientContext* c) {
                  return stub_->CreateQueue(c, create, &created);
                }).ok());
    ASSERT_EQ(created.config().owner(), "c-producer");
    task_in_q_ = PutTask("q");
    task_in_results_ = PutTask("_results.prod");
  }

  grpc::Status Call(const std::string& token,
                    const std::function<grpc::Status(grpc::ClientContext*)>& rpc) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + token);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return rpc(&ctx);
  }

  std::string MakeCredential(const std::string& name, v1::Role role,
                             std::vector<std::string> queues) {
    v1::CreateCredentialRequest req;
    req.set_name(name);
    req.set_role(role);
    for (auto& q : queues) req.add_queues(q);
    v1::CreateCredentialResponse resp;
    grpc::Status s = Call(master_token_, [&](grpc::ClientContext* c) {
      return stub_->CreateCredential(c, req, &resp);
    });
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.token();
  }

  uint64_t PutTask(const std::string& queue) {
    v1::PutRequest req;
    req.set_queue(queue);
    req.add_tasks()->set_payload("x");
    v1::PutResponse resp;
    grpc::Status s = Call(master_token_, [&](grpc::ClientContext* c) {
      return stub_->Put(c, req, &resp);
    });
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.ids_size() > 0 ? resp.ids(0) : 0;
  }

  // The Work stream: subscribe to "q", then close our side.
  grpc::Status Work(const std::string& token) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + token);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    auto stream = stub_->Work(&ctx);
    v1::WorkRequest start;
    start.mutable_start()->add_queues("q");
    start.mutable_start()->set_worker_id("roles-test");
    stream->Write(start);
    stream->WaitForInitialMetadata();
    stream->WritesDone();
    return stream->Finish();
  }

  // A minimal valid request of `rpc` by `caller`, aimed at what its role may
  // touch when the table allows it.
  grpc::Status Invoke(const std::string& rpc, const Caller& caller) {
    const bool producer = caller.role == "producer";
    const std::string own = producer ? "_results.prod" : "q";
    auto call = [&](auto method, auto req, auto resp) {
      return Call(caller.token, [&](grpc::ClientContext* c) {
        return ((*stub_).*method)(c, req, &resp);
      });
    };
    const std::string suffix = caller.role;
    if (rpc == "CreateQueue") {
      v1::CreateQueueRequest r;
      r.mutable_config()->set_name("_results.made-by-" + suffix);
      return call(&Stub::CreateQueue, r, v1::CreateQueueResponse());
    }
    if (rpc == "ListQueues") return call(&Stub::ListQueues, v1::ListQueuesRequest(), v1::ListQueuesResponse());
    if (rpc == "ListWorkers") {
      return call(&Stub::ListWorkers, v1::ListWorkersRequest(), v1::ListWorkersResponse());
    }
    if (rpc == "GetCluster") {
      return call(&Stub::GetCluster, v1::GetClusterRequest(), v1::GetClusterResponse());
    }
    if (rpc == "MoveQueue") {  // a single master: refused after the role check
      v1::MoveQueueRequest r;
      r.set_queue("q");
      r.set_to("elsewhere");
      return call(&Stub::MoveQueue, r, v1::MoveQueueResponse());
    }
    if (rpc == "AdoptQueues") {
      v1::AdoptQueuesRequest r;
      r.set_from("elsewhere");
      r.add_queues("q");
      return call(&Stub::AdoptQueues, r, v1::AdoptQueuesResponse());
    }
    if (rpc == "GetQueueStats") {
      v1::GetQueueStatsRequest r;
      r.set_queue("q");
      return call(&Stub::GetQueueStats, r, v1::QueueStats());
    }
    if (rpc == "DeleteQueue") {
      v1::DeleteQueueRequest r;
      r.set_queue(producer ? "_results.made-by-producer" : "scratch-" + suffix);
      return call(&Stub::DeleteQueue, r, v1::DeleteQueueResponse());
    }
    if (rpc == "PurgeQueue" || rpc == "UpdateQueue" || rpc == "ShutdownQueue" ||
        rpc == "ListDead" || rpc == "RequeueDead" || rpc == "PurgeDead") {
      const std::string q = "scratch-" + suffix;
      if (rpc == "PurgeQueue") {
        v1::PurgeQueueRequest r;
        r.set_queue(q);
        return call(&Stub::PurgeQueue, r, v1::PurgeQueueResponse());
      }
      if (rpc == "UpdateQueue") {
        v1::UpdateQueueRequest r;
        r.set_queue(q);
        r.mutable_update()->set_maxsize(10);
        return call(&Stub::UpdateQueue, r, v1::QueueConfig());
      }
      if (rpc == "ShutdownQueue") {
        v1::ShutdownQueueRequest r;
        r.set_queue(q);
        return call(&Stub::ShutdownQueue, r, v1::ShutdownQueueResponse());
      }
      if (rpc == "ListDead") {
        v1::ListDeadRequest r;
        r.set_queue(q);
        return call(&Stub::ListDead, r, v1::ListDeadResponse());
      }
      if (rpc == "RequeueDead") {
        v1::RequeueDeadRequest r;
        r.set_queue(q);
        return call(&Stub::RequeueDead, r, v1::RequeueDeadResponse());
      }
      v1::PurgeDeadRequest r;
      r.set_queue(q);
      return call(&Stub::PurgeDead, r, v1::PurgeDeadResponse());
    }
    if (rpc == "GetTask") {
      v1::GetTaskRequest r;
      r.set_task_id(task_in_q_);
      return call(&Stub::GetTask, r, v1::Task());
    }
    if (rpc == "CancelTask") {
      v1::CancelTaskRequest r;
      r.set_task_id(task_in_q_ + 1000);  // unknown: nothing is cancelled
      return call(&Stub::CancelTask, r, v1::CancelTaskResponse());
    }
    if (rpc == "Put") {
      v1::PutRequest r;
      r.set_queue("q");
      auto* t = r.add_tasks();
      t->set_payload("1");
      t->set_reply_to(own);
      r.set_nowait(true);
      return call(&Stub::Put, r, v1::PutResponse());
    }
    if (rpc == "Get") {
      v1::GetRequest r;
      r.set_queue(own == "q" ? "empty-q" : own);
      if (caller.role == "worker") r.set_queue("q");
      r.set_nowait(true);
      r.set_mode(v1::GET_MODE_LEASE);
      return call(&Stub::Get, r, v1::GetResponse());
    }
    const uint64_t task = producer ? task_in_results_ : task_in_q_;
    if (rpc == "Complete") {
      v1::CompleteRequest r;
      r.set_task_id(task);
      r.set_lease_id(999999);
      return call(&Stub::Complete, r, v1::CompleteResponse());
    }
    if (rpc == "Ack") {
      v1::AckRequest r;
      auto* l = r.add_leases();
      l->set_task_id(task);
      l->set_lease_id(999999);
      return call(&Stub::Ack, r, v1::AckResponse());
    }
    if (rpc == "Fail") {
      v1::FailRequest r;
      r.set_task_id(task);
      r.set_lease_id(999999);
      return call(&Stub::Fail, r, v1::FailResponse());
    }
    if (rpc == "Release") {
      v1::ReleaseRequest r;
      r.set_task_id(task);
      r.set_lease_id(999999);
      return call(&Stub::Release, r, v1::ReleaseResponse());
    }
    if (rpc == "TaskDone") {
      v1::TaskDoneRequest r;
      r.set_queue("q");
      return call(&Stub::TaskDone, r, v1::TaskDoneResponse());
    }
    if (rpc == "Join") {
      v1::JoinRequest r;
      r.set_queue("q");
      r.set_timeout_ms(1);
      return call(&Stub::Join, r, v1::JoinResponse());
    }
    if (rpc == "Work") return Work(caller.token);
    if (rpc == "CreateCredential") {
      v1::CreateCredentialRequest r;
      r.set_name("made-by-" + suffix);
      r.set_role(v1::ROLE_READER);
      r.add_queues("q");
      return call(&Stub::CreateCredential, r, v1::CreateCredentialResponse());
    }
    if (rpc == "ListCredentials") {
      return call(&Stub::ListCredentials, v1::ListCredentialsRequest(), v1::ListCredentialsResponse());
    }
    if (rpc == "RevokeCredential") {
      v1::RevokeCredentialRequest r;
      r.set_name("victim-" + suffix);
      return call(&Stub::RevokeCredential, r, v1::RevokeCredentialResponse());
    }
    ADD_FAILURE() << "the test has no request for " << rpc << ": add one";
    return grpc::Status(grpc::StatusCode::INTERNAL, "no request");
  }

  Cluster cluster_;
  std::shared_ptr<grpc::Channel> channel_;
  std::string master_token_;
  std::unique_ptr<Stub> stub_;
  std::vector<Caller> callers_;
  uint64_t task_in_q_ = 0, task_in_results_ = 0;
};

TEST_F(RolesTest, EveryRoleAndEveryRpcAsTheTableSays) {
  for (const Caller& c : callers_) {
    MakeCredential("victim-" + c.role, v1::ROLE_READER, {"q"});
    // Admin-only queue operations get a queue of their own.
    v1::CreateQueueRequest r;
    r.mutable_config()->set_name("scratch-" + c.role);
    v1::CreateQueueResponse resp;
    ASSERT_TRUE(Call(master_token_, [&](grpc::ClientContext* ctx) {
                  return stub_->CreateQueue(ctx, r, &resp);
                }).ok());
  }
  const std::map<std::string, v1::Role> roles = {{"admin", v1::ROLE_ADMIN},
                                                 {"producer", v1::ROLE_PRODUCER},
                                                 {"worker", v1::ROLE_WORKER},
                                                 {"reader", v1::ROLE_READER}};
  int allowed = 0, denied = 0;
  for (const RpcRule& rule : RoleTable()) {
    for (const Caller& c : callers_) {
      const bool may = rule.For(roles.at(c.role)) != Access::kDenied;
      grpc::Status s = Invoke(rule.rpc, c);
      SCOPED_TRACE(absl::StrCat(rule.rpc, " by ", c.role, ": ", s.error_code(), " ",
                                s.error_message()));
      EXPECT_NE(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
      if (may) {
        EXPECT_NE(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
        ++allowed;
      } else {
        EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
        EXPECT_TRUE(absl::StrContains(s.error_message(), absl::StrCat("\"", c.name, "\"")));
        EXPECT_TRUE(absl::StrContains(s.error_message(), rule.right));
        EXPECT_FALSE(absl::StrContains(s.error_message(), c.token));
        ++denied;
      }
    }
  }
  EXPECT_EQ(allowed + denied, static_cast<int>(RoleTable().size() * callers_.size()));
}

TEST_F(RolesTest, ReaderListsOnlyItsQueues) {
  v1::CreateQueueRequest r;
  r.mutable_config()->set_name("billing");
  v1::CreateQueueResponse resp;
  ASSERT_TRUE(Call(master_token_, [&](grpc::ClientContext* c) {
                return stub_->CreateQueue(c, r, &resp);
              }).ok());
  v1::ListQueuesResponse list;
  ASSERT_TRUE(Call(callers_[3].token, [&](grpc::ClientContext* c) {
                return stub_->ListQueues(c, v1::ListQueuesRequest(), &list);
              }).ok());
  ASSERT_EQ(list.queues_size(), 1);
  EXPECT_EQ(list.queues(0).config().name(), "q");
}

}  // namespace
}  // namespace taskq::testing
