// The exec handler end to end: a worker runs only the command lines its
// operator fixed (a task names one and sends stdin), refuses task
// arguments unless allowed, gives children only an allow-listed
// environment, kills everything a task started when it ends, is stopped
// or times out, and applies resource limits; a failing program's stderr
// reaches the submitter.
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

std::vector<std::string> Submit(std::vector<std::string> exec_args, std::string payload,
                                std::string queue = "tasks") {
  std::vector<std::string> args = {"submit", "--queue", queue, "--handler", "exec"};
  for (auto& a : exec_args) args.push_back(absl::StrCat("--arg=", a));
  args.push_back("--wait");
  args.push_back(std::move(payload));
  return args;
}

class ExecTasks : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::Status s = cluster_.Start();
    ASSERT_TRUE(s.ok()) << s;
    worker_ = cluster_.StartWorker(
        {"--concurrency", "2", "--allow-exec", "upper=/usr/bin/tr a-z A-Z", "--allow-exec",
         R"(fail=/bin/sh -c "echo oops-from-child >&2; exit 3")", "--allow-exec", "/usr/bin/tr",
         "--allow-exec-args", "/usr/bin/tr"});
    ASSERT_NE(worker_, nullptr);
  }
  Cluster cluster_;
  Process* worker_ = nullptr;
};

TEST_F(ExecTasks, AllowedCommandTransformsPayload) {
  CliResult r = cluster_.Cli(Submit({"upper"}, "hello"));
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.out, "HELLO\n") << Describe(r);
}

TEST_F(ExecTasks, OldFormWithTaskArgumentsAllowedWorksAsBefore) {
  CliResult r = cluster_.Cli({"submit", "--queue", "tasks", "--handler", "exec", "--arg",
                              "/usr/bin/tr", "--arg", "a-z", "--arg", "A-Z", "--wait", "hello",
                              "world"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  std::vector<std::string> lines = Lines(r.out);
  std::sort(lines.begin(), lines.end());
  EXPECT_EQ(lines, (std::vector<std::string>{"HELLO", "WORLD"})) << Describe(r);
}

TEST_F(ExecTasks, CommandNotAllowedIsRefused) {
  CliResult r = cluster_.Cli(Submit({"/bin/echo"}, "x"));
  EXPECT_EQ(r.exit_code, 7) << Describe(r);
  EXPECT_EQ(r.out, "") << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.err, "/bin/echo")) << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.err, "not allowed")) << Describe(r);
}

TEST_F(ExecTasks, FailingProgramReportsItsStderr) {
  CliResult r = cluster_.Cli(Submit({"fail"}, "x"), "", absl::Seconds(40));
  EXPECT_EQ(r.exit_code, 7) << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.err, "oops-from-child")) << Describe(r);
}

TEST(ExecHardening, TheTokenCannotBeReadThroughCatsArguments) {
  // The issue's probe: with /bin/cat allowed (the docs' old example), a
  // task read the token file by naming it in argv.
  Cluster cluster;
  ASSERT_TRUE(cluster.Start().ok());
  Process* worker =
      cluster.StartWorker({"--allow-exec", "/bin/cat", "--allow-exec", "cat=/bin/cat"});
  ASSERT_NE(worker, nullptr);
  const std::string token(absl::StripTrailingAsciiWhitespace(ReadFile(cluster.token_file())));
  ASSERT_FALSE(token.empty());
  for (const char* name : {"/bin/cat", "cat"}) {
    CliResult r = cluster.Cli(Submit({name, cluster.token_file()}, "x"));
    EXPECT_EQ(r.exit_code, 7) << Describe(r);
    EXPECT_FALSE(absl::StrContains(r.out + r.err, token)) << "token leaked: " << Describe(r);
    EXPECT_TRUE(absl::StrContains(r.err, "takes no arguments from tasks")) << Describe(r);
    EXPECT_TRUE(absl::StrContains(r.err, absl::StrCat("--allow-exec-args ", name)))
        << Describe(r);
  }
  // stdin only still works.
  CliResult ok = cluster.Cli(Submit({"cat"}, "just stdin"));
  EXPECT_EQ(ok.exit_code, 0) << Describe(ok);
  EXPECT_EQ(ok.out, "just stdin\n");
  EXPECT_FALSE(absl::StrContains(worker->Stderr(), token));
}

TEST(ExecHardening, FindCannotRunAShell) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start().ok());
  ASSERT_NE(cluster.StartWorker({"--allow-exec", "/usr/bin/find", "--allow-exec",
                                 "find=/usr/bin/find /nonexistent-for-find -maxdepth 0"}),
            nullptr);
  for (const char* name : {"/usr/bin/find", "find"}) {
    CliResult r = cluster.Cli(
        Submit({name, "/dev/null", "-exec", "/bin/sh", "-c", "echo pwned-by-find", ";"}, "x"));
    EXPECT_EQ(r.exit_code, 7) << Describe(r);
    EXPECT_FALSE(absl::StrContains(r.out, "pwned-by-find")) << Describe(r);
  }
}

TEST(ExecHardening, ChildrenSeeOnlyTheAllowedEnvironment) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start().ok());
  // The worker finds its master and token through TASKQ_* variables here,
  // and has a secret of its own: none of it reaches the child.
  ProcessOptions o;
  o.argv = {BinPath("taskq-worker"), "--allow-exec", "/usr/bin/env", "--exec-env",
            "EXEC_PASSED", "--exec-env", "EXEC_SET=fixed"};
  o.env = cluster.ChildEnv();
  o.env["TASKQ_MASTER"] = cluster.address();
  o.env["TASKQ_TOKEN_FILE"] = cluster.token_file();
  o.env["WORKER_SECRET"] = "worker-only-secret";
  o.env["EXEC_PASSED"] = "passed-through";
  o.output_dir = cluster.dir();
  o.name = "env-worker";
  absl::StatusOr<std::unique_ptr<Process>> worker = Process::Start(std::move(o));
  ASSERT_TRUE(worker.ok()) << worker.status();
  CliResult r = cluster.Cli(Submit({"/usr/bin/env"}, ""));
  ASSERT_EQ(r.exit_code, 0) << Describe(r) << (*worker)->Stderr();
  std::vector<std::string> got = Lines(r.out);
  // Every line is a variable of the allow-list.
  for (const std::string& line : got) {
    if (line.empty()) continue;
    std::string name = line.substr(0, line.find('='));
    EXPECT_TRUE(name == "PATH" || name == "LANG" || name == "LC_ALL" || name == "TZ" ||
                name == "EXEC_PASSED" || name == "EXEC_SET")
        << "unexpected variable " << line;
  }
  EXPECT_TRUE(absl::StrContains(r.out, "PATH=/usr/local/bin:/usr/bin:/bin\n")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "EXEC_PASSED=passed-through\n")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "EXEC_SET=fixed\n")) << r.out;
  EXPECT_FALSE(absl::StrContains(r.out, "TASKQ_")) << r.out;
  EXPECT_FALSE(absl::StrContains(r.out, "worker-only-secret")) << r.out;
  EXPECT_FALSE(absl::StrContains(r.out, "HOME=")) << r.out;
  EXPECT_EQ((*worker)->Stop(), 0);
}

// Shell code that starts `sleep 1000` (the long-lived grandchild the tests
// expect to be killed) with setsid (a new session and process group) after
// writing its pid to `pid_file`, and waits for that file, 10 s at most.
std::string SetsidDaemon(const std::string& pid_file) {
  return absl::StrCat("setsid sh -c \"echo \\$\\$ > ", pid_file, ".tmp && mv ", pid_file,
                      ".tmp ", pid_file, " && exec sleep 1000\" >/dev/null 2>&1 & i=0; until [ -s ",
                      pid_file, " ] || [ $i -ge 1000 ]; do sleep 0.01; i=$((i+1)); done");
}

// With a cgroup per task where the worker may create cgroups (as root),
// and with the session fallback (--exec-cgroup off).
class ExecTree : public ::testing::TestWithParam<std::string> {};
INSTANTIATE_TEST_SUITE_P(Containment, ExecTree, ::testing::Values("auto", "off"));

TEST_P(ExecTree, SetsidGrandchildrenDieWhenTheTaskFinishesOrIsCancelled) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start().ok());
  const std::string done_pid = cluster.dir() + "/done.pid";
  const std::string cancel_pid = cluster.dir() + "/cancel.pid";
  ASSERT_EQ(cluster.Cli({"queue", "create", "slow", "--lease", "1"}).exit_code, 0);
  Process* worker = cluster.StartWorker(
      {"--exec-cgroup", GetParam(), "--queue", "tasks", "--queue", "slow", "--concurrency", "2",
       "--allow-exec",
       absl::StrCat("daemon=/bin/sh -c '", SetsidDaemon(done_pid), "; echo started'"),
       "--allow-exec", absl::StrCat("busy=/bin/sh -c '", SetsidDaemon(cancel_pid), "; sleep 600'")});
  ASSERT_NE(worker, nullptr);

  // Finishes: `sh -c 'setsid sleep 1000 & echo started'`.
  CliResult r = cluster.Cli(Submit({"daemon"}, ""));
  ASSERT_EQ(r.exit_code, 0) << Describe(r) << worker->Stderr();
  EXPECT_EQ(r.out, "started\n");
  std::optional<pid_t> daemon = PidIn(done_pid);
  ASSERT_TRUE(daemon.has_value());
  EXPECT_TRUE(WaitFor([&] { return Dead(*daemon); }, absl::Seconds(5)))
      << "the setsid grandchild of a finished task still runs";

  // Cancelled while running.
  CliResult submit = cluster.Cli(
      {"submit", "--queue", "slow", "--handler", "exec", "--arg", "busy", "--reply-to", "res", ""});
  ASSERT_EQ(submit.exit_code, 0) << Describe(submit);
  ASSERT_TRUE(WaitFor([&] { return PidIn(cancel_pid).has_value(); }, absl::Seconds(20)))
      << worker->Stderr();
  pid_t busy_daemon = *PidIn(cancel_pid);
  EXPECT_FALSE(Dead(busy_daemon));
  ASSERT_EQ(cluster.Cli({"cancel", Lines(submit.out).at(0)}).exit_code, 0);
  EXPECT_TRUE(WaitFor([&] { return Dead(busy_daemon); }, absl::Seconds(10)))
      << "the setsid grandchild of a cancelled task still runs\n"
      << worker->Stderr();
}

TEST(ExecHardening, TimeoutKillsTheTaskAndEverythingItStarted) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start().ok());
  ASSERT_EQ(cluster.Cli({"queue", "create", "once", "--max-attempts", "1"}).exit_code, 0);
  const std::string pid_file = cluster.dir() + "/hang.pid";
  Process* worker = cluster.StartWorker(
      {"--queue", "once", "--exec-timeout", "1", "--allow-exec",
       absl::StrCat("hang=/bin/sh -c '", SetsidDaemon(pid_file), "; sleep 600'")});
  ASSERT_NE(worker, nullptr);
  CliResult r = cluster.Cli(Submit({"hang"}, "", "once"));
  EXPECT_EQ(r.exit_code, 7) << Describe(r);
  EXPECT_TRUE(absl::StrContains(r.err, "--exec-timeout")) << Describe(r);
  EXPECT_LT(r.elapsed, absl::Seconds(20));
  std::optional<pid_t> daemon = PidIn(pid_file);
  ASSERT_TRUE(daemon.has_value());
  EXPECT_TRUE(WaitFor([&] { return Dead(*daemon); }, absl::Seconds(5)));
}

TEST(ExecHardening, ResourceLimitsTakeEffect) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start().ok());
  ASSERT_EQ(cluster.Cli({"queue", "create", "once", "--max-attempts", "1"}).exit_code, 0);
  const std::string big = cluster.dir() + "/big.out";
  ASSERT_NE(cluster.StartWorker(
                {"--queue", "once", "--exec-rlimit-fsize", "1", "--exec-rlimit-nofile", "17",
                 "--allow-exec", "nofile=/bin/sh -c 'ulimit -n'", "--allow-exec",
                 absl::StrCat("big=/bin/sh -c 'head -c 3000000 /dev/zero > ", big, "'")}),
            nullptr);
  CliResult nofile = cluster.Cli(Submit({"nofile"}, "", "once"));
  EXPECT_EQ(nofile.exit_code, 0) << Describe(nofile);
  EXPECT_EQ(nofile.out, "17\n") << Describe(nofile);
  CliResult r = cluster.Cli(Submit({"big"}, "", "once"));
  EXPECT_EQ(r.exit_code, 7) << Describe(r);
  struct stat st;
  ASSERT_EQ(::stat(big.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 1 << 20);  // the file stopped at the limit
}

TEST(ExecHardening, BadExecFlagsStopTheWorkerAtStart) {
  Cluster cluster;
  ASSERT_TRUE(cluster.Start().ok());
  for (std::vector<std::string> flags :
       {std::vector<std::string>{"--allow-exec", "/usr/bin/wc -l"},
        std::vector<std::string>{"--allow-exec", "wc=/usr/bin/wc", "--allow-exec-args", "cat"},
        std::vector<std::string>{"--allow-exec", "env=/usr/bin/env", "--exec-env",
                                 "TASKQ_TOKEN_FILE"}}) {
    Process* worker = cluster.StartWorker(flags);
    ASSERT_NE(worker, nullptr);
    std::optional<int> code = worker->Wait(absl::Seconds(20));
    ASSERT_TRUE(code.has_value()) << flags[1];
    EXPECT_EQ(*code, 1) << worker->Stderr();
  }
}

}  // namespace
}  // namespace taskq::testing
