// CLI calls that are waiting when the master restarts cleanly (SIGTERM,
// e.g. `systemctl restart`): the master ends them with CANCELLED as it
// shuts down. A long-poll get and a join must ride over the restart the way
// they ride over a crash (UNAVAILABLE), not fail.
#include <signal.h>

#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

class CliRestart : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::Status s = cluster_.Start();
    ASSERT_TRUE(s.ok()) << s;
    CliResult c = cluster_.Cli({"queue", "create", "jobs"});
    ASSERT_EQ(c.exit_code, 0) << Describe(c);
  }
  Cluster cluster_;
};

TEST_F(CliRestart, AWaitingGetGetsTheTaskPutAfterAMasterRestart) {
  std::unique_ptr<Process> getter = cluster_.StartCli({"get", "jobs", "--timeout", "60"});
  ASSERT_NE(getter, nullptr);
  ASSERT_TRUE(WaitFor([&] { return cluster_.StatNumber("jobs", "waiting_consumers") == 1; },
                      absl::Seconds(20), absl::Milliseconds(20)));
  absl::Status s = cluster_.RestartMaster(SIGTERM);
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_TRUE(getter->Running()) << "get ended with the restart: " << getter->Stderr();
  CliResult put = cluster_.Cli({"put", "jobs", "after-restart"});
  ASSERT_EQ(put.exit_code, 0) << Describe(put);
  ASSERT_EQ(getter->Wait(absl::Seconds(30)), 0) << getter->Stderr();
  EXPECT_EQ(getter->Stdout(), "after-restart\n");
}

TEST_F(CliRestart, AWaitingJoinReturnsOnceTheTasksAreDoneAfterAMasterRestart) {
  CliResult put = cluster_.Cli({"put", "jobs", "one"});
  ASSERT_EQ(put.exit_code, 0) << Describe(put);
  std::unique_ptr<Process> joiner = cluster_.StartCli({"join", "jobs", "--timeout", "60"});
  ASSERT_NE(joiner, nullptr);
  absl::Status s = cluster_.RestartMaster(SIGTERM);
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_TRUE(joiner->Running()) << "join ended with the restart: " << joiner->Stderr();
  CliResult got = cluster_.Cli({"get", "jobs", "--timeout", "10"});
  ASSERT_EQ(got.exit_code, 0) << Describe(got);
  ASSERT_EQ(joiner->Wait(absl::Seconds(30)), 0) << joiner->Stderr();
}

}  // namespace
}  // namespace taskq::testing
