#include "common/channel.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/auth.h"
#include "common/limits.h"

namespace taskq {

std::string JoinHostPort(absl::string_view host, int port) {
  return absl::StrContains(host, ':') ? absl::StrCat("[", host, "]:", port)
                                      : absl::StrCat(host, ":", port);
}

ConnectOptions ResolveConnectOptions(ConnectOptions options) {
  if (options.master.empty() && options.masters.empty()) {
    const char* env = std::getenv("TASKQ_MASTER");
    options.master = env && *env ? env : kDefaultMaster;
  }
  if (options.master.empty() && options.masters.size() == 1) {
    options.master = options.masters.front();
  }
  const bool has_credential = !options.token.empty() || !options.client_cert_pem.empty();
  if (options.token_file.empty() && !has_credential) options.token_file = DefaultTokenPath();
  if (options.tls_ca_file.empty() && options.tls_ca_pem.empty()) {
    const char* env = std::getenv("TASKQ_TLS_CA");
    if (env && *env) options.tls_ca_file = env;
  }
  if (!options.tls_ca_file.empty() || !options.tls_ca_pem.empty() ||
      !options.client_cert_pem.empty()) {
    options.tls = true;
  }
  return options;
}

namespace {

absl::StatusOr<std::string> ReadCaFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read TLS CA file ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Waits up to `timeout` for the channel to connect. Gives up early when an
// attempt fails (connection refused, handshake failed): that address is
// not the one to use now.
bool ConnectsWithin(grpc::Channel& channel, absl::Duration timeout) {
  const auto deadline = absl::ToChronoTime(absl::Now() + timeout);
  grpc_connectivity_state state = channel.GetState(/*try_to_connect=*/true);
  while (state != GRPC_CHANNEL_READY) {
    if (state == GRPC_CHANNEL_TRANSIENT_FAILURE || state == GRPC_CHANNEL_SHUTDOWN) return false;
    if (!channel.WaitForStateChange(state, deadline)) return false;
    state = channel.GetState(/*try_to_connect=*/true);
  }
  return true;
}

}  // namespace

absl::StatusOr<Connection> Connect(const ConnectOptions& raw) {
  ConnectOptions options = ResolveConnectOptions(raw);
  Connection conn;
  if (!options.token.empty()) {
    conn.token = options.token;
  } else if (!options.token_file.empty()) {
    auto token = LoadToken(options.token_file);
    if (!token.ok()) {
      return absl::Status(
          token.status().code(),
          absl::StrCat(token.status().message(),
                       " (set --token-file or TASKQ_TOKEN_FILE to the master's token, or use "
                       "--join with a join bundle)"));
    }
    conn.token = *std::move(token);
  }
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (options.tls) {
    grpc::SslCredentialsOptions ssl;
    if (!options.tls_ca_file.empty()) {
      auto pem = ReadCaFile(options.tls_ca_file);
      if (!pem.ok()) return pem.status();
      ssl.pem_root_certs = *std::move(pem);
    } else {
      ssl.pem_root_certs = options.tls_ca_pem;
    }
    ssl.pem_cert_chain = options.client_cert_pem;
    ssl.pem_private_key = options.client_key_pem;
    creds = grpc::SslCredentials(ssl);
  } else {
    creds = grpc::InsecureChannelCredentials();
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxGrpcMessageBytes);
  args.SetMaxSendMessageSize(kMaxGrpcMessageBytes);
  // Notice a dead link within 2 x keepalive, busy or idle (the master
  // permits pings this often: master/server.cc).
  const int keepalive_ms = static_cast<int>(
      absl::ToInt64Milliseconds(std::max(options.keepalive, kMinKeepalive)));
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, keepalive_ms);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, keepalive_ms);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // gRPC uses the minimum reconnect backoff as the deadline of one connect
  // attempt (TCP, TLS handshake, HTTP/2 settings): at 100 ms, as it once
  // was here, nothing 40 ms away could connect over TLS. Retry soon after
  // a failure (a master restart), at most every 2 s.
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(
                  std::max(options.connect_timeout, kMinConnectTimeout))));
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  // A channel of its own subchannels: a new channel made just after a
  // master restart must not reuse another channel's dead connection
  // (its first call failed with "Socket closed").
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  if (!options.tls_server_name.empty()) {
    args.SetSslTargetNameOverride(options.tls_server_name);
  }
  conn.dial = [creds, args](const std::string& address) {
    return grpc::CreateCustomChannel(address, creds, args);
  };
  std::vector<std::string> candidates = options.masters;
  if (!options.master.empty()) candidates = {options.master};
  conn.master = candidates.front();
  if (candidates.size() == 1) {
    conn.channel = grpc::CreateCustomChannel(conn.master, creds, args);
    return conn;
  }
  for (const std::string& address : candidates) {
    auto channel = grpc::CreateCustomChannel(address, creds, args);
    if (ConnectsWithin(*channel, std::max(options.connect_timeout, kMinConnectTimeout))) {
      conn.master = address;
      conn.channel = std::move(channel);
      return conn;
    }
  }
  // None answers now: the first, and the calls' retrying waits for it.
  conn.channel = grpc::CreateCustomChannel(conn.master, creds, args);
  return conn;
}

void PrepareContext(grpc::ClientContext* context, const std::string& token,
                    absl::Duration timeout) {
  if (!token.empty()) context->AddMetadata(kAuthMetadataKey, BearerValue(token));
  if (timeout != absl::InfiniteDuration()) {
    context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  }
}

}  // namespace taskq
