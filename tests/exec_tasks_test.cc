// The exec handler end to end: a worker runs only the programs it allows,
// feeds the payload on stdin and returns stdout; a failing program's stderr
// reaches the submitter.
#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

class ExecTasks : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::Status s = cluster_.Start();
    ASSERT_TRUE(s.ok()) << s;
    ASSERT_NE(cluster_.StartWorker({"--concurrency", "2", "--allow-exec", "/usr/bin/tr",
                                    "--allow-exec", "/bin/sh"}),
              nullptr);
  }
  Cluster cluster_;
};

TEST_F(ExecTasks, AllowedProgramTransformsPayload) {
  CliResult r = cluster_.Cli({"submit", "--queue", "tasks", "--handler", "exec", "--arg",
                              "/usr/bin/tr", "--arg", "a-z", "--arg", "A-Z", "--wait", "hello",
                              "world"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  std::vector<std::string> lines = Lines(r.out);
  std::sort(lines.begin(), lines.end());
  EXPECT_EQ(lines, (std::vector<std::string>{"HELLO", "WORLD"})) << Describe(r);
}

TEST_F(ExecTasks, ProgramNotAllowedIsRefused) {
  CliResult r = cluster_.Cli({"submit", "--queue", "tasks", "--handler", "exec", "--arg",
                              "/bin/echo", "--wait", "x"});
  EXPECT_EQ(r.exit_code, 7) << Describe(r);
  EXPECT_EQ(r.out, "") << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.err, "/bin/echo")) << Describe(r);
}

TEST_F(ExecTasks, FailingProgramReportsItsStderr) {
  CliResult r = cluster_.Cli({"submit", "--queue", "tasks", "--handler", "exec", "--arg",
                              "/bin/sh", "--arg=-c", "--arg", "echo oops-from-child >&2; exit 3",
                              "--wait", "x"},
                             "", absl::Seconds(40));
  EXPECT_EQ(r.exit_code, 7) << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.err, "oops-from-child")) << Describe(r);
}

}  // namespace
}  // namespace taskq::testing
