// When and how a client call is sent again after the master could not be
// reached (UNAVAILABLE: connection refused or lost, handshake failed, link
// cut, master restarting), and the one-line notices a person sees while it
// is unreachable.
//
// A call is only retried when sending it twice cannot do harm: reads, lease
// gets (a lost reply's lease lapses and the message comes again), acks,
// puts whose every task carries a dedup key. Calls that change state
// without such protection are retried only if the failure shows the
// request never left this host (the connection could not be made) or the
// master said it did nothing (it was shutting down).
//
// Thread-safety: Reachability is thread-safe; the functions are stateless.
#pragma once

#include <functional>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/sync.h"

namespace taskq {

enum class Retry {
  kNever,      // report UNAVAILABLE at once
  kIfNotSent,  // retry only if the request surely never reached the master
  kAlways,     // idempotent: retry until the call's deadline
};

// The status came from the master itself (an answer: the call was carried
// out or refused), not from a broken or missing connection, a deadline
// this side ran into, or a master shutting down.
bool MasterAnswered(const absl::Status& status);

// UNAVAILABLE because no connection could be made: the request was never
// sent.
bool NeverReachedMaster(const absl::Status& status);

// UNAVAILABLE "master is shutting down": the master's answer to a call it
// did not carry out, or whose change it had not stored when it stopped
// (lost with the restart). Sending it again to the restarted master is
// safe whatever the call.
bool MasterShuttingDown(const absl::Status& status);

// Why the TLS of a connection to the master was refused — something only
// the user can fix, so never retried. gRPC reports all of these as
// UNAVAILABLE, like a master that is down; what tells them apart is the
// message of the connect failure:
enum class TlsRefusal {
  kNone,
  // The master's certificate is not signed by the CA this client trusts
  // ("certificate verify failed").
  kUntrustedCertificate,
  // It is, but for other names ("Peer name X is not in peer certificate").
  kWrongName,
  // The handshake failed otherwise (SSL_ERROR_SSL): a TLS client to a
  // plaintext master ("wrong version number"), a client certificate the
  // master refused, no common protocol.
  kHandshakeRefused,
  // A plaintext client to a TLS master: gRPC says only "Socket closed" at
  // connect, as for a master at its connection limit; a probe
  // (common/tls_probe.h, up to 2 s) tells them apart.
  kMasterWantsTls,
};
// Timeouts and resets during a handshake ("Handshake read failed", slow or
// lossy links) are kNone: they are retried.
TlsRefusal ClassifyTlsRefusal(const absl::Status& status);

// Whether a call that failed with `status` may be sent again under `retry`.
// Never after a TlsRefusal.
bool ShouldRetry(Retry retry, const absl::Status& status);

// The wait before retry number `attempt` (1, 2, ...): 100 ms doubling to
// 2 s, with jitter (a random 50-100% of that).
absl::Duration RetryBackoff(int attempt);

// Tracks whether the master is reachable and tells the owner once per
// change: `on_unreachable(status)` when a call starts retrying, and
// `on_reachable()` when a later call gets an answer again.
class Reachability {
 public:
  Reachability(std::function<void(const absl::Status&)> on_unreachable,
               std::function<void()> on_reachable);
  void Unreachable(const absl::Status& status);
  void Reachable();

 private:
  const std::function<void(const absl::Status&)> on_unreachable_;
  const std::function<void()> on_reachable_;
  Mutex mu_;
  bool unreachable_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace taskq
