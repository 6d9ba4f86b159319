#include "common/channel.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/auth.h"
#include "common/limits.h"

namespace taskq {

ConnectOptions ResolveConnectOptions(ConnectOptions options) {
  if (options.master.empty()) {
    const char* env = std::getenv("TASKQ_MASTER");
    options.master = env && *env ? env : kDefaultMaster;
  }
  if (options.token_file.empty()) options.token_file = DefaultTokenPath();
  if (!options.tls_ca_file.empty()) options.tls = true;
  return options;
}

absl::StatusOr<Connection> Connect(const ConnectOptions& raw) {
  ConnectOptions options = ResolveConnectOptions(raw);
  auto token = LoadToken(options.token_file);
  if (!token.ok()) {
    return absl::Status(token.status().code(),
                        absl::StrCat(token.status().message(),
                                     " (set --token-file or TASKQ_TOKEN_FILE to the master's token)"));
  }
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (options.tls) {
    grpc::SslCredentialsOptions ssl;
    if (!options.tls_ca_file.empty()) {
      std::ifstream in(options.tls_ca_file);
      if (!in) {
        return absl::NotFoundError(
            absl::StrCat("cannot read TLS CA file ", options.tls_ca_file));
      }
      std::stringstream ss;
      ss << in.rdbuf();
      ssl.pem_root_certs = ss.str();
    }
    creds = grpc::SslCredentials(ssl);
  } else {
    creds = grpc::InsecureChannelCredentials();
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxGrpcMessageBytes);
  args.SetMaxSendMessageSize(kMaxGrpcMessageBytes);
  // Notice a dead master on an idle worker stream within ~30 s.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 20000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // Reconnect quickly after a master restart.
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  if (!options.tls_server_name.empty()) {
    args.SetSslTargetNameOverride(options.tls_server_name);
  }
  Connection conn;
  conn.channel = grpc::CreateCustomChannel(options.master, creds, args);
  conn.token = *std::move(token);
  return conn;
}

void PrepareContext(grpc::ClientContext* context, const std::string& token,
                    absl::Duration timeout) {
  context->AddMetadata(kAuthMetadataKey, BearerValue(token));
  if (timeout != absl::InfiniteDuration()) {
    context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  }
}

}  // namespace taskq
