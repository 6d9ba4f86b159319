// KedaServer: the master's --keda-listen gRPC server, serving only KEDA's
// external scaler (master/keda_service.h), apart from the taskq.v1 port.
//
// Which transport (docs/KUBERNETES.md, "Security"):
//   - an address that resolves to loopback only: plaintext, no
//     authentication (anyone on the host may read queue depths);
//   - elsewhere, with the master's TLS (`taskq-master init`): TLS with the
//     master's certificate, and a client certificate signed by the
//     master's CA is REQUIRED (the handshake fails without one); each call
//     is then checked against the credential table by the certificate's
//     SHA-256 (revoked or expired: UNAUTHENTICATED) and the role table
//     (may read queue stats on the queues it names, else PERMISSION_DENIED);
//   - elsewhere without TLS: refused at start (FAILED_PRECONDITION), or
//     plaintext without authentication with --insecure.
// KEDA cannot send a bearer token (its external scaler has only TLS
// settings), hence client certificates.
//
// Thread-safety: Start, then Stop from any thread (idempotent); address()
// from any thread.
#pragma once

#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "master/credentials.h"
#include "master/keda_service.h"
#include "master/queue_engine.h"
#include "master/tls_config.h"

namespace taskq {

struct KedaServerOptions {
  std::string listen;                  // HOST:PORT; port 0 picks one
  const ServerTlsFiles* tls = nullptr;  // the master's TLS, or null
  bool insecure = false;               // plaintext off loopback allowed
  QueueEngine* engine = nullptr;
  const CredentialTable* credentials = nullptr;
  KedaServiceOptions service;
};

class KedaServer {
 public:
  static absl::StatusOr<std::unique_ptr<KedaServer>> Start(KedaServerOptions options);
  ~KedaServer();

  // HOST:PORT as given, with the bound port.
  const std::string& address() const { return address_; }
  // How it is served, for the log: "TLS, client certificate required" etc.
  const std::string& mode() const { return mode_; }
  // Ends the streams, then the server.
  void Stop();

 private:
  KedaServer() = default;

  std::string address_;
  std::string mode_;
  std::unique_ptr<KedaService> service_;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace taskq
