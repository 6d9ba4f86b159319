// The worker on the coroutine runtime, end to end: I/O-bound tasks (sleep)
// run far beyond the worker's thread count without holding threads, and
// CPU-bound ones (square) still run correctly on a small pool.
//
//   worker --threads 2 --concurrency 1000, 1000 tasks of `sleep 1`:
//   finishes in about 1 s of wall time (bound: 10 s) on a handful of
//   threads (read from /proc/PID while the tasks sleep: exactly 4 in the
//   worker's own pools, at most 20 in all with gRPC's).
#include <dirent.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

// Threads of `pid` whose name starts with "worker-" (the worker's own
// pools: I/O scheduler, its epoll thread, CPU pool); -1 if unreadable.
int WorkerPoolThreads(pid_t pid) {
  DIR* dir = ::opendir(absl::StrCat("/proc/", pid, "/task").c_str());
  if (dir == nullptr) return -1;
  int n = 0;
  while (dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    std::string comm =
        ReadFile(absl::StrCat("/proc/", pid, "/task/", entry->d_name, "/comm"));
    if (absl::StartsWith(comm, "worker-")) ++n;
  }
  ::closedir(dir);
  return n;
}

// "Threads:" of /proc/PID/status; -1 if unreadable.
int ThreadCount(pid_t pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    absl::string_view rest = line;
    if (absl::ConsumePrefix(&rest, "Threads:")) {
      int n = -1;
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(rest), &n)) return n;
    }
  }
  return -1;
}

TEST(WorkerConcurrency, ThousandSleepsOnTwoThreadsTakeAboutOneSecond) {
  Cluster cluster;
  absl::Status s = cluster.Start();
  ASSERT_TRUE(s.ok()) << s;
  Process* worker =
      cluster.StartWorker({"--threads", "2", "--concurrency", "1000", "--id", "w-io"});
  ASSERT_NE(worker, nullptr);
  ASSERT_TRUE(cluster.WaitWorkerConnected(worker)) << worker->Stderr();

  std::string payloads;
  for (int i = 0; i < 1000; ++i) payloads += "1\n";
  const absl::Time start = absl::Now();
  std::unique_ptr<Process> submit = cluster.StartCli(
      {"submit", "--queue", "tasks", "--handler", "sleep", "--wait", "--wait-timeout", "60", "-"},
      payloads);
  ASSERT_NE(submit, nullptr);
  // Sample the worker's threads for the whole run (every task sleeps for
  // most of it), keeping the highest count.
  int most_threads = 0;
  int most_pool_threads = 0;
  bool finished = WaitFor(
      [&] {
        most_threads = std::max(most_threads, ThreadCount(worker->pid()));
        most_pool_threads = std::max(most_pool_threads, WorkerPoolThreads(worker->pid()));
        return !submit->Running();
      },
      absl::Seconds(60), absl::Milliseconds(10));
  const absl::Duration wall = absl::Now() - start;
  ASSERT_TRUE(finished) << "submit did not finish; worker log:\n" << worker->Stderr();
  ASSERT_EQ(submit->exit_status(), 0) << submit->Stderr();
  std::vector<std::string> lines = Lines(submit->Stdout());
  EXPECT_EQ(lines.size(), 1000u);
  EXPECT_EQ(std::count(lines.begin(), lines.end(), "slept 1"), 1000);

  std::cout << "[ figures ] 1000 x sleep 1 on --threads 2 --concurrency 1000: "
            << absl::FormatDuration(absl::Trunc(wall, absl::Milliseconds(1)))
            << " wall; worker threads (max while running): " << most_threads << " in all, "
            << most_pool_threads << " of them the worker's pools" << std::endl;
  ::testing::Test::RecordProperty("wall_ms", static_cast<int>(absl::ToInt64Milliseconds(wall)));
  ::testing::Test::RecordProperty("worker_threads", most_threads);
  EXPECT_LT(wall, absl::Seconds(10));  // 500 s if each sleep held a thread
  // The worker's own: 1 I/O thread + its epoll thread + 2 CPU threads (and
  // main, blocked). The rest are gRPC's (about 9, a few more under load).
  EXPECT_EQ(most_pool_threads, 4);
  EXPECT_GT(most_threads, 0);
  EXPECT_LE(most_threads, 20);
}

TEST(WorkerConcurrency, SquaresOnTwoThreadsWithConcurrencyTwenty) {
  Cluster cluster;
  absl::Status s = cluster.Start();
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_NE(cluster.StartWorker({"--threads", "2", "--concurrency", "20"}), nullptr);
  std::vector<std::string> args = {"submit", "--queue", "tasks", "--handler", "square", "--wait"};
  std::set<std::string> expected;
  for (int n = 1; n <= 300; ++n) {
    args.push_back(absl::StrCat(n));
    expected.insert(absl::StrCat(n, " * ", n, " = ", n * n));
  }
  CliResult r = cluster.Cli(args, "", absl::Seconds(60));
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  std::vector<std::string> lines = Lines(r.out);
  EXPECT_EQ(lines.size(), 300u);
  EXPECT_EQ(std::set<std::string>(lines.begin(), lines.end()), expected);
}

TEST(WorkerConcurrency, SlowTaskDoesNotHoldUpTheOthers) {
  // Credits = concurrency + prefetch (here 2 + 0): the slow task holds one
  // slot and the master keeps delivering to the other one.
  Cluster cluster;
  absl::Status s = cluster.Start();
  ASSERT_TRUE(s.ok()) << s;
  Process* worker = cluster.StartWorker(
      {"--threads", "1", "--concurrency", "2", "--drain-timeout", "0.5", "--id", "w-slow"});
  ASSERT_NE(worker, nullptr);
  CliResult slow = cluster.Cli(
      {"submit", "--queue", "tasks", "--handler", "sleep", "--reply-to", "slow", "300"});
  ASSERT_EQ(slow.exit_code, 0) << Describe(slow);
  ASSERT_TRUE(WaitFor([&] { return cluster.StatNumber("tasks", "leased") == 1; },
                      absl::Seconds(20), absl::Milliseconds(20)))
      << worker->Stderr();
  std::vector<std::string> args = {"submit", "--queue", "tasks", "--handler", "square",
                                   "--wait", "--wait-timeout", "20"};
  for (int n = 1; n <= 50; ++n) args.push_back(absl::StrCat(n));
  CliResult quick = cluster.Cli(args);
  ASSERT_EQ(quick.exit_code, 0) << Describe(quick) << worker->Stderr();
  EXPECT_EQ(Lines(quick.out).size(), 50u);
  EXPECT_EQ(cluster.StatNumber("tasks", "leased"), 1);  // the slow one still runs
}

}  // namespace
}  // namespace taskq::testing
