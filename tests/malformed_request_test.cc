// Requests that are not what the contract says, from clients with and
// without a token (issue 12, items 11 and 12): every one is answered with
// INVALID_ARGUMENT (or UNAUTHENTICATED) and a message a person can act on,
// nothing is parsed or logged for a caller without a token, and an unknown
// enum value never falls back to a default with side effects.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "common/channel.h"
#include "common/sync.h"
#include "gtest/gtest.h"
#include "taskq/v1/taskq.grpc.pb.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

// A unary call with `body` as the raw request bytes.
grpc::Status RawCall(const std::shared_ptr<grpc::Channel>& channel, const std::string& token,
                     const std::string& method, const std::string& body) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  if (!token.empty()) PrepareContext(&ctx, token, absl::Seconds(10));
  grpc::Slice slice(body);
  grpc::ByteBuffer request(&slice, 1), response;
  Mutex mu;
  Notification done;
  grpc::Status status;
  stub.UnaryCall(&ctx, method, grpc::StubOptions(), &request, &response,
                 [&](grpc::Status s) {
                   {
                     MutexLock lock(&mu);
                     status = std::move(s);
                   }
                   done.Notify();
                 });
  done.WaitForNotification();
  MutexLock lock(&mu);
  return status;
}

// A PutRequest whose queue name (field 1, a proto3 string) is not UTF-8.
std::string PutWithInvalidUtf8() {
  std::string name = "q\xff\xfe";
  return absl::StrCat(std::string(1, '\x0a'), std::string(1, static_cast<char>(name.size())),
                      name);
}

size_t ProtobufLogLines(Process* master) {
  size_t n = 0;
  for (const std::string& line : Lines(master->Stderr())) {
    if (line.find("libprotobuf") != std::string::npos || line.find("UTF-8") != std::string::npos) {
      ++n;
    }
  }
  return n;
}

class MalformedRequestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(cluster_.Start().ok());
    auto conn = cluster_.Connect();
    ASSERT_TRUE(conn.ok()) << conn.status();
    conn_ = *conn;
  }
  Cluster cluster_;
  Connection conn_;
};

// Item 12: gRPC's typed handlers answered UNIMPLEMENTED with an empty
// message.
TEST_F(MalformedRequestTest, GarbageRequestIsInvalidArgumentWithAMessage) {
  grpc::Status s = RawCall(conn_.channel, conn_.token, "/taskq.v1.TaskQueue/Put",
                           std::string("\xff\xff\xff\xff\x0f garbage", 14));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_NE(s.error_message().find("taskq.v1.PutRequest"), std::string::npos)
      << s.error_message();
  CliResult r = cluster_.Cli({"queue", "list"});
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
}

// Item 12: invalid UTF-8 made libprotobuf log an ERROR for every call, also
// without a token.
TEST_F(MalformedRequestTest, InvalidUtf8IsRefusedAndLogsNothingForCallersWithoutAToken) {
  for (int i = 0; i < 200; ++i) {
    grpc::Status s =
        RawCall(conn_.channel, "", "/taskq.v1.TaskQueue/Put", PutWithInvalidUtf8());
    ASSERT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();
  }
  EXPECT_EQ(ProtobufLogLines(cluster_.master()), 0u) << cluster_.master()->Stderr();
  // With the token: refused as malformed, and the log stays quiet too.
  for (int i = 0; i < 200; ++i) {
    grpc::Status s = RawCall(conn_.channel, conn_.token, "/taskq.v1.TaskQueue/Put",
                             PutWithInvalidUtf8());
    ASSERT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_NE(s.error_message().find("UTF-8"), std::string::npos) << s.error_message();
  }
  EXPECT_LE(ProtobufLogLines(cluster_.master()), 2u) << cluster_.master()->Stderr();
}

// Item 11: a Get with an unknown mode was a destructive take.
TEST_F(MalformedRequestTest, UnknownGetModeIsRefusedAndTakesNothing) {
  CliResult put = cluster_.Cli({"put", "jobs", "keep-me"});
  ASSERT_EQ(put.exit_code, 0) << Describe(put);
  auto stub = v1::TaskQueue::NewStub(conn_.channel);
  grpc::ClientContext ctx;
  PrepareContext(&ctx, conn_.token, absl::Seconds(10));
  v1::GetRequest req;
  req.set_queue("jobs");
  req.set_nowait(true);
  req.set_mode(static_cast<v1::GetMode>(7));
  v1::GetResponse resp;
  grpc::Status s = stub->Get(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_EQ(resp.deliveries_size(), 0);
  EXPECT_EQ(cluster_.StatNumber("jobs", "ready"), 1);
}

// Item 12 on the Work stream: a malformed message ends the stream with
// INVALID_ARGUMENT (not OK, as if the worker had hung up).
TEST_F(MalformedRequestTest, MalformedWorkMessageEndsTheStreamWithInvalidArgument) {
  grpc::GenericStub stub(conn_.channel);
  grpc::ClientContext ctx;
  PrepareContext(&ctx, conn_.token, absl::Seconds(10));
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(&ctx, "/taskq.v1.TaskQueue/Work", &cq);
  void* tag;
  bool ok;
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
  std::string garbage("\xff\xff\xff\xff\x0f", 5);
  grpc::Slice slice(garbage);
  grpc::ByteBuffer bb(&slice, 1);
  call->Write(bb, reinterpret_cast<void*>(2));
  ASSERT_TRUE(cq.Next(&tag, &ok));
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(3));
  while (cq.Next(&tag, &ok) && tag != reinterpret_cast<void*>(3)) {
  }
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

}  // namespace
}  // namespace taskq::testing
