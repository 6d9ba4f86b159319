// Scenario 1 of the multi-host cluster: README.md's "Across hosts" recipe,
// literally, on five hosts (tests/cluster/netns_cluster.h): the master
// serves TLS on 0.0.0.0:5000 with a certificate from a CA, each worker
// host and the client host got a copy of the token file and the CA
// certificate, and the client submits 10,000 squares with `submit --wait`.
// Every result is printed exactly once.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/cluster/netns_cluster.h"

namespace taskq::testing {
namespace {

constexpr int kTasks = 10000;

std::vector<std::string> SubmitArgs() {
  std::vector<std::string> args = {"submit", "--queue", "tasks", "--handler", "square", "--wait"};
  for (int i = 1; i <= kTasks; ++i) args.push_back(absl::StrCat(i));
  return args;
}

std::set<std::string> Squares() {
  std::set<std::string> out;
  for (long long i = 1; i <= kTasks; ++i) out.insert(absl::StrCat(i, " * ", i, " = ", i * i));
  return out;
}

class AcrossHosts : public ClusterFixture<> {};

TEST_F(AcrossHosts, ReadmeRecipeGivesEachOf10000ResultsExactlyOnce) {
  for (const std::string& host : cluster_.worker_hosts()) {
    Process* w = cluster_.StartWorker(host, {"--concurrency", "8"});
    ASSERT_TRUE(cluster_.WaitWorkerConnected(w)) << host;
  }
  CliResult r = cluster_.Cli(SubmitArgs(), absl::Seconds(120));
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  const std::string diff = CheckEachOnce(Lines(r.out), Squares());
  EXPECT_EQ(diff, "");
  std::cout << "[measure] 10000 squares across hosts (3 workers x 8, TLS): "
            << absl::FormatDuration(r.elapsed) << "\n";
  RecordProperty("across_hosts_ms", static_cast<int>(absl::ToInt64Milliseconds(r.elapsed)));
}

// The same run with every program on the master host, over its loopback:
// the baseline the run across hosts is compared with.
TEST_F(AcrossHosts, SameRunOnLoopbackForComparison) {
  cluster_.set_client_master(absl::StrCat("127.0.0.1:", NetnsCluster::kMasterPort));
  for (int i = 0; i < 3; ++i) {
    Process* w = cluster_.StartWorker("master", {"--concurrency", "8"});
    ASSERT_TRUE(cluster_.WaitWorkerConnected(w));
  }
  CliResult r = cluster_.Cli(SubmitArgs(), absl::Seconds(120), "master");
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(CheckEachOnce(Lines(r.out), Squares()), "");
  std::cout << "[measure] 10000 squares on loopback (3 workers x 8, TLS): "
            << absl::FormatDuration(r.elapsed) << "\n";
  RecordProperty("loopback_ms", static_cast<int>(absl::ToInt64Milliseconds(r.elapsed)));
}

}  // namespace
}  // namespace taskq::testing
