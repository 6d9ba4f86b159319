#include "master/listener.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "common/fd_limit.h"
#include "common/loopback.h"
#include "common/log.h"
#include "master/refusals.h"

namespace taskq {

namespace {

// Descriptors kept free for everything else the master opens (store files,
// pipes, epoll, gRPC's own) when the total cap is derived from the fd limit.
constexpr uint64_t kFdsForTheRest = 128;
constexpr int kAcceptsPerWakeup = 256;

struct HostPort {
  std::string host;
  std::string port;
};

absl::StatusOr<HostPort> Split(absl::string_view address) {
  HostPort out;
  if (absl::StartsWith(address, "[")) {
    size_t close = address.find(']');
    if (close == absl::string_view::npos || close + 1 >= address.size() ||
        address[close + 1] != ':') {
      return absl::InvalidArgumentError(
          absl::StrCat("bad --listen address \"", address, "\": want [V6]:PORT"));
    }
    out.host = std::string(address.substr(1, close - 1));
    out.port = std::string(address.substr(close + 2));
  } else {
    size_t colon = address.rfind(':');
    if (colon == absl::string_view::npos || colon == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad --listen address \"", address, "\": want HOST:PORT"));
    }
    out.host = std::string(address.substr(0, colon));
    out.port = std::string(address.substr(colon + 1));
  }
  int port;
  if (!absl::SimpleAtoi(out.port, &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("bad port in --listen \"", address, "\""));
  }
  return out;
}

// Numeric address and port of a socket address.
std::pair<std::string, int> AddressOf(const sockaddr* sa) {
  char buf[INET6_ADDRSTRLEN] = "";
  int port = 0;
  if (sa->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf);
    port = ntohs(in->sin_port);
  } else if (sa->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf);
    port = ntohs(in6->sin6_port);
  }
  return {buf, port};
}

int OpenReserve() { return ::open("/dev/null", O_RDONLY | O_CLOEXEC); }

}  // namespace

std::string DisplayPeer(absl::string_view peer) {
  std::string p = absl::StrReplaceAll(peer, {{"%5B", "["}, {"%5D", "]"}, {"%25", "%"}});
  absl::string_view rest(p);
  if (!absl::ConsumePrefix(&rest, "ipv4:") && !absl::ConsumePrefix(&rest, "ipv6:")) return p;
  return std::string(rest);
}

std::string PeerKey(absl::string_view peer) {
  std::string p = absl::StrReplaceAll(peer, {{"%5B", "["}, {"%5D", "]"}, {"%25", "%"}});
  absl::string_view rest(p);
  if (!absl::ConsumePrefix(&rest, "ipv4:") && !absl::ConsumePrefix(&rest, "ipv6:")) return "";
  size_t colon = rest.rfind(':');
  if (colon == absl::string_view::npos) return "";
  absl::string_view host = rest.substr(0, colon);
  absl::ConsumePrefix(&host, "[");
  absl::ConsumeSuffix(&host, "]");
  // Canonical form, whatever the spelling (e.g. zeros in an IPv6 address).
  in6_addr a6;
  in_addr a4;
  char buf[INET6_ADDRSTRLEN] = "";
  const std::string h(host);
  if (inet_pton(AF_INET, h.c_str(), &a4) == 1) {
    inet_ntop(AF_INET, &a4, buf, sizeof buf);
  } else if (inet_pton(AF_INET6, h.c_str(), &a6) == 1) {
    inet_ntop(AF_INET6, &a6, buf, sizeof buf);
  } else {
    return "";
  }
  return absl::StrCat(buf, "|", rest.substr(colon + 1));
}

absl::StatusOr<std::unique_ptr<Listener>> Listener::Bind(ListenerOptions options) {
  auto hp = Split(options.address);
  if (!hp.ok()) return hp.status();
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const char* host = hp->host.empty() ? nullptr : hp->host.c_str();
  if (int rc = ::getaddrinfo(host, hp->port.c_str(), &hints, &found); rc != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot resolve --listen host \"", hp->host, "\": ", gai_strerror(rc)));
  }
  std::vector<int> fds;
  int port = 0;
  bool loopback_only = true;
  absl::Status error;
  auto close_all = [&] {
    for (int fd : fds) ::close(fd);
  };
  for (addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
    loopback_only = loopback_only && IsLoopbackAddress(ai->ai_addr);
    int fd = ::socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      error = absl::UnavailableError(absl::StrCat("socket: ", strerror(errno)));
      continue;
    }
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    // v4 and v6 are bound separately, so every peer address is native.
    if (ai->ai_family == AF_INET6) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_storage addr{};
    std::memcpy(&addr, ai->ai_addr, ai->ai_addrlen);
    if (port != 0) {  // port 0: every address gets the port the first one got
      if (addr.ss_family == AF_INET) {
        reinterpret_cast<sockaddr_in*>(&addr)->sin_port = htons(port);
      } else {
        reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port = htons(port);
      }
    }
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), ai->ai_addrlen) != 0 ||
        ::listen(fd, SOMAXCONN) != 0) {
      const int err = errno;
      ::close(fd);
      // An address family this host cannot serve (no IPv6) is skipped.
      if (err == EADDRNOTAVAIL || err == EAFNOSUPPORT) continue;
      error = absl::UnavailableError(absl::StrCat("cannot listen on ", options.address, ": ",
                                                  strerror(err)));
      break;
    }
    sockaddr_storage bound{};
    socklen_t len = sizeof bound;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
    port = AddressOf(reinterpret_cast<sockaddr*>(&bound)).second;
    fds.push_back(fd);
  }
  ::freeaddrinfo(found);
  if (!error.ok()) {
    close_all();
    return error;
  }
  if (fds.empty()) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.address, ": no usable address"));
  }
  return std::unique_ptr<Listener>(
      new Listener(std::move(options), std::move(fds), port, loopback_only));
}

Listener::Listener(ListenerOptions options, std::vector<int> fds, int port, bool loopback_only)
    : options_(std::move(options)),
      listen_fds_(std::move(fds)),
      port_(port),
      loopback_only_(loopback_only) {
  const uint64_t fd_limit = RaiseFdLimit();
  // Two descriptors per connection (gRPC's and the listener's duplicate).
  const uint64_t by_fds = fd_limit > 2 * kFdsForTheRest ? (fd_limit - kFdsForTheRest) / 2 : 16;
  max_connections_ = options_.max_connections == 0
                         ? by_fds
                         : std::min<uint64_t>(options_.max_connections, by_fds);
  if (options_.max_connections > by_fds) {
    LogWarning("--max-connections %d is above what the open-file limit (%d) allows; using %d",
               options_.max_connections, fd_limit, max_connections_);
  }
}

Listener::~Listener() {
  Stop();
  for (int fd : listen_fds_) ::close(fd);
}

void Listener::Start(grpc::experimental::ExternalConnectionAcceptor* acceptor) {
  acceptor_ = acceptor;
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  reserve_fd_ = OpenReserve();
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = wake_fd_;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
  for (int fd : listen_fds_) {
    ev.data.fd = fd;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
  }
  thread_ = std::thread([this] { Loop(); });
}

void Listener::Stop() {
  {
    MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (thread_.joinable()) {
    uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
    thread_.join();
  }
  MutexLock lock(&mu_);
  for (const auto& [dup_fd, conn] : conns_) ::close(dup_fd);
  conns_.clear();
  by_key_.clear();
  unauthenticated_by_ip_.clear();
  pending_.clear();
  unauthenticated_ = 0;
  for (int fd : {epoll_fd_, wake_fd_, reserve_fd_}) {
    if (fd >= 0) ::close(fd);
  }
  epoll_fd_ = wake_fd_ = reserve_fd_ = -1;
}

void Listener::Loop() {
  epoll_event events[64];
  absl::Time next_idle_check = absl::Now() + absl::Seconds(1);
  absl::Time paused_until = absl::InfinitePast();  // after ENOBUFS/ENOMEM
  bool paused = false;
  for (;;) {
    const absl::Time now = absl::Now();
    if (paused && now >= paused_until) {
      paused = false;
      for (int fd : listen_fds_) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = fd;
        ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
      }
    }
    absl::Time wake = paused ? std::min(next_idle_check, paused_until) : next_idle_check;
    const int timeout_ms =
        static_cast<int>(std::max<int64_t>(0, absl::ToInt64Milliseconds(wake - now) + 1));
    const int n = ::epoll_wait(epoll_fd_, events, 64, timeout_ms);
    if (n < 0 && errno != EINTR) {
      Fatal(absl::InternalError(absl::StrCat("listener: epoll_wait: ", strerror(errno))));
      return;
    }
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == wake_fd_) {
        MutexLock lock(&mu_);
        if (stopping_) return;
        continue;
      }
      if (std::find(listen_fds_.begin(), listen_fds_.end(), fd) != listen_fds_.end()) {
        AcceptFrom(fd);
        if (fatal_) return;
        continue;
      }
      // A duplicate: the connection was closed (by the peer or by gRPC).
      MutexLock lock(&mu_);
      Forget(fd);
    }
    if (absl::Now() >= next_idle_check) {
      CloseIdleUnauthenticated();
      next_idle_check = absl::Now() + absl::Seconds(1);
    }
    // Out of buffers or memory: accepting again at once would spin.
    if (!paused && accept_backoff_) {
      accept_backoff_ = false;
      paused = true;
      paused_until = absl::Now() + absl::Milliseconds(100);
      for (int lfd : listen_fds_) ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, lfd, nullptr);
    }
  }
}

void Listener::AcceptFrom(int listen_fd) {
  for (int i = 0; i < kAcceptsPerWakeup; ++i) {
    int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      Admit(listen_fd, fd);
      continue;
    }
    const int err = errno;
    switch (err) {
      case EAGAIN:
        return;
      case EINTR:
      case ECONNABORTED:
      case EPROTO:
      case EPERM:  // a firewall rule refused it
        continue;
      case EMFILE:
      case ENFILE: {
        // Out of descriptors: the pending connection would keep the
        // listener readable (a busy loop) and its client waiting. Use the
        // reserve to take it and close it; the client sees the refusal.
        Refusals().Refuse(Refusal::kAcceptError, "(not yet accepted)",
                          absl::StrCat("accept: ", strerror(err),
                                       "; connection closed (raise the open-file limit or lower "
                                       "--max-connections)"));
        if (reserve_fd_ >= 0) {
          ::close(reserve_fd_);
          reserve_fd_ = -1;
          int taken = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
          if (taken >= 0) ::close(taken);
          reserve_fd_ = OpenReserve();
          continue;
        }
        accept_backoff_ = true;
        return;
      }
      case ENOBUFS:
      case ENOMEM:
        Refusals().Refuse(Refusal::kAcceptError, "(not yet accepted)",
                          absl::StrCat("accept: ", strerror(err), "; pausing 100 ms"));
        accept_backoff_ = true;
        return;
      default:
        Fatal(absl::InternalError(
            absl::StrCat("listener: accept failed: ", strerror(err), "; cannot serve")));
        return;
    }
  }
}

void Listener::Admit(int listen_fd, int fd) {
  sockaddr_storage peer{};
  socklen_t len = sizeof peer;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) != 0) {
    ::close(fd);  // already gone
    return;
  }
  const auto [ip, port] = AddressOf(reinterpret_cast<sockaddr*>(&peer));
  const std::string key = absl::StrCat(ip, "|", port);
  const std::string shown = peer.ss_family == AF_INET6 ? absl::StrCat("[", ip, "]:", port)
                                                       : absl::StrCat(ip, ":", port);
  {
    MutexLock lock(&mu_);
    if (stopping_) {
      ::close(fd);
      return;
    }
    if (conns_.size() >= max_connections_) {
      ::close(fd);
      Refusals().Refuse(Refusal::kConnectionCap, shown,
                        absl::StrCat(conns_.size(), " connections open; the limit is ",
                                     max_connections_));
      return;
    }
    if (unauthenticated_ >= options_.max_unauthenticated ||
        unauthenticated_by_ip_[ip] >= options_.max_unauthenticated_per_ip) {
      const size_t from_ip = unauthenticated_by_ip_[ip];
      if (from_ip == 0) unauthenticated_by_ip_.erase(ip);
      ::close(fd);
      Refusals().Refuse(Refusal::kUnauthenticatedCap, shown,
                        absl::StrCat(unauthenticated_.load(), " unauthenticated connections (", from_ip,
                                     " from this address); the limits are ",
                                     options_.max_unauthenticated, " and ",
                                     options_.max_unauthenticated_per_ip, " per address"));
      return;
    }
    const int dup_fd = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup_fd < 0) {
      ::close(fd);
      Refusals().Refuse(Refusal::kAcceptError, shown,
                        absl::StrCat("dup: ", strerror(errno), "; connection closed"));
      return;
    }
    epoll_event ev{};
    ev.events = EPOLLRDHUP;  // plus EPOLLHUP/EPOLLERR, always reported
    ev.data.fd = dup_fd;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, dup_fd, &ev) != 0) {
      ::close(dup_fd);
      ::close(fd);
      Refusals().Refuse(Refusal::kAcceptError, shown,
                        absl::StrCat("epoll: ", strerror(errno), "; connection closed"));
      return;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    const absl::Time now = absl::Now();
    conns_[dup_fd] = Conn{key, ip, now, false};
    by_key_[key] = dup_fd;
    unauthenticated_.fetch_add(1, std::memory_order_relaxed);
    ++unauthenticated_by_ip_[ip];
    pending_.push_back(Pending{now + options_.unauthenticated_timeout, dup_fd, key});
  }
  grpc::experimental::ExternalConnectionAcceptor::NewConnectionParameters params;
  params.listener_fd = listen_fd;
  params.fd = fd;
  acceptor_->HandleNewConnection(&params);
}

void Listener::Forget(int dup_fd) {
  auto it = conns_.find(dup_fd);
  if (it == conns_.end()) return;
  const Conn& conn = it->second;
  if (!conn.authenticated) Uncount(conn);
  auto k = by_key_.find(conn.key);
  if (k != by_key_.end() && k->second == dup_fd) by_key_.erase(k);
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, dup_fd, nullptr);
  ::close(dup_fd);
  conns_.erase(it);
}

void Listener::Uncount(const Conn& conn) {
  unauthenticated_.fetch_sub(1, std::memory_order_relaxed);
  auto ip = unauthenticated_by_ip_.find(conn.ip);
  if (ip != unauthenticated_by_ip_.end() && --ip->second == 0) unauthenticated_by_ip_.erase(ip);
}

void Listener::MarkAuthenticated(absl::string_view peer) {
  // Every connection authenticated already (the usual case): nothing to
  // look up. A connection accepted meanwhile is counted before gRPC sees
  // it, so its first call never misses this.
  if (unauthenticated_.load(std::memory_order_relaxed) == 0) return;
  const std::string key = PeerKey(peer);
  if (key.empty()) return;
  MutexLock lock(&mu_);
  auto k = by_key_.find(key);
  if (k == by_key_.end()) return;
  auto it = conns_.find(k->second);
  if (it == conns_.end() || it->second.authenticated) return;
  it->second.authenticated = true;
  Uncount(it->second);
}

void Listener::CloseIdleUnauthenticated() {
  const absl::Time now = absl::Now();
  MutexLock lock(&mu_);
  while (!pending_.empty() && pending_.front().deadline <= now) {
    const Pending p = pending_.front();
    pending_.pop_front();
    auto it = conns_.find(p.dup_fd);
    // Gone, authenticated, or the descriptor now belongs to a newer one.
    if (it == conns_.end() || it->second.authenticated || it->second.key != p.key) continue;
    const std::string& ip = it->second.ip;
    Refusals().Refuse(Refusal::kIdleUnauthenticated, ip,
                      absl::StrCat("no authenticated call within ",
                                   absl::FormatDuration(options_.unauthenticated_timeout)));
    // gRPC's descriptor is the same socket: it sees the connection end.
    ::shutdown(p.dup_fd, SHUT_RDWR);
    Forget(p.dup_fd);
  }
}

void Listener::Fatal(absl::Status status) {
  fatal_ = true;
  LogError("%s", status.message());
  if (options_.on_fatal) options_.on_fatal(std::move(status));
}

size_t Listener::connections() {
  MutexLock lock(&mu_);
  return conns_.size();
}

size_t Listener::unauthenticated() { return unauthenticated_.load(std::memory_order_relaxed); }

}  // namespace taskq
