// --memory-budget-mb bounds the master's memory (issue 12, item 8): a
// `--store memory` master refuses puts beyond its budget with a status that
// names the flag, its RSS stays bounded under a put flood, and consuming
// tasks makes room again. (The durable case, where ready tasks go cold, is
// master/durable_engine_test.cc.)
#include <atomic>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/client.h"
#include "common/sync.h"
#include "gtest/gtest.h"
#include "tests/harness.h"
#include "common/runtime/sanitizers.h"

namespace taskq::testing {
namespace {

// VmRSS of `pid` in bytes (0 if it cannot be read).
size_t RssBytes(pid_t pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (!absl::StartsWith(line, "VmRSS:")) continue;
    size_t kib = 0;
    std::string digits;
    for (char c : line) {
      if (c >= '0' && c <= '9') digits.push_back(c);
    }
    return absl::SimpleAtoi(digits, &kib) ? kib << 10 : 0;
  }
  return 0;
}

std::unique_ptr<Client> ClientOf(const Cluster& cluster) {
  auto conn = cluster.Connect();
  EXPECT_TRUE(conn.ok()) << conn.status();
  if (!conn.ok()) return nullptr;
  return std::make_unique<Client>(conn->channel, conn->token);
}

TEST(MemoryBudget, StoreMemoryRefusesPutsBeyondTheBudgetAndStaysBounded) {
  constexpr size_t kMiB = 1 << 20;
  constexpr size_t kPayload = 16 << 10;
  constexpr int kPerPut = 64;                      // 1 MiB per put
  constexpr int kThreads = 4, kPutsPerThread = 48;  // 192 MiB offered in all
  Cluster cluster;
  ASSERT_TRUE(cluster.Start({"--store", "memory", "--memory-budget-mb", "16"}).ok());
  std::unique_ptr<Client> client = ClientOf(cluster);
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->Put("warm-up", {v1::TaskSpec()}).ok());
  const size_t baseline = RssBytes(cluster.master()->pid());
  ASSERT_GT(baseline, 0u);

  std::atomic<int> stored_tasks{0}, refused{0}, other_errors{0};
  Mutex mu;
  absl::Status first_refusal;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      std::vector<v1::TaskSpec> batch(kPerPut);
      for (v1::TaskSpec& spec : batch) spec.set_payload(std::string(kPayload, 'p'));
      for (int i = 0; i < kPutsPerThread; ++i) {
        auto put = client->Put("flood", batch, {.nowait = true});
        if (put.ok()) {
          stored_tasks += kPerPut;
        } else if (absl::IsResourceExhausted(put.status())) {
          ++refused;
          MutexLock lock(&mu);
          if (first_refusal.ok()) first_refusal = put.status();
        } else {
          ++other_errors;
          ADD_FAILURE() << put.status();
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const size_t rss = RssBytes(cluster.master()->pid());

  EXPECT_EQ(other_errors.load(), 0);
  EXPECT_GT(refused.load(), 0) << "every put of 192 MiB was accepted with a 16 MiB budget";
  EXPECT_LE(static_cast<size_t>(stored_tasks.load()) * kPayload, 16 * kMiB);
  EXPECT_GE(static_cast<size_t>(stored_tasks.load()) * kPayload, 8 * kMiB);
  {
    MutexLock lock(&mu);
    EXPECT_TRUE(absl::StrContains(first_refusal.message(), "memory budget")) << first_refusal;
    EXPECT_TRUE(absl::StrContains(first_refusal.message(), "--memory-budget-mb 16"))
        << first_refusal;
  }
  // The budget plus room for gRPC's buffers and the allocator's slack.
  // (AddressSanitizer keeps freed memory in quarantine: RSS means nothing.)
#if !defined(TASKQ_ASAN)
  EXPECT_LT(rss, baseline + 64 * kMiB)
      << "RSS " << (rss >> 20) << " MiB, at start " << (baseline >> 20) << " MiB";
#endif

  std::cout << "[measure] 16 MiB budget: " << stored_tasks.load() << " tasks of 16 KiB stored, "
            << refused.load() << " puts refused; master RSS " << (baseline >> 20) << " -> "
            << (rss >> 20) << " MiB\n";
  // The CLI reports the refusal with the flag too (1 MiB from stdin).
  std::string lines;
  for (int i = 0; i < kPerPut; ++i) absl::StrAppend(&lines, std::string(kPayload, 'c'), "\n");
  CliResult cli = cluster.Cli({"put", "flood", "-"}, lines);
  EXPECT_EQ(cli.exit_code, 4) << Describe(cli);
  EXPECT_TRUE(absl::StrContains(cli.err, "--memory-budget-mb")) << Describe(cli);

  // Taking tasks makes room again.
  auto taken = client->Get("flood", {.max_tasks = 1000, .nowait = true});
  ASSERT_TRUE(taken.ok()) << taken.status();
  EXPECT_GE(taken->size(), 128u);
  std::vector<v1::TaskSpec> batch(kPerPut);
  for (v1::TaskSpec& spec : batch) spec.set_payload(std::string(kPayload, 'q'));
  auto again = client->Put("flood", batch, {.nowait = true});
  EXPECT_TRUE(again.ok()) << again.status();
}

}  // namespace
}  // namespace taskq::testing
