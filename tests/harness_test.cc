// Tests of the harness itself: process control, output capture, and that no
// child (or grandchild) outlives the object that started it.
#include "tests/harness.h"

#include <signal.h>
#include <sys/stat.h>

#include <cerrno>

#include "absl/strings/numbers.h"
#include "absl/strings/ascii.h"
#include "gtest/gtest-spi.h"
#include "gtest/gtest.h"

namespace taskq::testing {
namespace {

bool GroupGone(pid_t pgid) { return ::kill(-pgid, 0) != 0 && errno == ESRCH; }

ProcessOptions Shell(const TempDir& dir, const std::string& script,
                     const std::string& stdin_data = "") {
  ProcessOptions o;
  o.argv = {"/bin/sh", "-c", script};
  o.output_dir = dir.path();
  o.name = "sh";
  o.stdin_data = stdin_data;
  return o;
}

TEST(Harness, CapturesOutputAndExitCode) {
  TempDir dir;
  auto p = Process::Start(Shell(dir, "echo out; echo err >&2; exit 3"));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ((*p)->Wait(absl::Seconds(10)), 3);
  EXPECT_EQ((*p)->Stdout(), "out\n");
  EXPECT_EQ((*p)->Stderr(), "err\n");
}

TEST(Harness, FeedsStdin) {
  TempDir dir;
  auto p = Process::Start(Shell(dir, "cat", "a\nb\n"));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ((*p)->Wait(absl::Seconds(10)), 0);
  EXPECT_EQ((*p)->Stdout(), "a\nb\n");
}

TEST(Harness, PassesEnvironmentOverrides) {
  TempDir dir;
  ProcessOptions o = Shell(dir, "echo \"${TASKQ_X-unset}:${HOME}\"");
  o.env = {{"TASKQ_X", ""}, {"HOME", "/nowhere"}};
  ::setenv("TASKQ_X", "leaked", 1);
  auto p = Process::Start(std::move(o));
  ::unsetenv("TASKQ_X");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ((*p)->Wait(absl::Seconds(10)), 0);
  EXPECT_EQ((*p)->Stdout(), "unset:/nowhere\n");
}

TEST(Harness, WaitTimesOutThenKillReportsSignal) {
  TempDir dir;
  auto p = Process::Start(Shell(dir, "exec sleep 1000"));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_FALSE((*p)->Wait(absl::Milliseconds(50)).has_value());
  EXPECT_TRUE((*p)->Running());
  (*p)->Kill(SIGKILL);
  EXPECT_EQ((*p)->Wait(absl::Seconds(10)), 128 + SIGKILL);
}

TEST(Harness, StopUsesSigtermFirst) {
  TempDir dir;
  auto p = Process::Start(Shell(dir, "trap 'exit 7' TERM; echo ready; while :; do sleep 0.05; done"));
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_TRUE(WaitFor([&] { return (*p)->Stdout() == "ready\n"; }, absl::Seconds(10)));
  EXPECT_EQ((*p)->Stop(absl::Seconds(10)), 7);
}

TEST(Harness, NoGrandchildOutlivesTheProcessObject) {
  TempDir dir;
  pid_t pgid = -1;
  std::string grandchild;
  {
    // The shell backgrounds a long sleep and reports its pid, then is
    // itself killed: the grandchild must still go with the group.
    auto p = Process::Start(Shell(dir, "sleep 1000 & echo $!; wait"));
    ASSERT_TRUE(p.ok()) << p.status();
    pgid = (*p)->pid();
    ASSERT_TRUE(WaitFor([&] { return !(*p)->Stdout().empty(); }, absl::Seconds(10)));
    grandchild = std::string(absl::StripAsciiWhitespace((*p)->Stdout()));
    (*p)->Kill(SIGKILL);  // orphan the grandchild first
    ASSERT_TRUE((*p)->Wait(absl::Seconds(10)).has_value());
  }
  EXPECT_TRUE(GroupGone(pgid));
  int gpid = 0;
  ASSERT_TRUE(absl::SimpleAtoi(grandchild, &gpid));
  EXPECT_TRUE(::kill(gpid, 0) != 0 && errno == ESRCH) << "grandchild " << gpid << " survived";
}

TEST(Harness, TempDirIsRemoved) {
  std::string path;
  {
    TempDir dir;
    path = dir.path();
    ASSERT_TRUE(WriteFile(path + "/f", "x").ok());
  }
  struct stat st;
  EXPECT_NE(::stat(path.c_str(), &st), 0);
}

TEST(Harness, ClusterStartsAndStopsEverything) {
  std::vector<pid_t> groups;
  {
    Cluster cluster;
    absl::Status s = cluster.Start();
    ASSERT_TRUE(s.ok()) << s;
    EXPECT_FALSE(cluster.address().empty());
    Process* w = cluster.StartWorker();
    ASSERT_NE(w, nullptr);
    EXPECT_TRUE(cluster.WaitWorkerConnected(w)) << w->Stderr();
    groups = {cluster.master()->pid(), w->pid()};
    CliResult r = cluster.Cli({"queue", "list"});
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
  }
  for (pid_t g : groups) EXPECT_TRUE(GroupGone(g)) << "group " << g << " outlived the cluster";
}

TEST(Harness, CliDeadlineKillsAHungCommand) {
  Cluster cluster;
  absl::Status s = cluster.Start();
  ASSERT_TRUE(s.ok()) << s;
  // A get with no timeout waits forever; the harness must kill it and fail.
  CliResult r;
  EXPECT_NONFATAL_FAILURE(
      r = cluster.Cli({"get", "never", "--timeout", "60"}, "", absl::Milliseconds(300)),
      "still running");
  EXPECT_TRUE(r.timed_out);
}

}  // namespace
}  // namespace taskq::testing
