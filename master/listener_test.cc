// The master's accept loop on its own (master/listener.h): which addresses
// count as loopback, gRPC peer strings, caps on unauthenticated
// connections, and that a listener that can no longer accept says so
// (on_fatal) instead of going deaf.
#include "master/listener.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/runtime/async_test_util.h"
#include "common/sync.h"
#include "gtest/gtest.h"
#include "tests/harness_http2.h"

namespace taskq {
namespace {

using rt::testing::WaitUntil;

// Takes every connection and closes it, counting them.
class CountingAcceptor final : public grpc::experimental::ExternalConnectionAcceptor {
 public:
  void HandleNewConnection(NewConnectionParameters* p) override {
    ++count;
    ::close(p->fd);
  }
  std::atomic<int> count{0};
};

// Holds every connection open (as gRPC does with a silent client).
class HoldingAcceptor final : public grpc::experimental::ExternalConnectionAcceptor {
 public:
  ~HoldingAcceptor() override {
    for (int fd : fds_) ::close(fd);
  }
  void HandleNewConnection(NewConnectionParameters* p) override {
    MutexLock lock(&mu_);
    fds_.push_back(p->fd);
  }

 private:
  Mutex mu_;
  std::vector<int> fds_ ABSL_GUARDED_BY(mu_);
};

ListenerOptions Options(std::string address) {
  ListenerOptions o;
  o.address = std::move(address);
  return o;
}

// This process's listening socket on `port`, or -1.
int ListeningFd(int port) {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int found = -1;
  while (dirent* e = ::readdir(dir)) {
    int fd = std::atoi(e->d_name);
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    int listening = 0;
    socklen_t optlen = sizeof listening;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) continue;
    if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &optlen) != 0 || !listening) {
      continue;
    }
    if (addr.ss_family == AF_INET &&
        ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port) == port) {
      found = fd;
    }
  }
  ::closedir(dir);
  return found;
}

TEST(ListenerTest, LoopbackIsDecidedByWhatTheAddressResolvesTo) {
  for (const char* address : {"127.0.0.1:0", "localhost:0", "[::1]:0"}) {
    auto l = Listener::Bind(Options(address));
    if (!l.ok() && std::string(address) == "[::1]:0") continue;  // no IPv6 here
    ASSERT_TRUE(l.ok()) << address << ": " << l.status();
    EXPECT_TRUE((*l)->loopback_only()) << address;
    EXPECT_GT((*l)->port(), 0);
  }
  auto any = Listener::Bind(Options("0.0.0.0:0"));
  ASSERT_TRUE(any.ok()) << any.status();
  EXPECT_FALSE((*any)->loopback_only());
  auto bogus = Listener::Bind(Options("127.example.invalid:0"));
  EXPECT_EQ(bogus.status().code(), absl::StatusCode::kFailedPrecondition) << bogus.status();
  EXPECT_NE(bogus.status().message().find("cannot resolve"), std::string::npos);
  auto bad = Listener::Bind(Options("no-port"));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ListenerTest, PeerKeysOfGrpcPeerStrings) {
  EXPECT_EQ(PeerKey("ipv4:127.0.0.1:5000"), "127.0.0.1|5000");
  EXPECT_EQ(PeerKey("ipv6:[::1]:5000"), "::1|5000");
  EXPECT_EQ(PeerKey("ipv6:%5B::1%5D:5000"), "::1|5000");
  EXPECT_EQ(PeerKey("ipv6:[0:0:0:0:0:0:0:1]:7"), "::1|7");
  EXPECT_EQ(PeerKey("unix:/tmp/sock"), "");
  EXPECT_EQ(PeerKey("ipv4:not-an-address:1"), "");
  EXPECT_EQ(PeerKey(""), "");
}

TEST(ListenerTest, UnauthenticatedConnectionsPerAddressAreCappedAndClosedInTime) {
  ListenerOptions options = Options("127.0.0.1:0");
  options.max_unauthenticated_per_ip = 5;
  options.unauthenticated_timeout = absl::Milliseconds(300);
  auto l = Listener::Bind(options);
  ASSERT_TRUE(l.ok()) << l.status();
  HoldingAcceptor acceptor;
  (*l)->Start(&acceptor);
  const std::string address = absl::StrCat("127.0.0.1:", (*l)->port());
  std::vector<int> fds;
  for (int i = 0; i < 8; ++i) fds.push_back(testing::ConnectTcp(address));
  // Three over the cap are closed at once; the five others after 300 ms.
  for (int fd : fds) {
    ASSERT_GE(fd, 0);
    EXPECT_TRUE(testing::WaitPeerClosed(fd, absl::Seconds(10)));
    ::close(fd);
  }
  EXPECT_TRUE(WaitUntil([&] { return (*l)->connections() == 0; }, absl::Seconds(10)));
  EXPECT_EQ((*l)->unauthenticated(), 0u);
  (*l)->Stop();
}

TEST(ListenerTest, AnAuthenticatedConnectionStaysOpen) {
  ListenerOptions options = Options("127.0.0.1:0");
  options.unauthenticated_timeout = absl::Milliseconds(200);
  auto l = Listener::Bind(options);
  ASSERT_TRUE(l.ok()) << l.status();
  HoldingAcceptor acceptor;
  (*l)->Start(&acceptor);
  int fd = testing::ConnectTcp(absl::StrCat("127.0.0.1:", (*l)->port()));
  ASSERT_GE(fd, 0);
  sockaddr_in local{};
  socklen_t len = sizeof local;
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len), 0);
  ASSERT_TRUE(WaitUntil([&] { return (*l)->connections() == 1; }, absl::Seconds(10)));
  (*l)->MarkAuthenticated(absl::StrCat("ipv4:127.0.0.1:", ntohs(local.sin_port)));
  EXPECT_EQ((*l)->unauthenticated(), 0u);
  EXPECT_FALSE(testing::WaitPeerClosed(fd, absl::Seconds(1)));
  ::close(fd);
  (*l)->Stop();
}

// A listener that can no longer accept must not stay silent: the master
// exits non-zero on on_fatal, so its supervisor restarts it.
TEST(ListenerTest, AnAcceptErrorItCannotRecoverFromIsFatal) {
  Notification fatal;
  ListenerOptions options = Options("127.0.0.1:0");
  options.on_fatal = [&](absl::Status) { fatal.Notify(); };
  auto l = Listener::Bind(options);
  ASSERT_TRUE(l.ok()) << l.status();
  CountingAcceptor acceptor;
  (*l)->Start(&acceptor);
  int listening = ListeningFd((*l)->port());
  ASSERT_GE(listening, 0);
  // Shut the socket down under the listener: accept fails with EINVAL.
  ASSERT_EQ(::shutdown(listening, SHUT_RDWR), 0);
  EXPECT_TRUE(fatal.WaitForNotificationWithTimeout(absl::Seconds(10)));
  (*l)->Stop();
}

}  // namespace
}  // namespace taskq
