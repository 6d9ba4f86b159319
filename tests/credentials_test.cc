// Credentials against the real master: expired, revoked (with its Work
// stream open: the stream ends and its task is handed out again), unknown
// tokens, queues outside a credential's patterns, a producer's own reply
// queues, the master token as admin, changes without and across a restart,
// and the audit log (admin actions, refusals, rate limit).
#include <chrono>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "taskq/v1/taskq.grpc.pb.h"
#include "common/sync.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

using Stub = v1::TaskQueue::Stub;

class CredentialsTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(Restart(false).ok()); }

  absl::Status Restart(bool restart) {
    if (restart) {
      if (auto s = cluster_.RestartMaster(SIGTERM); !s.ok()) return s;
    } else if (auto s = cluster_.Start(); !s.ok()) {
      return s;
    }
    auto conn = cluster_.Connect();
    if (!conn.ok()) return conn.status();
    master_token_ = conn->token;
    stub_ = v1::TaskQueue::NewStub(conn->channel);
    return absl::OkStatus();
  }

  std::unique_ptr<grpc::ClientContext> Context(const std::string& token) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->AddMetadata("authorization", "Bearer " + token);
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return ctx;
  }

  std::string Make(const std::string& name, v1::Role role, std::vector<std::string> queues,
                   uint64_t expires_in_ms = 0) {
    v1::CreateCredentialRequest req;
    req.set_name(name);
    req.set_role(role);
    for (auto& q : queues) req.add_queues(q);
    req.set_expires_in_ms(expires_in_ms);
    v1::CreateCredentialResponse resp;
    grpc::Status s = stub_->CreateCredential(Context(master_token_).get(), req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.token();
  }

  grpc::Status Revoke(const std::string& name) {
    v1::RevokeCredentialRequest req;
    req.set_name(name);
    v1::RevokeCredentialResponse resp;
    return stub_->RevokeCredential(Context(master_token_).get(), req, &resp);
  }

  grpc::Status Stats(const std::string& token, const std::string& queue) {
    v1::GetQueueStatsRequest req;
    req.set_queue(queue);
    v1::QueueStats resp;
    return stub_->GetQueueStats(Context(token).get(), req, &resp);
  }

  grpc::Status Put(const std::string& token, const std::string& queue,
                   const std::string& reply_to = "", uint64_t* id = nullptr) {
    v1::PutRequest req;
    req.set_queue(queue);
    auto* t = req.add_tasks();
    t->set_payload("7");
    t->set_reply_to(reply_to);
    v1::PutResponse resp;
    grpc::Status s = stub_->Put(Context(token).get(), req, &resp);
    if (id && resp.ids_size() > 0) *id = resp.ids(0);
    return s;
  }

  grpc::Status CreateQueue(const std::string& token, const std::string& name, bool exist_ok) {
    v1::CreateQueueRequest req;
    req.mutable_config()->set_name(name);
    req.set_exist_ok(exist_ok);
    v1::CreateQueueResponse resp;
    return stub_->CreateQueue(Context(token).get(), req, &resp);
  }

  grpc::Status Take(const std::string& token, const std::string& queue) {
    v1::GetRequest req;
    req.set_queue(queue);
    req.set_nowait(true);
    v1::GetResponse resp;
    return stub_->Get(Context(token).get(), req, &resp);
  }

  std::string AuditLog() const { return ReadFile(cluster_.data_dir() + "/audit.log"); }

  Cluster cluster_;
  std::string master_token_;
  std::unique_ptr<Stub> stub_;
};

TEST_F(CredentialsTest, UnknownAndExpiredTokensAreUnauthenticated) {
  grpc::Status s = Stats("tq1.0123456789abcdef.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "q");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(absl::StrContains(s.error_message(), "unknown token")) << s.error_message();
  const std::string token = Make("short", v1::ROLE_READER, {"*"}, /*expires_in_ms=*/300);
  ASSERT_TRUE(WaitFor([&] { return Stats(token, "q").error_code() == grpc::StatusCode::UNAUTHENTICATED; },
                      absl::Seconds(5)));
  s = Stats(token, "q");
  EXPECT_TRUE(absl::StrContains(s.error_message(), "credential \"short\" expired at"))
      << s.error_message();
}

TEST_F(CredentialsTest, QueueOutsideThePatternsIsRefusedNamingTheCredential) {
  const std::string token = Make("p1", v1::ROLE_PRODUCER, {"tasks", "img.*"});
  EXPECT_TRUE(Put(token, "img.small").ok());
  grpc::Status s = Put(token, "billing");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(s.error_message(),
            "credential \"p1\" may not touch queue \"billing\" (its queues: tasks, img.*)");
  // A reply_to outside them too: results go only where the producer may.
  EXPECT_EQ(Put(token, "tasks", "billing").error_code(), grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(CredentialsTest, ProducerReadsItsOwnResultQueueButNotAnothers) {
  const std::string p1 = Make("p1", v1::ROLE_PRODUCER, {"tasks"});
  const std::string p2 = Make("p2", v1::ROLE_PRODUCER, {"tasks"});
  ASSERT_TRUE(CreateQueue(p1, "_results.one", false).ok());
  ASSERT_TRUE(CreateQueue(p2, "_results.two", false).ok());
  // Only _results.* names, and not a name someone else owns.
  EXPECT_EQ(CreateQueue(p1, "tasks2", false).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(CreateQueue(p1, "_results.two", true).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(CreateQueue(p1, "_results.one", true).ok());
  EXPECT_TRUE(Put(p1, "tasks", "_results.one").ok());
  EXPECT_EQ(Put(p1, "tasks", "_results.two").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Take(p1, "_results.one").error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(Take(p1, "_results.two").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Take(p1, "tasks").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(Stats(p1, "_results.one").ok());
  EXPECT_EQ(Stats(p1, "_results.two").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  // The owner survives UpdateQueue (it cannot be set there) and a restart.
  v1::UpdateQueueRequest update;
  update.set_queue("_results.one");
  update.mutable_update()->set_maxsize(5);
  v1::QueueConfig config;
  ASSERT_TRUE(stub_->UpdateQueue(Context(master_token_).get(), update, &config).ok());
  EXPECT_EQ(config.owner(), "p1");
  ASSERT_TRUE(Restart(true).ok());
  EXPECT_TRUE(Stats(p1, "_results.one").ok());
  EXPECT_EQ(Stats(p2, "_results.one").error_code(), grpc::StatusCode::PERMISSION_DENIED);
}

// A producer's own queue may not send its dead letters to a queue outside
// its scope: that would let it put tasks into another queue's dead-letter
// set.
TEST_F(CredentialsTest, ProducerQueueCannotDeadLetterIntoAQueueOutsideItsScope) {
  const std::string p1 = Make("p1", v1::ROLE_PRODUCER, {"tasks"});
  ASSERT_TRUE(CreateQueue(master_token_, "billing", false).ok());
  v1::CreateQueueRequest req;
  req.mutable_config()->set_name("_results.dl");
  req.mutable_config()->set_dead_letter("billing");
  v1::CreateQueueResponse resp;
  grpc::Status s = stub_->CreateQueue(Context(p1).get(), req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  EXPECT_TRUE(absl::StrContains(s.error_message(), "billing")) << s.error_message();
  req.mutable_config()->set_dead_letter("tasks");  // in its scope
  EXPECT_TRUE(stub_->CreateQueue(Context(p1).get(), req, &resp).ok());
}

TEST_F(CredentialsTest, MasterTokenStaysAdminAndCannotBeRevoked) {
  EXPECT_TRUE(CreateQueue(master_token_, "anything", false).ok());
  grpc::Status s = Revoke("master-token");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  v1::ListCredentialsResponse list;
  ASSERT_TRUE(stub_->ListCredentials(Context(master_token_).get(), {}, &list).ok());
  ASSERT_GE(list.credentials_size(), 1);
  EXPECT_EQ(list.credentials(0).kind(), v1::CREDENTIAL_KIND_MASTER_TOKEN);
  // The CLI with the token file keeps working.
  CliResult r = cluster_.Cli({"queue", "list"});
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
}

TEST_F(CredentialsTest, CreateAndRevokeWorkAtOnceAndSurviveARestart) {
  const std::string a = Make("reader-a", v1::ROLE_READER, {"*"});
  const std::string b = Make("reader-b", v1::ROLE_READER, {"*"});
  EXPECT_TRUE(Stats(a, "q").error_code() != grpc::StatusCode::UNAUTHENTICATED);
  ASSERT_TRUE(Revoke("reader-a").ok());
  EXPECT_EQ(Stats(a, "q").error_message(), "credential \"reader-a\" was revoked");
  ASSERT_TRUE(Restart(true).ok());
  EXPECT_EQ(Stats(a, "q").error_message(), "credential \"reader-a\" was revoked");
  EXPECT_NE(Stats(b, "q").error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(CredentialsTest, RevokingEndsTheOpenWorkStreamAndItsTaskIsRedelivered) {
  const std::string w = Make("w1", v1::ROLE_WORKER, {"jobs"});
  uint64_t id = 0;
  ASSERT_TRUE(Put(master_token_, "jobs", "", &id).ok());
  auto ctx = Context(w);
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  auto stream = stub_->Work(ctx.get());
  v1::WorkRequest start;
  start.mutable_start()->add_queues("jobs");
  start.mutable_start()->set_worker_id("doomed");
  start.set_credits(1);
  ASSERT_TRUE(stream->Write(start));
  v1::WorkResponse got;
  ASSERT_TRUE(stream->Read(&got));
  ASSERT_EQ(got.deliveries_size(), 1);
  EXPECT_EQ(got.deliveries(0).task().id(), id);

  ASSERT_TRUE(Revoke("w1").ok());
  while (stream->Read(&got)) {
  }
  grpc::Status ended = stream->Finish();
  EXPECT_EQ(ended.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(ended.error_message(), "credential \"w1\" was revoked");
  // Its lease went back at once: another consumer gets the task now.
  v1::GetRequest get;
  get.set_queue("jobs");
  get.set_timeout_ms(5000);
  get.set_mode(v1::GET_MODE_LEASE);
  v1::GetResponse resp;
  ASSERT_TRUE(stub_->Get(Context(master_token_).get(), get, &resp).ok());
  ASSERT_EQ(resp.deliveries_size(), 1);
  EXPECT_EQ(resp.deliveries(0).task().id(), id);
}

TEST_F(CredentialsTest, RevokingEndsAWaitingGet) {
  const std::string w = Make("w2", v1::ROLE_WORKER, {"idle"});
  v1::GetRequest get;
  get.set_queue("idle");
  get.set_timeout_ms(20000);
  v1::GetResponse resp;
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", "Bearer " + w);
  grpc::Status status;
  Notification done;
  stub_->async()->Get(&ctx, &get, &resp, [&](grpc::Status s) {
    status = s;
    done.Notify();
  });
  ASSERT_TRUE(WaitFor([&] { return cluster_.StatNumber("idle", "waiting_consumers") == 1; },
                      absl::Seconds(10)));
  ASSERT_TRUE(Revoke("w2").ok());
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(status.error_message(), "credential \"w2\" was revoked");
}

TEST_F(CredentialsTest, AuditLogRecordsAdminActionsAndRefusalsWithinARateLimit) {
  const std::string r = Make("r1", v1::ROLE_READER, {"q"});
  ASSERT_TRUE(CreateQueue(master_token_, "audited", false).ok());
  ASSERT_EQ(CreateQueue(r, "nope", false).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  std::string log = AuditLog();
  EXPECT_TRUE(absl::StrContains(log, "credential.create credential=master-token role=admin"))
      << log;
  EXPECT_TRUE(absl::StrContains(log, "target=r1 result=OK")) << log;
  EXPECT_TRUE(absl::StrContains(log, "queue.create credential=master-token role=admin")) << log;
  EXPECT_TRUE(absl::StrContains(
      log, "queue.create credential=r1 role=reader peer=ipv4:127.0.0.1:")) << log;
  EXPECT_TRUE(absl::StrContains(log, "result=PERMISSION_DENIED: credential \\\"r1\\\" (role reader) may not create queues")) << log;
  EXPECT_FALSE(absl::StrContains(log, r));
  EXPECT_FALSE(absl::StrContains(log, master_token_));
  // A flood of refused calls gives a bounded number of lines.
  const size_t before = Lines(AuditLog()).size();
  for (int i = 0; i < 300; ++i) CreateQueue(r, "nope", false);
  const size_t after = Lines(AuditLog()).size();
  EXPECT_LE(after - before, 25u) << AuditLog();
}

}  // namespace
}  // namespace taskq::testing
