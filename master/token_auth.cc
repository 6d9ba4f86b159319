#include "master/token_auth.h"

#include <grpc/grpc_security_constants.h>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "common/auth.h"
#include "master/refusals.h"
#include "common/x509.h"

namespace taskq {

grpc::Status RefuseUnauthenticated(bool had_token, absl::string_view peer) {
  Refusals().Refuse(had_token ? Refusal::kWrongToken : Refusal::kNoToken, peer,
                    had_token ? "wrong token" : "no token");
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                      had_token ? "unknown token: use a credential's token (taskq credential "
                                  "create) or the master's token file (--token-file)"
                                : "missing token: send 'authorization: Bearer <token>' (taskq "
                                  "reads it from --join, --token-file or TASKQ_TOKEN_FILE)");
}

absl::StatusOr<CredentialTable::Principal> AuthenticateCall(
    const CredentialTable& credentials,
    const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
    const grpc::AuthContext* context) {
  if (auto it = metadata.find(kAuthMetadataKey); it != metadata.end()) {
    absl::string_view value(it->second.data(), it->second.size());
    if (!absl::ConsumePrefix(&value, kBearerPrefix)) {
      return absl::UnauthenticatedError(
          "the authorization header is not 'Bearer <token>'");
    }
    auto who = credentials.AuthenticateToken(value);
    if (!who.ok() && who.status().message() == "unknown token") {
      return absl::UnauthenticatedError(
          RefuseUnauthenticated(true, "a connection").error_message());
    }
    return who;
  }
  if (context != nullptr) {
    auto certs = context->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME);
    if (!certs.empty()) {
      auto fingerprint =
          CertificateSha256Hex(absl::string_view(certs.front().data(), certs.front().size()));
      if (!fingerprint.ok()) return absl::UnauthenticatedError("unreadable client certificate");
      return credentials.AuthenticateCertificate(*fingerprint);
    }
  }
  return absl::UnauthenticatedError(RefuseUnauthenticated(false, "a connection").error_message());
}

grpc::Status CredentialAuthProcessor::Process(const InputMetadata& metadata,
                                              grpc::AuthContext* context, OutputMetadata*,
                                              OutputMetadata*) {
  auto who = AuthenticateCall(*credentials_, metadata, context);
  if (!who.ok()) {
    // gRPC gives the processor no peer address; the refusal is counted and
    // the listener closes the connection if it never authenticates.
    if (audit_ != nullptr) audit_->Record({"authenticate", "", "", "", "", who.status()});
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, std::string(who.status().message()));
  }
  // No auth-context property naming the credential: in gRPC 1.51 the
  // context a processor gets is the connection's, shared by every call on
  // it, so a property would name the first caller for all of them (and grow
  // by one per call). The service authenticates the same headers again.
  return grpc::Status::OK;
}

}  // namespace taskq
