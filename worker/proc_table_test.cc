// Unit tests: reading /proc (stat fields, descendants) and acting on a
// process only while it is the one that was read.
#include "worker/proc_table.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

extern char** environ;

namespace taskq {
namespace {

pid_t SpawnSleep() {
  pid_t pid = 0;
  const char* argv[] = {"/bin/sleep", "30", nullptr};
  EXPECT_EQ(::posix_spawn(&pid, "/bin/sleep", nullptr, nullptr, const_cast<char**>(argv), environ),
            0);
  return pid;
}

TEST(ProcTable, ReadsItsOwnStat) {
  std::optional<ProcStat> self = ReadProcStat(::getpid());
  ASSERT_TRUE(self.has_value());
  EXPECT_EQ(self->pid, ::getpid());
  EXPECT_EQ(self->ppid, ::getppid());
  EXPECT_EQ(self->pgid, ::getpgrp());
  EXPECT_EQ(self->sid, ::getsid(0));
  EXPECT_LE(self->start_ticks, BootTicksNow());
  EXPECT_FALSE(ReadProcStat(-5).has_value());
}

TEST(ProcTable, FindsChildrenAndSkipsWhatItIsTold) {
  pid_t a = SpawnSleep(), b = SpawnSleep();
  std::vector<ProcStat> all = ListDescendants(::getpid());
  auto has = [](const std::vector<ProcStat>& v, pid_t pid) {
    return std::any_of(v.begin(), v.end(), [&](const ProcStat& p) { return p.pid == pid; });
  };
  EXPECT_TRUE(has(all, a));
  EXPECT_TRUE(has(all, b));
  std::vector<ProcStat> some = ListDescendants(::getpid(), [&](pid_t pid) { return pid == a; });
  EXPECT_FALSE(has(some, a));
  EXPECT_TRUE(has(some, b));
  for (pid_t pid : {a, b}) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
}

TEST(ProcTable, ActsOnlyOnTheSameProcess) {
  pid_t pid = SpawnSleep();
  std::optional<ProcStat> stat = ReadProcStat(pid);
  ASSERT_TRUE(stat.has_value());
  ProcStat other = *stat;
  other.start_ticks += 1;  // as if the pid now named a newer process
  EXPECT_FALSE(SignalIfSame(other, SIGKILL));
  EXPECT_EQ(::kill(pid, 0), 0);  // untouched
  EXPECT_TRUE(SignalIfSame(*stat, SIGKILL));
  // Wait for the zombie, then reap it through the same check.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (ReadProcStat(pid)->state != 'Z' && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(2));  // polling another process's state
  }
  EXPECT_FALSE(ReapIfSame(other));
  EXPECT_TRUE(ReapIfSame(*stat));
  EXPECT_FALSE(ReadProcStat(pid).has_value());
}

}  // namespace
}  // namespace taskq
