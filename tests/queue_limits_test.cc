// How many queues a master holds and how they are listed (issue 12, item
// 9): reads of an unknown queue create nothing, --max-queues refuses the
// next queue with a status naming the flag, and `taskq queue list` follows
// the master's pages to the end.
#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/client.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

std::unique_ptr<Client> ClientOf(const Cluster& cluster) {
  auto conn = cluster.Connect();
  EXPECT_TRUE(conn.ok()) << conn.status();
  if (!conn.ok()) return nullptr;
  return std::make_unique<Client>(conn->channel, conn->token);
}

// The NAME column of `taskq queue list`, without the header.
std::vector<std::string> ListedNames(const CliResult& r) {
  std::vector<std::string> names;
  std::vector<std::string> lines = Lines(r.out);
  for (size_t i = 1; i < lines.size(); ++i) {
    names.push_back(lines[i].substr(0, lines[i].find(' ')));
  }
  return names;
}

TEST(QueueLimits, ReadsOfAnUnknownQueueCreateNothing) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start({"--store", "memory"}).ok());
  CliResult get = cluster.Cli({"get", "ghost", "--nowait"});
  EXPECT_EQ(get.exit_code, 3) << Describe(get);  // as for an empty queue
  EXPECT_TRUE(absl::StrContains(get.err, "empty")) << Describe(get);
  EXPECT_EQ(cluster.Cli({"get", "ghost2", "--timeout", "0"}).exit_code, 3);
  EXPECT_EQ(cluster.Cli({"get", "ghost3", "--lease", "--nowait"}).exit_code, 3);
  EXPECT_EQ(cluster.Cli({"queue", "stats", "ghost4"}).exit_code, 5);
  EXPECT_EQ(cluster.Cli({"join", "ghost5", "--timeout", "0"}).exit_code, 5);
  EXPECT_EQ(cluster.Cli({"dlq", "list", "ghost6"}).exit_code, 5);
  EXPECT_EQ(cluster.Cli({"task-done", "ghost7"}).exit_code, 5);
  EXPECT_EQ(cluster.Cli({"status", "12345"}).exit_code, 5);
  CliResult list = cluster.Cli({"queue", "list"});
  ASSERT_EQ(list.exit_code, 0) << Describe(list);
  EXPECT_EQ(Lines(list.out).size(), 1u) << "queues were created by reads:\n" << list.out;
}

TEST(QueueLimits, MaxQueuesRefusesTheNextQueueNamingTheFlag) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start({"--store", "memory", "--max-queues", "3"}).ok());
  ASSERT_EQ(cluster.Cli({"queue", "create", "a"}).exit_code, 0);
  ASSERT_EQ(cluster.Cli({"put", "b", "x"}).exit_code, 0);
  ASSERT_EQ(cluster.Cli({"put", "c", "x"}).exit_code, 0);
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"queue", "create", "d"},
           {"put", "d", "x"},
           {"put", "a", "--reply-to", "d", "x"},
           {"get", "d", "--timeout", "5"},
       }) {
    CliResult r = cluster.Cli(args);
    EXPECT_NE(r.exit_code, 0) << Describe(r);
    EXPECT_TRUE(absl::StrContains(r.err, "--max-queues 3")) << Describe(r);
    EXPECT_TRUE(absl::StrContains(r.err, "queue \"d\" cannot be created")) << Describe(r);
  }
  EXPECT_EQ(cluster.Cli({"put", "a", "--reply-to", "b", "fine"}).exit_code, 0);
  CliResult list = cluster.Cli({"queue", "list"});
  EXPECT_EQ(ListedNames(list), (std::vector<std::string>{"a", "b", "c"})) << list.out;
}

TEST(QueueLimits, QueueListFollowsPagesToTheEnd) {
  constexpr int kQueues = 2500;
  Cluster cluster;
  ASSERT_TRUE(cluster.Start({"--store", "memory", "--max-queues", "3000"}).ok());
  std::unique_ptr<Client> client = ClientOf(cluster);
  ASSERT_NE(client, nullptr);
  std::vector<std::string> names;
  for (int i = 0; i < kQueues; ++i) {
    v1::QueueConfig config;
    config.set_name(absl::StrFormat("q%05d", (i * 7919) % kQueues));  // out of order
    names.push_back(config.name());
    auto made = client->CreateQueue(config);
    ASSERT_TRUE(made.ok()) << made.status();
  }
  std::sort(names.begin(), names.end());

  CliResult list = cluster.Cli({"queue", "list", "--page-size", "100"});
  ASSERT_EQ(list.exit_code, 0) << Describe(list);
  EXPECT_EQ(ListedNames(list), names);

  // The client library: default pages (1,000) and small ones.
  auto all = client->ListQueues();
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->size(), names.size());
  auto small = client->ListQueues(7);
  ASSERT_TRUE(small.ok()) << small.status();
  ASSERT_EQ(small->size(), names.size());
  EXPECT_EQ(small->back().config().name(), names.back());

  // A client from before paging (no page fields) gets the first page and a
  // token for the rest.
  v1::ListQueuesRequest old_request;
  v1::ListQueuesResponse first;
  grpc::ClientContext context;
  PrepareContext(&context, client->token(), absl::Seconds(30));
  ASSERT_TRUE(client->stub()->ListQueues(&context, old_request, &first).ok());
  EXPECT_EQ(first.queues_size(), 1000);
  EXPECT_EQ(first.next_page_token(), names[999]);
}

}  // namespace
}  // namespace taskq::testing
