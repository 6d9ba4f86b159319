#include "master/token_auth.h"

#include "absl/strings/string_view.h"
#include "common/auth.h"
#include "master/refusals.h"

namespace taskq {

grpc::Status RefuseUnauthenticated(bool had_token, absl::string_view peer) {
  Refusals().Refuse(had_token ? Refusal::kWrongToken : Refusal::kNoToken, peer,
                    had_token ? "wrong token" : "no token");
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                      had_token ? "wrong token: use the master's token file (--token-file)"
                                : "missing token: send 'authorization: Bearer <token>' (taskq "
                                  "reads it from --token-file or TASKQ_TOKEN_FILE)");
}

grpc::Status TokenAuthProcessor::Process(const InputMetadata& metadata,
                                         grpc::AuthContext*, OutputMetadata*,
                                         OutputMetadata*) {
  auto it = metadata.find(kAuthMetadataKey);
  if (it != metadata.end() &&
      BearerMatches(absl::string_view(it->second.data(), it->second.size()), token_)) {
    return grpc::Status::OK;
  }
  // gRPC gives the processor no peer address; the refusal is counted and
  // the listener closes the connection if it never authenticates.
  const std::string peer = "a connection (refused at the headers)";
  return RefuseUnauthenticated(it != metadata.end(), peer);
}

}  // namespace taskq
