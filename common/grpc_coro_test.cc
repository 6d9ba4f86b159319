#include "common/grpc_coro.h"

#include <atomic>
#include <memory>
#include <stdexcept>

#include <grpcpp/grpcpp.h>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "taskq/v1/taskq.grpc.pb.h"

namespace taskq::rt {
namespace {

// Completes when its stop token fires: stands in for a long-poll wait.
class UntilStopped {
 public:
  explicit UntilStopped(std::stop_token stop) : stop_(std::move(stop)) {}
  bool await_ready() const noexcept { return stop_.stop_requested(); }
  void await_suspend(std::coroutine_handle<> h) {
    on_stop_.emplace(stop_, [h] { h.resume(); });
  }
  void await_resume() {}

 private:
  std::stop_token stop_;
  std::optional<std::stop_callback<std::function<void()>>> on_stop_;
};

// A service whose handlers are coroutines:
// - GetQueueStats hops onto the scheduler, then answers with the name;
// - ListQueues waits until the client cancels;
// - DeleteQueue throws.
class CoroService final : public v1::TaskQueue::CallbackService {
 public:
  explicit CoroService(Scheduler* sched) : sched_(sched) {}

  grpc::ServerUnaryReactor* GetQueueStats(grpc::CallbackServerContext*,
                                          const v1::GetQueueStatsRequest* req,
                                          v1::QueueStats* resp) override {
    return ServeUnary([this, req, resp](std::stop_token) -> Task<grpc::Status> {
      co_await sched_->Yield();
      resp->mutable_config()->set_name(req->queue());
      co_return grpc::Status::OK;
    });
  }

  grpc::ServerUnaryReactor* ListQueues(grpc::CallbackServerContext*,
                                       const v1::ListQueuesRequest*,
                                       v1::ListQueuesResponse*) override {
    return ServeUnary([this](std::stop_token stop) -> Task<grpc::Status> {
      waiting_.fetch_add(1);
      co_await UntilStopped(stop);
      stopped_.fetch_add(1);
      co_return grpc::Status(grpc::StatusCode::CANCELLED, "stopped");
    });
  }

  grpc::ServerUnaryReactor* DeleteQueue(grpc::CallbackServerContext*,
                                        const v1::DeleteQueueRequest*,
                                        v1::DeleteQueueResponse*) override {
    return ServeUnary([](std::stop_token) -> Task<grpc::Status> {
      throw std::runtime_error("handler bug");
      co_return grpc::Status::OK;
    });
  }

  // Work: echoes every request as one ack per completion (task_id copied).
  grpc::ServerBidiReactor<v1::WorkRequest, v1::WorkResponse>* Work(
      grpc::CallbackServerContext*) override {
    class Echo : public grpc::ServerBidiReactor<v1::WorkRequest, v1::WorkResponse> {
     public:
      Echo() { StartRead(&req_); }
      void OnReadDone(bool ok) override {
        if (!ok) {
          Finish(grpc::Status::OK);
          return;
        }
        resp_.Clear();
        for (const auto& c : req_.completions()) resp_.add_acks()->set_task_id(c.task_id());
        StartWrite(&resp_);
      }
      void OnWriteDone(bool ok) override {
        if (!ok) {
          Finish(grpc::Status(grpc::StatusCode::UNKNOWN, "write failed"));
          return;
        }
        StartRead(&req_);
      }
      void OnDone() override { delete this; }

     private:
      v1::WorkRequest req_;
      v1::WorkResponse resp_;
    };
    return new Echo();
  }

  std::atomic<int> waiting_{0};
  std::atomic<int> stopped_{0};

 private:
  Scheduler* sched_;
};

class GrpcCoroTest : public testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(port, 0);
    auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                       grpc::InsecureChannelCredentials());
    stub_ = v1::TaskQueue::NewStub(channel);
  }
  void TearDown() override { server_->Shutdown(); }

  bool WaitFor(const std::function<bool()>& cond) {
    absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (!cond()) {
      if (absl::Now() > deadline) return false;
      absl::SleepFor(absl::Milliseconds(1));
    }
    return true;
  }

  Scheduler sched_{{.threads = 2}};
  CoroService service_{&sched_};
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::TaskQueue::Stub> stub_;
};

TEST_F(GrpcCoroTest, CoroutineHandlerAnswersAwaitableCall) {
  auto call = [this]() -> Task<std::string> {
    grpc::ClientContext ctx;
    v1::GetQueueStatsRequest req;
    req.set_queue("jobs");
    v1::QueueStats resp;
    grpc::Status s = co_await CallUnary(
        [&](auto done) { stub_->async()->GetQueueStats(&ctx, &req, &resp, std::move(done)); },
        &ctx);
    if (!s.ok()) co_return "error: " + s.error_message();
    co_return resp.config().name();
  };
  EXPECT_EQ(sched_.BlockOn(call()), "jobs");
}

TEST_F(GrpcCoroTest, ManyConcurrentCallsFromOneCoroutineEach) {
  std::atomic<int> ok{0};
  auto call = [this](std::atomic<int>* ok_count) -> Task<void> {
    grpc::ClientContext ctx;
    v1::GetQueueStatsRequest req;
    req.set_queue("q");
    v1::QueueStats resp;
    grpc::Status s = co_await CallUnary(
        [&](auto done) { stub_->async()->GetQueueStats(&ctx, &req, &resp, std::move(done)); },
        &ctx);
    if (s.ok() && resp.config().name() == "q") ok_count->fetch_add(1);
  };
  for (int i = 0; i < 200; ++i) sched_.Spawn(call(&ok));
  EXPECT_TRUE(WaitFor([&] { return ok.load() == 200; })) << ok.load();
}

TEST_F(GrpcCoroTest, ClientCancellationStopsTheServerCoroutine) {
  std::stop_source client_stop;
  auto call = [this](std::stop_token stop) -> Task<grpc::Status> {
    grpc::ClientContext ctx;
    v1::ListQueuesRequest req;
    v1::ListQueuesResponse resp;
    co_return co_await CallUnary(
        [&](auto done) { stub_->async()->ListQueues(&ctx, &req, &resp, std::move(done)); },
        &ctx, stop);
  };
  std::atomic<bool> finished{false};
  grpc::Status result;
  std::thread caller([&] {
    result = sched_.BlockOn(call(client_stop.get_token()));
    finished = true;
  });
  ASSERT_TRUE(WaitFor([&] { return service_.waiting_.load() == 1; }));
  EXPECT_FALSE(finished.load());
  client_stop.request_stop();
  caller.join();
  EXPECT_EQ(result.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(WaitFor([&] { return service_.stopped_.load() == 1; }));
}

TEST_F(GrpcCoroTest, ClientDeadlineStopsTheServerCoroutine) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
  v1::ListQueuesRequest req;
  v1::ListQueuesResponse resp;
  grpc::Status s = stub_->ListQueues(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(WaitFor([&] { return service_.stopped_.load() == 1; }));
}

TEST_F(GrpcCoroTest, ExceptionInHandlerBecomesInternal) {
  grpc::ClientContext ctx;
  v1::DeleteQueueRequest req;
  v1::DeleteQueueResponse resp;
  testing::internal::CaptureStderr();
  grpc::Status s = stub_->DeleteQueue(&ctx, req, &resp);
  std::string log = testing::internal::GetCapturedStderr();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_NE(log.find("handler bug"), std::string::npos) << log;
}

using WorkStream = ClientStream<v1::WorkRequest, v1::WorkResponse>;

Task<int> EchoRoundTrips(v1::TaskQueue::Stub* stub, int n) {
  grpc::ClientContext ctx;
  auto stream = WorkStream::Open(&ctx, [&](auto* reactor) { stub->async()->Work(&ctx, reactor); });
  int acked = 0;
  for (int i = 1; i <= n; ++i) {
    v1::WorkRequest req;
    req.add_completions()->set_task_id(i);
    if (!co_await stream->Write(req)) break;
    v1::WorkResponse resp;
    if (!co_await stream->Read(&resp)) break;
    if (resp.acks_size() == 1 && resp.acks(0).task_id() == static_cast<uint64_t>(i)) ++acked;
  }
  stream->WritesDone();
  v1::WorkResponse extra;
  bool more = co_await stream->Read(&extra);  // server finishes after our half-close
  grpc::Status status = co_await stream->Finish();
  co_return (status.ok() && !more) ? acked : -1;
}

TEST_F(GrpcCoroTest, BidiStreamDrivenByACoroutine) {
  EXPECT_EQ(sched_.BlockOn(EchoRoundTrips(stub_.get(), 500)), 500);
}

TEST_F(GrpcCoroTest, ManyStreamsAtOnce) {
  std::atomic<int> ok{0};
  auto one = [](v1::TaskQueue::Stub* stub, std::atomic<int>* ok) -> Task<void> {
    if (co_await EchoRoundTrips(stub, 20) == 20) ok->fetch_add(1);
  };
  for (int i = 0; i < 50; ++i) sched_.Spawn(one(stub_.get(), &ok));
  EXPECT_TRUE(WaitFor([&] { return ok.load() == 50; })) << ok.load();
}

Task<grpc::Status> ReadUntilCancelled(v1::TaskQueue::Stub* stub) {
  grpc::ClientContext ctx;
  auto stream = WorkStream::Open(&ctx, [&](auto* reactor) { stub->async()->Work(&ctx, reactor); });
  stream->Cancel();
  v1::WorkResponse resp;
  bool got = co_await stream->Read(&resp);
  grpc::Status status = co_await stream->Finish();
  co_return got ? grpc::Status(grpc::StatusCode::UNKNOWN, "read after cancel") : status;
}

TEST_F(GrpcCoroTest, CancelledStreamEndsReadsAndFinishes) {
  EXPECT_EQ(sched_.BlockOn(ReadUntilCancelled(stub_.get())).error_code(),
            grpc::StatusCode::CANCELLED);
}

}  // namespace
}  // namespace taskq::rt
