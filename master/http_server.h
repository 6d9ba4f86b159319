// MetricsHttpServer: the master's --http-listen HOST:PORT, serving
// GET /metrics (Prometheus text format) and nothing else (404), on
// cpp-httplib (ARCHITECTURE.md says why).
//
// Security (docs/METRICS.md):
//   - On a loopback address (what the name resolves to decides): plain
//     HTTP, no token; any local user can read the metrics.
//   - Elsewhere: HTTPS with the master's TLS certificate and key (the ones
//     gRPC serves; loaded at start: a rotated certificate is served after a
//     restart), or plain HTTP only with --insecure; Start refuses
//     (FAILED_PRECONDITION) otherwise. Every request must carry
//     `Authorization: Bearer <token>` of a credential (any role) or the
//     master token, checked by CredentialTable::AuthenticateToken (constant
//     time); without one it is answered 401 with what to do, counted in
//     Refusals() (no_token / wrong_token), and the token is never logged.
//
// Limits: request line and each header line 8 KiB (cpp-httplib's compiled
// limits), no request body (GETs only; 1 KiB at most is read), `threads`
// connections served at once and at most 64 more waiting (then accepting
// pauses), 5 s read and write timeouts, 5 requests per kept-alive
// connection. Not bounded: the number of header lines of a request that
// keeps sending them (cpp-httplib 0.11 has no cap); it holds one thread.
//
// Thread-safety: Start from one thread; Stop (idempotent, also from the
// destructor) from any thread. `render` runs on the server's threads.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "master/credentials.h"
#include "master/tls_config.h"

namespace httplib {
class Server;
}

namespace taskq {

struct HttpServerOptions {
  std::string listen;                      // HOST:PORT; port 0 picks a free one
  const ServerTlsFiles* tls = nullptr;     // the master's TLS, if it has one
  bool insecure = false;                   // plain HTTP off loopback
  const CredentialTable* credentials = nullptr;  // required; outlives the server
  int threads = 2;
  absl::Duration timeout = absl::Seconds(5);
};

class MetricsHttpServer {
 public:
  // Binds and starts serving on its own threads. INVALID_ARGUMENT for a bad
  // address, FAILED_PRECONDITION for plaintext off loopback without
  // --insecure or a TLS setup cpp-httplib cannot load, UNAVAILABLE if the
  // address cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      HttpServerOptions options, std::function<std::string()> render);
  ~MetricsHttpServer();

  // HOST:PORT as given, with the bound port.
  const std::string& address() const { return address_; }
  bool https() const { return https_; }
  bool token_required() const { return token_required_; }
  void Stop();

 private:
  MetricsHttpServer() = default;

  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::string address_;
  bool https_ = false;
  bool token_required_ = false;
};

}  // namespace taskq
