// Loopback addresses: whether a socket address, or every address a host
// name resolves to, is a loopback one. Listeners use this to decide what
// "local only" means by the address, not by how it is spelled.
//
// Thread-safety: free functions, safe from any thread.
#pragma once

#include <sys/socket.h>

#include <string>

#include "absl/status/statusor.h"

namespace taskq {

// True for 127.0.0.0/8, ::1 and ::ffff:127.x.x.x.
bool IsLoopbackAddress(const sockaddr* sa);

// Whether every address `host` resolves to (passive, any family) is a
// loopback one. FAILED_PRECONDITION naming `flag` if it does not resolve.
absl::StatusOr<bool> ResolvesToLoopbackOnly(const std::string& host, const std::string& flag);

}  // namespace taskq
