#include "master/http_server.h"

#include <httplib.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "master/dashboard_assets.h"
#include "master/dashboard_http.h"
#include "master/refusals.h"

namespace taskq {
namespace {

constexpr char kContentType[] = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    HttpServerOptions options, std::function<std::string()> render) {
  HttpListenerOptions http;
  http.listen = options.listen;
  if (options.tls != nullptr) {
    http.tls_cert = options.tls->cert;
    http.tls_key = options.tls->key;
  }
  http.tls_hint = "Set up TLS (`taskq-master init`, or --tls-cert and --tls-key)";
  http.insecure = options.insecure;
  const CredentialTable* credentials = options.credentials;
  http.authenticate = [credentials](absl::string_view token) -> absl::Status {
    if (credentials == nullptr) return absl::UnauthenticatedError("no credentials configured");
    return credentials->AuthenticateToken(token).status();
  };
  http.token_hint =
      "with a taskq credential's token (any role; `taskq credential create NAME --role reader`)";
  http.on_refused = [](bool no_token, const std::string& peer, const std::string& request) {
    Refusals().Refuse(no_token ? Refusal::kNoToken : Refusal::kWrongToken, peer, request);
  };
  if (options.dashboard != nullptr) {
    // The page holds no data; the API is answered by the gRPC service,
    // which checks the token (and the role) of every call itself.
    http.is_public = [](const std::string& path) {
      return FindDashboardAsset(path) != nullptr || absl::StartsWith(path, "/api/");
    };
    http.max_body = kMaxApiBodyBytes;
  }
  http.threads = options.threads;
  http.timeout = options.timeout;
  auto listener = HttpListener::Create(std::move(http));
  if (!listener.ok()) return listener.status();

  (*listener)->server().Get("/metrics", [render](const httplib::Request&, httplib::Response& res) {
    res.set_content(render(), kContentType);
  });
  if (options.dashboard != nullptr) AddDashboardRoutes((*listener)->server(), options.dashboard);
  if (absl::Status s = (*listener)->Start(); !s.ok()) return s;
  std::unique_ptr<MetricsHttpServer> self(new MetricsHttpServer());
  self->listener_ = *std::move(listener);
  return self;
}

}  // namespace taskq
