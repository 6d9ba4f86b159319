// A blocking TCP client connection with a read buffer, for the native
// protocol clients of bench/compare.sh (redis's RESP, beanstalkd's text
// protocol). Nagle is off (TCP_NODELAY): every command is one write.
//
// Thread-safety: one connection per thread; not safe to share.
#pragma once

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace taskq::bench {

class TcpConn {
 public:
  // Connects to "HOST:PORT".
  static absl::StatusOr<TcpConn> Connect(const std::string& address) {
    size_t colon = address.rfind(':');
    if (colon == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("'", address, "' is not HOST:PORT"));
    }
    std::string host = address.substr(0, colon), port = address.substr(colon + 1);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (int err = getaddrinfo(host.c_str(), port.c_str(), &hints, &found); err != 0) {
      return absl::UnavailableError(absl::StrCat(address, ": ", gai_strerror(err)));
    }
    int fd = -1;
    int last_errno = 0;
    for (addrinfo* a = found; a != nullptr && fd < 0; a = a->ai_next) {
      fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
      if (fd < 0) continue;
      if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
        last_errno = errno;
        close(fd);
        fd = -1;
      }
    }
    freeaddrinfo(found);
    if (fd < 0) {
      return absl::UnavailableError(absl::StrCat("connect ", address, ": ",
                                                 std::strerror(last_errno)));
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return TcpConn(fd);
  }

  TcpConn(TcpConn&& other) noexcept : fd_(other.fd_), buffer_(std::move(other.buffer_)),
                                      start_(other.start_) {
    other.fd_ = -1;
  }
  TcpConn& operator=(TcpConn&&) = delete;
  ~TcpConn() {
    if (fd_ >= 0) close(fd_);
  }

  absl::Status WriteAll(absl::string_view data) {
    while (!data.empty()) {
      ssize_t n = send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        return absl::UnavailableError(absl::StrCat("send: ", std::strerror(errno)));
      }
      data.remove_prefix(static_cast<size_t>(n));
    }
    return absl::OkStatus();
  }

  // The next line, without its "\r\n".
  absl::StatusOr<std::string> ReadLine() {
    for (;;) {
      size_t end = buffer_.find("\r\n", start_);
      if (end != std::string::npos) {
        std::string line = buffer_.substr(start_, end - start_);
        start_ = end + 2;
        return line;
      }
      if (absl::Status s = Fill(); !s.ok()) return s;
    }
  }

  // Exactly `n` bytes, then the "\r\n" that follows them.
  absl::StatusOr<std::string> ReadBlock(size_t n) {
    while (buffer_.size() - start_ < n + 2) {
      if (absl::Status s = Fill(); !s.ok()) return s;
    }
    std::string block = buffer_.substr(start_, n);
    if (buffer_.compare(start_ + n, 2, "\r\n") != 0) {
      return absl::DataLossError("a data block does not end in CRLF");
    }
    start_ += n + 2;
    return block;
  }

 private:
  explicit TcpConn(int fd) : fd_(fd) {}

  // Reads what is there (at least one byte) after the unread part.
  absl::Status Fill() {
    if (start_ > 0) {
      buffer_.erase(0, start_);
      start_ = 0;
    }
    size_t old = buffer_.size();
    buffer_.resize(old + 65536);
    ssize_t n;
    do {
      n = recv(fd_, buffer_.data() + old, 65536, 0);
    } while (n < 0 && errno == EINTR);
    buffer_.resize(old + static_cast<size_t>(n > 0 ? n : 0));
    if (n == 0) return absl::UnavailableError("the server closed the connection");
    if (n < 0) return absl::UnavailableError(absl::StrCat("recv: ", std::strerror(errno)));
    return absl::OkStatus();
  }

  int fd_;
  std::string buffer_;
  size_t start_ = 0;  // buffer_[start_..] is not consumed yet
};

}  // namespace taskq::bench
