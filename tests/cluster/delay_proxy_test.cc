// taskq-delay-proxy (the stand-in for distance in the cluster tests), on
// loopback: each direction is delayed by --delay-ms, bytes keep their
// order through its bounded buffers, and an end of stream is passed on.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <random>
#include <string>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "tests/harness.h"

namespace taskq::testing {
namespace {

// A loopback echo server for one connection at a time, on its own thread.
class EchoServer {
 public:
  EchoServer() {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa = {};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(listener_, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    ::listen(listener_, 8);
    socklen_t len = sizeof sa;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&sa), &len);
    port_ = ntohs(sa.sin_port);
    thread_ = std::thread([this] {
      for (;;) {
        int fd = ::accept(listener_, nullptr, nullptr);
        if (fd < 0) return;  // listener shut down
        char buf[65536];
        for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) {
          for (ssize_t done = 0; done < n;) {
            ssize_t w = ::write(fd, buf + done, static_cast<size_t>(n - done));
            if (w <= 0) break;
            done += w;
          }
        }
        ::close(fd);  // after the client's end of stream: ours follows it
      }
    });
  }
  ~EchoServer() {
    ::shutdown(listener_, SHUT_RDWR);
    thread_.join();
    ::close(listener_);
  }
  int port() const { return port_; }

 private:
  int listener_ = -1;
  int port_ = 0;
  std::thread thread_;
};

int ConnectTo(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa = {};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

class DelayProxyTest : public ::testing::Test {
 protected:
  // Starts the proxy in front of the echo server; returns its port.
  int StartProxy(int delay_ms, int max_buffer_kb = 4096) {
    const std::string port_file = absl::StrCat(dir_.path(), "/port-", delay_ms);
    ProcessOptions o;
    o.argv = {BinPath("taskq-delay-proxy"), "--listen", "127.0.0.1:0", "--connect",
              absl::StrCat("127.0.0.1:", echo_.port()), "--delay-ms", absl::StrCat(delay_ms),
              "--max-buffer-kb", absl::StrCat(max_buffer_kb), "--port-file", port_file};
    o.output_dir = dir_.path();
    o.name = absl::StrCat("proxy-", delay_ms);
    auto p = Process::Start(o);
    EXPECT_TRUE(p.ok()) << p.status();
    if (!p.ok()) return -1;
    proxy_ = *std::move(p);
    EXPECT_TRUE(WaitFor([&] { return !ReadFile(port_file).empty(); }, absl::Seconds(10)))
        << proxy_->Stderr();
    std::string address(absl::StripAsciiWhitespace(ReadFile(port_file)));
    int port = -1;
    EXPECT_TRUE(absl::SimpleAtoi(address.substr(address.rfind(':') + 1), &port)) << address;
    return port;
  }

  TempDir dir_;
  EchoServer echo_;
  std::unique_ptr<Process> proxy_;
};

TEST_F(DelayProxyTest, RoundTripTakesTwiceTheDelay) {
  int fd = ConnectTo(StartProxy(100));
  ASSERT_GE(fd, 0);
  for (int i = 0; i < 3; ++i) {
    const absl::Time start = absl::Now();
    ASSERT_EQ(::write(fd, "x", 1), 1);
    char c;
    ASSERT_EQ(::read(fd, &c, 1), 1);
    const absl::Duration rtt = absl::Now() - start;
    EXPECT_GE(rtt, absl::Milliseconds(200));
    EXPECT_LT(rtt, absl::Milliseconds(600));  // generous: a loaded CI machine
  }
  ::close(fd);
}

TEST_F(DelayProxyTest, KeepsOrderThroughABoundedBufferAndPassesTheEnd) {
  int fd = ConnectTo(StartProxy(20, /*max_buffer_kb=*/64));
  ASSERT_GE(fd, 0);
  std::string sent(8 << 20, '\0');
  std::mt19937 random(42);
  for (char& c : sent) c = static_cast<char>(random());
  // Write and read at once: the echo comes back while we still send.
  std::thread writer([&] {
    for (size_t done = 0; done < sent.size();) {
      ssize_t n = ::write(fd, sent.data() + done, std::min<size_t>(sent.size() - done, 100000));
      if (n <= 0) return;
      done += static_cast<size_t>(n);
    }
    ::shutdown(fd, SHUT_WR);
  });
  std::string got;
  char buf[65536];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) got.append(buf, static_cast<size_t>(n));
  writer.join();
  ::close(fd);
  ASSERT_EQ(got.size(), sent.size());  // ended by the echo server's end of stream
  EXPECT_TRUE(got == sent) << "bytes reordered or changed";
  // The proxy's memory stayed bounded: far less than the 8 MiB that went through.
  long rss = ProcStatus(proxy_->pid(), "VmHWM");
  if (!RssIsMeaningless()) {
    EXPECT_LT(rss, 8 * 1024) << "kB";
  }
}

}  // namespace
}  // namespace taskq::testing
