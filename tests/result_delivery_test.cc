// End to end: no result is lost between the master and `taskq submit
// --wait`, and a waiting client rides out a master that is unreachable or
// restarts (issue 13). Every test starts the real binaries on 127.0.0.1.
//
// The network-cut versions of these (black holes, link down, distance)
// run in tests/cluster/ inside network namespaces.
#include <signal.h>

#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

// Payloads "1".."n".
std::vector<std::string> Numbers(int n) {
  std::vector<std::string> out;
  for (int i = 1; i <= n; ++i) out.push_back(std::to_string(i));
  return out;
}

// The task ids of `submit --wait --show-ids` output, failing the test on a
// repeated one.
std::set<std::string> DistinctIds(const std::string& out) {
  std::set<std::string> ids;
  for (const std::string& line : Lines(out)) {
    std::vector<std::string> parts = absl::StrSplit(line, absl::MaxSplits('\t', 1));
    EXPECT_EQ(parts.size(), 2u) << line;
    EXPECT_TRUE(ids.insert(parts[0]).second) << "result printed twice: " << line;
  }
  return ids;
}

TEST(ResultDelivery, SubmitWaitRidesOutAMasterKilledAndRestartedMidJob) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start().ok());
  for (int i = 0; i < 2; ++i) {
    Process* w = cluster.StartWorker({"--queue", "tasks", "--concurrency", "8"});
    ASSERT_TRUE(cluster.WaitWorkerConnected(w));
  }
  constexpr int kTasks = 300;
  // 0.02 s each on 16 slots: ~0.4 s of work, long enough to kill the
  // master in the middle.
  std::vector<std::string> args = {"submit", "--queue", "tasks", "--handler", "sleep",
                                   "--wait", "--show-ids", "--"};
  for (int i = 0; i < kTasks; ++i) args.push_back("0.02");
  auto cli = cluster.StartCli(args);
  ASSERT_TRUE(WaitFor([&] { return Lines(cli->Stdout()).size() >= 20; }, absl::Seconds(30)))
      << cli->Stderr();
  ASSERT_TRUE(cluster.RestartMaster(SIGKILL).ok());
  auto code = cli->Wait(absl::Seconds(120));
  ASSERT_TRUE(code.has_value()) << "submit --wait did not finish: " << cli->Stderr();
  EXPECT_EQ(*code, 0) << cli->Stderr();
  EXPECT_EQ(DistinctIds(cli->Stdout()).size(), static_cast<size_t>(kTasks)) << cli->Stderr();
  // One line when the master went away, one when it was back.
  EXPECT_TRUE(absl::StrContains(cli->Stderr(), "cannot reach the master")) << cli->Stderr();
  EXPECT_TRUE(absl::StrContains(cli->Stderr(), "reached the master at")) << cli->Stderr();
}

TEST(ResultDelivery, ResultsLeftBehindAreReadLaterExactlyOnce) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start().ok());
  constexpr int kTasks = 50;
  // No worker yet: submit --wait gives up, naming the queue its results
  // will go to.
  std::vector<std::string> args = {"submit", "--queue", "tasks", "--handler", "square",
                                    "--wait", "--wait-timeout", "0.5", "--show-ids", "--"};
  for (const std::string& n : Numbers(kTasks)) args.push_back(n);
  CliResult first = cluster.Cli(args);
  EXPECT_EQ(first.exit_code, 8) << first.err;
  const std::string marker = "taskq results ";
  const size_t at = first.err.find(marker);
  ASSERT_NE(at, std::string::npos) << first.err;
  const std::string queue(first.err.substr(at + marker.size(),
                                           first.err.find('`', at) - at - marker.size()));
  ASSERT_TRUE(absl::StartsWith(queue, "_results.")) << first.err;

  Process* w = cluster.StartWorker({"--queue", "tasks"});
  ASSERT_TRUE(cluster.WaitWorkerConnected(w));
  CliResult later = cluster.Cli({"results", queue, "--show-ids", "--timeout", "60"});
  EXPECT_EQ(later.exit_code, 0) << later.err;
  EXPECT_EQ(DistinctIds(later.out).size(), static_cast<size_t>(kTasks));
  // Read to the end, the private queue is gone.
  EXPECT_NE(cluster.Cli({"queue", "stats", queue}).exit_code, 0);
  // `submit --wait --resume` is the same reader.
  CliResult none = cluster.Cli({"submit", "--queue", "tasks", "--handler", "square", "--wait",
                                "--resume", "no-such-queue"});
  EXPECT_NE(none.exit_code, 0);
}

TEST(ResultDelivery, ACliCallWaitsForAMasterThatIsNotUpYet) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start().ok());
  // Stop the master, start a CLI call, then bring the master back: the
  // call gets through instead of failing at once with exit 6.
  cluster.master()->Kill(SIGKILL);
  ASSERT_TRUE(cluster.master()->Wait(absl::Seconds(10)).has_value());
  auto cli = cluster.StartCli({"queue", "list"});
  ASSERT_TRUE(WaitFor([&] { return absl::StrContains(cli->Stderr(), "cannot reach the master"); },
                      absl::Seconds(20)))
      << cli->Stderr();
  ASSERT_TRUE(cluster.RestartMaster(SIGKILL).ok());
  auto code = cli->Wait(absl::Seconds(40));
  ASSERT_TRUE(code.has_value()) << cli->Stderr();
  EXPECT_EQ(*code, 0) << cli->Stderr();
  EXPECT_TRUE(absl::StrContains(cli->Stderr(), "reached the master at")) << cli->Stderr();
  // --retry-for 0: the old behaviour, at once.
  cluster.master()->Kill(SIGKILL);
  ASSERT_TRUE(cluster.master()->Wait(absl::Seconds(10)).has_value());
  CliResult quick = cluster.Cli({"--retry-for", "0", "queue", "list"}, "", absl::Seconds(10));
  EXPECT_EQ(quick.exit_code, 6) << quick.err;
}

// A waiting get and a join ride out a master restart too: the get takes
// the task put after the restart, the join returns once it is done.
TEST(ResultDelivery, WaitingGetAndJoinRideOutAMasterRestart) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start().ok());
  ASSERT_EQ(cluster.Cli({"put", "jq", "first"}).exit_code, 0);
  auto get = cluster.StartCli({"get", "gq", "--timeout", "60"});
  auto join = cluster.StartCli({"join", "jq", "--timeout", "60"});
  ASSERT_TRUE(WaitFor([&] { return cluster.StatNumber("gq", "waiting_consumers") == 1; },
                      absl::Seconds(20)));
  ASSERT_TRUE(cluster.RestartMaster(SIGKILL).ok());
  ASSERT_EQ(cluster.Cli({"put", "gq", "after the restart"}).exit_code, 0);
  auto got = get->Wait(absl::Seconds(60));
  ASSERT_TRUE(got.has_value()) << get->Stderr();
  EXPECT_EQ(*got, 0) << get->Stderr();
  EXPECT_EQ(get->Stdout(), "after the restart\n");
  EXPECT_EQ(cluster.Cli({"get", "jq"}).out, "first\n");
  auto joined = join->Wait(absl::Seconds(60));
  ASSERT_TRUE(joined.has_value()) << join->Stderr();
  EXPECT_EQ(*joined, 0) << join->Stderr();
  // The get's lease was acknowledged: nothing comes again.
  EXPECT_EQ(cluster.Cli({"get", "gq", "--nowait"}).exit_code, 3);
}

}  // namespace
}  // namespace taskq::testing
