// CredentialAuthProcessor: authenticates a call when its headers arrive,
// inside gRPC, before its request message is read: a bearer token
// (CredentialTable::AuthenticateToken: a credential's `tq1.` token or the
// master token), or, without a token, the verified client certificate of a
// TLS connection (CredentialTable::AuthenticateCertificate by its SHA-256).
// A call without a usable credential is refused here with UNAUTHENTICATED,
// so an unauthenticated client cannot make the master buffer request
// bodies. The service authenticates the same headers again
// (AuthenticateCall) to learn the call's credential and its current role
// and queues, so a revocation applies to the next call: the auth context
// gRPC 1.51 hands a processor is the connection's, shared by all its calls,
// so it cannot carry a per-call credential name.
//
// gRPC 1.51 runs auth metadata processors only for secure server
// credentials: TLS, and the local (loopback) credentials the master uses
// for plaintext on a loopback address. Plaintext on another address
// (--insecure) authenticates in the service after the message is read,
// bounded by the message size cap, the gRPC memory quota and the
// listener's unauthenticated-connection timeout.
//
// Thread-safety: Process is called from gRPC's threads concurrently; the
// table and the audit log are thread-safe.
#pragma once

#include <string>

#include <grpcpp/security/auth_metadata_processor.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "master/audit_log.h"
#include "master/credentials.h"

namespace taskq {

class CredentialAuthProcessor final : public grpc::AuthMetadataProcessor {
 public:
  // `audit` may be null.
  CredentialAuthProcessor(const CredentialTable* credentials, AuditLog* audit)
      : credentials_(credentials), audit_(audit) {}

  // A hash and a table lookup: cheap enough for gRPC's own thread.
  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata& metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed, OutputMetadata* response) override;

 private:
  const CredentialTable* const credentials_;
  AuditLog* const audit_;
};

// Who sent this call: a token in `authorization` metadata, else the
// verified client certificate in `context` (may be null). UNAUTHENTICATED
// (with what to do) when neither names a usable credential.
absl::StatusOr<CredentialTable::Principal> AuthenticateCall(
    const CredentialTable& credentials,
    const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
    const grpc::AuthContext* context);

// The refusal (UNAUTHENTICATED, with what to do) for a call that sent no
// token, or a wrong one; counted in Refusals() for `peer`.
grpc::Status RefuseUnauthenticated(bool had_token, absl::string_view peer);

}  // namespace taskq
