// The Work stream's protocol limits against the real master, through a raw
// gRPC client: a worker that floods reports without reading the acks does
// not grow the master's memory (the master stops reading when its outbox is
// deep) and loses nothing, and a message with too many reports is refused
// with a clear status. Leases on the stream state their time left.
#include <atomic>
#include <cstdlib>
#include <thread>

#include "absl/strings/match.h"
#include "common/channel.h"
#include "common/limits.h"
#include "gtest/gtest.h"
#include "taskq/v1/taskq.grpc.pb.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

class WorkStreamLimits : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::Status s = cluster_.Start();
    ASSERT_TRUE(s.ok()) << s;
    auto conn = cluster_.Connect();
    ASSERT_TRUE(conn.ok()) << conn.status();
    conn_ = *std::move(conn);
    stub_ = v1::TaskQueue::NewStub(conn_.channel);
  }

  // A request reporting `n` completions of leases the master never granted.
  static v1::WorkRequest BogusCompletions(int n, uint64_t first_id) {
    v1::WorkRequest req;
    for (int i = 0; i < n; ++i) {
      auto* c = req.add_completions();
      c->set_task_id(first_id + i);
      c->set_lease_id(first_id + i);
    }
    return req;
  }

  // Opens a Work stream, sends `req`, closes the writing side, reads
  // whatever comes back and returns the stream's final status.
  grpc::Status SendOneAndFinish(const v1::WorkRequest& req) {
    grpc::ClientContext ctx;
    PrepareContext(&ctx, conn_.token, absl::Seconds(60));
    auto stream = stub_->Work(&ctx);
    if (!stream->Write(req)) ADD_FAILURE() << "write refused";
    stream->WritesDone();
    v1::WorkResponse resp;
    while (stream->Read(&resp)) {
    }
    return stream->Finish();
  }

  Cluster cluster_;
  Connection conn_;
  std::unique_ptr<v1::TaskQueue::Stub> stub_;
};

TEST_F(WorkStreamLimits, FloodOfReportsIsThrottledButEveryAckArrives) {
  grpc::ClientContext ctx;
  PrepareContext(&ctx, conn_.token, absl::Seconds(120));
  auto stream = stub_->Work(&ctx);
  v1::WorkRequest start;
  start.mutable_start()->add_queues("flood");
  start.mutable_start()->set_worker_id("flooder");
  ASSERT_TRUE(stream->Write(start));

  constexpr int kMessages = 400, kPerMessage = 1000;
  std::atomic<int> written{0};
  std::thread writer([&] {
    for (int m = 0; m < kMessages; ++m) {
      if (!stream->Write(BogusCompletions(kPerMessage, 1'000'000 + m * kPerMessage))) return;
      ++written;
    }
    stream->WritesDone();
  });
  // Read only after the writer is done or stuck: the master must not have
  // buffered an unbounded backlog of acks meanwhile, and nothing may be lost.
  WaitFor([&] { return written.load() == kMessages; }, absl::Seconds(2));
  int acks = 0, refused = 0;
  v1::WorkResponse resp;
  while (stream->Read(&resp)) {
    for (const auto& ack : resp.acks()) {
      ++acks;
      if (ack.code() == grpc::StatusCode::FAILED_PRECONDITION) ++refused;
    }
  }
  writer.join();
  grpc::Status status = stream->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(written.load(), kMessages);
  EXPECT_EQ(acks, kMessages * kPerMessage);
  EXPECT_EQ(refused, acks) << "every bogus completion is refused as a lost lease";
  // 400,000 acks of ~170 bytes would be ~70 MB if the master buffered them
  // for a client that does not read; it must not.
  const long peak_kb = ProcStatus(cluster_.master()->pid(), "VmHWM");
  ASSERT_GT(peak_kb, 0);
  if (!RssIsMeaningless()) {
    EXPECT_LT(peak_kb, 60 * 1024) << "master peak RSS " << peak_kb << " kB";
  }
  // The master is still healthy.
  CliResult r = cluster_.Cli({"queue", "stats", "flood"});
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
}

TEST_F(WorkStreamLimits, TooManyReportsInOneMessageIsRefused) {
  v1::WorkRequest req = BogusCompletions(static_cast<int>(kMaxReportsPerWorkMessage) + 1, 1);
  req.mutable_start()->add_queues("q");
  grpc::Status status = SendOneAndFinish(req);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(status.error_message(), "limit")) << status.error_message();
}

TEST_F(WorkStreamLimits, FirstMessageMustSubscribe) {
  v1::WorkRequest req;
  req.set_credits(1);
  grpc::Status status = SendOneAndFinish(req);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(status.error_message(), "start")) << status.error_message();
}

// Fencing needs the lease's time left, stated without clock agreement: on
// the delivery, and on every confirmed heartbeat (issue 13).
TEST_F(WorkStreamLimits, DeliveriesAndConfirmedHeartbeatsStateTheLeaseTimeLeft) {
  CliResult create = cluster_.Cli({"queue", "create", "short", "--lease", "3"});
  ASSERT_EQ(create.exit_code, 0) << Describe(create);
  ASSERT_EQ(cluster_.Cli({"put", "short", "x"}).exit_code, 0);
  grpc::ClientContext ctx;
  PrepareContext(&ctx, conn_.token, absl::Seconds(60));
  auto stream = stub_->Work(&ctx);
  v1::WorkRequest start;
  start.mutable_start()->add_queues("short");
  start.set_credits(1);
  ASSERT_TRUE(stream->Write(start));
  v1::WorkResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  ASSERT_EQ(resp.deliveries_size(), 1);
  const v1::Delivery d = resp.deliveries(0);  // a copy: resp is read into again
  EXPECT_GT(d.lease_ms_left(), 2000);
  EXPECT_LE(d.lease_ms_left(), 3000);

  v1::WorkRequest beat;
  beat.add_extend_lease_ids(d.lease_id());
  beat.add_extend_lease_ids(d.lease_id() + 12345);  // not held: refused
  ASSERT_TRUE(stream->Write(beat));
  bool confirmed = false, refused = false;
  while (!(confirmed && refused) && stream->Read(&resp)) {
    for (const auto& e : resp.extended()) {
      EXPECT_EQ(e.lease_id(), d.lease_id());
      EXPECT_GT(e.lease_ms_left(), 2000);
      EXPECT_LE(e.lease_ms_left(), 3000);
      EXPECT_GE(e.lease_deadline_unix_ms(), d.lease_deadline_unix_ms());
      confirmed = true;
    }
    for (const auto& a : resp.acks()) {
      EXPECT_EQ(a.task_id(), 0u);
      EXPECT_EQ(a.lease_id(), d.lease_id() + 12345);
      EXPECT_EQ(a.code(), grpc::StatusCode::FAILED_PRECONDITION);
      refused = true;
    }
  }
  EXPECT_TRUE(confirmed);
  EXPECT_TRUE(refused);
  ctx.TryCancel();
}

}  // namespace
}  // namespace taskq::testing
