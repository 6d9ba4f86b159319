// Unit tests: the exec handler (allow-list, pipes, exit status, limits, stop).
#include "worker/exec_handler.h"

#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
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

absl::StatusOr<std::string> RunExec(const ExecHandler& handler, const v1::Task& task,
                                    const StopSignal* stop = nullptr) {
  return handler(HandlerContext(task, "test-worker", stop));
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

TEST(Exec, HardStopKillsTheChild) {
  ExecHandler handler({"/bin/sh"});
  StopSignal stop;
  v1::Task task = ExecTask({"/bin/sh", "-c", "sleep 60; echo never"});
  absl::StatusOr<std::string> result;
  std::thread t([&] { result = RunExec(handler, task, &stop); });
  stop.Stop();
  t.join();  // would take a minute if the child were not killed
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled) << result.status();
}

}  // namespace
}  // namespace taskq
