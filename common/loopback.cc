#include "common/loopback.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>

#include "absl/strings/str_cat.h"

namespace taskq {

bool IsLoopbackAddress(const sockaddr* sa) {
  if (sa->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
  }
  if (sa->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr)) return true;
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) return in6->sin6_addr.s6_addr[12] == 127;
  }
  return false;
}

absl::StatusOr<bool> ResolvesToLoopbackOnly(const std::string& host, const std::string& flag) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &found); rc != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot resolve ", flag, " host \"", host, "\": ", gai_strerror(rc)));
  }
  bool loopback = true;
  for (addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    loopback = loopback && IsLoopbackAddress(ai->ai_addr);
  }
  ::freeaddrinfo(found);
  return loopback;
}

}  // namespace taskq
