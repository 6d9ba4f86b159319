// WorkerHttpServer: taskq-worker --http-listen HOST:PORT, serving GET /metrics
// (WorkerMetrics, Prometheus text format) on common/http_listener.h.
//
// Security (docs/METRICS.md, "Worker"): the worker has no credential table,
// so its /metrics has a token of its own, --http-token-file (0600, a strong
// token: common/token_strength.h), compared in constant time.
//   - On a loopback address: plain HTTP; no token needed unless
//     --http-token-file is given, then every request needs it.
//   - Elsewhere: --http-token-file is required (the worker refuses to start
//     without it), every request needs `Authorization: Bearer <token>`, and
//     the server speaks HTTPS with --http-tls-cert/--http-tls-key, or plain
//     HTTP only with --http-insecure (the token then crosses in the clear).
// A refused request is answered 401 and logged (rate-limited, never the
// token).
//
// Thread-safety: Start from one thread; Stop (idempotent, also from the
// destructor) from any thread. `render` runs on the server's threads.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/http_listener.h"

namespace taskq {

struct WorkerHttpOptions {
  std::string listen;      // HOST:PORT; port 0 picks a free one
  std::string token_file;  // empty = none (allowed on loopback only)
  std::string tls_cert, tls_key;
  bool insecure = false;  // plain HTTP off loopback
};

class WorkerHttpServer {
 public:
  // Reads the token file, binds and starts serving on its own threads.
  // FAILED_PRECONDITION off loopback without a token file, or without TLS
  // and --http-insecure; a token file that is missing, open to others or
  // weak; errors as HttpListener::Create and Start.
  static absl::StatusOr<std::unique_ptr<WorkerHttpServer>> Start(
      const WorkerHttpOptions& options, std::function<std::string()> render);

  // HOST:PORT as given, with the bound port.
  const std::string& address() const { return listener_->address(); }
  bool https() const { return listener_->https(); }
  void Stop() { listener_->Stop(); }

 private:
  WorkerHttpServer() = default;

  std::unique_ptr<HttpListener> listener_;
};

}  // namespace taskq
