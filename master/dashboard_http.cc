#include "master/dashboard_http.h"

#include <cctype>
#include <string>

#include <httplib.h>

#include "master/dashboard_api.h"
#include "master/dashboard_assets.h"

namespace taskq {
namespace {

void SetSecurityHeaders(httplib::Response& res) {
  res.set_header("Content-Security-Policy", kDashboardCsp);
  res.set_header("X-Content-Type-Options", "nosniff");
  res.set_header("X-Frame-Options", "DENY");
  res.set_header("Referrer-Policy", "no-referrer");
}

// `path` as a regular expression matching exactly it (cpp-httplib routes
// are regexes).
std::string Literal(std::string_view path) {
  std::string out;
  for (char c : path) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '/' && c != '_' && c != '-') {
      out.push_back('\\');
    }
    out.push_back(c);
  }
  return out;
}

}  // namespace

void AddDashboardRoutes(httplib::Server& server, const DashboardApi* api) {
  for (const DashboardAsset& asset : DashboardAssets()) {
    server.Get(Literal(asset.path), [&asset](const httplib::Request&, httplib::Response& res) {
      SetSecurityHeaders(res);
      res.set_header("Cache-Control", "no-cache");
      res.set_content(asset.body.data(), asset.body.size(), std::string(asset.content_type));
    });
  }
  // Every method reaches Serve, which answers 405 for the wrong one.
  const auto serve = [api](const httplib::Request& req, httplib::Response& res) {
    SetSecurityHeaders(res);
    api->Serve(req, res);
  };
  const std::string pattern = "/api/.*";
  server.Get(pattern, serve);
  server.Post(pattern, serve);
  server.Put(pattern, serve);
  server.Patch(pattern, serve);
  server.Delete(pattern, serve);
}

}  // namespace taskq
