// Refusals: counts everything the master turns away (calls without a valid
// token, malformed requests, connections over a cap or idle without
// authenticating) and logs them without letting a flood of refusals become
// a flood of log lines: the first refusal of each kind is logged at once,
// later ones at most once per interval as one summary line ("N more in the
// last 10 s, M since start, last from PEER"). Never logs a credential.
//
// Process-wide (Refusals()), because the connection listener, the auth
// processor and the service all refuse things.
//
// Thread-safety: Refuse and Count are safe from any thread; the hot path is
// one atomic increment plus a relaxed time check.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/sync.h"

namespace taskq {

enum class Refusal {
  kNoToken,              // a call without a token
  kWrongToken,           // a call with a token that does not match
  kMalformed,            // a request that is not a valid message
  kConnectionCap,        // a connection over --max-connections
  kUnauthenticatedCap,   // a connection over the caps on unauthenticated ones
  kIdleUnauthenticated,  // a connection closed for not authenticating in time
  kAcceptError,          // accept() failed (fd or memory exhaustion)
  kPermissionDenied,     // a credential's role or queues do not allow the call
};
inline constexpr size_t kRefusalKinds = 8;

// What a refusal kind is called in logs ("calls without a token", ...).
absl::string_view RefusalName(Refusal kind);

class RefusalLog {
 public:
  explicit RefusalLog(absl::Duration interval = absl::Seconds(10)) : interval_(interval) {}

  // Counts one refusal and maybe logs it (`peer` is gRPC's peer string or
  // an address; `detail` must not contain a secret).
  void Refuse(Refusal kind, absl::string_view peer, absl::string_view detail);
  // Refusals of this kind since start.
  uint64_t Count(Refusal kind) const;

 private:
  struct PerKind {
    std::atomic<uint64_t> total{0};
    // Refusals since the last line, and when that line was written.
    std::atomic<uint64_t> unlogged{0};
    std::atomic<int64_t> last_line_ns{0};
  };
  const absl::Duration interval_;
  std::array<PerKind, kRefusalKinds> kinds_;
  Mutex mu_;  // one summary line at a time
};

// The master's refusal log.
RefusalLog& Refusals();

// Sends libprotobuf's own log lines (e.g. "invalid UTF-8 in a string
// field" for every malformed request) to the master's log, at most one per
// 10 s; the requests themselves are counted as malformed by the service.
void RouteProtobufLogs();

}  // namespace taskq
