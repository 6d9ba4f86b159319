// TokenAuthProcessor: checks the bearer token when a call's headers arrive,
// inside gRPC, before its request message is read. A call without the
// right token is refused there with UNAUTHENTICATED, so an unauthenticated
// client cannot make the master buffer request bodies (a 64 MiB message
// announced and sent slowly, many times over).
//
// gRPC 1.51 runs auth metadata processors only for secure server
// credentials: TLS, and the local (loopback) credentials the master uses
// for plaintext on a loopback address. Plaintext on another address
// (--insecure) checks the token in the service after the message is read,
// bounded by the message size cap, the gRPC memory quota and the
// listener's unauthenticated-connection timeout.
//
// Thread-safety: Process is called from gRPC's threads concurrently; the
// object is immutable after construction.
#pragma once

#include <string>

#include <grpcpp/security/auth_metadata_processor.h>

#include "absl/strings/string_view.h"

namespace taskq {

class TokenAuthProcessor final : public grpc::AuthMetadataProcessor {
 public:
  explicit TokenAuthProcessor(std::string token) : token_(std::move(token)) {}

  // A constant-time comparison: cheap enough for gRPC's own thread.
  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata& metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed, OutputMetadata* response) override;

 private:
  const std::string token_;
};

// The refusal (UNAUTHENTICATED, with what to do) for a call that sent no
// token, or a wrong one; counted in Refusals() for `peer`.
grpc::Status RefuseUnauthenticated(bool had_token, absl::string_view peer);

}  // namespace taskq
