// The credential RPCs of TaskQueueService (admin only, by the role table):
// create a token or certificate credential, list, revoke. Revoking ends the
// credential's waiting calls and Work streams (the table's OnRevoked
// listener, set in service.cc).

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/grpc_status.h"
#include "common/channel.h"
#include "common/log.h"
#include "common/read_file.h"
#include "master/service.h"
#include "master/tls_config.h"
#include "common/x509.h"

namespace taskq {
namespace {

// A file of the data dir's tls/, or nullopt if it cannot be read (a
// master without init has none).
std::optional<std::string> ReadTlsFile(const std::string& tls_dir, const char* name) {
  if (tls_dir.empty()) return std::nullopt;
  auto text = ReadFileToString(absl::StrCat(tls_dir, "/", name));
  return text.ok() ? std::optional<std::string>(*std::move(text)) : std::nullopt;
}


}  // namespace

void TaskQueueService::HandleCreateCredential(
    UnaryCall<v1::CreateCredentialRequest, v1::CreateCredentialResponse>* call,
    const Principal& who) {
  const v1::CreateCredentialRequest& req = call->request();
  const std::string tls = security_.tls_dir;
  std::optional<std::string> ca_pem = ReadTlsFile(tls, kCaCertFile);
  absl::StatusOr<v1::CreateCredentialResponse> made;
  std::optional<KeyAndCert> ca;
  if (!req.public_key_pem().empty() && ca_pem) {
    if (auto key = ReadTlsFile(tls, kCaKeyFile)) ca = KeyAndCert{*std::move(key), *ca_pem};
  }
  made = security_.credentials->Create(req, who.name, ca ? &*ca : nullptr);
  AuditAction(call->context(), who, "CreateCredential", req.name(), made.status());
  if (!made.ok()) return call->Reply(ToGrpcStatus(made.status()));
  LogInfo("credential \"%s\" (role %s) created by \"%s\"", req.name(), RoleName(req.role()),
          who.name);
  v1::CreateCredentialResponse& resp = call->response();
  resp = *std::move(made);
  if (ca_pem) resp.set_ca_pem(*ca_pem);
  // init's --host names with the port we listen on; else the bound address.
  if (auto hosts = ReadTlsFile(tls, kHostsFile)) {
    for (absl::string_view line : absl::StrSplit(*hosts, '\n')) {
      line = absl::StripAsciiWhitespace(line);
      if (!line.empty()) resp.add_join_addresses(JoinHostPort(line, security_.port));
    }
  }
  if (resp.join_addresses().empty() && !security_.bound_address.empty()) {
    resp.add_join_addresses(security_.bound_address);
  }
  call->Reply(grpc::Status::OK);
}

void TaskQueueService::HandleListCredentials(
    UnaryCall<v1::ListCredentialsRequest, v1::ListCredentialsResponse>* call,
    const Principal&) {
  for (auto& c : security_.credentials->List(call->request().include_revoked())) {
    *call->response().add_credentials() = std::move(c);
  }
  call->Reply(grpc::Status::OK);
}

void TaskQueueService::HandleRevokeCredential(
    UnaryCall<v1::RevokeCredentialRequest, v1::RevokeCredentialResponse>* call,
    const Principal& who) {
  const std::string& name = call->request().name();
  absl::Status s = security_.credentials->Revoke(name);
  AuditAction(call->context(), who, "RevokeCredential", name, s);
  if (s.ok()) LogInfo("credential \"%s\" revoked by \"%s\"", name, who.name);
  call->Reply(ToGrpcStatus(s));
}

}  // namespace taskq
