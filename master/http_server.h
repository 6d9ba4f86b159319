// MetricsHttpServer: the master's --http-listen HOST:PORT, serving
// GET /metrics (Prometheus text format) and the web dashboard
// (master/dashboard_http.h: its page public, its /api/ checked by the gRPC
// service on every call, loopback or not) on common/http_listener.h.
//
// Security (docs/METRICS.md): as HttpListener says. Off loopback the
// master's TLS certificate and key are served (the ones gRPC serves,
// re-read when rotated on disk) and a
// request needs the token of a credential (any role) or the master token,
// checked by CredentialTable::AuthenticateToken (constant time); refusals
// are counted in Refusals() (no_token / wrong_token).
//
// Thread-safety: Start from one thread; Stop (idempotent, also from the
// destructor) from any thread. `render` runs on the server's threads.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/http_listener.h"
#include "master/credentials.h"
#include "master/dashboard_api.h"
#include "master/tls_config.h"

namespace taskq {

struct HttpServerOptions {
  std::string listen;                      // HOST:PORT; port 0 picks a free one
  const ServerTlsFiles* tls = nullptr;     // the master's TLS, if it has one
  bool insecure = false;                   // plain HTTP off loopback
  const CredentialTable* credentials = nullptr;  // required; outlives the server
  // The dashboard's API (master/dashboard_api.h); null = no dashboard.
  // Outlives the server.
  const DashboardApi* dashboard = nullptr;
  int threads = 2;
  absl::Duration timeout = absl::Seconds(5);
};

class MetricsHttpServer {
 public:
  // Binds and starts serving on its own threads. Errors as
  // HttpListener::Create and Start.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      HttpServerOptions options, std::function<std::string()> render);

  // HOST:PORT as given, with the bound port.
  const std::string& address() const { return listener_->address(); }
  bool https() const { return listener_->https(); }
  bool token_required() const { return listener_->token_required(); }
  void Stop() { listener_->Stop(); }

 private:
  MetricsHttpServer() = default;

  std::unique_ptr<HttpListener> listener_;
};

}  // namespace taskq
