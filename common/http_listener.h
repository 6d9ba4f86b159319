// HttpListener: an HTTP(S) server on cpp-httplib (ARCHITECTURE.md says why)
// for a --http-listen HOST:PORT flag: the part the master's /metrics and
// dashboard and the worker's /metrics share. The owner registers its
// routes on server() between Create and Start.
//
// Security (docs/METRICS.md):
//   - On a loopback address (what the name resolves to decides): plain
//     HTTP, no token at the gate; any local user can connect.
//   - Elsewhere: HTTPS with the given certificate and key (re-read when
//     they change on disk: common/tls_reloader.h), or plain HTTP only with
//     `insecure`; Create refuses
//     (FAILED_PRECONDITION) otherwise. Every request to a path that is
//     not public must carry `Authorization: Bearer <token>` that
//     `authenticate` accepts; without one it is answered 401 with
//     `token_hint`, reported to `on_refused`, and the token is never logged.
//   Routes may check tokens themselves on loopback too (the dashboard's
//   API does): bearer_token() reads the header.
//
// Limits: request line and each header line 8 KiB (cpp-httplib's compiled
// limits), request bodies at most `max_body` bytes (413 above), `threads`
// connections served at once and at most 64 more waiting (then accepting
// pauses), read and write timeouts, 5 requests per kept-alive connection.
// Not bounded: the number of header lines of a request that keeps sending
// them (cpp-httplib 0.11 has no cap); it holds one thread.
//
// Thread-safety: Create, route registration and Start from one thread;
// Stop (idempotent, also from the destructor) from any thread. Route
// handlers and callbacks run on the server's threads.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace httplib {
class Server;
struct Request;
}  // namespace httplib

namespace taskq {

class CertificateReloader;

struct HttpListenerOptions {
  std::string listen;                  // HOST:PORT; port 0 picks a free one
  std::string flag = "--http-listen";  // named in error messages
  std::string what = "/metrics";       // what is served, for error messages
  // HTTPS off loopback; both empty = none.
  std::string tls_cert, tls_key;
  // What to do to get TLS, for the refusal off loopback without it.
  std::string tls_hint;
  bool insecure = false;  // plain HTTP off loopback
  std::string insecure_flag = "--insecure";  // the flag that sets it, for error messages
  // OK if `token` may use the non-public paths off loopback; its message
  // is shown in the 401 (never the token). Null: every token is refused.
  std::function<absl::Status(absl::string_view token)> authenticate;
  // How to get a token, for the 401 without one.
  std::string token_hint;
  // Paths served without a token everywhere (e.g. the dashboard's page).
  std::function<bool(const std::string& path)> is_public;
  // Told about each 401 (no_token: no bearer token at all); e.g. counted.
  std::function<void(bool no_token, const std::string& peer, const std::string& request)>
      on_refused;
  int threads = 2;
  absl::Duration timeout = absl::Seconds(5);
  size_t max_body = 1024;
};

class HttpListener {
 public:
  // Checks the address and the TLS rule and prepares the server; nothing
  // is bound yet. INVALID_ARGUMENT for a bad address, FAILED_PRECONDITION
  // for plaintext off loopback without `insecure` or a TLS setup
  // cpp-httplib cannot load.
  static absl::StatusOr<std::unique_ptr<HttpListener>> Create(HttpListenerOptions options);
  ~HttpListener();

  // Register routes here before Start.
  httplib::Server& server() { return *server_; }

  // Binds and starts serving on its own threads; UNAVAILABLE if the
  // address cannot be bound.
  absl::Status Start();

  // HOST:PORT as given, with the bound port (after Start).
  const std::string& address() const { return address_; }
  bool https() const { return https_; }
  bool token_required() const { return token_required_; }
  void Stop();

  // The token of `Authorization: Bearer <token>`, if the request has one.
  static std::optional<std::string> BearerToken(const httplib::Request& req);

 private:
  HttpListener() = default;

  HttpListenerOptions options_;
  std::string host_;
  int port_ = 0;
  // Before server_: the server's TLS handshakes use it until it stops.
  std::unique_ptr<CertificateReloader> reloader_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::string address_;
  bool https_ = false;
  bool token_required_ = false;
};

}  // namespace taskq
