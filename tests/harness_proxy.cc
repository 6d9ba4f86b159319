#include "tests/harness_proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <list>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tests/harness_http2.h"

namespace taskq::testing {
namespace {

// One forwarded connection: bytes read from one side wait here until the
// other side takes them.
struct Link {
  int client = -1;
  int server = -1;
  std::string to_server;
  std::string to_client;
  bool closed = false;
};

void SetNonBlocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

// Reads what `from` has into `into`; false on EOF or error.
bool ReadInto(int from, std::string* into) {
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(from, buf, sizeof buf);
    if (n > 0) {
      into->append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return true;
    return false;
  }
}

// Writes as much of `pending` to `to` as it takes; false on error.
bool WriteFrom(int to, std::string* pending) {
  while (!pending->empty()) {
    ssize_t n = ::send(to, pending->data(), pending->size(), MSG_NOSIGNAL);
    if (n > 0) {
      pending->erase(0, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return true;
    return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<LinkProxy>> LinkProxy::Start(const std::string& target) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 64) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::InternalError(absl::StrCat("proxy listen: ", std::strerror(err)));
  }
  SetNonBlocking(fd);
  std::string address = absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));
  return std::unique_ptr<LinkProxy>(new LinkProxy(fd, std::move(address), target));
}

LinkProxy::LinkProxy(int listen_fd, std::string address, std::string target)
    : listen_fd_(listen_fd), address_(std::move(address)), target_(std::move(target)) {
  if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) wake_[0] = wake_[1] = -1;
  thread_ = std::thread([this] { Run(); });
}

LinkProxy::~LinkProxy() {
  if (wake_[1] >= 0) {
    char c = 0;
    (void)!::write(wake_[1], &c, 1);
  }
  thread_.join();
  ::close(listen_fd_);
  if (wake_[0] >= 0) ::close(wake_[0]);
  if (wake_[1] >= 0) ::close(wake_[1]);
}

void LinkProxy::Run() {
  std::list<Link> links;
  for (;;) {
    const bool hole = black_hole_.load();
    // [0] wake pipe, [1] listener (ignored while black-holed), then two
    // entries per link.
    std::vector<pollfd> fds;
    fds.push_back({wake_[0], POLLIN, 0});
    fds.push_back({listen_fd_, static_cast<short>(hole ? 0 : POLLIN), 0});
    for (Link& l : links) {
      short c = 0, s = 0;
      if (!hole) {
        c = static_cast<short>(POLLIN | (l.to_client.empty() ? 0 : POLLOUT));
        s = static_cast<short>(POLLIN | (l.to_server.empty() ? 0 : POLLOUT));
      }
      fds.push_back({l.client, c, 0});
      fds.push_back({l.server, s, 0});
    }
    // A short timeout: BlackHole/Restore take effect within it.
    ::poll(fds.data(), fds.size(), 20);
    if (fds[0].revents != 0) break;
    if (hole) continue;
    if (fds[1].revents & POLLIN) {
      for (;;) {
        int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (client < 0) break;
        int server = ConnectTcp(target_);
        if (server < 0) {
          ::close(client);
          continue;
        }
        SetNonBlocking(client);
        SetNonBlocking(server);
        links.push_back({client, server, {}, {}, false});
        ++accepted_;
      }
    }
    size_t i = 2;
    for (Link& l : links) {
      if (i + 1 >= fds.size()) break;  // accepted in this round: next time
      const short c = fds[i++].revents;
      const short s = fds[i++].revents;
      bool ok = true;
      if (c & (POLLIN | POLLHUP | POLLERR)) ok = ReadInto(l.client, &l.to_server) && ok;
      if (s & (POLLIN | POLLHUP | POLLERR)) ok = ReadInto(l.server, &l.to_client) && ok;
      ok = WriteFrom(l.server, &l.to_server) && ok;
      ok = WriteFrom(l.client, &l.to_client) && ok;
      // Either side gone: close both, as a broken link would.
      if (!ok) l.closed = true;
    }
    for (auto it = links.begin(); it != links.end();) {
      if (it->closed) {
        ::close(it->client);
        ::close(it->server);
        it = links.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (Link& l : links) {
    ::close(l.client);
    ::close(l.server);
  }
}

}  // namespace taskq::testing
