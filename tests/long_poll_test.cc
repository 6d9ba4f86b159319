// 10,000 long-poll Get calls held open against an empty queue: the master
// keeps each as a suspended wait (no thread per call), so its thread count
// stays at a handful and its memory bounded; then a put of 10,000 tasks
// serves every one of them exactly once. Prints the measured threads and
// RSS (the issue 4 figures).
#include <atomic>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/channel.h"
#include "gtest/gtest.h"
#include "taskq/v1/taskq.grpc.pb.h"
#include "tests/harness.h"

namespace taskq {
namespace {

using testing::Cluster;
using testing::ProcStatus;
using testing::WaitFor;

// One outstanding long-poll Get.
struct PendingGet {
  grpc::ClientContext ctx;
  v1::GetRequest req;
  v1::GetResponse resp;
};

constexpr int kGets = 10000;
constexpr int kChannels = 4;

TEST(LongPollTest, TenThousandWaitingGetsUseAHandfulOfThreads) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start().ok());

  std::vector<std::unique_ptr<v1::TaskQueue::Stub>> stubs;
  std::string token;
  for (int i = 0; i < kChannels; ++i) {
    auto conn = cluster.Connect();
    ASSERT_TRUE(conn.ok()) << conn.status();
    token = conn->token;
    stubs.push_back(v1::TaskQueue::NewStub(conn->channel));
  }

  pid_t master = cluster.master()->pid();
  long threads_before = ProcStatus(master, "Threads");
  long rss_before_kb = ProcStatus(master, "VmRSS");

  std::vector<std::unique_ptr<PendingGet>> gets;
  std::atomic<int> served{0}, failed{0};
  gets.reserve(kGets);
  for (int i = 0; i < kGets; ++i) {
    auto g = std::make_unique<PendingGet>();
    PrepareContext(&g->ctx, token, absl::Seconds(120));
    g->req.set_queue("longpoll");
    g->req.set_timeout_ms(100000);
    PendingGet* raw = g.get();
    stubs[i % kChannels]->async()->Get(&raw->ctx, &raw->req, &raw->resp,
                                       [raw, &served, &failed](grpc::Status s) {
                                         if (s.ok() && raw->resp.deliveries_size() == 1) {
                                           served.fetch_add(1);
                                         } else {
                                           failed.fetch_add(1);
                                         }
                                       });
    gets.push_back(std::move(g));
  }
  ASSERT_TRUE(WaitFor([&] { return cluster.StatNumber("longpoll", "waiting_consumers") == kGets; },
                      absl::Seconds(60)))
      << cluster.StatNumber("longpoll", "waiting_consumers") << " waiting, " << failed.load()
      << " failed";

  long threads_waiting = ProcStatus(master, "Threads");
  long rss_waiting_kb = ProcStatus(master, "VmRSS");
  std::printf("master with %d waiting gets: %ld threads (%ld idle), RSS %ld kB (%ld kB idle)\n",
              kGets, threads_waiting, threads_before, rss_waiting_kb, rss_before_kb);
  // gRPC's own pollers and the runtime's pool: a handful, not one per call.
  EXPECT_LE(threads_waiting, threads_before + 8);
  EXPECT_LE(threads_waiting, 48);
  // Each waiting call costs a few kB (HTTP/2 stream, call, wait record).
  if (!testing::RssIsMeaningless()) {
    EXPECT_LE(rss_waiting_kb - rss_before_kb, 200 * 1024);
  }

  // One put of 10,000 tasks serves every waiting get exactly once.
  std::string payloads;
  for (int i = 0; i < kGets; ++i) payloads += std::to_string(i) + "\n";
  auto put = cluster.Cli({"put", "longpoll", "-"}, payloads, absl::Seconds(60));
  ASSERT_EQ(put.exit_code, 0) << testing::Describe(put);
  ASSERT_TRUE(WaitFor([&] { return served.load() + failed.load() == kGets; },
                      absl::Seconds(60)));
  EXPECT_EQ(served.load(), kGets);
  EXPECT_EQ(cluster.StatNumber("longpoll", "ready"), 0);
}

}  // namespace
}  // namespace taskq
