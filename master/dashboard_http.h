// The web dashboard's routes on the master's --http-listen server
// (docs/DASHBOARD.md): the embedded static files (master/dashboard_assets.h)
// at / and /<file>, public (they hold no data), and the JSON API under
// /api/ (master/dashboard_api.h), which needs a credential's token on every
// call, loopback or not.
//
// Every answer carries a strict Content-Security-Policy (own origin only, no
// inline script or style, no framing), X-Content-Type-Options: nosniff,
// X-Frame-Options: DENY and Referrer-Policy: no-referrer; static files are
// revalidated (no-cache), API answers never stored (no-store).
//
// Thread-safety: AddDashboardRoutes before the server starts; the handlers
// run on the server's threads and share only `api` (thread-safe).
#pragma once

namespace httplib {
class Server;
}  // namespace httplib

namespace taskq {

class DashboardApi;

inline constexpr char kDashboardCsp[] =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'";

// `api` outlives the server.
void AddDashboardRoutes(httplib::Server& server, const DashboardApi* api);

}  // namespace taskq
