// Unit tests: the exec handler (fixed command lines, task arguments,
// environment, pipes, exit status, limits, stop, timeout, and killing
// everything a task started), run as coroutines on a one-thread scheduler.
// Most run twice: with a cgroup per task (when this process may create
// cgroups, e.g. as root) and with the session fallback.
#include "worker/exec_handler.h"

#include <dirent.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <stop_token>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/runtime/scheduler.h"
#include "common/runtime/when_all.h"
#include "gtest/gtest.h"
#include "worker/proc_table.h"

extern char** environ;

namespace taskq {
namespace {

v1::Task ExecTask(std::vector<std::string> args, std::string payload = "") {
  v1::Task task;
  task.set_id(1);
  task.set_handler("exec");
  task.set_payload(std::move(payload));
  for (auto& a : args) task.add_args(a);
  return task;
}

// One scheduler thread for every test: exec must not need more.
rt::Scheduler& Sched() {
  static rt::Scheduler* sched = new rt::Scheduler({.threads = 1, .name = "exec-test"});
  return *sched;
}

absl::StatusOr<std::string> RunExec(const ExecHandler& handler, const v1::Task& task,
                                    std::stop_token stop = {}) {
  HandlerContext context(task, "test-worker", std::move(stop));
  return Sched().BlockOn(handler(context));
}

std::string ReadAll(const std::string& path) {
  std::string out;
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  std::fclose(f);
  return out;
}

// Reads the pid a child wrote to `path`; 0 if not (yet) there.
pid_t ReadPid(const std::string& path) {
  int pid = 0;
  std::string text = ReadAll(path);
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &pid)) return 0;
  return pid;
}

// Live (not zombie) processes running `sleep MARKER`.
int CountLive(const std::string& marker) {
  const std::string want = absl::StrCat("sleep", std::string(1, '\0'), marker, std::string(1, '\0'));
  int count = 0;
  for (const ProcStat& p : ListProcesses()) {
    if (p.state == 'Z') continue;
    if (ReadAll(absl::StrCat("/proc/", p.pid, "/cmdline")) == want) ++count;
  }
  return count;
}

bool WaitUntil(const std::function<bool()>& condition, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (condition()) return true;
    absl::SleepFor(absl::Milliseconds(5));  // polling what other processes do
  }
  return condition();
}

// A unique `sleep` argument for a test, to find its processes in /proc.
std::string Marker(int base) {
  return absl::StrCat(base, ".", ::getpid() % 100000);
}

class Exec : public ::testing::TestWithParam<std::string> {
 protected:
  // A handler allowing `allow` (ExecOptions::allow) in this test's mode.
  ExecHandler Make(std::vector<std::string> allow, ExecOptions options = {},
                   ExecLimits limits = {}) {
    options.allow = std::move(allow);
    options.cgroup = GetParam();
    absl::StatusOr<ExecHandler> handler = ExecHandler::Create(options, limits);
    EXPECT_TRUE(handler.ok()) << handler.status();
    return handler.ok() ? *std::move(handler) : ExecHandler();
  }
  bool cgroup_mode(const ExecHandler& handler) {
    return handler.containment() != nullptr &&
           handler.containment()->mode() == ExecContainment::Mode::kCgroup;
  }
};

INSTANTIATE_TEST_SUITE_P(Modes, Exec, ::testing::Values("auto", "off"),
                         [](const auto& info) {
                           return info.param == "off" ? std::string("Session")
                                                      : std::string("CgroupIfPossible");
                         });

TEST_P(Exec, RefusesCommandsNotAllowed) {
  ExecHandler handler = Make({"cat=/bin/cat"});
  for (const char* name : {"/bin/cat", "sh", "cat ", "CAT"}) {
    auto r = RunExec(handler, ExecTask({name}));
    ASSERT_FALSE(r.ok()) << name;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
    EXPECT_TRUE(IsPermanentFailure(r.status()));
    EXPECT_TRUE(absl::StrContains(r.status().message(), "not allowed on worker test-worker"))
        << r.status();
  }
}

TEST_P(Exec, RefusesEverythingWithoutCommands) {
  ExecHandler nothing;
  EXPECT_FALSE(RunExec(nothing, ExecTask({"cat"})).ok());
  ExecHandler handler = Make({});
  EXPECT_EQ(handler.containment(), nullptr);  // no subreaper, no cgroup
  EXPECT_FALSE(RunExec(handler, ExecTask({"/bin/cat"})).ok());
  auto no_args = RunExec(handler, ExecTask({}));
  ASSERT_FALSE(no_args.ok());
  EXPECT_TRUE(IsPermanentFailure(no_args.status()));
}

TEST_P(Exec, CatEchoesThePayload) {
  ExecHandler handler = Make({"cat=/bin/cat"});
  auto r = RunExec(handler, ExecTask({"cat"}, "hello\nworld"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "hello\nworld");
  auto empty = RunExec(handler, ExecTask({"cat"}));
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(*empty, "");
}

TEST_P(Exec, TheOperatorFixesTheCommandLine) {
  ExecHandler handler =
      Make({"upper=/usr/bin/tr a-z A-Z", R"(quoted=/usr/bin/printf '%s|%s' "a b" c\ d)"});
  auto upper = RunExec(handler, ExecTask({"upper"}, "hello"));
  ASSERT_TRUE(upper.ok()) << upper.status();
  EXPECT_EQ(*upper, "HELLO");
  auto quoted = RunExec(handler, ExecTask({"quoted"}));
  ASSERT_TRUE(quoted.ok()) << quoted.status();
  EXPECT_EQ(*quoted, "a b|c d");
}

TEST_P(Exec, TaskArgumentsAreRefusedByDefault) {
  // The issue's probe: with cat allowed, a task could read any file (the
  // worker's token too) by naming it in argv.
  ExecHandler handler = Make({"cat=/bin/cat", "/bin/cat"});
  std::string secret = absl::StrCat(::testing::TempDir(), "/exec-secret-", ::getpid());
  FILE* f = std::fopen(secret.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs("the-secret-token", f);
  std::fclose(f);
  for (const char* name : {"cat", "/bin/cat"}) {  // new form and old form
    auto r = RunExec(handler, ExecTask({name, secret}, "x"));
    ASSERT_FALSE(r.ok()) << name << " returned " << *r;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
    EXPECT_TRUE(IsPermanentFailure(r.status()));
    EXPECT_TRUE(absl::StrContains(r.status().message(), "takes no arguments from tasks"))
        << r.status();
    EXPECT_TRUE(absl::StrContains(r.status().message(), absl::StrCat("--allow-exec-args ", name)))
        << r.status();
    EXPECT_FALSE(absl::StrContains(r.status().message(), "the-secret-token"));
  }
  std::remove(secret.c_str());
}

TEST_P(Exec, FindCannotBeTurnedIntoAShell) {
  ExecHandler handler = Make({"find=/usr/bin/find /nonexistent-dir-for-find -maxdepth 0"});
  auto r = RunExec(handler, ExecTask({"find", "/", "-exec", "/bin/sh", "-c", "echo pwned", ";"}));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(IsPermanentFailure(r.status())) << r.status();
  EXPECT_FALSE(absl::StrContains(r.status().message(), "pwned"));
}

TEST_P(Exec, TaskArgumentsAreAppendedWhenAllowed) {
  ExecOptions options;
  options.allow_args = {"printf", "/bin/echo"};
  ExecHandler handler = Make({"printf=/usr/bin/printf %s-%s", "/bin/echo"}, options);
  auto r = RunExec(handler, ExecTask({"printf", "a", "b"}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "a-b");
  // The old form with the opt-in behaves as before the change.
  auto echo = RunExec(handler, ExecTask({"/bin/echo", "-n", "as", "before"}));
  ASSERT_TRUE(echo.ok()) << echo.status();
  EXPECT_EQ(*echo, "as before");
}

TEST_P(Exec, TheChildGetsOnlyTheAllowedEnvironment) {
  ::setenv("TASKQ_TOKEN_FILE", "/secret/token/path", 1);
  ::setenv("EXEC_TEST_WORKER_SECRET", "worker-only", 1);
  ::setenv("EXEC_TEST_PASSED", "passed-value", 1);
  ExecOptions options;
  options.env = {"EXEC_TEST_PASSED", "EXEC_TEST_SET=set-value", "EXEC_TEST_NOT_SET_ANYWHERE"};
  ExecHandler handler = Make({"env=/usr/bin/env"}, options);
  auto r = RunExec(handler, ExecTask({"env"}));
  ::unsetenv("TASKQ_TOKEN_FILE");
  ::unsetenv("EXEC_TEST_WORKER_SECRET");
  ::unsetenv("EXEC_TEST_PASSED");
  ASSERT_TRUE(r.ok()) << r.status();
  std::vector<std::string> got = absl::StrSplit(*r, '\n', absl::SkipEmpty());
  std::sort(got.begin(), got.end());
  std::vector<std::string> want = {"EXEC_TEST_PASSED=passed-value", "EXEC_TEST_SET=set-value",
                                   "PATH=/usr/local/bin:/usr/bin:/bin"};
  for (const char* name : {"LANG", "LC_ALL", "TZ"}) {
    if (const char* value = std::getenv(name)) want.push_back(absl::StrCat(name, "=", value));
  }
  std::sort(want.begin(), want.end());
  EXPECT_EQ(got, want);
}

TEST_P(Exec, EnvironmentFlagsRefuseTheWorkersCredentials) {
  for (const char* entry : {"TASKQ_TOKEN_FILE", "TASKQ_MASTER=x", "CREDENTIALS_DIRECTORY"}) {
    ExecOptions options;
    options.allow = {"env=/usr/bin/env"};
    options.env = {entry};
    options.cgroup = GetParam();
    absl::StatusOr<ExecHandler> handler = ExecHandler::Create(options);
    ASSERT_FALSE(handler.ok()) << entry;
    EXPECT_EQ(handler.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST_P(Exec, BigPayloadBothWaysDoesNotDeadlock) {
  // cat writes back while we are still writing: both pipes fill up unless
  // they are serviced together.
  ExecLimits limits;
  limits.max_output = 8 << 20;
  ExecHandler handler = Make({"cat=/bin/cat"}, {}, limits);
  std::string payload(3 << 20, 'x');
  for (size_t i = 0; i < payload.size(); i += 997) payload[i] = static_cast<char>('a' + i % 26);
  auto r = RunExec(handler, ExecTask({"cat"}, payload));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, payload);
}

TEST_P(Exec, NonZeroExitReportsStderr) {
  ExecHandler handler = Make({R"(fail=/bin/sh -c "echo partial; echo oops >&2; exit 3")"});
  auto r = RunExec(handler, ExecTask({"fail"}));
  ASSERT_FALSE(r.ok());
  EXPECT_FALSE(IsPermanentFailure(r.status())) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "fail exited with status 3")) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "oops")) << r.status();
}

TEST_P(Exec, StderrIsTailedNotFlooded) {
  ExecHandler handler = Make({"noisy=/bin/sh -c 'i=0; while [ $i -lt 2000 ]; do echo line$i >&2; "
                              "i=$((i+1)); done; echo LAST >&2; exit 1'"});
  auto r = RunExec(handler, ExecTask({"noisy"}));
  ASSERT_FALSE(r.ok());
  EXPECT_LT(r.status().message().size(), 2048u + 200u);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "LAST"));
  EXPECT_FALSE(absl::StrContains(r.status().message(), "line0\n"));
}

TEST_P(Exec, DeathBySignalIsReported) {
  ExecHandler handler = Make({"die=/bin/sh -c 'kill -9 $$'"});
  auto r = RunExec(handler, ExecTask({"die"}));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::StrContains(r.status().message(), "signal 9")) << r.status();
}

TEST_P(Exec, OutputOverTheLimitFails) {
  ExecLimits limits;
  limits.max_output = 1000;
  ExecHandler handler = Make({"yes=/usr/bin/yes"}, {}, limits);
  auto r = RunExec(handler, ExecTask({"yes"}));  // endless output
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(IsPermanentFailure(r.status()));
  EXPECT_TRUE(absl::StrContains(r.status().message(), "1000 bytes")) << r.status();
}

TEST_P(Exec, ChildNotReadingStdinIsFine) {
  ExecHandler handler = Make({"close=/bin/sh -c 'exec 0<&-; echo done'"});
  auto r = RunExec(handler, ExecTask({"close"}, std::string(1 << 20, 'z')));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "done\n");
}

TEST_P(Exec, BareProgramIsLookedUpInTheWorkersPath) {
  ExecHandler handler = Make({"c=cat", "cat"});
  auto r = RunExec(handler, ExecTask({"c"}, "via PATH"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "via PATH");
  auto legacy = RunExec(handler, ExecTask({"cat"}, "old form"));
  ASSERT_TRUE(legacy.ok()) << legacy.status();
  EXPECT_EQ(*legacy, "old form");
}

TEST_P(Exec, MissingProgramIsPermanent) {
  ExecHandler handler = Make({"missing=/nonexistent/prog", "bare=no-such-program-anywhere"});
  for (const char* name : {"missing", "bare"}) {
    auto r = RunExec(handler, ExecTask({name}));
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(IsPermanentFailure(r.status())) << r.status();
    EXPECT_TRUE(absl::StrContains(r.status().message(), "cannot start")) << r.status();
    EXPECT_TRUE(absl::StrContains(r.status().message(), "No such file")) << r.status();
  }
}

TEST_P(Exec, NoDescriptorsLeakIntoTheChild) {
  ExecHandler handler = Make({"fds=/bin/sh -c 'ls /proc/self/fd'"});
  // The shell's own are 0-2 plus the one ls uses to read the directory.
  auto r = RunExec(handler, ExecTask({"fds"}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "0\n1\n2\n3\n");
}

TEST_P(Exec, TheChildLeadsItsOwnSessionWithDefaultSignals) {
  // The programs read their own /proc files: pid, process group and
  // session (fields 1, 5, 6 of stat), and the blocked and ignored signals.
  ExecHandler handler = Make({R"(stat=/usr/bin/cut "-d " -f1,5,6 /proc/self/stat)",
                              R"x(signals=/bin/grep -E "^Sig(Blk|Ign)" /proc/self/status)x"});
  auto stat = RunExec(handler, ExecTask({"stat"}));
  ASSERT_TRUE(stat.ok()) << stat.status();
  std::vector<std::string> ids = absl::StrSplit(absl::StripTrailingAsciiWhitespace(*stat), ' ');
  ASSERT_EQ(ids.size(), 3u) << *stat;
  EXPECT_EQ(ids[1], ids[0]) << *stat;  // its own process group
  EXPECT_EQ(ids[2], ids[0]) << *stat;  // and session
  auto signals = RunExec(handler, ExecTask({"signals"}));
  ASSERT_TRUE(signals.ok()) << signals.status();
  // Nothing blocked, nothing ignored (the worker ignores SIGPIPE).
  EXPECT_EQ(*signals, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
}

TEST_P(Exec, StopKillsTheChild) {
  ExecHandler handler = Make({"slow=/bin/sh -c 'sleep 60; echo never'"});
  std::stop_source stop;
  v1::Task task = ExecTask({"slow"});
  absl::StatusOr<std::string> result;
  std::thread t([&] { result = RunExec(handler, task, stop.get_token()); });
  stop.request_stop();
  t.join();  // would take a minute if the child were not killed
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled) << result.status();
}

TEST_P(Exec, StopSendsTermThenKillAfterTheGrace) {
  // A child that ignores SIGTERM: it dies only by the SIGKILL that follows
  // the grace, and is reaped (no zombie left behind).
  ExecLimits limits;
  limits.kill_grace = absl::Milliseconds(200);
  std::string pid_file = absl::StrCat(::testing::TempDir(), "/exec-term-", ::getpid());
  std::remove(pid_file.c_str());
  ExecHandler handler =
      Make({absl::StrCat("stubborn=/bin/sh -c 'trap \"\" TERM; echo $$ > ", pid_file,
                         ".tmp && mv ", pid_file, ".tmp ", pid_file,
                         "; while :; do sleep 0.05; done'")},
           {}, limits);
  std::stop_source stop;
  absl::StatusOr<std::string> result;
  std::thread t([&] { result = RunExec(handler, ExecTask({"stubborn"}), stop.get_token()); });
  pid_t child = 0;
  EXPECT_TRUE(WaitUntil([&] { return (child = ReadPid(pid_file)) > 0; }, absl::Seconds(20)));
  const absl::Time stopped_at = absl::Now();
  stop.request_stop();
  t.join();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled) << result.status();
  EXPECT_GE(absl::Now() - stopped_at, absl::Milliseconds(200));  // waited the grace
  EXPECT_GT(child, 0);
  if (child > 0) {
    EXPECT_NE(::kill(child, 0), 0);  // gone and reaped
  }
  std::remove(pid_file.c_str());
}

TEST_P(Exec, ManyChildrenAtOnceOnOneThread) {
  // 50 children that each take 0.3 s, awaited together on the one
  // scheduler thread: no thread per child.
  ExecHandler handler = Make({"slowcat=/bin/sh -c 'sleep 0.3; cat'"});
  v1::Task task = ExecTask({"slowcat"}, "x");
  struct One {
    static rt::Task<bool> Run(const ExecHandler* handler, const v1::Task* task) {
      HandlerContext context(*task, "w");
      absl::StatusOr<std::string> r = co_await (*handler)(context);
      co_return r.ok() && *r == "x";
    }
  };
  std::vector<rt::Task<bool>> runs;
  for (int i = 0; i < 50; ++i) runs.push_back(One::Run(&handler, &task));
  absl::Time start = absl::Now();
  std::vector<bool> ok = Sched().BlockOn(rt::WhenAll(std::move(runs)));
  absl::Duration took = absl::Now() - start;
  EXPECT_EQ(std::count(ok.begin(), ok.end(), true), 50);
  EXPECT_LT(took, absl::Seconds(10)) << took;  // 50 x 0.3 s in sequence would be 15 s
}

TEST_P(Exec, CostPerTask) {
  // What the containment adds to a task, printed for docs/WORKER.md: 100
  // /bin/true one after another, then 100 at once on the one thread.
  ExecHandler handler = Make({"true=/bin/true"});
  v1::Task task = ExecTask({"true"});
  constexpr int kTasks = 100;
  absl::Time start = absl::Now();
  for (int i = 0; i < kTasks; ++i) ASSERT_TRUE(RunExec(handler, task).ok());
  const absl::Duration each = (absl::Now() - start) / kTasks;
  struct One {
    static rt::Task<bool> Run(const ExecHandler* handler, const v1::Task* task) {
      HandlerContext context(*task, "w");
      co_return (co_await (*handler)(context)).ok();
    }
  };
  std::vector<rt::Task<bool>> runs;
  for (int i = 0; i < kTasks; ++i) runs.push_back(One::Run(&handler, &task));
  start = absl::Now();
  std::vector<bool> ok = Sched().BlockOn(rt::WhenAll(std::move(runs)));
  const absl::Duration together = absl::Now() - start;
  EXPECT_EQ(std::count(ok.begin(), ok.end(), true), kTasks);
  std::printf("[ figures ] exec /bin/true, %s: %s each in sequence; %d at once in %s (%.0f/s)\n",
              handler.containment()->description().c_str(), absl::FormatDuration(each).c_str(),
              kTasks, absl::FormatDuration(together).c_str(),
              kTasks / absl::ToDoubleSeconds(together));
  EXPECT_LT(together, absl::Seconds(30));
}

TEST_P(Exec, BackgroundProcessesDieWhenTheChildExits) {
  // The child exits at once and leaves a background grandchild holding
  // stdout: the grandchild is killed, so the task ends at once with the
  // child's output.
  const std::string marker = Marker(987001);
  ExecHandler handler = Make({absl::StrCat("bg=/bin/sh -c 'echo hi; sleep ", marker, " & exit 0'")});
  const absl::Time start = absl::Now();
  auto r = RunExec(handler, ExecTask({"bg"}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "hi\n");
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));  // not the 1 s pipe linger
  EXPECT_TRUE(WaitUntil([&] { return CountLive(marker) == 0; }, absl::Seconds(2)));
}

// Shell code starting `sleep 1000` in the background so that it outlives
// the shell: with `setsid` (a new session and process group, out of reach
// of a process-group kill) and/or double-forked (orphaned at once). It
// writes its pid to `pid_file` first, in its new session.
std::string Daemon(const std::string& pid_file, bool setsid, bool double_fork) {
  std::string start = absl::StrCat(setsid ? "setsid " : "", "sh -c \"echo \\$\\$ > ", pid_file,
                                   ".tmp && mv ", pid_file, ".tmp ", pid_file,
                                   " && exec sleep 1000\" >/dev/null 2>&1 &");
  return double_fork ? absl::StrCat("(", start, ")") : start;
}
// Shell code waiting until every file exists (the daemons are set up).
std::string WaitForFiles(const std::vector<std::string>& files) {
  std::string test;
  for (const auto& f : files) absl::StrAppend(&test, test.empty() ? "" : " && ", "[ -s ", f, " ]");
  return absl::StrCat("until ", test, "; do sleep 0.01; done");
}

std::string PidFile(const std::string& name) {
  std::string path = absl::StrCat(::testing::TempDir(), "/exec-", name, "-", ::getpid());
  std::remove(path.c_str());
  return path;
}

// True once the process whose pid `pid_file` holds has died.
bool DaemonDied(const std::string& pid_file) {
  pid_t pid = ReadPid(pid_file);
  if (pid <= 0) return false;
  std::optional<ProcStat> stat = ReadProcStat(pid);
  return !stat || stat->state == 'Z';
}

TEST_P(Exec, SetsidAndDoubleForkedGrandchildrenDieWithTheTask) {
  // The issue's case: `setsid sleep 1000 &`, and double-forked daemons.
  const std::vector<std::string> files = {PidFile("setsid"), PidFile("setsid-fork"),
                                          PidFile("fork")};
  ExecHandler handler = Make({absl::StrCat(
      "daemons=/bin/sh -c '", Daemon(files[0], true, false), " ", Daemon(files[1], true, true),
      "; ", Daemon(files[2], false, true), "; ", WaitForFiles(files), "; echo started'")});
  auto r = RunExec(handler, ExecTask({"daemons"}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "started\n");
  for (const auto& f : files) {
    EXPECT_TRUE(WaitUntil([&] { return DaemonDied(f); }, absl::Seconds(2))) << f;
    std::remove(f.c_str());
  }
}

TEST_P(Exec, StoppingATaskKillsItsSetsidGrandchildren) {
  const std::string file = PidFile("stop");
  ExecHandler handler = Make({absl::StrCat("busy=/bin/sh -c '", Daemon(file, true, true),
                                           "; sleep 60'")});
  std::stop_source stop;
  absl::StatusOr<std::string> result;
  std::thread t([&] { result = RunExec(handler, ExecTask({"busy"}), stop.get_token()); });
  EXPECT_TRUE(WaitUntil([&] { return ReadPid(file) > 0; }, absl::Seconds(10)));
  EXPECT_FALSE(DaemonDied(file));
  stop.request_stop();
  t.join();
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled) << result.status();
  EXPECT_TRUE(WaitUntil([&] { return DaemonDied(file); }, absl::Seconds(2)));
  std::remove(file.c_str());
}

TEST_P(Exec, TimeoutKillsTheWholeTree) {
  const std::string file = PidFile("timeout");
  ExecOptions options;
  options.timeout = absl::Milliseconds(500);
  ExecLimits limits;
  limits.kill_grace = absl::Milliseconds(100);
  ExecHandler handler =
      Make({absl::StrCat("hang=/bin/sh -c '", Daemon(file, true, false), " ",
                         WaitForFiles({file}), "; echo working >&2; sleep 60'")},
           options, limits);
  const absl::Time start = absl::Now();
  auto r = RunExec(handler, ExecTask({"hang"}));
  const absl::Duration took = absl::Now() - start;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_FALSE(IsPermanentFailure(r.status()));
  EXPECT_TRUE(absl::StrContains(r.status().message(), "--exec-timeout")) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "working")) << r.status();  // stderr tail
  EXPECT_GE(took, absl::Milliseconds(500));
  EXPECT_LT(took, absl::Seconds(5));
  EXPECT_GT(ReadPid(file), 0);  // it had started
  EXPECT_TRUE(WaitUntil([&] { return DaemonDied(file); }, absl::Seconds(2)));
  std::remove(file.c_str());
  // A quick command is not affected.
  ExecHandler quick = Make({"cat=/bin/cat"}, options);
  auto ok = RunExec(quick, ExecTask({"cat"}, "fast"));
  ASSERT_TRUE(ok.ok()) << ok.status();
}

TEST_P(Exec, ResourceLimitsApplyToTheChild) {
  ExecOptions options;
  options.rlimits.address_space_mb = 256;
  options.rlimits.cpu_seconds = 7;
  options.rlimits.open_files = 17;
  options.rlimits.file_size_mb = 1;
  ExecHandler handler = Make({"limits=/bin/sh -c 'ulimit -v; ulimit -t; ulimit -n; ulimit -f'"},
                             options);
  auto r = RunExec(handler, ExecTask({"limits"}));
  ASSERT_TRUE(r.ok()) << r.status();
  // dash reports -v in KiB and -f in 512-byte blocks.
  EXPECT_EQ(*r, absl::StrCat(256 * 1024, "\n7\n17\n", 2048, "\n"));
}

TEST_P(Exec, FileSizeLimitStopsAWriter) {
  std::string out = absl::StrCat(::testing::TempDir(), "/exec-fsize-", ::getpid());
  ExecOptions options;
  options.rlimits.file_size_mb = 1;
  ExecHandler handler =
      Make({absl::StrCat("big=/bin/sh -c 'head -c 3000000 /dev/zero > ", out, "'")}, options);
  auto r = RunExec(handler, ExecTask({"big"}));
  ASSERT_FALSE(r.ok());
  EXPECT_FALSE(IsPermanentFailure(r.status()));
  struct stat st;
  ASSERT_EQ(::stat(out.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 1 << 20);
  std::remove(out.c_str());
}

TEST_P(Exec, AddressSpaceLimitMakesABigAllocationFail) {
  // The shell holds 100 MB of command output in memory: fine without a
  // limit, impossible in 64 MiB of address space.
  const std::string hog =
      R"(memhog=/bin/sh -c 'x=$(head -c 100000000 /dev/zero | tr "\0" x); echo ${#x}')";
  auto unlimited = RunExec(Make({hog}), ExecTask({"memhog"}));
  ASSERT_TRUE(unlimited.ok()) << unlimited.status();
  EXPECT_EQ(*unlimited, "100000000\n");
  ExecOptions options;
  options.rlimits.address_space_mb = 64;
  auto limited = RunExec(Make({hog}, options), ExecTask({"memhog"}));
  ASSERT_FALSE(limited.ok());
  EXPECT_FALSE(IsPermanentFailure(limited.status())) << limited.status();
}

TEST_P(Exec, ChildrenOfTheWorkersOwnSessionAreLeftAlone) {
  // A child this process started itself (e.g. for a custom handler) is
  // neither killed nor reaped by the exec cleanup.
  ExecHandler handler = Make({"daemon=/bin/sh -c '(setsid sleep 30 >/dev/null 2>&1 &); echo ok'"});
  pid_t own = 0;
  const char* argv[] = {"/bin/sleep", "30", nullptr};
  ASSERT_EQ(::posix_spawn(&own, "/bin/sleep", nullptr, nullptr, const_cast<char**>(argv), environ),
            0);
  pid_t own_exited = 0;
  const char* argv2[] = {"/bin/true", nullptr};
  ASSERT_EQ(::posix_spawn(&own_exited, "/bin/true", nullptr, nullptr, const_cast<char**>(argv2),
                          environ),
            0);
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto s = ReadProcStat(own_exited);
        return s && s->state == 'Z';
      },
      absl::Seconds(10)));
  ASSERT_TRUE(RunExec(handler, ExecTask({"daemon"})).ok());
  EXPECT_EQ(::kill(own, 0), 0);  // still alive
  int status = 0;
  EXPECT_EQ(::waitpid(own_exited, &status, 0), own_exited);  // ours to reap
  ::kill(own, SIGKILL);
  EXPECT_EQ(::waitpid(own, &status, 0), own);
}

TEST(ExecSession, AnOrphanIsSparedWhileAnOlderTaskRunsThenKilled) {
  // Session mode cannot tell whose an orphan that left its session is: it
  // waits until no task that was running when it started is left.
  const std::string file = PidFile("spared");
  ExecOptions options;
  options.allow = {"long=/bin/sh -c 'sleep 60'",
                   absl::StrCat("leave=/bin/sh -c '", Daemon(file, true, false), " ",
                                WaitForFiles({file}), "; echo left'")};
  options.cgroup = "off";
  absl::StatusOr<ExecHandler> handler = ExecHandler::Create(options);
  ASSERT_TRUE(handler.ok()) << handler.status();
  std::stop_source stop;
  absl::StatusOr<std::string> long_result;
  std::thread t([&] { long_result = RunExec(*handler, ExecTask({"long"}), stop.get_token()); });
  EXPECT_TRUE(WaitUntil([&] { return CountLive("60") >= 1; }, absl::Seconds(10)));
  absl::SleepFor(absl::Milliseconds(30));  // a clock tick between the two tasks' starts
  auto left = RunExec(*handler, ExecTask({"leave"}));
  EXPECT_TRUE(left.ok()) << left.status();
  EXPECT_FALSE(DaemonDied(file));  // it may be the long task's
  stop.request_stop();
  t.join();
  EXPECT_EQ(long_result.status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(WaitUntil([&] { return DaemonDied(file); }, absl::Seconds(2)));
  std::remove(file.c_str());
}

TEST(ExecCgroup, TaskCgroupsAreRemovedAndACrashedWorkersAreCleanedUp) {
  ExecOptions options;
  options.allow = {"cat=/bin/cat"};
  absl::StatusOr<ExecHandler> handler = ExecHandler::Create(options);
  ASSERT_TRUE(handler.ok()) << handler.status();
  if (handler->containment()->mode() != ExecContainment::Mode::kCgroup) {
    GTEST_SKIP() << "no cgroup here: " << handler->containment()->description();
  }
  ASSERT_TRUE(RunExec(*handler, ExecTask({"cat"}, "x")).ok());
  // "a cgroup per task under DIR": DIR has no task-N left.
  std::string dir(absl::StripPrefix(handler->containment()->description(),
                                    "a cgroup per task under "));
  int subdirs = 0;
  DIR* d = ::opendir(dir.c_str());
  ASSERT_NE(d, nullptr) << dir;
  while (dirent* e = ::readdir(d)) {
    if (e->d_type == DT_DIR && e->d_name[0] != '.') ++subdirs;
  }
  ::closedir(d);
  EXPECT_EQ(subdirs, 0);

  // A worker that died (its pid is free) left a cgroup with a process in
  // it: the next worker kills the process and removes the cgroup.
  std::string base = dir.substr(0, dir.rfind('/'));
  pid_t dead = 4194000;
  while (::kill(dead, 0) == 0 || errno != ESRCH) --dead;
  std::string stale = absl::StrCat(base, "/taskq-exec-", dead, "-1");
  ASSERT_EQ(::mkdir(stale.c_str(), 0755), 0) << stale;
  ASSERT_EQ(::mkdir((stale + "/task-1").c_str(), 0755), 0);
  const std::string marker = Marker(987008);
  // A shell that moves itself into the stale cgroup, then becomes sleep.
  const std::string script =
      absl::StrCat("echo $$ > ", stale, "/task-1/cgroup.procs && exec sleep ", marker);
  const char* argv[] = {"/bin/sh", "-c", script.c_str(), nullptr};
  pid_t leftover = 0;
  ASSERT_EQ(::posix_spawn(&leftover, "/bin/sh", nullptr, nullptr, const_cast<char**>(argv),
                          environ),
            0);
  ASSERT_TRUE(WaitUntil([&] { return CountLive(marker) == 1; }, absl::Seconds(10)));
  absl::StatusOr<ExecHandler> next = ExecHandler::Create(options);
  ASSERT_TRUE(next.ok()) << next.status();
  int status = 0;
  EXPECT_EQ(::waitpid(leftover, &status, 0), leftover);
  EXPECT_TRUE(WIFSIGNALED(status));
  struct stat st;
  EXPECT_NE(::stat(stale.c_str(), &st), 0);  // removed
}

TEST(ExecCgroup, AnExplicitDirectoryThatDoesNotWorkIsAnError) {
  ExecOptions options;
  options.allow = {"cat=/bin/cat"};
  options.cgroup = "/nonexistent/cgroup/dir";
  absl::StatusOr<ExecHandler> handler = ExecHandler::Create(options);
  ASSERT_FALSE(handler.ok());
  EXPECT_EQ(handler.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(handler.status().message(), "--exec-cgroup")) << handler.status();
}

}  // namespace
}  // namespace taskq
