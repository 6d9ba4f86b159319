// Fuzz target: every request the master serves, from the bytes a client
// sends down to the queue engine. An input is a short sequence of calls:
// [method byte][length: 2 bytes][request bytes], where method 0-18 is a
// unary RPC (in the order of proto/taskq/v1/taskq.proto) and 19 a Work
// stream whose request bytes are messages framed as [length byte][bytes]. Calls carry
// the master's token, so parsing, validation and the engine are reached;
// every call must end with a status (never a crash, hang or leak).
//
// The master here is the real TaskQueueService on an in-process channel,
// with an in-memory engine that is emptied after every input.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/auth.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/runtime/scheduler.h"
#include "common/sync.h"
#include "master/credentials.h"
#include "master/engine/task_engine.h"
#include "master/service.h"
#include "tests/fuzz/fuzz_reader.h"

namespace taskq {
namespace {

constexpr char kToken[] = "fuzz-token-0123456789abcdef0123456789abcdef";
constexpr const char* kMethods[] = {
    "CreateQueue", "ListQueues", "GetQueueStats", "DeleteQueue", "PurgeQueue", "UpdateQueue",
    "ShutdownQueue", "GetTask", "CancelTask", "ListDead", "RequeueDead", "PurgeDead",
    "Put", "Get", "Complete", "Fail", "Release", "TaskDone", "Join", "Ack",
    "ListCredentials", "RevokeCredential", "CreateCredential"};
constexpr int kUnaryMethods = sizeof(kMethods) / sizeof(kMethods[0]);

struct Master {
  Master()
      : scheduler({.threads = 1, .name = "fuzz"}),
        engine(Options(), RealClock::Get()),
        credentials(OpenCredentials()),
        service(&engine, &scheduler, ServiceSecurity{.credentials = credentials.get()}) {
    grpc::ServerBuilder builder;
    builder.RegisterService(&service);
    server = builder.BuildAndStart();
    channel = server->InProcessChannel(grpc::ChannelArguments());
  }
  // The master token only (an admin): every RPC gets past the role check
  // to the request parsing being fuzzed. The file is never written (no
  // credential is created: CreateCredential's name checks refuse first or
  // the write fails), so a missing directory is fine.
  static std::unique_ptr<CredentialTable> OpenCredentials() {
    auto table = CredentialTable::Open("/nonexistent-taskq-fuzz/credentials", kToken);
    if (!table.ok()) std::abort();
    return *std::move(table);
  }
  static EngineOptions Options() {
    EngineOptions o;
    o.random_seed = 1;
    o.memory_budget_bytes = 64 << 20;
    o.max_queues = 1000;
    return o;
  }
  // Leaves nothing behind for the next input.
  void Reset() {
    v1::ListQueuesRequest all;
    all.set_page_size(10000);  // more than --max-queues allows here
    auto page = engine.ListQueues(all);
    if (!page.ok()) return;
    for (const v1::QueueStats& q : page->queues()) {
      engine.DeleteQueue(q.config().name()).IgnoreError();
    }
  }

  rt::Scheduler scheduler;
  TaskEngine engine;
  std::unique_ptr<CredentialTable> credentials;
  TaskQueueService service;
  std::unique_ptr<grpc::Server> server;
  std::shared_ptr<grpc::Channel> channel;
};

Master& TheMaster() {
  static Master* master = [] {
    SetLogLevel(LogLevel::kError);
    return new Master();
  }();
  return *master;
}

void Prepare(grpc::ClientContext* ctx) {
  ctx->AddMetadata(kAuthMetadataKey, BearerValue(kToken));
  // Waiting calls (a get on an empty queue, a join) end at the deadline.
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(20));
}

void Unary(Master& m, const std::string& method, const std::string& body) {
  grpc::GenericStub stub(m.channel);
  grpc::ClientContext ctx;
  Prepare(&ctx);
  grpc::Slice slice(body);
  grpc::ByteBuffer request(&slice, 1), response;
  Notification done;
  stub.UnaryCall(&ctx, "/taskq.v1.TaskQueue/" + method, grpc::StubOptions(), &request,
                 &response, [&](grpc::Status) { done.Notify(); });
  done.WaitForNotification();
}

void WorkStream(Master& m, const std::vector<std::string>& messages) {
  grpc::GenericStub stub(m.channel);
  grpc::ClientContext ctx;
  Prepare(&ctx);
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(&ctx, "/taskq.v1.TaskQueue/Work", &cq);
  void* tag;
  bool ok;
  call->StartCall(reinterpret_cast<void*>(1));
  cq.Next(&tag, &ok);
  for (const std::string& msg : messages) {
    if (!ok) break;
    grpc::Slice slice(msg);
    grpc::ByteBuffer bb(&slice, 1);
    call->Write(bb, reinterpret_cast<void*>(2));
    cq.Next(&tag, &ok);
  }
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(3));
  while (cq.Next(&tag, &ok) && tag != reinterpret_cast<void*>(3)) {
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

}  // namespace
}  // namespace taskq

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  taskq::Master& master = taskq::TheMaster();
  taskq::fuzz::FuzzReader in(data, size);
  for (int calls = 0; calls < 16 && !in.empty(); ++calls) {
    const int method = in.Byte() % (taskq::kUnaryMethods + 1);
    const std::string body = in.String(/*wide=*/true);
    if (method < taskq::kUnaryMethods) {
      taskq::Unary(master, taskq::kMethods[method], body);
      continue;
    }
    std::vector<std::string> messages;
    taskq::fuzz::FuzzReader parts(reinterpret_cast<const uint8_t*>(body.data()), body.size());
    while (!parts.empty() && messages.size() < 8) messages.push_back(parts.String());
    taskq::WorkStream(master, messages);
  }
  master.Reset();
  return 0;
}
