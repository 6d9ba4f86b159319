// The test network itself (tests/cluster/netns.h): hosts reach each other
// and nothing else, each fault does what it says, and namespaces and the
// processes inside them go away on destruction, on a signal, and (for a
// run that was SIGKILLed) at the next start.
#include "tests/cluster/netns.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

#define EXPECT_OK(expr)                  \
  do {                                   \
    const absl::Status status_ = (expr); \
    EXPECT_TRUE(status_.ok()) << status_; \
  } while (0)
#define ASSERT_OK(expr)                  \
  do {                                   \
    const absl::Status status_ = (expr); \
    ASSERT_TRUE(status_.ok()) << status_; \
  } while (0)

namespace taskq::testing {
namespace {

constexpr int kPort = 7000;

bool NamespaceExists(const std::string& name) {
  struct stat st;
  return ::stat(("/run/netns/" + name).c_str(), &st) == 0;
}

std::vector<std::string> NamespacesStartingWith(const std::string& prefix) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/run/netns", ec)) {
    if (absl::StartsWith(e.path().filename().string(), prefix)) {
      out.push_back(e.path().filename().string());
    }
  }
  return out;
}

class TestNetworkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = TestNetwork::WhyUnavailable(); !why.empty()) GTEST_SKIP() << why;
    auto net = TestNetwork::Create({"server", "client"});
    ASSERT_TRUE(net.ok()) << net.status();
    net_ = *std::move(net);
    auto fd = net_->ListenIn("server", kPort);
    ASSERT_TRUE(fd.ok()) << fd.status();
    listener_ = *fd;
    // Something running inside the server host.
    ProcessOptions o;
    o.argv = net_->Wrap("server", {"sleep", "600"});
    o.output_dir = dir_.path();
    o.name = "sleeper";
    auto p = Process::Start(o);
    ASSERT_TRUE(p.ok()) << p.status();
    sleeper_ = *std::move(p);
  }
  void TearDown() override {
    if (listener_ >= 0) ::close(listener_);
  }

  // Connects from the client host to the server's listener.
  absl::Status Probe(absl::Duration timeout = absl::Seconds(1)) {
    auto fd = net_->ConnectFrom("client", net_->host("server").address, kPort, timeout);
    if (fd.ok()) ::close(*fd);
    return fd.status();
  }

  TempDir dir_;
  std::unique_ptr<TestNetwork> net_;  // before sleeper_: deleted after it
  std::unique_ptr<Process> sleeper_;
  int listener_ = -1;
};

TEST_F(TestNetworkTest, HostsReachEachOtherButNothingOutside) {
  EXPECT_EQ(net_->host("server").address, "10.213.0.1");
  EXPECT_EQ(net_->host("client").address, "10.213.0.2");
  EXPECT_OK(Probe());
  // No default route: an outside address is unreachable at once.
  auto outside = net_->ConnectFrom("client", "192.0.2.1", 80, absl::Seconds(1));
  ASSERT_FALSE(outside.ok());
  EXPECT_TRUE(absl::StrContains(outside.status().message(), "unreachable")) << outside.status();
  // The sleeper runs inside the server host; nothing runs in the client's.
  EXPECT_TRUE(WaitFor(
      [&] {
        std::vector<pid_t> inside = net_->Pids("server");
        return std::find(inside.begin(), inside.end(), sleeper_->pid()) != inside.end();
      },
      absl::Seconds(10)));
  EXPECT_TRUE(net_->Pids("client").empty());
}

TEST_F(TestNetworkTest, BlackHoleHoldsPacketsWithoutAnError) {
  ASSERT_OK(net_->BlackHole("client"));
  absl::Status s = Probe(absl::Milliseconds(1500));
  EXPECT_TRUE(absl::IsDeadlineExceeded(s)) << s;
  ASSERT_OK(net_->Heal("client"));
  EXPECT_OK(Probe());
}

TEST_F(TestNetworkTest, RejectFailsAtOnceOnBothSides) {
  ASSERT_OK(net_->Reject("client"));
  const absl::Time start = absl::Now();
  absl::Status s = Probe(absl::Seconds(5));
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "refused")) << s;
  // Towards the rejecting host: the server's connect is refused too.
  auto back = net_->ConnectFrom("server", net_->host("client").address, kPort, absl::Seconds(5));
  EXPECT_TRUE(absl::IsUnavailable(back.status())) << back.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  ASSERT_OK(net_->Heal("client"));
  EXPECT_OK(Probe());
}

TEST_F(TestNetworkTest, LinkDownIsUnreachableUntilUp) {
  ASSERT_OK(net_->LinkDown("client"));
  absl::Status s = Probe();
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "unreachable")) << s;
  ASSERT_OK(net_->Heal("client"));
  EXPECT_OK(Probe());
}

TEST_F(TestNetworkTest, LossDropsThatShareOfPackets) {
  ASSERT_OK(net_->Loss("client", 100));
  absl::Status s = Probe(absl::Milliseconds(1500));
  EXPECT_TRUE(absl::IsDeadlineExceeded(s)) << s;
  ASSERT_OK(net_->Loss("client", 0));
  EXPECT_OK(Probe());
}

TEST_F(TestNetworkTest, DestructionKillsWhatRunsInsideAndDeletesTheNamespaces) {
  const std::string server_ns = net_->host("server").netns;
  ASSERT_TRUE(WaitFor([&] { return !net_->Pids("server").empty(); }, absl::Seconds(10)));
  net_.reset();
  EXPECT_FALSE(NamespaceExists(server_ns));
  // The sleeper was killed with its host (we reap it here).
  ASSERT_TRUE(sleeper_->Wait(absl::Seconds(10)).has_value());
  EXPECT_EQ(*sleeper_->exit_status(), 128 + SIGKILL);
}

TEST(TestNetworkCleanup, SignalTearsDownBeforeTheProcessDies) {
  if (std::string why = TestNetwork::WhyUnavailable(); !why.empty()) GTEST_SKIP() << why;
  TempDir dir;
  const std::string pid_file = dir.path() + "/pid";
  // "fast" style (fork): the child must write into our temp dir.
  ::testing::FLAGS_gtest_death_test_style = "fast";
  EXPECT_EXIT(
      {
        auto net = TestNetwork::Create({"a", "b"});
        if (!net.ok()) std::_Exit(3);
        if (!WriteFile(pid_file, std::to_string(::getpid())).ok()) std::_Exit(4);
        ::raise(SIGTERM);
        std::_Exit(5);  // not reached: SIGTERM ends the process
      },
      ::testing::KilledBySignal(SIGTERM), "");
  const std::string pid = ReadFile(pid_file);
  ASSERT_FALSE(pid.empty());
  EXPECT_TRUE(NamespacesStartingWith(absl::StrCat("tq", pid, "-")).empty());
}

TEST(TestNetworkCleanup, LeftoversOfADeadRunAreSwept) {
  if (std::string why = TestNetwork::WhyUnavailable(); !why.empty()) GTEST_SKIP() << why;
  TempDir dir;
  // A pid nobody has: a child that already exited.
  pid_t dead = ::fork();
  if (dead == 0) std::_Exit(0);
  ASSERT_GT(dead, 0);
  ::waitpid(dead, nullptr, 0);
  const std::string name = absl::StrCat("tq", dead, "-1-leftover");
  ProcessOptions add;
  add.argv = {"ip", "netns", "add", name};
  add.output_dir = dir.path();
  add.name = "add";
  auto a = Process::Start(add);
  ASSERT_TRUE(a.ok());
  ASSERT_EQ((*a)->Wait(absl::Seconds(30)), 0) << (*a)->Stderr();
  // Something still running inside it, as after a SIGKILLed run.
  ProcessOptions sleeper;
  sleeper.argv = {"ip", "netns", "exec", name, "sleep", "600"};
  sleeper.output_dir = dir.path();
  sleeper.name = "sleeper";
  auto s = Process::Start(sleeper);
  ASSERT_TRUE(s.ok());
  // It is inside once it has joined the namespace (before or after it has
  // become `sleep`: the sweep must kill it either way). A deadline, not a
  // pause: `ip netns exec` can take seconds on a loaded machine (it once
  // missed a 10 s wait for "sleep" under a parallel ctest run).
  std::error_code ec;
  const auto our_net = std::filesystem::read_symlink("/proc/self/ns/net", ec);
  ASSERT_FALSE(ec) << ec.message();
  ASSERT_TRUE(WaitFor(
      [&] {
        std::error_code e;
        auto net = std::filesystem::read_symlink(absl::StrCat("/proc/", (*s)->pid(), "/ns/net"), e);
        return !e && net != our_net;
      },
      absl::Seconds(60)));

  auto net = TestNetwork::Create({"a"});
  ASSERT_TRUE(net.ok()) << net.status();
  EXPECT_FALSE(NamespaceExists(name));
  ASSERT_TRUE((*s)->Wait(absl::Seconds(10)).has_value());
  EXPECT_EQ(*(*s)->exit_status(), 128 + SIGKILL);
}

}  // namespace
}  // namespace taskq::testing
