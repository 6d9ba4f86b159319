// Unit tests: the exec handler (allow-list, pipes, exit status, limits,
// stop), run as coroutines on a one-thread scheduler.
#include "worker/exec_handler.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <stop_token>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/runtime/scheduler.h"
#include "common/runtime/when_all.h"
#include "gtest/gtest.h"

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

TEST(Exec, RefusesProgramsNotAllowed) {
  ExecHandler handler({"/bin/cat"});
  for (const char* program : {"/bin/sh", "cat", "/bin/../bin/cat", "/bin/cat "}) {
    auto r = RunExec(handler, ExecTask({program, "-c", "true"}));
    ASSERT_FALSE(r.ok()) << program;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
    EXPECT_TRUE(IsPermanentFailure(r.status()));
    EXPECT_NE(r.status().message().find("not allowed on worker test-worker"), std::string::npos)
        << r.status();
  }
}

TEST(Exec, RefusesEverythingWithAnEmptyAllowList) {
  ExecHandler handler({});
  EXPECT_FALSE(RunExec(handler, ExecTask({"/bin/cat"})).ok());
  auto no_args = RunExec(handler, ExecTask({}));
  ASSERT_FALSE(no_args.ok());
  EXPECT_TRUE(IsPermanentFailure(no_args.status()));
}

TEST(Exec, CatEchoesThePayload) {
  ExecHandler handler({"/bin/cat"});
  auto r = RunExec(handler, ExecTask({"/bin/cat"}, "hello\nworld"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "hello\nworld");
  auto empty = RunExec(handler, ExecTask({"/bin/cat"}));
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(*empty, "");
}

TEST(Exec, BigPayloadBothWaysDoesNotDeadlock) {
  // cat writes back while we are still writing: both pipes fill up unless
  // they are serviced together.
  ExecLimits limits;
  limits.max_output = 8 << 20;
  ExecHandler handler({"/bin/cat"}, limits);
  std::string payload(3 << 20, 'x');
  for (size_t i = 0; i < payload.size(); i += 997) payload[i] = static_cast<char>('a' + i % 26);
  auto r = RunExec(handler, ExecTask({"/bin/cat"}, payload));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, payload);
}

TEST(Exec, NonZeroExitReportsStderr) {
  ExecHandler handler({"/bin/sh"});
  auto r = RunExec(handler, ExecTask({"/bin/sh", "-c", "echo partial; echo oops >&2; exit 3"}));
  ASSERT_FALSE(r.ok());
  EXPECT_FALSE(IsPermanentFailure(r.status())) << r.status();
  EXPECT_NE(r.status().message().find("exited with status 3"), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("oops"), std::string::npos) << r.status();
}

TEST(Exec, StderrIsTailedNotFlooded) {
  ExecHandler handler({"/bin/sh"});
  auto r = RunExec(handler, ExecTask({"/bin/sh", "-c",
                                      "i=0; while [ $i -lt 2000 ]; do echo line$i >&2; "
                                      "i=$((i+1)); done; echo LAST >&2; exit 1"}));
  ASSERT_FALSE(r.ok());
  EXPECT_LT(r.status().message().size(), 2048u + 200u);
  EXPECT_NE(r.status().message().find("LAST"), std::string::npos);
  EXPECT_EQ(r.status().message().find("line0\n"), std::string::npos);
}

TEST(Exec, DeathBySignalIsReported) {
  ExecHandler handler({"/bin/sh"});
  auto r = RunExec(handler, ExecTask({"/bin/sh", "-c", "kill -9 $$"}));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("signal 9"), std::string::npos) << r.status();
}

TEST(Exec, OutputOverTheLimitFails) {
  ExecLimits limits;
  limits.max_output = 1000;
  ExecHandler handler({"/bin/sh"}, limits);
  auto r = RunExec(handler, ExecTask({"/bin/sh", "-c", "yes"}));  // endless output
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(IsPermanentFailure(r.status()));
  EXPECT_NE(r.status().message().find("1000 bytes"), std::string::npos) << r.status();
}

TEST(Exec, ChildNotReadingStdinIsFine) {
  ExecHandler handler({"/bin/sh"});
  auto r = RunExec(handler, ExecTask({"/bin/sh", "-c", "exec 0<&-; echo done"},
                                     std::string(1 << 20, 'z')));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "done\n");
}

TEST(Exec, BareNameIsLookedUpInPathOnlyWhenAllowedAsBareName) {
  ExecHandler handler({"cat"});
  auto r = RunExec(handler, ExecTask({"cat"}, "via PATH"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "via PATH");
  EXPECT_FALSE(RunExec(handler, ExecTask({"/bin/cat"}, "x")).ok());
}

TEST(Exec, MissingProgramIsPermanent) {
  ExecHandler handler({"/nonexistent/prog"});
  auto r = RunExec(handler, ExecTask({"/nonexistent/prog"}));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(IsPermanentFailure(r.status())) << r.status();
  EXPECT_NE(r.status().message().find("cannot start"), std::string::npos) << r.status();
}

TEST(Exec, NoDescriptorsLeakIntoTheChild) {
  ExecHandler handler({"/bin/sh"});
  // Lists the child's open descriptors (the shell's own are 0-2 plus the
  // one ls uses to read the directory).
  auto r = RunExec(handler, ExecTask({"/bin/sh", "-c", "ls /proc/self/fd"}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "0\n1\n2\n3\n");
}

TEST(Exec, StopKillsTheChild) {
  ExecHandler handler({"/bin/sh"});
  std::stop_source stop;
  v1::Task task = ExecTask({"/bin/sh", "-c", "sleep 60; echo never"});
  absl::StatusOr<std::string> result;
  std::thread t([&] { result = RunExec(handler, task, stop.get_token()); });
  stop.request_stop();
  t.join();  // would take a minute if the child were not killed
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled) << result.status();
}

// Reads the pid a child wrote to `path`; 0 if not (yet) there.
pid_t ReadPid(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return 0;
  char buf[32] = {};
  size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  int pid = 0;
  if (n == 0 || !absl::SimpleAtoi(absl::StripAsciiWhitespace(buf), &pid)) return 0;
  return pid;
}

TEST(Exec, StopSendsTermThenKillAfterTheGrace) {
  // A child that ignores SIGTERM: it dies only by the SIGKILL that follows
  // the grace, and is reaped (no zombie left behind).
  ExecLimits limits;
  limits.kill_grace = absl::Milliseconds(200);
  ExecHandler handler({"/bin/sh"}, limits);
  std::string pid_file = absl::StrCat(::testing::TempDir(), "/exec-term-", ::getpid());
  std::remove(pid_file.c_str());
  v1::Task task = ExecTask({"/bin/sh", "-c",
                            absl::StrCat("trap '' TERM; echo $$ > ", pid_file,
                                         ".tmp && mv ", pid_file, ".tmp ", pid_file,
                                         "; while :; do sleep 0.05; done")});
  std::stop_source stop;
  absl::StatusOr<std::string> result;
  absl::Time stopped_at;
  std::thread t([&] { result = RunExec(handler, task, stop.get_token()); });
  pid_t child = 0;
  absl::Time deadline = absl::Now() + absl::Seconds(20);
  while ((child = ReadPid(pid_file)) == 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));  // polling a file the child writes
  }
  ASSERT_GT(child, 0);
  stopped_at = absl::Now();
  stop.request_stop();
  t.join();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled) << result.status();
  EXPECT_GE(absl::Now() - stopped_at, absl::Milliseconds(200));  // waited the grace
  EXPECT_NE(::kill(child, 0), 0);  // gone and reaped
  std::remove(pid_file.c_str());
}

TEST(Exec, ManyChildrenAtOnceOnOneThread) {
  // 50 children that each take 0.3 s, awaited together on the one
  // scheduler thread: no thread per child.
  ExecHandler handler({"/bin/sh"});
  v1::Task task = ExecTask({"/bin/sh", "-c", "sleep 0.3; cat"}, "x");
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

TEST(Exec, GrandchildHoldingThePipesDoesNotHangTheTask) {
  // The child exits at once but leaves a background grandchild holding
  // stdout: the task ends about a second later with the child's output.
  ExecHandler handler({"/bin/sh"});
  auto r = RunExec(handler, ExecTask({"/bin/sh", "-c", "echo hi; sleep 2 & exit 0"}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "hi\n");
}

}  // namespace
}  // namespace taskq
