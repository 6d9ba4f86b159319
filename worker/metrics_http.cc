#include "worker/metrics_http.h"

#include <httplib.h>

#include "absl/strings/str_cat.h"
#include "common/auth.h"
#include "common/log.h"
#include "common/token_strength.h"

namespace taskq {
namespace {

constexpr char kContentType[] = "text/plain; version=0.0.4; charset=utf-8";

void LogRefused(bool no_token, const std::string& peer, const std::string& request) {
  // Rate-limited by the log itself; never the token.
  LogEvent(LogLevel::kWarning,
           no_token ? "refused: /metrics request without a bearer token"
                    : "refused: /metrics request with a wrong bearer token",
           {{"peer", peer}, {"request", request}});
}

}  // namespace

absl::StatusOr<std::unique_ptr<WorkerHttpServer>> WorkerHttpServer::Start(
    const WorkerHttpOptions& options, std::function<std::string()> render) {
  // The token is read once, here: replacing the file needs a restart.
  std::string token;
  if (!options.token_file.empty()) {
    absl::StatusOr<std::string> loaded = LoadToken(options.token_file);
    if (!loaded.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("--http-token-file: ", loaded.status().message()));
    }
    if (absl::Status s = CheckTokenStrength(*loaded, options.token_file); !s.ok()) return s;
    token = *std::move(loaded);
  }
  HttpListenerOptions http;
  http.listen = options.listen;
  http.tls_cert = options.tls_cert;
  http.tls_key = options.tls_key;
  http.tls_hint = "Give --http-tls-cert and --http-tls-key";
  http.insecure = options.insecure;
  http.insecure_flag = "--http-insecure";
  http.authenticate = [token](absl::string_view given) -> absl::Status {
    if (!token.empty() && ConstantTimeEquals(given, token)) return absl::OkStatus();
    return absl::UnauthenticatedError("not the token of the worker's --http-token-file");
  };
  http.token_hint = "with the token of the worker's --http-token-file";
  http.on_refused = LogRefused;
  auto listener = HttpListener::Create(std::move(http));
  if (!listener.ok()) return listener.status();
  if ((*listener)->token_required() && token.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "refusing to serve /metrics on non-loopback address ", options.listen,
        " without a token: give --http-token-file FILE (0600, a long random token; e.g. "
        "`openssl rand -hex 32 > FILE`), or use a loopback address"));
  }
  const bool check_here = !(*listener)->token_required() && !token.empty();
  (*listener)->server().Get("/metrics", [render, token, check_here](const httplib::Request& req,
                                                                   httplib::Response& res) {
    if (check_here) {
      // On loopback the listener lets every request through; a given
      // token file still guards the page.
      auto given = HttpListener::BearerToken(req);
      if (!given || !ConstantTimeEquals(*given, token)) {
        LogRefused(!given, absl::StrCat(req.remote_addr, ":", req.remote_port),
                   absl::StrCat(req.method, " ", req.path));
        res.status = 401;
        res.set_header("WWW-Authenticate", "Bearer realm=\"taskq\"");
        res.set_content("401 unauthorized: send `Authorization: Bearer <token>` with the token "
                        "of the worker's --http-token-file\n",
                        "text/plain; charset=utf-8");
        return;
      }
    }
    res.set_content(render(), kContentType);
  });
  if (absl::Status s = (*listener)->Start(); !s.ok()) return s;
  std::unique_ptr<WorkerHttpServer> self(new WorkerHttpServer());
  self->listener_ = *std::move(listener);
  return self;
}

}  // namespace taskq
