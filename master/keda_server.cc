#include "master/keda_server.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/channel.h"
#include "common/loopback.h"

namespace taskq {
namespace {

constexpr char kFlag[] = "--keda-listen";
// A ScaledObject's metadata is at most 32 entries of 16 KiB
// (master/keda_metadata.h); nothing bigger is read.
constexpr int kMaxRequestBytes = 1 << 20;
constexpr size_t kGrpcMemoryBytes = size_t{64} << 20;
constexpr int kMaxStreamsPerConnection = 1024;

}  // namespace

absl::StatusOr<std::unique_ptr<KedaServer>> KedaServer::Start(KedaServerOptions options) {
  const size_t colon = options.listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(options.listen.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad ", kFlag, " \"", options.listen, "\": want HOST:PORT (e.g. 0.0.0.0:6000)"));
  }
  std::string host = options.listen.substr(0, colon);
  if (absl::StartsWith(host, "[") && absl::EndsWith(host, "]")) {
    host = host.substr(1, host.size() - 2);
  }
  auto loopback = ResolvesToLoopbackOnly(host, kFlag);
  if (!loopback.ok()) return loopback.status();

  std::unique_ptr<KedaServer> self(new KedaServer());
  std::shared_ptr<grpc::ServerCredentials> creds;
  const CredentialTable* credentials = nullptr;
  if (*loopback) {
    creds = grpc::InsecureServerCredentials();
    self->mode_ = "plaintext, loopback, no authentication";
  } else if (options.tls != nullptr) {
    if (options.tls->ca.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          kFlag, " ", options.listen, " needs the master's CA (DIR/tls/ca.pem, made by "
          "`taskq-master init`) to verify KEDA's client certificate"));
    }
    creds = MakeServerTlsCredentials(*options.tls, /*require_client_certificate=*/true);
    credentials = options.credentials;
    self->mode_ = "TLS, client certificate of a credential required";
  } else if (options.insecure) {
    creds = grpc::InsecureServerCredentials();
    self->mode_ = "plaintext, --insecure, no authentication";
  } else {
    return absl::FailedPreconditionError(absl::StrCat(
        "refusing to serve the KEDA scaler in plaintext on non-loopback address ",
        options.listen, ": anyone could read queue depths. Run `taskq-master init` (TLS; KEDA "
        "then needs a client certificate: `taskq credential create keda --role reader "
        "--queues Q --cert --cert-out keda`), or --insecure if the network is trusted"));
  }

  self->service_ = std::make_unique<KedaService>(options.engine, credentials, options.service);
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(options.listen, creds, &bound_port);
  builder.RegisterService(self->service_.get());
  builder.SetMaxReceiveMessageSize(kMaxRequestBytes);
  grpc::ResourceQuota quota("taskq-keda");
  quota.Resize(kGrpcMemoryBytes);
  builder.SetResourceQuota(quota);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, kMaxStreamsPerConnection);
  self->server_ = builder.BuildAndStart();
  if (!self->server_ || bound_port == 0) {
    self->service_->Shutdown();
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", kFlag, " ", options.listen, " (in use?)"));
  }
  self->address_ = JoinHostPort(host, bound_port);
  return self;
}

KedaServer::~KedaServer() { Stop(); }

void KedaServer::Stop() {
  if (service_) service_->Shutdown();
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
    server_->Wait();
  }
}

}  // namespace taskq
