#include "tests/harness_etcd.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace taskq::testing {
namespace {

// A port the kernel says is free now (bound to port 0 and closed). etcd
// cannot be asked to pick its own and say which; another process taking
// the port in between makes Start fail and the caller retry.
int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  ::close(fd);
  return port;
}

}  // namespace

std::unique_ptr<EtcdClient> EtcdServer::Client(absl::Duration call_timeout) const {
  EtcdOptions options;
  options.endpoint = endpoint_;
  options.call_timeout = call_timeout;
  auto client = EtcdClient::Connect(options);
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? *std::move(client) : nullptr;
}

bool EtcdServer::Installed() { return ::access("/usr/bin/etcd", X_OK) == 0; }

absl::Status EtcdServer::Start(absl::Duration timeout) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    const int client_port = FreePort(), peer = FreePort();
    endpoint_ = absl::StrCat("127.0.0.1:", client_port);
    const std::string peer_url = absl::StrCat("http://127.0.0.1:", peer);
    ProcessOptions o;
    o.argv = {"/usr/bin/etcd",
              "--name", "t",
              "--data-dir", absl::StrCat(dir_.path(), "/etcd-", attempt),
              "--listen-client-urls", absl::StrCat("http://", endpoint_),
              "--advertise-client-urls", absl::StrCat("http://", endpoint_),
              "--listen-peer-urls", peer_url,
              "--initial-advertise-peer-urls", peer_url,
              "--initial-cluster", absl::StrCat("t=", peer_url),
              "--log-level", "warn"};
    // Debian's etcd 3.4 on amd64 needs nothing else; the variable keeps it
    // running on other architectures.
    o.env = {{"ETCD_UNSUPPORTED_ARCH", ""}};
    o.output_dir = dir_.path();
    o.name = absl::StrCat("etcd-", attempt);
    auto p = Process::Start(o);
    if (!p.ok()) return p.status();
    process_ = *std::move(p);
    EtcdOptions options;
    options.endpoint = endpoint_;
    options.call_timeout = absl::Seconds(1);
    absl::Status last;
    const bool up = WaitFor(
        [&] {
          if (!process_->Running()) return true;
          // A new channel each time: one that found nothing listening yet
          // would wait out gRPC's reconnect backoff.
          auto client = EtcdClient::Connect(options);
          last = client.ok() ? (*client)->Get("probe").status() : client.status();
          return last.ok();
        },
        timeout, absl::Milliseconds(50));
    if (up && last.ok() && process_->Running()) return absl::OkStatus();
    if (process_->Running()) {
      return absl::DeadlineExceededError(absl::StrCat("etcd did not answer within ",
                                                      absl::FormatDuration(timeout), ": ",
                                                      last.ToString(), "\n", process_->Stderr()));
    }
    // Exited: most likely a port taken meanwhile; try others.
  }
  return absl::UnavailableError(
      absl::StrCat("etcd would not start: ", process_ ? process_->Stderr() : ""));
}

}  // namespace taskq::testing
