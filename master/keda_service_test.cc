// KedaService in-process: the bound on StreamIsActive streams (a slot comes
// back when a stream ends) and Shutdown ending the open ones.
#include "master/keda_service.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "master/engine_test_util.h"

namespace taskq {
namespace {

class KedaServiceTest : public EngineTest {
 protected:
  void SetUp() override {
    service_ = std::make_unique<KedaService>(
        engine_.get(), nullptr,
        KedaServiceOptions{.poll_interval = absl::Milliseconds(20), .max_streams = 2});
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ = externalscaler::ExternalScaler::NewStub(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    service_->Shutdown();
    server_->Shutdown();
  }

  struct Stream {
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReader<externalscaler::IsActiveResponse>> reader;
  };
  std::unique_ptr<Stream> Open() {
    auto s = std::make_unique<Stream>();
    s->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    externalscaler::ScaledObjectRef ref;
    (*ref.mutable_scalermetadata())["queue"] = "tasks";
    (*ref.mutable_scalermetadata())["targetPerWorker"] = "1";
    s->reader = stub_->StreamIsActive(&s->ctx, ref);
    return s;
  }

  std::unique_ptr<KedaService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<externalscaler::ExternalScaler::Stub> stub_;
};

TEST_F(KedaServiceTest, StreamsAreBoundedAndShutdownEndsThem) {
  externalscaler::IsActiveResponse msg;
  auto a = Open();
  ASSERT_TRUE(a->reader->Read(&msg));
  EXPECT_FALSE(msg.result());
  auto b = Open();
  ASSERT_TRUE(b->reader->Read(&msg));

  auto c = Open();
  EXPECT_FALSE(c->reader->Read(&msg));
  grpc::Status refused = c->reader->Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(refused.error_message().find("too many StreamIsActive streams (2)"),
            std::string::npos)
      << refused.error_message();

  // A stream the client ends gives its slot back.
  a->ctx.TryCancel();
  while (a->reader->Read(&msg)) {
  }
  EXPECT_EQ(a->reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  std::unique_ptr<Stream> d;
  for (int i = 0; i < 200; ++i) {  // OnDone runs on gRPC's thread, soon after
    d = Open();
    if (d->reader->Read(&msg)) break;
    d->reader->Finish();
    d.reset();
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_NE(d, nullptr) << "the cancelled stream's slot never came back";

  // A change is pushed to every open stream.
  MustPut("tasks", {Spec("x")});
  ASSERT_TRUE(b->reader->Read(&msg));
  EXPECT_TRUE(msg.result());
  ASSERT_TRUE(d->reader->Read(&msg));
  EXPECT_TRUE(msg.result());

  service_->Shutdown();
  EXPECT_FALSE(b->reader->Read(&msg));
  EXPECT_EQ(b->reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_FALSE(d->reader->Read(&msg));
  EXPECT_EQ(d->reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  auto late = Open();
  EXPECT_FALSE(late->reader->Read(&msg));
  EXPECT_EQ(late->reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
}

}  // namespace
}  // namespace taskq
