// Scenario 4 of the multi-host cluster: the master is kill -9'd and started
// again on the same data dir while `taskq submit --wait` runs on the
// client host and the three workers are busy. What a user must see:
// everything completes, every result printed exactly once, exit 0.
#include <signal.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/cluster/netns_cluster.h"

namespace taskq::testing {
namespace {

constexpr int kTasks = 200;
constexpr size_t kBeforeKill = 40;

class MasterRestart : public ClusterFixture<::testing::Test, ClusterStart::kSlowWorkers> {};

TEST_F(MasterRestart, SubmitWaitSurvivesKill9AndRestartOfTheMaster) {
  std::set<std::string> expected;
  std::unique_ptr<Process> submit = StartSlowSubmit(kTasks, kBeforeKill, &expected);
  ASSERT_NE(submit, nullptr);
  auto printed = [&] { return Lines(submit->Stdout()).size(); };

  const absl::Time killed = absl::Now();
  const size_t at_kill = printed();
  absl::Status s = cluster_.RestartMaster(SIGKILL);
  ASSERT_TRUE(s.ok()) << s;
  const absl::Duration restart = absl::Now() - killed;
  bool resumed = WaitFor([&] { return printed() > at_kill || !submit->Running(); },
                         absl::Seconds(60), absl::Milliseconds(5));
  const absl::Duration recovery = absl::Now() - killed;

  std::optional<int> rc = submit->Wait(absl::Seconds(120));
  if (!rc.has_value()) {
    submit->Kill(SIGKILL);
    submit->Wait(absl::Seconds(10));
  }
  ASSERT_TRUE(rc.has_value()) << "submit --wait still running 2 min after the restart";
  EXPECT_EQ(*rc, 0) << submit->Stderr();
  EXPECT_EQ(CheckEachOnce(Lines(submit->Stdout()), expected), "") << submit->Stderr();
  std::cout << "[measure] master kill -9 + restart: listening again after "
            << absl::FormatDuration(restart) << ", next result printed "
            << (resumed && printed() > at_kill ? absl::FormatDuration(recovery) : "never")
            << " after the kill; exit " << *rc << "\n";
}

}  // namespace
}  // namespace taskq::testing
