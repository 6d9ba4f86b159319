// A join bundle: one file holding everything a worker or the CLI needs to
// reach a master securely — the master's address(es), the CA certificate,
// and a credential (a token, or a client certificate and its key). Format:
// protobuf text format of taskq.v1.JoinBundle (proto/taskq/v1/join_bundle.proto).
//
//   taskq credential create w1 --role worker --queues tasks --bundle w1.join
//   taskq-worker --join w1.join
//
// The file holds a secret, so it is written mode 0600 (atomically: a
// reader never sees half a bundle) and refused when group or others may
// read it, like a token file (common/auth.h).
//
// Thread-safety: stateless functions, safe from any thread.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/channel.h"
#include "taskq/v1/join_bundle.pb.h"

namespace taskq {

// A bundle larger than this is refused before parsing (a CA, a certificate
// chain and a key fit in a few KiB).
inline constexpr size_t kMaxJoinBundleBytes = 256 * 1024;

// Reads and validates a bundle. Errors (each names the path):
//   NOT_FOUND           the file does not exist;
//   FAILED_PRECONDITION readable by group/others (with the chmod 600 hint),
//                       or unreadable;
//   INVALID_ARGUMENT    too large, not a JoinBundle in text format, or
//                       invalid (see ValidateJoinBundle).
absl::StatusOr<v1::JoinBundle> ReadJoinBundle(const std::string& path);

// Validates, then writes the bundle mode 0600 via a temporary file in the
// same directory, fsync and rename, so an existing bundle is replaced
// whole or not at all.
absl::Status WriteJoinBundle(const std::string& path, const v1::JoinBundle& bundle);

// INVALID_ARGUMENT unless the bundle names at least one master and holds a
// credential: a token, or a client certificate together with its key
// (one of the pair alone is refused).
absl::Status ValidateJoinBundle(const v1::JoinBundle& bundle);

// Fills what explicit flags left empty from the bundle, so flags win:
//   masters         unless `master` or `masters` is set;
//   tls_ca_pem      unless tls_ca_file or tls_ca_pem is set;
//   tls_server_name unless set;
//   the credential  (token, or client certificate + key) unless a token,
//                   token_file or client certificate is set: a credential
//                   is taken whole from one place, never mixed.
// A bundle always means TLS.
void ApplyJoinBundle(const v1::JoinBundle& bundle, ConnectOptions* options);

// ReadJoinBundle + ApplyJoinBundle; the path empty = no bundle (nothing
// changes). The error names the path and, for a bad mode, the fix.
absl::Status ApplyJoinBundleFile(const std::string& path, ConnectOptions* options);

}  // namespace taskq
