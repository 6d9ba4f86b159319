#include "common/call_retry.h"

#include <algorithm>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "common/tls_probe.h"

namespace taskq {

bool MasterAnswered(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable: {
      // The master's own UNAVAILABLE answers (a store that cannot commit)
      // say what happened; anything else is the connection's. "master is
      // shutting down" is the master's too, but it did nothing: it counts
      // as not answered (MasterShuttingDown).
      const absl::string_view m = status.message();
      return absl::StrContains(m, "outcome unknown") || absl::StrContains(m, "store I/O error");
    }
    case absl::StatusCode::kDeadlineExceeded:
      // gRPC's own deadline on this side says just this; the master's
      // "empty"/"full"/"join timed out" answers say more.
      return status.message() != "Deadline Exceeded";
    case absl::StatusCode::kCancelled:
      return false;
    default:
      return true;
  }
}

bool NeverReachedMaster(const absl::Status& status) {
  if (!absl::IsUnavailable(status)) return false;
  const absl::string_view m = status.message();
  return absl::StrContains(m, "failed to connect") || absl::StrContains(m, "Failed to connect") ||
         absl::StrContains(m, "DNS resolution failed") ||
         absl::StrContains(m, "Connection refused") ||
         absl::StrContains(m, "Handshake") || absl::StrContains(m, "handshake") ||
         absl::StrContains(m, "before receiving SETTINGS frame");
}

bool MasterShuttingDown(const absl::Status& status) {
  return absl::IsUnavailable(status) &&
         absl::StrContains(status.message(), "master is shutting down");
}

TlsRefusal ClassifyTlsRefusal(const absl::Status& status) {
  if (!absl::IsUnavailable(status)) return TlsRefusal::kNone;
  const absl::string_view m = status.message();
  if (absl::StrContains(m, "certificate verify failed") ||
      absl::StrContains(m, "CERTIFICATE_VERIFY_FAILED")) {
    return TlsRefusal::kUntrustedCertificate;
  }
  if (absl::StrContains(m, "Peer name") && absl::StrContains(m, "is not in peer certificate")) {
    return TlsRefusal::kWrongName;
  }
  // SSL_ERROR_SSL is OpenSSL's protocol error; a cut or slow link shows as
  // SSL_ERROR_SYSCALL or "Handshake read failed" instead.
  if (absl::StrContains(m, "SSL_ERROR_SSL")) return TlsRefusal::kHandshakeRefused;
  // Closed while connecting (not a call cut on an open connection).
  if (absl::StrContains(m, "failed to connect to all addresses") &&
      absl::StrContains(m, "Socket closed")) {
    const std::string address = AddressInMessage(m);
    if (!address.empty() && SpeaksTls(address, absl::Seconds(2))) return TlsRefusal::kMasterWantsTls;
  }
  return TlsRefusal::kNone;
}

bool ShouldRetry(Retry retry, const absl::Status& status) {
  if (!absl::IsUnavailable(status) || retry == Retry::kNever) return false;
  if (ClassifyTlsRefusal(status) != TlsRefusal::kNone) return false;
  switch (retry) {
    case Retry::kNever: return false;
    case Retry::kIfNotSent: return NeverReachedMaster(status) || MasterShuttingDown(status);
    case Retry::kAlways: return true;
  }
  return false;
}

absl::Duration RetryBackoff(int attempt) {
  absl::Duration d = absl::Milliseconds(100);
  for (int i = 1; i < attempt && d < absl::Seconds(2); ++i) d *= 2;
  d = std::min(d, absl::Seconds(2));
  thread_local absl::BitGen gen;
  return d * absl::Uniform(gen, 0.5, 1.0);
}

Reachability::Reachability(std::function<void(const absl::Status&)> on_unreachable,
                           std::function<void()> on_reachable)
    : on_unreachable_(std::move(on_unreachable)), on_reachable_(std::move(on_reachable)) {}

void Reachability::Unreachable(const absl::Status& status) {
  {
    MutexLock lock(&mu_);
    if (unreachable_) return;
    unreachable_ = true;
  }
  if (on_unreachable_) on_unreachable_(status);
}

void Reachability::Reachable() {
  {
    MutexLock lock(&mu_);
    if (!unreachable_) return;
    unreachable_ = false;
  }
  if (on_reachable_) on_reachable_();
}

}  // namespace taskq
