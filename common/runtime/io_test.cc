// The reactor: fd readiness (pipes, socketpairs), deadlines, cancellation,
// child processes through pidfd, and shutdown.
#include "common/runtime/io.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "common/runtime/cancel.h"
#include "common/runtime/scheduler.h"
#include "common/runtime/sleep.h"
#include "common/sync.h"
#include "common/runtime/async_test_util.h"
#include "gtest/gtest.h"

extern char** environ;

namespace taskq::rt {
namespace {

absl::Duration Since(MonoNanos start) { return absl::Nanoseconds(MonotonicNow() - start); }

// Waits for state the runtime exposes only as counters (pending timers,
// fd waits): polls until it holds or the test timeout passes.
using testing::WaitUntil;

struct Pipe {
  Pipe() { EXPECT_EQ(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0); }
  ~Pipe() {
    close(fds[0]);
    close(fds[1]);
  }
  int r() const { return fds[0]; }
  int w() const { return fds[1]; }
  int fds[2] = {-1, -1};
};

Task<absl::StatusOr<std::string>> ReadWhenReady(int fd, std::stop_token stop = {},
                                                absl::Time deadline = absl::InfiniteFuture()) {
  absl::Status s = co_await WaitReadable(fd, std::move(stop), deadline);
  if (!s.ok()) co_return s;
  char buf[64];
  ssize_t n = read(fd, buf, sizeof buf);
  if (n < 0) co_return absl::InternalError("read failed");
  co_return std::string(buf, static_cast<size_t>(n));
}

TEST(WaitReadableTest, WakesWhenAnotherThreadWrites) {
  Scheduler sched({.threads = 2});
  Pipe p;
  std::thread writer([&] {
    ASSERT_TRUE(WaitUntil([&] { return sched.io().pending_fd_waits() == 1; }));
    ASSERT_EQ(write(p.w(), "hello", 5), 5);
  });
  absl::StatusOr<std::string> got = sched.BlockOn(ReadWhenReady(p.r()));
  writer.join();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "hello");
  EXPECT_EQ(sched.io().pending_fd_waits(), 0u);
}

TEST(WaitReadableTest, AlreadyReadableCompletesAndIsLevelTriggered) {
  Scheduler sched({.threads = 1});
  Pipe p;
  ASSERT_EQ(write(p.w(), "ab", 2), 2);
  // Two waits in a row both see the unread data (level-triggered).
  auto twice = [](int fd) -> Task<absl::Status> {
    absl::Status a = co_await WaitReadable(fd);
    if (!a.ok()) co_return a;
    co_return co_await WaitReadable(fd);
  };
  EXPECT_TRUE(sched.BlockOn(twice(p.r())).ok());
}

TEST(WaitReadableTest, DeadlineExceeded) {
  Scheduler sched({.threads = 1});
  Pipe p;
  MonoNanos start = MonotonicNow();
  absl::StatusOr<std::string> got =
      sched.BlockOn(ReadWhenReady(p.r(), {}, absl::Now() + absl::Milliseconds(40)));
  absl::Duration took = Since(start);
  EXPECT_EQ(got.status(), DeadlineExceededError());
  EXPECT_GE(took, absl::Milliseconds(39));
  EXPECT_LT(took, absl::Seconds(5));
  EXPECT_EQ(sched.io().pending_fd_waits(), 0u);
  EXPECT_EQ(sched.io().pending_timers(), 0u);
}

TEST(WaitReadableTest, StopCancelsAndUnregisters) {
  Scheduler sched({.threads = 2});
  Pipe p;
  std::stop_source source;
  std::thread stopper([&] {
    ASSERT_TRUE(WaitUntil([&] { return sched.io().pending_fd_waits() == 1; }));
    source.request_stop();
  });
  absl::StatusOr<std::string> got =
      sched.BlockOn(ReadWhenReady(p.r(), source.get_token(), absl::Now() + absl::Hours(1)));
  stopper.join();
  EXPECT_EQ(got.status(), CancelledError());
  EXPECT_EQ(sched.io().pending_fd_waits(), 0u);
  EXPECT_EQ(sched.io().pending_timers(), 0u);  // the deadline timer went too
}

TEST(WaitReadableTest, ReaderAndWriterOnOneFdAreIndependent) {
  Scheduler sched({.threads = 2});
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
  // Reader on sv[0] waits; a writer on the same fd is ready at once.
  std::atomic<bool> read_done{false};
  auto reader = [](int fd, std::atomic<bool>* done) -> Task<absl::Status> {
    absl::Status s = co_await WaitReadable(fd);
    done->store(true);
    co_return s;
  };
  auto writer = [](int fd) -> Task<absl::Status> { co_return co_await WaitWritable(fd); };
  std::thread t([&] {
    ASSERT_TRUE(WaitUntil([&] { return sched.io().pending_fd_waits() == 1; }));
    EXPECT_TRUE(sched.BlockOn(writer(sv[0])).ok());
    EXPECT_FALSE(read_done.load());  // the writer's wake-up did not wake the reader
    EXPECT_EQ(sched.io().pending_fd_waits(), 1u);
    ASSERT_EQ(write(sv[1], "x", 1), 1);
  });
  EXPECT_TRUE(sched.BlockOn(reader(sv[0], &read_done)).ok());
  t.join();
  EXPECT_EQ(sched.io().pending_fd_waits(), 0u);
  close(sv[0]);
  close(sv[1]);
}

TEST(WaitReadableTest, ManyReadersOnOneFdAllWake) {
  Scheduler sched({.threads = 2});
  Pipe p;
  constexpr int kReaders = 20;
  std::atomic<int> woke{0};
  auto reader = [](int fd, std::atomic<int>* woke) -> Task<void> {
    if ((co_await WaitReadable(fd)).ok()) woke->fetch_add(1);
  };
  for (int i = 0; i < kReaders; ++i) sched.Spawn(reader(p.r(), &woke));
  ASSERT_TRUE(WaitUntil([&] { return sched.io().pending_fd_waits() == kReaders; }));
  ASSERT_EQ(write(p.w(), "x", 1), 1);
  ASSERT_TRUE(WaitUntil([&] { return woke.load() == kReaders; }));
}

TEST(WaitReadableTest, BadFdAndRegularFile) {
  Scheduler sched({.threads = 1});
  auto wait = [](int fd) -> Task<absl::Status> { co_return co_await WaitReadable(fd); };
  absl::Status bad = sched.BlockOn(wait(1'000'000));
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument) << bad;
  int file = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(file, 0);
  EXPECT_TRUE(sched.BlockOn(wait(file)).ok());  // regular files are always ready
  close(file);
  EXPECT_EQ(sched.io().pending_fd_waits(), 0u);
}

// --- child processes ---------------------------------------------------------

pid_t SpawnChild(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ);
  EXPECT_EQ(rc, 0) << "posix_spawn " << args[0];
  return pid;
}

Task<absl::StatusOr<int>> WaitChild(int pidfd, std::stop_token stop = {},
                                    absl::Time deadline = absl::InfiniteFuture()) {
  co_return co_await WaitChildExit(pidfd, std::move(stop), deadline);
}

TEST(WaitChildExitTest, ReportsExitCodes) {
  Scheduler sched({.threads = 2});
  struct Case {
    std::vector<std::string> argv;
    int code;
  };
  for (const Case& c : {Case{{"/bin/true"}, 0}, Case{{"/bin/sh", "-c", "exit 3"}, 3},
                        Case{{"/bin/sh", "-c", "sleep 0.05; exit 7"}, 7}}) {
    pid_t pid = SpawnChild(c.argv);
    absl::StatusOr<int> pidfd = OpenPidfd(pid);
    ASSERT_TRUE(pidfd.ok()) << pidfd.status();
    absl::StatusOr<int> ws = sched.BlockOn(WaitChild(*pidfd));
    close(*pidfd);
    ASSERT_TRUE(ws.ok()) << ws.status();
    EXPECT_TRUE(WIFEXITED(*ws)) << c.argv.back();
    EXPECT_EQ(WEXITSTATUS(*ws), c.code) << c.argv.back();
    // Reaped: nothing left to wait for.
    EXPECT_EQ(waitpid(pid, nullptr, WNOHANG), -1);
  }
  EXPECT_EQ(sched.io().pending_fd_waits(), 0u);
}

TEST(WaitChildExitTest, CancelLeavesTheChildThenKillIsReported) {
  Scheduler sched({.threads = 2});
  pid_t pid = SpawnChild({"/bin/sleep", "30"});
  absl::StatusOr<int> pidfd = OpenPidfd(pid);
  ASSERT_TRUE(pidfd.ok()) << pidfd.status();
  std::stop_source source;
  std::thread stopper([&] {
    ASSERT_TRUE(WaitUntil([&] { return sched.io().pending_fd_waits() == 1; }));
    source.request_stop();
  });
  MonoNanos start = MonotonicNow();
  absl::StatusOr<int> ws = sched.BlockOn(WaitChild(*pidfd, source.get_token()));
  stopper.join();
  EXPECT_EQ(ws.status(), CancelledError());
  EXPECT_LT(Since(start), absl::Seconds(5));
  // Still running and ours to reap: kill it and wait again.
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  ws = sched.BlockOn(WaitChild(*pidfd));
  close(*pidfd);
  ASSERT_TRUE(ws.ok()) << ws.status();
  EXPECT_TRUE(WIFSIGNALED(*ws));
  EXPECT_EQ(WTERMSIG(*ws), SIGKILL);
}

TEST(WaitChildExitTest, DeadlineExceeded) {
  Scheduler sched({.threads = 1});
  pid_t pid = SpawnChild({"/bin/sleep", "30"});
  absl::StatusOr<int> pidfd = OpenPidfd(pid);
  ASSERT_TRUE(pidfd.ok()) << pidfd.status();
  absl::StatusOr<int> ws =
      sched.BlockOn(WaitChild(*pidfd, {}, absl::Now() + absl::Milliseconds(30)));
  EXPECT_EQ(ws.status(), DeadlineExceededError());
  kill(pid, SIGKILL);
  EXPECT_TRUE(sched.BlockOn(WaitChild(*pidfd)).ok());
  close(*pidfd);
}

TEST(WaitChildExitTest, NotAChildAndNoSuchProcess) {
  Scheduler sched({.threads = 1});
  absl::StatusOr<int> self = OpenPidfd(getpid());
  ASSERT_TRUE(self.ok()) << self.status();
  absl::StatusOr<int> ws = sched.BlockOn(WaitChild(*self));
  close(*self);
  EXPECT_EQ(ws.status().code(), absl::StatusCode::kFailedPrecondition) << ws.status();
  EXPECT_EQ(OpenPidfd(-5).status().code(), absl::StatusCode::kInvalidArgument);
}

// --- shutdown ------------------------------------------------------------------

TEST(IoShutdownTest, PendingFdAndChildWaitsEndWithCancelled) {
  auto sched = std::make_unique<Scheduler>(SchedulerOptions{.threads = 2});
  Pipe p;
  pid_t pid = SpawnChild({"/bin/sleep", "30"});
  absl::StatusOr<int> pidfd = OpenPidfd(pid);
  ASSERT_TRUE(pidfd.ok()) << pidfd.status();
  Mutex mu;
  std::vector<absl::Status> results;
  auto fd_waiter = [](int fd, Mutex* mu, std::vector<absl::Status>* out) -> Task<void> {
    absl::Status s = co_await WaitReadable(fd, {}, absl::Now() + absl::Hours(1));
    MutexLock lock(mu);
    out->push_back(s);
  };
  auto child_waiter = [](int pidfd, Mutex* mu, std::vector<absl::Status>* out) -> Task<void> {
    absl::StatusOr<int> ws = co_await WaitChildExit(pidfd);
    MutexLock lock(mu);
    out->push_back(ws.status());
  };
  for (int i = 0; i < 3; ++i) sched->Spawn(fd_waiter(p.r(), &mu, &results));
  sched->Spawn(child_waiter(*pidfd, &mu, &results));
  ASSERT_TRUE(WaitUntil([&] { return sched->io().pending_fd_waits() == 4; }));
  sched->Shutdown();
  {
    MutexLock lock(&mu);
    ASSERT_EQ(results.size(), 4u);
    for (const absl::Status& s : results) EXPECT_EQ(s, ShutdownError());
  }
  kill(pid, SIGKILL);
  siginfo_t info;
  EXPECT_EQ(waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(*pidfd), &info, WEXITED), 0);
  close(*pidfd);
}

}  // namespace
}  // namespace taskq::rt
