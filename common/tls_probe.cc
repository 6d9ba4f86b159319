#include "common/tls_probe.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace taskq {

namespace {

void Put16(std::string* out, unsigned v) {
  out->push_back(static_cast<char>(v >> 8));
  out->push_back(static_cast<char>(v & 0xff));
}

// `body` after its length in `bytes` bytes.
std::string WithLength(const std::string& body, int bytes) {
  std::string out;
  for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<char>((body.size() >> (8 * i)) & 0xff));
  return out + body;
}

std::string Bytes(std::initializer_list<unsigned> bytes) {
  std::string out;
  for (unsigned b : bytes) out.push_back(static_cast<char>(b));
  return out;
}

// A ClientHello a TLS 1.2 or 1.3 server goes on with (a ServerHello or a
// HelloRetryRequest): AES-GCM suites, P-256/X25519, ECDSA and RSA
// signatures, an empty key share. It must be acceptable: gRPC's server
// closes a failed handshake without sending its alert.
std::string ClientHello() {
  std::string hello = Bytes({0x03, 0x03});  // legacy_version TLS 1.2
  for (int i = 0; i < 32; ++i) hello.push_back(static_cast<char>(i * 7 + 1));  // random
  hello.push_back(0);  // no session id
  std::string suites;
  for (unsigned s : {0x1301u, 0x1302u, 0xc02bu, 0xc02fu, 0xc02cu, 0xc030u}) Put16(&suites, s);
  hello += WithLength(suites, 2);
  hello += Bytes({0x01, 0x00});  // compression: null
  std::string ext;
  auto add_ext = [&ext](unsigned type, const std::string& data) {
    Put16(&ext, type);
    ext += WithLength(data, 2);
  };
  add_ext(0x002b, Bytes({0x04, 0x03, 0x04, 0x03, 0x03}));                    // supported_versions
  add_ext(0x000a, Bytes({0x00, 0x04, 0x00, 0x1d, 0x00, 0x17}));              // supported_groups
  add_ext(0x000b, Bytes({0x01, 0x00}));                                      // ec_point_formats
  add_ext(0x000d, Bytes({0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01}));  // signature_algorithms
  // No key share yet: a TLS 1.3 server asks for one (HelloRetryRequest).
  add_ext(0x0033, Bytes({0x00, 0x00}));                                      // key_share
  hello += WithLength(ext, 2);
  const std::string handshake = Bytes({0x01}) + WithLength(hello, 3);  // client_hello
  return Bytes({0x16, 0x03, 0x01}) + WithLength(handshake, 2);         // handshake record
}

bool ParseAddress(absl::string_view address, sockaddr_storage* out, socklen_t* len) {
  const bool v6 = absl::ConsumePrefix(&address, "ipv6:");
  if (!v6 && !absl::ConsumePrefix(&address, "ipv4:")) return false;
  const size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos) return false;
  absl::string_view host = address.substr(0, colon);
  int port = 0;
  if (!absl::SimpleAtoi(address.substr(colon + 1), &port) || port <= 0 || port > 65535) return false;
  std::memset(out, 0, sizeof *out);
  if (v6) {
    if (!absl::ConsumePrefix(&host, "[") || !absl::ConsumeSuffix(&host, "]")) return false;
    // A scoped address (fe80::1%eth0) is not probed.
    auto* a = reinterpret_cast<sockaddr_in6*>(out);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET6, std::string(host).c_str(), &a->sin6_addr) != 1) return false;
    *len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(out);
    a->sin_family = AF_INET;
    a->sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, std::string(host).c_str(), &a->sin_addr) != 1) return false;
    *len = sizeof *a;
  }
  return true;
}

// Waits for `events` on `fd` until `deadline`.
bool WaitFd(int fd, short events, absl::Time deadline) {
  for (;;) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return false;
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return false;
  }
}

}  // namespace

std::string AddressInMessage(absl::string_view message) {
  size_t pos = absl::string_view::npos;
  for (const char* prefix : {"ipv4:", "ipv6:"}) {
    const size_t p = message.rfind(prefix);
    if (p != absl::string_view::npos && (pos == absl::string_view::npos || p > pos)) pos = p;
  }
  if (pos == absl::string_view::npos) return "";
  const size_t end = message.find(": ", pos);
  return std::string(message.substr(pos, end == absl::string_view::npos ? message.size() - pos
                                                                        : end - pos));
}

bool SpeaksTls(absl::string_view address, absl::Duration timeout) {
  sockaddr_storage addr;
  socklen_t addr_len = 0;
  if (!ParseAddress(address, &addr, &addr_len)) return false;
  const absl::Time deadline = absl::Now() + timeout;
  const int fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  bool tls = false;
  do {
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), addr_len) != 0) {
      if (errno != EINPROGRESS || !WaitFd(fd, POLLOUT, deadline)) break;
      int err = 0;
      socklen_t err_len = sizeof err;
      if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &err_len) != 0 || err != 0) break;
    }
    const std::string hello = ClientHello();
    if (::send(fd, hello.data(), hello.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(hello.size())) {
      break;
    }
    uint8_t answer[2];
    size_t got = 0;
    while (got < sizeof answer && WaitFd(fd, POLLIN, deadline)) {
      const ssize_t n = ::recv(fd, answer + got, sizeof answer - got, 0);
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    // A handshake (22) or alert (21) record of TLS major version 3.
    tls = got == sizeof answer && (answer[0] == 0x16 || answer[0] == 0x15) && answer[1] == 0x03;
  } while (false);
  ::close(fd);
  return tls;
}

}  // namespace taskq
