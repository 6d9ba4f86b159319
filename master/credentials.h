// CredentialTable: the master's credentials — who may call it, with which
// role (master/roles.h) and on which queues — kept in <data-dir>/credentials
// (StoredCredentials, mode 0600, written whole: temp file, fsync, rename).
//
// A token credential is `tq1.<id>.<secret>`: id is 16 lowercase hex chars
// (public, the lookup key), secret 43 base64url chars (256 random bits). The
// table stores only a 16-byte random salt and SHA-256(salt || secret) and
// compares in constant time. A certificate credential is a client
// certificate signed by the master's CA; the table stores its SHA-256 (DER,
// hex) and the master authenticates a verified client certificate by it.
// The master's --token-file token, when given, is an admin credential named
// "master-token" (kind MASTER_TOKEN): listed, never stored, not revocable.
//
// Revoked credentials stay in the file (revoked_unix_ms set) so a later use
// is reported as "was revoked", not "unknown token".
//
// Statuses: AuthenticateToken/Certificate return UNAUTHENTICATED
// (`unknown token`, `credential "w1" expired at ...`, `credential "w1" was
// revoked`); Create returns INVALID_ARGUMENT for a bad name, role, pattern or
// key, ALREADY_EXISTS for a name in use (revoked names stay taken),
// RESOURCE_EXHAUSTED past the credential limit, FAILED_PRECONDITION for a
// certificate without a CA; Revoke returns NOT_FOUND or FAILED_PRECONDITION
// (the master token). A failed write of the file leaves the table unchanged.
//
// Thread-safety: every method is safe from any thread (one Mutex). OnRevoked
// listeners run on the revoking thread after the lock is released.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/sync.h"
#include "taskq/v1/stored.pb.h"
#include "taskq/v1/taskq.pb.h"

namespace taskq {

struct KeyAndCert;  // common/x509.h

// The master token's credential name.
inline constexpr char kMasterTokenCredential[] = "master-token";
// Limits on what a client (an admin) controls.
inline constexpr size_t kMaxCredentialNameBytes = 64;
inline constexpr size_t kMaxCredentialPatterns = 64;
inline constexpr size_t kMaxCredentialPatternBytes = 256;
inline constexpr size_t kMaxCredentials = 10000;

class CredentialTable {
 public:
  // Loads `path` (a missing file is an empty table; a file readable by
  // group/others is refused, FAILED_PRECONDITION). `master_token` may be
  // empty (no master-token credential).
  static absl::StatusOr<std::unique_ptr<CredentialTable>> Open(std::string path,
                                                               std::string master_token);

  // Who a call is: the credential's current role and patterns.
  struct Principal {
    std::string name;
    v1::Role role = v1::ROLE_UNSPECIFIED;
    std::vector<std::string> queues;
    v1::CredentialKind kind = v1::CREDENTIAL_KIND_UNSPECIFIED;
  };

  absl::StatusOr<Principal> AuthenticateToken(absl::string_view token) const;
  absl::StatusOr<Principal> AuthenticateCertificate(absl::string_view sha256_hex) const;
  // The credential by name, UNAUTHENTICATED if it is unknown, expired or
  // revoked (a call authenticated before a revocation is refused by it).
  absl::StatusOr<Principal> Find(absl::string_view name) const;

  // Makes a credential (a token, or with req.public_key_pem a certificate
  // signed by `ca`) and saves the file. ca_pem/join_addresses are left for
  // the caller to fill.
  absl::StatusOr<v1::CreateCredentialResponse> Create(const v1::CreateCredentialRequest& req,
                                                      absl::string_view created_by,
                                                      const KeyAndCert* ca /* null: no CA, certs refused */);
  absl::Status Revoke(absl::string_view name);
  std::vector<v1::CredentialInfo> List(bool include_revoked) const;
  // Called with the name after each successful Revoke.
  void OnRevoked(std::function<void(const std::string& name)> listener);

  // Tests: the clock (unix ms) used for expiry and timestamps.
  void SetClockForTest(std::function<int64_t()> now_unix_ms);

 private:
  CredentialTable(std::string path, std::string master_token);

  // UNAUTHENTICATED if `c` is revoked or expired, else its Principal.
  absl::StatusOr<Principal> Usable(const v1::StoredCredential& c) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes `next` to the file (temp, fsync, rename, fsync the directory)
  // and, once it is there, makes it the table.
  absl::Status CommitLocked(v1::StoredCredentials next) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void IndexLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int64_t NowMsLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;
  const std::string master_token_;
  // State below is protected by mu_.
  mutable Mutex mu_;
  v1::StoredCredentials stored_ ABSL_GUARDED_BY(mu_);
  // Indexes into stored_.credentials(): by name, token id, certificate hash.
  absl::flat_hash_map<std::string, int> by_name_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, int> by_token_id_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, int> by_certificate_ ABSL_GUARDED_BY(mu_);
  std::vector<std::function<void(const std::string&)>> listeners_ ABSL_GUARDED_BY(mu_);
  std::function<int64_t()> clock_ ABSL_GUARDED_BY(mu_);
};

// Checks a credential name (1-64 of [A-Za-z0-9_.-]); INVALID_ARGUMENT.
absl::Status ValidateCredentialName(absl::string_view name);
// Checks queue patterns (1..kMaxCredentialPatterns, each non-empty, at most
// kMaxCredentialPatternBytes, printable); INVALID_ARGUMENT.
absl::Status ValidateQueuePatterns(const std::vector<std::string>& patterns);
// "admin", "producer", "worker", "reader" (or "unspecified").
std::string RoleName(v1::Role role);

}  // namespace taskq
