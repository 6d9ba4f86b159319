// The master's memory stays bounded when clients with a token push it
// (issue 12): a worker that grants credits and never reads, and ordinary
// use with 1 MiB payloads, where the master once packed hundreds of
// deliveries into one message over the 64 MiB cap.
#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/channel.h"
#include "common/client.h"
#include "gtest/gtest.h"
#include "taskq/v1/taskq.grpc.pb.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

// `n` tasks whose payload is the number i padded to `bytes` with spaces
// (the square handler strips them), put a few per call.
void PutPadded(Client& client, const std::string& queue, int n, size_t bytes) {
  std::vector<v1::TaskSpec> batch;
  for (int i = 1; i <= n; ++i) {
    v1::TaskSpec spec;
    std::string payload = absl::StrCat(i);
    payload.resize(bytes, ' ');
    spec.set_payload(std::move(payload));
    spec.set_handler("square");
    spec.set_reply_to(queue + "-results");
    batch.push_back(std::move(spec));
    if (batch.size() == 3 || i == n) {
      auto put = client.Put(queue, batch);
      ASSERT_TRUE(put.ok()) << put.status();
      batch.clear();
    }
  }
}

// Item 7: a Work stream granting credits and never reading grew the master
// from 0.16 to 3.2 GB in 32 s with a 16 MB budget.
TEST(BoundedMemoryTest, WorkerThatGrantsCreditsButNeverReadsHoldsABoundedAmount) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start({"--memory-budget-mb", "16"}).ok());
  auto conn = cluster.Connect();
  ASSERT_TRUE(conn.ok()) << conn.status();
  Client client(conn->channel, conn->token);
  constexpr int kTasks = 2000;
  PutPadded(client, "flood", kTasks, 64 << 10);  // 125 MiB
  const pid_t master = cluster.master()->pid();
  const long rss_before = ProcStatus(master, "VmRSS");

  // A channel of its own, so the stuck stream has a connection to itself.
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  auto channel = grpc::CreateCustomChannel(cluster.address(), grpc::InsecureChannelCredentials(),
                                           args);
  auto stub = v1::TaskQueue::NewStub(channel);
  grpc::ClientContext ctx;
  PrepareContext(&ctx, conn->token);
  auto stream = stub->Work(&ctx);
  v1::WorkRequest start;
  start.mutable_start()->add_queues("flood");
  start.mutable_start()->set_worker_id("never-reads");
  start.set_credits(kTasks);
  ASSERT_TRUE(stream->Write(start));
  // The master hands out what the stream can hold, then stops: the number
  // leased stops growing well short of everything.
  long leased = -1;
  ASSERT_TRUE(WaitFor(
      [&] {
        long now = cluster.StatNumber("flood", "leased");
        bool settled = now > 0 && now == leased;
        leased = now;
        return settled;
      },
      absl::Seconds(30), absl::Milliseconds(500)));
  const long rss_after = ProcStatus(master, "VmRSS");
  std::printf("a stream granting %d credits and never reading got %ld leases; master RSS %ld -> "
              "%ld kB\n",
              kTasks, leased, rss_before, rss_after);
  EXPECT_LT(leased, kTasks / 2) << "the master leased everything to a stream that never reads";
  if (!RssIsMeaningless()) {
    EXPECT_LT(rss_after - rss_before, 64 * 1024)
        << "master RSS grew from " << rss_before << " to " << rss_after << " kB";
  }
  ctx.TryCancel();
  stream->Finish().IgnoreError();
  // Its leases come back; the master is healthy.
  EXPECT_TRUE(WaitFor([&] { return cluster.StatNumber("flood", "ready") == kTasks; },
                      absl::Seconds(30)));
}

// Item 10: 1 MiB payloads with `taskq-worker --concurrency 100`: every
// task was dead-lettered without running (a 105 MB message broke the
// stream three times over).
TEST(BoundedMemoryTest, OneMebibytePayloadsWithAHundredConcurrentSlotsAllRun) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start().ok());
  auto conn = cluster.Connect();
  ASSERT_TRUE(conn.ok()) << conn.status();
  Client client(conn->channel, conn->token);
  constexpr int kTasks = 150;
  PutPadded(client, "big", kTasks, 1 << 20);
  Process* worker = cluster.StartWorker({"--queue", "big", "--concurrency", "100"});
  ASSERT_NE(worker, nullptr);
  int ok = 0, failed = 0;
  std::vector<std::string> errors;
  const absl::Time deadline = absl::Now() + absl::Seconds(120);
  while (ok + failed < kTasks && absl::Now() < deadline) {
    GetOptions get;
    get.max_tasks = 100;
    get.timeout = absl::Seconds(5);
    auto got = client.Get("big-results", get);
    if (!got.ok()) continue;
    for (const auto& d : *got) {
      if (d.task().outcome() == v1::OUTCOME_OK) {
        ++ok;
      } else {
        ++failed;
        if (errors.size() < 3) errors.push_back(d.task().error());
      }
    }
  }
  EXPECT_EQ(ok, kTasks) << failed << " failed, e.g. " << (errors.empty() ? "" : errors[0]);
  EXPECT_EQ(cluster.StatNumber("big", "dead"), 0);
}

// A sibling of item 10: a take of up to 1,000 tasks of 1 MiB made a reply
// over the client's 64 MiB message cap: the call failed after the master
// had taken (and so lost) every task in it.
TEST(BoundedMemoryTest, TakingManyLargeTasksAtOnceLosesNone) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start().ok());
  auto conn = cluster.Connect();
  ASSERT_TRUE(conn.ok()) << conn.status();
  Client client(conn->channel, conn->token);
  constexpr int kTasks = 90;
  PutPadded(client, "large", kTasks, 1 << 20);
  int taken = 0;
  for (int round = 0; round < 200 && taken < kTasks; ++round) {
    GetOptions get;
    get.max_tasks = 1000;
    get.nowait = true;
    auto got = client.Get("large", get);
    ASSERT_TRUE(got.ok()) << got.status() << " after " << taken << " tasks";
    EXPECT_LE(got->size(), 8u) << "a reply far over the message size bound";
    taken += static_cast<int>(got->size());
  }
  EXPECT_EQ(taken, kTasks);
}

}  // namespace
}  // namespace taskq::testing
